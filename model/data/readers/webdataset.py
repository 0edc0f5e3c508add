"""WebDataset tar shards as img2dataset writes them: ``<key>.jpg``, ``<key>.txt``, ``<key>.json``.

Index per shard (cached): one entry per sample = [key, [[ext, offset, size], ...], complete]. A sample
is the run of consecutive members sharing a key (the file name up to its first dot, folder kept), as
WebDataset groups them. Reading a sample is one byte-range read spanning its members, so a rank reads
only the samples it serves. A truncated shard keeps its complete samples; the cut one (or, when the cut falls
inside a header, the last one before it) is indexed as incomplete and reported as a bad record.
"""
from __future__ import annotations

import bisect
import logging
import tarfile

from unigen.model.data import fs
from unigen.model.data.errors import BadRecord, DataError
from unigen.model.data.readers.base import Reader
from unigen.model.data.readers.index_cache import cached

log = logging.getLogger("unigen.data")


def split_member(name: str) -> tuple[str, str]:
    """``"dir/abc.0.jpg"`` -> (``"dir/abc"``, ``"0.jpg"``): WebDataset's key/extension rule."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def scan_shard(url: str, storage_options: dict | None = None) -> list:
    """Sample index of one tar shard, reading headers only (data blocks are seeked over)."""
    fsys, path = fs.filesystem(url, storage_options)
    size = int(fsys.size(path))
    samples: list = []
    with fsys.open(path, "rb", block_size=8 * 2**20) as fh:
        try:
            tar = tarfile.open(fileobj=fh, mode="r:")
        except tarfile.ReadError as exc:
            return [["__unreadable__", [], f"not a tar file ({exc})"]]
        try:
            for member in _members(tar):
                if not member.isfile():
                    continue
                key, ext = split_member(member.name)
                complete = member.offset_data + member.size <= size
                if not samples or samples[-1][0] != key:
                    samples.append([key, [], True])
                samples[-1][1].append([ext, member.offset_data, member.size])
                if not complete:
                    samples[-1][2] = "truncated shard: member data runs past the end of the file"
                    break
        except tarfile.ReadError as exc:
            if samples:
                samples[-1][2] = f"truncated shard ({exc})"
            else:
                samples.append(["__unreadable__", [], f"truncated shard ({exc})"])
            return samples
        # tarfile stops quietly at a header cut short; a complete archive has only zero blocks there.
        end = tar.offset
        if end < size:
            fh.seek(end)
            if fh.read(min(size - end, 1024)).strip(b"\0"):
                # The cut header may belong to the last sample (its members incomplete) or to a new one;
                # either way the last sample cannot be trusted.
                reason = f"truncated shard: the file ends inside a member header at byte {end}"
                if samples:
                    samples[-1][2] = reason
                else:
                    samples.append(["__unreadable__", [], reason])
    return samples


def _members(tar: tarfile.TarFile):
    while True:
        member = tar.next()
        if member is None:
            return
        yield member
        tar.members.clear()  # tarfile keeps every member otherwise; big shards would grow memory


class WebDatasetReader(Reader):
    extensions = (".tar",)

    def _build(self) -> None:
        self._shards: list[list] = []
        unreadable = 0
        for url in self.files:
            try:
                idx = cached("wds", url, lambda u=url: scan_shard(u, self.storage_options),
                             cache_dir=self.cache_dir, storage_options=self.storage_options)
            except OSError as exc:  # missing or unreachable after fsspec's retries
                # One placeholder sample: the shard is skipped and counted as a bad record each time
                # the order reaches it, instead of silently shrinking the source. Not cached.
                log.warning("source %s: shard %s unreadable (%s); its samples count as bad", self.name, url, exc)
                idx = [["__unreadable__", [], f"shard unreadable: {exc}"]]
                unreadable += 1
            self._shards.append(idx)
        if unreadable == len(self.files):
            raise DataError(f"source {self.name}: none of the {unreadable} shard(s) of {self.source.uri!r} "
                            "can be read (first: " + self._shards[0][0][2] + "); check the uri and credentials")
        self._starts = [0]
        for idx in self._shards:
            self._starts.append(self._starts[-1] + len(idx))
        if self._starts[-1] == 0:
            raise DataError(f"source {self.name}: the shards of {self.source.uri!r} hold no samples")

    def __len__(self) -> int:
        return self._starts[-1]

    def _locate(self, i: int) -> tuple[int, list]:
        shard = bisect.bisect_right(self._starts, i) - 1
        return shard, self._shards[shard][i - self._starts[shard]]

    def key(self, i: int) -> str:
        shard, entry = self._locate(i)
        return f"{self.files[shard].rsplit('/', 1)[-1]}/{entry[0]}"

    def read(self, i: int) -> dict:
        shard, (key, members, complete) = self._locate(i)
        url = self.files[shard]
        if complete is not True:
            raise BadRecord(str(complete))
        start = min(m[1] for m in members)
        end = max(m[1] + m[2] for m in members)
        blob = self.read_range(url, start, end)
        if len(blob) != end - start:
            raise BadRecord(f"short read from {url} ({len(blob)} of {end - start} bytes)")
        record: dict = {"__key__": key, "__url__": url}
        for ext, off, size in members:
            record[ext] = blob[off - start: off - start + size]
        record["__resolve__"] = self.resolver(url)
        return record
