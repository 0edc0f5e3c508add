"""Offline checks of a data section, for ``unigen validate``: every source's fields and options are
checked against its task adapter without opening any file. Imports no torch (numpy and PIL only when
the adapters' modules load)."""
from __future__ import annotations


def validate_spec(spec) -> list[str]:
    """All problems of a ``DataSpec`` as one message each (YAML path first); empty when fine."""
    from unigen.model.data.errors import DataError
    from unigen.model.data.tasks import make_adapter
    problems = []
    for i, src in enumerate(spec.sources):
        where = f"data.sources[{i}]"
        try:
            make_adapter(src, spec.image_size, where=where)
        except DataError as exc:
            problems.append(str(exc))
        if src.format == "coco" and src.task not in ("pose", "grounding"):
            problems.append(f"{where}.format: coco serves tasks pose and grounding, not {src.task}")
        if src.format == "coco" and src.task == "grounding" and not src.options.get("refs"):
            problems.append(f"{where}.options.refs: grounding from COCO needs the RefCOCO refs file")
        if src.format in ("nyu_mat", "nyu_h5") and src.task != "depth":
            problems.append(f"{where}.format: {src.format} serves task depth, not {src.task}")
    return problems
