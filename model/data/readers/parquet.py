"""Parquet files with image bytes, as Hugging Face publishes InstructPix2Pix, MagicBrush, ... .

Index per file (cached): row-group sizes from the footer. With grouping (MagicBrush: ``img_id`` +
``turn_index``) the session and turn columns alone are read once to build the sessions (cached), so a
record is a whole multi-turn session: ``{"rows": [row, ...]}`` ordered by turn. Rows are read by
row group; each process keeps its last row groups in a small LRU, so neighbouring reads are cheap.
"""
from __future__ import annotations

import bisect
from collections import OrderedDict

from unigen.model.data import fs
from unigen.model.data.errors import BadRecord, DataError
from unigen.model.data.readers.base import Reader


def _open(url: str, storage_options):
    import pyarrow.parquet as pq
    fsys, path = fs.filesystem(url, storage_options)
    return pq.ParquetFile(fsys.open(path, "rb"))


def _row_groups(url: str, storage_options) -> dict:
    pf = _open(url, storage_options)
    md = pf.metadata
    return {"row_groups": [md.row_group(i).num_rows for i in range(md.num_row_groups)],
            "columns": pf.schema_arrow.names}


def _sessions(url: str, session: str, turn: str, storage_options) -> list:
    """[[session id, [[row, turn], ...]], ...] in first-appearance order, rows of one file."""
    pf = _open(url, storage_options)
    table = pf.read(columns=[session, turn])
    ids = table.column(session).to_pylist()
    turns = table.column(turn).to_pylist()
    groups: dict = {}
    for row, (sid, t) in enumerate(zip(ids, turns)):
        groups.setdefault(str(sid), []).append([row, t])
    return [[sid, sorted(rows, key=lambda r: (r[1] is None, r[1]))] for sid, rows in groups.items()]


class ParquetReader(Reader):
    extensions = (".parquet",)

    def _build(self) -> None:
        self._meta = [self.index("parquet-rg", u, lambda u=u: _row_groups(u, self.storage_options))
                      for u in self.files]
        self._rg_starts = []
        for meta in self._meta:
            starts = [0]
            for n in meta["row_groups"]:
                starts.append(starts[-1] + n)
            self._rg_starts.append(starts)
        self._lru: OrderedDict = OrderedDict()
        self._files_open: dict = {}
        self.columns = self._meta[0]["columns"]
        if self.grouping and self.grouping[0] in self.columns:
            session, turn = self.grouping
            missing = [c for c in (session, turn) if c not in self.columns]
            if missing:
                raise DataError(f"source {self.name}: grouping columns {missing} not in {self.files[0]} "
                                f"(columns: {self.columns}); map them in data.sources[].fields")
            self._units = []  # (file, session id, [rows])
            for f, url in enumerate(self.files):
                groups = self.index("parquet-sessions", url,
                                lambda u=url: _sessions(u, session, turn, self.storage_options),
                                extra=f"{session}|{turn}")
                self._units.extend((f, sid, [r for r, _ in rows]) for sid, rows in groups)
            self.grouped = True
        else:
            self._file_starts = [0]
            for starts in self._rg_starts:
                self._file_starts.append(self._file_starts[-1] + starts[-1])
            self.grouped = False
        if len(self) == 0:
            raise DataError(f"source {self.name}: {self.source.uri!r} holds no rows")

    def __len__(self) -> int:
        return len(self._units) if self.grouped else self._file_starts[-1]

    def _file_row(self, i: int) -> tuple[int, int]:
        f = bisect.bisect_right(self._file_starts, i) - 1
        return f, i - self._file_starts[f]

    def key(self, i: int) -> str:
        if self.grouped:
            f, sid, _ = self._units[i]
            return f"{self.files[f].rsplit('/', 1)[-1]}#{sid}"
        f, row = self._file_row(i)
        return f"{self.files[f].rsplit('/', 1)[-1]}#{row}"

    def read(self, i: int) -> dict:
        if self.grouped:
            f, sid, rows = self._units[i]
            return {"rows": [self._row(f, r) for r in rows], "__key__": sid,
                    "__resolve__": self.resolver(self.files[f])}
        f, row = self._file_row(i)
        record = self._row(f, row)
        record["__key__"] = self.key(i)
        record["__resolve__"] = self.resolver(self.files[f])
        return record

    def _row(self, f: int, row: int) -> dict:
        starts = self._rg_starts[f]
        rg = bisect.bisect_right(starts, row) - 1
        table = self._row_group(f, rg)
        return table.slice(row - starts[rg], 1).to_pylist()[0]

    def _row_group(self, f: int, rg: int):
        key = (f, rg)
        if key in self._lru:
            self._lru.move_to_end(key)
            return self._lru[key]
        try:
            pf = self._files_open.get(f)
            if pf is None:
                pf = self._files_open[f] = _open(self.files[f], self.storage_options)
            table = pf.read_row_group(rg)
        except FileNotFoundError:
            raise BadRecord(f"file not found: {self.files[f]}") from None
        except OSError as exc:  # truncated or unreachable file
            self._files_open.pop(f, None)
            raise BadRecord(f"{self.files[f]} row group {rg}: {exc}") from None
        self._lru[key] = table
        while len(self._lru) > 2:
            self._lru.popitem(last=False)
        return table

    def __getstate__(self):
        # Open files and cached row groups stay in the process that made them (DataLoader workers).
        state = dict(self.__dict__)
        state["_lru"] = OrderedDict()
        state["_files_open"] = {}
        return state
