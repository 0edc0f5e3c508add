"""A source whose rows need columns from a second table: ``options.join``.

OmniEdit-GoT publishes only the reasoning (``omni_edit_id``, ``got``, ``coord``); the images and the
instructions stay in OmniEdit-Filtered-1.2M, keyed by the same ``omni_edit_id`` (a published
OmniEdit-GoT loader joins them the same way). ``options.join = {uri, format, key}`` reads the source's
rows and, for each, the row of the joined table with the same ``key`` value; the record is the joined
row updated with the source's own columns, so an adapter sees one flat record. A row with no partner is
a bad record naming the key.

The joined table's keys are read once per file (the ``key`` column alone) and cached like any index;
in memory they are one sorted numpy byte-string array per source (1.2M ids of 20 characters: ~24 MB
per process), not a dict of Python strings (~150 MB in every DataLoader worker of every rank).
"""
from __future__ import annotations

import json

from unigen.model.data import fs
from unigen.model.data.errors import BadRecord, DataError

JOIN_KEYS = {"uri", "format", "key"}
JOIN_FORMATS = ("parquet", "jsonl")


def check_join(join, where: str) -> None:
    """DataError naming ``where.options.join`` unless it is ``{uri, format, key}`` with a readable format."""
    if (not isinstance(join, dict) or set(join) != JOIN_KEYS
            or not all(isinstance(v, str) and v for v in join.values())):
        raise DataError(f"{where}.options.join: expected {{uri: <table>, format: parquet|jsonl, "
                        f"key: <column both tables share>}}, got {join!r}")
    if join["format"] not in JOIN_FORMATS:
        raise DataError(f"{where}.options.join.format: {join['format']!r}; use one of {list(JOIN_FORMATS)}")


def _keys_of(url: str, fmt: str, column: str, storage_options) -> list:
    """The ``column`` value of every row of one file, in row order (None where a row lacks it)."""
    if fmt == "parquet":
        from unigen.model.data.readers.parquet import _open
        pf = _open(url, storage_options)
        if column not in pf.schema_arrow.names:
            raise DataError(f"join table {url}: no column {column!r} (columns: {pf.schema_arrow.names}); "
                            "fix options.join.key")
        return [None if v is None else str(v) for v in pf.read(columns=[column]).column(column).to_pylist()]
    keys = []
    for line in fs.read_bytes(url, storage_options=storage_options).split(b"\n"):
        if line.strip():
            try:
                value = json.loads(line).get(column)
            except (ValueError, AttributeError):
                value = None
            keys.append(None if value is None else str(value))
    return keys


def _file_lengths(reader) -> list[int]:
    """Rows per file of an ungrouped Parquet or JSONL reader (their row numbering is file by file)."""
    if hasattr(reader, "_rg_starts"):
        return [starts[-1] for starts in reader._rg_starts]
    return [len(spans) for spans in reader._spans]


class JoinedReader:
    """The primary reader's records, each merged with its partner row of the joined table."""

    def __init__(self, primary, joined, column: str):
        import numpy as np

        self.primary, self.joined, self.column = primary, joined, column
        self.name = primary.name
        keys, rows, start = [], [], 0
        for url, n in zip(joined.files, _file_lengths(joined)):
            file_keys = joined.index("join-keys", url, lambda u=url: _keys_of(u, joined.source.format, column,
                                                                               joined.storage_options), extra=column)
            if len(file_keys) != n:
                raise DataError(f"source {self.name}: join table {url} has {len(file_keys)} keys for {n} rows")
            for r, key in enumerate(file_keys):
                if key is not None:
                    keys.append(key.encode("utf-8"))
                    rows.append(start + r)
            start += n
        keys = np.array(keys, dtype=bytes)
        order = np.argsort(keys, kind="stable")
        self._keys = keys[order]
        self._rows = np.array(rows, dtype=np.int64)[order]

    # What callers read off a reader (`unigen data check`, the loader) is the primary's.
    files = property(lambda self: self.primary.files)
    source = property(lambda self: self.primary.source)
    grouped = property(lambda self: getattr(self.primary, "grouped", False))

    def __len__(self) -> int:
        return len(self.primary)

    def key(self, i: int) -> str:
        return self.primary.key(i)

    def read(self, i: int) -> dict:
        import numpy as np

        record = self.primary.read(i)
        value = record.get(self.column)
        if value is None:
            raise BadRecord(f"no join key {self.column!r} in this row (row has {sorted(record)[:12]})")
        value = str(value)
        at = int(np.searchsorted(self._keys, value.encode("utf-8")))
        if at >= len(self._keys) or self._keys[at] != value.encode("utf-8"):
            raise BadRecord(f"{self.column}={value!r} is not in the join table {self.joined.source.uri}")
        partner = self.joined.read(int(self._rows[at]))
        merged = {**partner, **{k: v for k, v in record.items() if k != "__resolve__"}}
        merged["__resolve__"] = partner.get("__resolve__", record.get("__resolve__"))
        return merged
