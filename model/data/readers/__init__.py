"""Random-access readers, one per on-disk format. Each exposes ``len(reader)``, ``reader.key(i)`` and
``reader.read(i) -> raw record dict``; indexes (shard member offsets, row-group sizes, line offsets,
sessions) are built once per file and cached (see ``index_cache``)."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from unigen.model.data.readers.base import Reader


def open_reader(source, *, grouping=None, cache_dir: str | None = None, retries: int = 3) -> "Reader":
    """The reader for a ``SourceSpec`` (format picks the class). ``grouping`` = (session field, turn
    field) groups rows/lines into one record per session (multi-turn edit)."""
    join = source.options.get("join")
    if join:
        return _joined(source, join, grouping, cache_dir, retries)
    fmt = source.format
    if fmt == "webdataset":
        from unigen.model.data.readers.webdataset import WebDatasetReader as cls
    elif fmt == "parquet":
        from unigen.model.data.readers.parquet import ParquetReader as cls
    elif fmt == "jsonl":
        from unigen.model.data.readers.jsonl import JsonlReader as cls
    elif fmt == "coco":
        from unigen.model.data.readers.coco import CocoReader as cls
    elif fmt == "synthetic":
        from unigen.model.data.readers.synthetic import SyntheticReader as cls
    elif fmt == "nyu_mat":
        from unigen.model.data.readers.hdf5 import NyuMatReader as cls
    elif fmt == "nyu_h5":
        from unigen.model.data.readers.hdf5 import NyuH5Reader as cls
    else:  # pragma: no cover - the spec's Literal rejects anything else
        raise AssertionError(fmt)
    return cls(source, grouping=grouping, cache_dir=cache_dir, retries=retries)


def _joined(source, join: dict, grouping, cache_dir, retries):
    """The source's rows, each merged with the row of ``options.join``'s table that has the same key."""
    from unigen.model.data.readers.join import JoinedReader, check_join

    check_join(join, f"source {source.label()}")
    plain = source.model_copy(update={"options": {k: v for k, v in source.options.items() if k != "join"}})
    table = source.model_copy(update={
        "uri": join["uri"], "format": join["format"], "name": f"{source.label()}+join",
        "options": {k: v for k, v in source.options.items() if k in ("storage_options", "image_root")}})
    return JoinedReader(open_reader(plain, grouping=grouping, cache_dir=cache_dir, retries=retries),
                        open_reader(table, cache_dir=cache_dir, retries=retries), join["key"])
