"""Where a pretrained component comes from: a hub id, a local folder, or a folder shipped in this package.

``assets://NAME`` names ``unigen/model/assets/NAME`` of the installed package (the tiny world's pretrained
backbone and autoencoder, ``assets://tiny-shapes/...``). It is resolved to that folder only when the
component is loaded, so a config, a run record or an export names it the same way on every machine, and
the loading is then exactly that of a local folder in the hub layout (``from_pretrained(folder)``).
"""
from __future__ import annotations

from pathlib import Path

ASSETS_SCHEME = "assets://"
ASSETS_DIR = Path(__file__).resolve().parent / "assets"


def resolve_source(source: str | None) -> str | None:
    """The hub id or folder ``from_pretrained`` takes for ``source`` (None stays None)."""
    if source is None or not source.startswith(ASSETS_SCHEME):
        return source
    name = source[len(ASSETS_SCHEME):].strip("/")
    folder = ASSETS_DIR / name
    if not name or ".." in Path(name).parts or not folder.is_dir():
        shipped = sorted(p.relative_to(ASSETS_DIR).as_posix() for p in ASSETS_DIR.glob("*/*") if p.is_dir())
        raise ValueError(f"{source}: no such folder in unigen's assets ({ASSETS_DIR}); shipped: {shipped}")
    return str(folder)
