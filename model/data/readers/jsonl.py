"""JSONL files (one JSON object per line) with image paths relative to an image root.

Index per file (cached): byte offsets of non-blank lines, so a record is one byte-range read. With
grouping (a session field, e.g. SEED-Data-Edit turns written one per line) the lines are parsed once
to build the sessions (cached); a record is then ``{"rows": [obj, ...]}`` ordered by turn.
Relative paths resolve against ``options.image_root`` (default: the JSONL file's folder).
"""
from __future__ import annotations

import bisect
import json

from unigen.model.data import fs
from unigen.model.data.errors import BadRecord, DataError
from unigen.model.data.readers.base import Reader


def _line_offsets(url: str, storage_options) -> list:
    data = fs.read_bytes(url, storage_options=storage_options)
    spans, pos = [], 0
    for line in data.split(b"\n"):
        end = pos + len(line)
        if line.strip():
            spans.append([pos, end])
        pos = end + 1
    return spans


def _sessions(url: str, spans: list, session: str, turn: str, storage_options) -> list:
    data = fs.read_bytes(url, storage_options=storage_options)
    groups: dict = {}
    for n, (a, b) in enumerate(spans):
        try:
            obj = json.loads(data[a:b])
            sid, t = obj.get(session), obj.get(turn)
        except (ValueError, AttributeError):
            sid, t = f"__bad_line_{n}", None  # kept as its own unit, reported when read
        groups.setdefault(str(sid), []).append([n, t])
    return [[sid, sorted(rows, key=lambda r: (r[1] is None, str(r[1]).zfill(12)))]
            for sid, rows in groups.items()]


class JsonlReader(Reader):
    extensions = (".jsonl", ".json")

    def _build(self) -> None:
        self._spans = [self.index("jsonl-lines", u, lambda u=u: _line_offsets(u, self.storage_options))
                       for u in self.files]
        self.grouped = bool(self.grouping) and self._first_has(self.grouping[0])
        if self.grouped:
            session, turn = self.grouping
            self._units = []
            for f, url in enumerate(self.files):
                groups = self.index("jsonl-sessions", url,
                                lambda u=url, s=self._spans[f]: _sessions(u, s, session, turn,
                                                                          self.storage_options),
                                extra=f"{session}|{turn}")
                self._units.extend((f, sid, [n for n, _ in rows]) for sid, rows in groups)
        else:
            self._starts = [0]
            for spans in self._spans:
                self._starts.append(self._starts[-1] + len(spans))
        if len(self) == 0:
            raise DataError(f"source {self.name}: {self.source.uri!r} holds no JSON lines")

    def _first_has(self, field: str) -> bool:
        for f, spans in enumerate(self._spans):
            if spans:
                try:
                    return field in self._line(f, 0)
                except BadRecord:
                    return False
        return False

    def __len__(self) -> int:
        return len(self._units) if self.grouped else self._starts[-1]

    def _file_line(self, i: int) -> tuple[int, int]:
        f = bisect.bisect_right(self._starts, i) - 1
        return f, i - self._starts[f]

    def key(self, i: int) -> str:
        if self.grouped:
            f, sid, _ = self._units[i]
            return f"{self.files[f].rsplit('/', 1)[-1]}#{sid}"
        f, n = self._file_line(i)
        return f"{self.files[f].rsplit('/', 1)[-1]}:{n + 1}"

    def _line(self, f: int, n: int) -> dict:
        a, b = self._spans[f][n]
        raw = self.read_range(self.files[f], a, b)
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            raise BadRecord(f"line {n + 1} of {self.files[f]}: invalid JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise BadRecord(f"line {n + 1} of {self.files[f]}: expected a JSON object")
        return obj

    def read(self, i: int) -> dict:
        if self.grouped:
            f, sid, lines = self._units[i]
            rows = [self._line(f, n) for n in lines]
            return {"rows": rows, "__key__": sid, "__resolve__": self.resolver(self.files[f])}
        f, n = self._file_line(i)
        record = self._line(f, n)
        record["__key__"] = self.key(i)
        record["__resolve__"] = self.resolver(self.files[f])
        return record
