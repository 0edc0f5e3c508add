"""Precomputed DC-AE latents: written by ``unigen data encode``, attached to ``image_gen`` items.

Layout of a latents folder (local or any fsspec URL):
    latents.json          {"format": "unigen-latents", "version": 1, "image_size", "latent_shape", "dtype",
                           "model", "source", "task", "count"}
    part-00000.parquet    columns key (record key), slot (index of the image_gen target in the
                          conversation), data (.npy bytes of one C x H x W array, model-scaled as
                          ``UniGenModel.encode_latents`` returns it)
The store loads the (key, slot) columns once (main process) and reads latents by row group.
"""
from __future__ import annotations

import io
import json
from collections import OrderedDict

import numpy as np

from unigen.model.data import fs
from unigen.model.data.errors import BadRecord, DataError

FORMAT = "unigen-latents"
VERSION = 1


class LatentStore:
    def __init__(self, root: str, meta: dict, parts: list[str], index: dict, row_groups: list[list[int]],
                 storage_options: dict | None):
        self.root, self.meta, self.parts, self.index = root, meta, parts, index
        self.row_groups = row_groups  # per part: row-group start rows
        self.storage_options = storage_options
        self._lru: OrderedDict = OrderedDict()

    @classmethod
    def open(cls, root: str, *, image_size: int, where: str = "data.sources[]",
             storage_options: dict | None = None) -> "LatentStore":
        import pyarrow.parquet as pq
        root = root.rstrip("/")
        try:
            meta = json.loads(fs.read_bytes(f"{root}/latents.json", storage_options=storage_options))
        except (OSError, ValueError) as exc:
            raise DataError(f"{where}.options.latents: cannot read {root}/latents.json ({exc}); point it at a "
                            "folder written by `unigen data encode`") from exc
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise DataError(f"{where}.options.latents: {root} is not a unigen latents folder (version {VERSION})")
        if meta.get("image_size") != image_size:
            raise DataError(f"{where}.options.latents: {root} was encoded at {meta.get('image_size')} px but "
                            f"data.image_size is {image_size}; re-run `unigen data encode` for this size")
        parts = sorted(p for p in fs.expand_uri(f"{root}/part-*.parquet", storage_options))
        index: dict = {}
        row_groups = []
        for p, url in enumerate(parts):
            fsys, path = fs.filesystem(url, storage_options)
            pf = pq.ParquetFile(fsys.open(path, "rb"))
            starts, acc = [], 0
            for g in range(pf.metadata.num_row_groups):
                starts.append(acc)
                acc += pf.metadata.row_group(g).num_rows
            row_groups.append(starts)
            table = pf.read(columns=["key", "slot"])
            for row, (key, slot) in enumerate(zip(table.column("key").to_pylist(), table.column("slot").to_pylist())):
                index[(key, slot)] = (p, row)
        return cls(root, meta, parts, index, row_groups, storage_options)

    def check_model(self, vae_sha256: str, where: str) -> None:
        """Raise unless these latents were encoded by the VAE whose ``UniGenModel.vae_fingerprint`` is
        ``vae_sha256``: latents of another VAE can have the same shape and still be wrong targets."""
        recorded = self.meta.get("vae_sha256")
        if recorded is None:
            raise DataError(f"{where}.options.latents: {self.root}/latents.json does not say which VAE encoded "
                            "it (written before unigen recorded it); re-run `unigen data encode` for this model")
        if recorded != vae_sha256:
            raise DataError(f"{where}.options.latents: {self.root} was encoded by another VAE "
                            f"({self.meta.get('model')}) than this model's; re-run `unigen data encode` with this "
                            "model (--preset or --pretrained), or drop options.latents")

    def get(self, key: str, slot: int) -> np.ndarray:
        loc = self.index.get((key, slot))
        if loc is None:
            raise BadRecord(f"no precomputed latents for slot {slot} in {self.root}; re-run `unigen data encode`")
        part, row = loc
        starts = self.row_groups[part]
        g = int(np.searchsorted(starts, row, side="right") - 1)
        table = self._row_group(part, g)
        data = table.column("data")[row - starts[g]].as_py()
        return np.load(io.BytesIO(data), allow_pickle=False).astype(np.float32)

    def attach(self, key: str, conversation: list) -> None:
        """Add ``latents`` to every image_gen target of the conversation (in order of appearance)."""
        slot = 0
        for msg in conversation:
            for item in msg["content"]:
                if item["type"] == "image_gen" and item.get("image") is not None:
                    item["latents"] = self.get(key, slot)
                    slot += 1

    def _row_group(self, part: int, g: int):
        import pyarrow.parquet as pq
        if (part, g) not in self._lru:
            fsys, path = fs.filesystem(self.parts[part], self.storage_options)
            self._lru[(part, g)] = pq.ParquetFile(fsys.open(path, "rb")).read_row_group(g)
            while len(self._lru) > 2:
                self._lru.popitem(last=False)
        self._lru.move_to_end((part, g))
        return self._lru[(part, g)]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_lru"] = OrderedDict()
        return state


class LatentWriter:
    """Buffers (key, slot, array) rows and writes numbered Parquet parts under ``root``."""

    def __init__(self, root: str, rows_per_part: int = 4096, row_group_size: int = 64, dtype: str = "float16",
                 storage_options: dict | None = None):
        self.root = root.rstrip("/")
        self.rows_per_part, self.row_group_size, self.dtype = rows_per_part, row_group_size, dtype
        self.storage_options = storage_options
        self.rows: list[dict] = []
        self.part = 0
        self.count = 0
        self.shape: tuple | None = None
        fsys, path = fs.filesystem(self.root, storage_options)
        fsys.makedirs(path, exist_ok=True)

    def add(self, key: str, slot: int, latents: np.ndarray) -> None:
        arr = np.asarray(latents, dtype=self.dtype)
        self.shape = tuple(arr.shape)
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        self.rows.append({"key": key, "slot": slot, "data": buf.getvalue()})
        self.count += 1
        if len(self.rows) >= self.rows_per_part:
            self._flush()

    def _flush(self) -> None:
        if not self.rows:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq
        fsys, path = fs.filesystem(f"{self.root}/part-{self.part:05d}.parquet", self.storage_options)
        with fsys.open(path, "wb") as fh:
            pq.write_table(pa.Table.from_pylist(self.rows), fh, row_group_size=self.row_group_size)
        self.rows, self.part = [], self.part + 1

    def close(self, meta: dict) -> dict:
        """Write the last part, then latents.json (last, so a folder without it is incomplete)."""
        self._flush()
        meta = {"format": FORMAT, "version": VERSION, "count": self.count, "dtype": self.dtype,
                "latent_shape": list(self.shape or ()), **meta}
        fsys, path = fs.filesystem(f"{self.root}/latents.json", self.storage_options)
        with fsys.open(path, "w") as fh:
            fh.write(json.dumps(meta, indent=2, sort_keys=True))
        return meta
