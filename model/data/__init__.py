"""unigen.model.data: every training task as conversations of ``image`` / ``text`` / ``image_gen``
items, read from the datasets' published formats and mixed deterministically and resumably.

Light on import (no torch): heavy modules are imported by the functions that need them.

Map:
- ``spec``: the recipe's ``data:`` section (pydantic only); ``validate.validate_spec`` checks it offline.
- ``loader.build_loader``: what the training runtime calls (steps of micro-batches, state, stats).
- ``mixture`` / ``permute``: the sample order, a pure function of (seed, global sample index).
- ``readers``: random access to WebDataset tars, Parquet, JSONL, COCO JSON, synthetic records, with
  cached indexes; ``fs`` does the fsspec reads (brace ranges, retries).
- ``tasks``: one adapter per task (record -> conversation); ``render``: dense-target encodings and
  their inverses; ``fields``: field mapping and decoding.
- ``synth``: the synthetic shapes corpus; ``latents``: precomputed DC-AE latents.
- ``cli`` (+ ``commands``): ``unigen data synth|check|preview|encode``.
"""
