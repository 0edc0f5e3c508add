"""Opening the recipe's sources: adapter (validates fields/options), reader (builds or loads the index),
and the optional precomputed-latents store, checked together so a recipe mistake fails at start."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from unigen.model.data.errors import DataError
from unigen.model.data.readers import open_reader
from unigen.model.data.tasks import make_adapter


@dataclass
class OpenSource:
    index: int
    name: str
    spec: Any
    reader: Any
    adapter: Any
    latents: Any = None

    def __len__(self) -> int:
        return len(self.reader)


def open_source(src, image_size: int, *, index: int = 0, cache_dir: str | None = None,
                retries: int = 3, where: str | None = None) -> OpenSource:
    """One source, ready to read. ``where`` prefixes error messages (default ``data.sources[index]``)."""
    where = where or f"data.sources[{index}]"
    adapter = make_adapter(src, image_size, where=where)
    reader = open_reader(src, grouping=adapter.grouping(), cache_dir=cache_dir, retries=retries)
    latents = None
    if src.options.get("latents"):
        from unigen.model.data.latents import LatentStore
        latents = LatentStore.open(src.options["latents"], image_size=image_size, where=where,
                                   storage_options=src.options.get("storage_options"))
    return OpenSource(index, src.label(), src, reader, adapter, latents)


def open_sources(spec, section: str = "data.sources") -> list[OpenSource]:
    """Every source of a ``DataSpec``; raises DataError naming the first source that cannot open (as
    ``<section>[i]``: the recipe key the sources came from)."""
    out = [open_source(src, spec.image_size, index=i, cache_dir=spec.index_cache, retries=spec.io_retries,
                       where=f"{section}[{i}]") for i, src in enumerate(spec.sources)]
    with_latents = [s.name for s in out if s.latents is not None]
    if with_latents and len(with_latents) != len(out):
        without = [s.name for s in out if s.latents is None]
        raise DataError(f"sources {with_latents} have precomputed latents but {without} do not; a batch "
                        "must be all-latents or all-pixels: encode every source or drop options.latents")
    return out
