"""NYUv2 as it is published in HDF5, read with ``h5py``: two formats, one per published layout.

- ``nyu_mat``: NYU's ``nyu_depth_v2_labeled.mat`` (MATLAB v7.3, i.e. HDF5). uri: the .mat file (or a
  pattern of several). One record per index of its ``images`` / ``depths`` datasets. MATLAB stores
  arrays column-major, so h5py sees ``images`` as (N, 3, W, H) uint8 and ``depths`` as (N, W, H)
  float32 metres; each is transposed back to H x W x 3 and H x W.
- ``nyu_h5``: the fast-depth layout the hub download of ``sayakpaul/nyu_depth_v2`` gives (also
  ``nyudepthv2.tar.gz`` of fast-depth, unpacked): ``data/train-*.tar`` / ``val-*.tar`` holding many
  ``<scene>/<n>.h5``, each with ``rgb`` (3, H, W) uint8 and ``depth`` (H, W) float32 metres. uri: tar
  shards (brace ranges, globs) and/or .h5 files or a folder of them; one record per .h5 (a tar's
  member index is the WebDataset scan, cached; a member is one byte-range read).

Why two format names rather than one ``format: hdf5`` with a ``layout`` option: the dataset names and
axis orders are properties of these two publications, not of HDF5, so a generic ``hdf5`` would
promise more than it reads; as ``format`` values they are checked by the recipe schema like every
other format with no new option to validate, and a third layout is a third name.

Both give the depth adapter what the other readers give it: ``image`` (an RGB PIL image) and ``depth``
(the bytes of an H x W float32 .npy in metres, read by ``depth_format: auto`` or ``npy``), so
``task: depth`` and its options work unchanged. A .h5 that h5py cannot open, a missing dataset or a
dataset of the wrong shape is a bad record naming the file (and tar member) and the expected keys.
"""
from __future__ import annotations

import bisect
import io
import os

import numpy as np

from unigen.model.data import fs
from unigen.model.data.errors import BadRecord, DataError
from unigen.model.data.readers.base import Reader
from unigen.model.data.readers.index_cache import cached

MAT_KEYS = ("images", "depths")
H5_KEYS = ("rgb", "depth")


def _h5py():
    import h5py
    return h5py


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def rgb_image(arr: np.ndarray):
    from PIL import Image
    return Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8), "RGB")


def _dataset(f, key: str, where: str, expected: tuple[str, ...]):
    h5py = _h5py()
    obj = f.get(key)
    if not isinstance(obj, h5py.Dataset):
        raise BadRecord(f"{where}: missing dataset {key!r} (expected keys {', '.join(expected)}; "
                        f"found {', '.join(sorted(f.keys())) or 'none'})")
    return obj


def decode_fast_depth(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(H x W x 3 uint8 RGB, H x W float32 metres) from the bytes of one fast-depth .h5."""
    h5py = _h5py()
    try:
        f = h5py.File(io.BytesIO(data), "r")
    except (OSError, ValueError) as exc:
        raise BadRecord(f"{where}: not a readable HDF5 file (expected datasets {', '.join(H5_KEYS)}): "
                        f"{exc}") from None
    with f:
        rgb_ds = _dataset(f, "rgb", where, H5_KEYS)
        depth_ds = _dataset(f, "depth", where, H5_KEYS)
        try:
            rgb, depth = np.asarray(rgb_ds[()]), np.asarray(depth_ds[()])
        except (OSError, ValueError, TypeError) as exc:
            raise BadRecord(f"{where}: unreadable dataset ({exc})") from None
    if rgb.ndim != 3 or rgb.shape[0] != 3:
        raise BadRecord(f"{where}: 'rgb' should be 3 x H x W, found shape {rgb.shape}")
    if depth.shape != rgb.shape[1:]:
        raise BadRecord(f"{where}: 'depth' should be H x W = {rgb.shape[1:]} like 'rgb', found {depth.shape}")
    return rgb.transpose(1, 2, 0), depth.astype(np.float32)


class _Handles:
    """Open h5py files of this process (dropped when the reader is pickled to a worker)."""

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_open", None)
        return state

    def _file(self, url: str):
        cache = self.__dict__.setdefault("_open", {})
        entry = cache.get(url)
        if entry is None or entry[0] != os.getpid():
            fsys, path = fs.filesystem(url, self.storage_options)
            fh = fsys.open(path, "rb")
            entry = cache[url] = (os.getpid(), fh, _h5py().File(fh, "r"))
        return entry[2]


class NyuMatReader(_Handles, Reader):
    extensions = (".mat",)

    def _build(self) -> None:
        self._counts = [int(self.index("nyu_mat", url, lambda u=url: self._count(u))) for url in self.files]
        self._starts = [0]
        for n in self._counts:
            self._starts.append(self._starts[-1] + n)
        if self._starts[-1] == 0:
            raise DataError(f"source {self.name}: {self.source.uri!r} holds no images")

    def _count(self, url: str) -> int:
        fsys, path = fs.filesystem(url, self.storage_options)
        with fsys.open(path, "rb") as fh, _h5py().File(fh, "r") as f:
            for key in MAT_KEYS:
                if key in f:
                    return int(f[key].shape[0])
            raise DataError(f"source {self.name}: {url} has neither {' nor '.join(MAT_KEYS)} (found "
                            f"{', '.join(sorted(f.keys()))}); format nyu_mat reads nyu_depth_v2_labeled.mat")

    def __len__(self) -> int:
        return self._starts[-1]

    def _locate(self, i: int) -> tuple[int, int]:
        k = bisect.bisect_right(self._starts, i) - 1
        return k, i - self._starts[k]

    def key(self, i: int) -> str:
        k, j = self._locate(i)
        return f"{self.files[k].rsplit('/', 1)[-1]}/{j:05d}"

    def read(self, i: int) -> dict:
        k, j = self._locate(i)
        url = self.files[k]
        where = f"{url}[{j}]"
        try:
            f = self._file(url)
        except (OSError, ValueError) as exc:
            raise BadRecord(f"{url}: not a readable HDF5 (MATLAB v7.3) file (expected datasets "
                            f"{', '.join(MAT_KEYS)}): {exc}") from None
        images = _dataset(f, "images", where, MAT_KEYS)
        depths = _dataset(f, "depths", where, MAT_KEYS)
        try:
            img, depth = np.asarray(images[j]), np.asarray(depths[j])
        except (OSError, ValueError, TypeError, IndexError) as exc:
            raise BadRecord(f"{where}: unreadable dataset ({exc})") from None
        if img.ndim != 3 or img.shape[0] != 3:
            raise BadRecord(f"{where}: 'images' should be N x 3 x W x H (MATLAB order), found {images.shape}")
        if depth.shape != img.shape[1:]:
            raise BadRecord(f"{where}: 'depths' should be N x W x H like 'images', found {depths.shape}")
        return {"__key__": f"{j:05d}", "__url__": url, "image": rgb_image(img.transpose(2, 1, 0)),
                "depth": npy_bytes(depth.T)}


class NyuH5Reader(Reader):
    extensions = (".tar", ".h5")

    def _build(self) -> None:
        from unigen.model.data.readers.webdataset import scan_shard
        self._entries: list[list] = []  # per file: [[member key, offset, size, complete], ...]
        for url in self.files:
            if not url.lower().endswith(".tar"):
                self._entries.append([["", None, None, True]])
                continue
            try:
                idx = cached("wds", url, lambda u=url: scan_shard(u, self.storage_options),
                             cache_dir=self.cache_dir, storage_options=self.storage_options)
            except OSError as exc:
                idx = [["__unreadable__", [], f"shard unreadable: {exc}"]]
            rows = []
            for key, members, complete in idx:
                h5 = [m for m in members if m[0] == "h5"]
                if h5:
                    rows.append([f"{key}.h5", h5[0][1], h5[0][2], complete])
                elif complete is not True:
                    rows.append([key, None, None, complete])
            self._entries.append(rows)
        self._starts = [0]
        for rows in self._entries:
            self._starts.append(self._starts[-1] + len(rows))
        if self._starts[-1] == 0:
            raise DataError(f"source {self.name}: no .h5 files or tar members in {self.source.uri!r}")

    def __len__(self) -> int:
        return self._starts[-1]

    def _locate(self, i: int) -> tuple[str, list]:
        k = bisect.bisect_right(self._starts, i) - 1
        return self.files[k], self._entries[k][i - self._starts[k]]

    def key(self, i: int) -> str:
        url, (member, *_rest) = self._locate(i)
        base = url.rsplit("/", 1)[-1]
        return f"{base}/{member}" if member else base

    def read(self, i: int) -> dict:
        url, (member, offset, size, complete) = self._locate(i)
        where = f"{url}:{member}" if member else url
        if complete is not True:
            raise BadRecord(f"{where}: {complete}")
        data = self.read_range(url) if offset is None else self.read_range(url, offset, offset + size)
        if offset is not None and len(data) != size:
            raise BadRecord(f"{where}: short read ({len(data)} of {size} bytes)")
        rgb, depth = decode_fast_depth(data, where)
        return {"__key__": member or url.rsplit("/", 1)[-1], "__url__": url, "image": rgb_image(rgb),
                "depth": npy_bytes(depth)}
