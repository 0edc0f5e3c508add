"""The ``synthetic`` format: records generated on the fly from (options.seed, index), no files.

Useful for throughput tests and as a stand-in source while the real data is being prepared; the uri
is only a label. Edit records have 1-3 turns (index mod 3); interleaved documents have 3 images.
"""
from __future__ import annotations

from unigen.model.data.readers.base import Reader
from unigen.model.data.synth import records


class SyntheticReader(Reader):
    def _list_files(self) -> list[str]:
        return []

    def _build(self) -> None:
        self.size = int(self.source.options.get("size", 1000))
        self.seed = int(self.source.options.get("seed", 0))

    def __len__(self) -> int:
        return self.size

    def key(self, i: int) -> str:
        return f"synthetic-{self.source.task}-{i}"

    def read(self, i: int) -> dict:
        task = self.source.task
        if task == "edit":
            return records.make(task, self.seed, i, turns=1 + i % 3)
        return records.make(task, self.seed, i)
