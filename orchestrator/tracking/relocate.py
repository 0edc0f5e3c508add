"""A local MLflow store that moved with its runs root: point its artifact locations at the new place.

A local (sqlite) store keeps its artifacts next to the database, in ``<run_root>/mlartifacts``
(``store.artifact_location``), so copying the runs root copies both. But MLflow writes each location into
the database as an absolute ``file://`` URI when the experiment is created (and derives every run's and
logged model's location from it), and it offers no call to change one. A copied store would go on reading
and writing the original's artifacts, or recreate the original folder once it is deleted.

``rebase_artifacts`` finds the experiments whose location is ``<some other folder>/mlartifacts`` (the
place this database used to sit) and rewrites that prefix, in every text column of the database, to the
folder the database is in now, in one transaction. It runs before unigen opens a local store (the tracker,
``unigen runs``, ``unigen ui``, the parent run of a submission); on a store that never moved it only reads
the experiments table. Only locations unigen itself gives (``.../mlartifacts``) are touched: an
experiment created elsewhere with another artifact root is left alone.
"""
from __future__ import annotations

import contextlib
import logging
import sqlite3
from urllib.parse import unquote, urlsplit

from unigen.orchestrator.tracking.store import ARTIFACTS_DIR, artifact_location, sqlite_path

log = logging.getLogger("unigen.tracking")
_CHECKED: set[str] = set()  # databases already checked by this process
_TEXT_TYPES = ("CHAR", "TEXT", "CLOB")  # SQL types holding strings (VARCHAR included)


def rebase_artifacts(uri: str) -> int:
    """Rewrite the artifact locations of the sqlite store ``uri`` if it moved; returns how many values
    changed (0 for a store that did not move, a missing database, or a non-sqlite URI)."""
    db = sqlite_path(uri)
    if db is None or not db.is_file():
        return 0
    key = str(db.resolve())
    if key in _CHECKED:
        return 0
    new_uri = artifact_location(uri)
    assert new_uri is not None  # a sqlite store always has one
    changed = 0
    try:
        with contextlib.closing(sqlite3.connect(db, timeout=60)) as con, con:  # one transaction, then closed
            for old_uri in _moved_from(con, new_uri):
                changed += _rewrite(con, old_uri, new_uri)
                changed += _rewrite(con, _uri_path(old_uri), _uri_path(new_uri))
    except sqlite3.Error as e:  # MLflow reports an unusable database itself, in its own words
        log.warning("MLflow store %s: could not check its artifact locations (%s)", db, e)
        return 0
    if changed:
        log.info("MLflow store %s moved: %d artifact locations now under %s", db, changed, _uri_path(new_uri))
    _CHECKED.add(key)
    return changed


def _moved_from(con: sqlite3.Connection, new_uri: str) -> list[str]:
    """The artifact roots (``file://.../mlartifacts``) this database's experiments name other than its own."""
    try:
        rows = con.execute("SELECT DISTINCT artifact_location FROM experiments").fetchall()
    except sqlite3.OperationalError:  # not an MLflow database yet (MLflow creates the tables)
        return []
    return sorted({loc for (loc,) in rows if isinstance(loc, str) and loc.startswith("file://")
                   and loc.rstrip("/").endswith("/" + ARTIFACTS_DIR) and loc.rstrip("/") != new_uri.rstrip("/")})


def _uri_path(uri: str) -> str:
    return unquote(urlsplit(uri).path).rstrip("/")


def _rewrite(con: sqlite3.Connection, old: str, new: str) -> int:
    """Replace the prefix ``old`` (followed by ``/`` or nothing) with ``new`` in every text column."""
    old, new = old.rstrip("/"), new.rstrip("/")
    changed = 0
    tables = [name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    for table in tables:
        for column in con.execute(f'PRAGMA table_info("{table}")').fetchall():
            name, kind = column[1], (column[2] or "").upper()
            if kind and not any(t in kind for t in _TEXT_TYPES):
                continue
            cursor = con.execute(
                f'UPDATE "{table}" SET "{name}" = ? || substr("{name}", ?) '
                f'WHERE substr("{name}", 1, ?) = ? AND (length("{name}") = ? OR substr("{name}", ?, 1) = \'/\')',
                (new, len(old) + 1, len(old), old, len(old), len(old) + 1))
            changed += cursor.rowcount
    return changed


def forget_checked() -> None:
    """Check every store again (tests that move a store within one process)."""
    _CHECKED.clear()
