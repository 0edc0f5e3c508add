"""Which MLflow store a run tracks to, and how it is shown to people.

Resolution order (first one set wins), the same for the training runtime and the CLI:

1. an explicit ``tracking_uri`` argument (``Tracker.open(..., tracking_uri=)``);
2. ``MLFLOW_TRACKING_URI`` in the environment;
3. the recipe's ``tracking.tracking_uri``;
4. the profile's ``tracking.tracking_uri``;
5. ``sqlite:///<absolute run_root>/mlflow.db``, artifacts under ``<run_root>/mlartifacts``.

A run that already has a store recorded in its run.json keeps it for every later attempt (see
``Tracker.open``): a requeue on a node with a different environment must not split the run.

Movable runs roots: run.json records a sqlite store that lies inside the runs root relative to the run
folder (``sqlite:///../mlflow.db``, see ``recorded_uri``) and ``run_store_uri`` makes it absolute again
from wherever the folder is now, so a copied runs root tracks into its own database. The artifacts of a
local store live next to its database (``<run_root>/mlartifacts``); MLflow keeps their absolute location
in the database, which ``relocate.rebase_artifacts`` rewrites when the database has moved.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import urlsplit, urlunsplit

from unigen.orchestrator.errors import UserError
from unigen.orchestrator.secrets import register_secret

if TYPE_CHECKING:  # annotations only: the config package is imported where a recorded run is rebuilt
    from unigen.orchestrator.config.profile import ProfileTracking
    from unigen.orchestrator.config.recipe import TrackingSection

DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
# Stores the tracker knows how to talk to. Databricks and other plugin schemes would work through
# MLflow too, but nothing here tests them, so they are refused with a clear message.
# File stores (``file:``/``./mlruns``) are deprecated in MLflow 3 and refused unless
# MLFLOW_ALLOW_FILE_STORE is set, so they are not offered either.
_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql")


def default_store_uri(run_root: str | os.PathLike[str]) -> str:
    """``sqlite:///<abs run_root>/mlflow.db``: the store used when nothing names another."""
    return f"sqlite:///{Path(run_root).resolve() / DB_NAME}"


def default_artifact_root(run_root: str | os.PathLike[str]) -> Path:
    """Where a local (sqlite) store keeps run artifacts: ``<run_root>/mlartifacts``."""
    return Path(run_root).resolve() / ARTIFACTS_DIR


def resolve_tracking_uri(explicit: str | None = None, *, recipe: TrackingSection | None = None,
                         profile: ProfileTracking | None = None,
                         run_root: str | os.PathLike[str] | None = None,
                         env: Mapping[str, str] | None = None) -> str:
    """The tracking URI for a run, by the order in this module's docstring: ``recipe`` and ``profile`` are
    the ``tracking`` sections of the typed recipe and profile (None: that level names no store).

    Raises ``UserError`` naming the setting when the chosen URI has a scheme the tracker does not
    support, or when no store is named and no ``run_root`` is given to place the default one.
    """
    env = os.environ if env is None else env
    candidates = (
        ("the tracking_uri argument", explicit),
        ("MLFLOW_TRACKING_URI", env.get("MLFLOW_TRACKING_URI")),
        ("the recipe's tracking.tracking_uri", recipe.tracking_uri if recipe else None),
        ("the profile's tracking.tracking_uri", profile.tracking_uri if profile else None),
    )
    for source, uri in candidates:
        if uri:
            return check_uri(str(uri), source)
    if run_root is None:
        raise UserError("no MLflow store named (MLFLOW_TRACKING_URI, recipe tracking.tracking_uri, profile "
                        "tracking.tracking_uri) and no run root to place the default sqlite store: pass --run-root")
    return default_store_uri(run_root)


def run_tracking_uri(record: Mapping[str, Any], explicit: str | None, run_root: str | os.PathLike[str],
                     run_dir: str | os.PathLike[str] | None = None) -> str:
    """The store of an existing run: ``explicit``, else the one its run.json records (so every
    attempt and every CLI command uses the store the run started in; see ``run_store_uri``), else
    ``resolve_tracking_uri``. ``run_dir`` (default ``run_root/<run id>``) is the run's folder now.
    A recorded URI whose password was masked is not usable: the environment must supply it then."""
    if explicit:
        return check_uri(explicit, "the tracking_uri argument")
    folder = Path(run_dir) if run_dir is not None else Path(run_root) / str(record.get("run_id") or "")
    recorded = run_store_uri(record, folder)
    if recorded and "***" not in recorded:
        return check_uri(recorded, "run.json mlflow.tracking_uri")
    from unigen.orchestrator.config.recorded import recorded_profile, recorded_recipe

    return resolve_tracking_uri(None, recipe=recorded_recipe(record).tracking,
                                profile=recorded_profile(record).tracking, run_root=run_root)


def recorded_uri(uri: str | None, run_dir: str | os.PathLike[str]) -> str | None:
    """How run.json stores the tracking URI ``uri`` of the run in ``run_dir``: a sqlite database inside the
    runs root relative to the run folder (``sqlite:///../mlflow.db``), so a copied runs root keeps using
    its own copy; any other URI as it is (passwords masked: ``display_uri``)."""
    if not uri:
        return uri
    db = sqlite_path(uri)
    if db is None or not db.is_absolute():
        return display_uri(uri)
    folder = Path(run_dir).resolve()
    if db.resolve().is_relative_to(folder.parent):
        return f"sqlite:///{Path(os.path.relpath(db.resolve(), folder)).as_posix()}"
    return uri


def run_store_uri(record: Mapping[str, Any], run_dir: str | os.PathLike[str]) -> str | None:
    """run.json's tracking URI as a usable one for the run folder ``run_dir`` where it is now.

    ``sqlite:///<relative path>``: relative to the run folder (``recorded_uri``). An absolute sqlite path
    (run.json written before runs roots were movable) is kept, unless it is the default store of the
    runs root this run came from, i.e. its folder holds (or held) this run: then this runs root's own
    ``mlflow.db`` is used when it exists. Other URIs unchanged; None when none is recorded."""
    uri = (record.get("mlflow") or {}).get("tracking_uri")
    db = sqlite_path(uri) if uri else None
    if db is None:
        return uri
    folder = Path(run_dir)
    if not db.is_absolute():
        return f"sqlite:///{(folder / db).resolve()}"
    here = folder.resolve().parent / DB_NAME
    came_from = db.parent
    if db.name == DB_NAME and here.is_file() and came_from != here.parent and (
            not came_from.is_dir() or (came_from / str(record.get("run_id") or folder.name)).is_dir()):
        return f"sqlite:///{here}"
    return uri


def check_uri(uri: str, source: str = "the tracking URI") -> str:
    """``uri`` itself when its scheme is supported; a plain path to a ``.db`` file becomes a
    ``sqlite:///`` URI."""
    scheme = urlsplit(uri).scheme.lower()
    if not scheme:
        if uri.endswith(".db"):
            return f"sqlite:///{Path(uri).resolve()}"
        raise UserError(f"{source} is {uri!r}: give a URI (http://host:5000, sqlite:///abs/path/mlflow.db) "
                        "or a path ending in .db")
    base = scheme.split("+", 1)[0]  # postgresql+psycopg2://, mysql+pymysql://
    if base not in _SCHEMES:
        raise UserError(f"{source} is {display_uri(uri)!r}: scheme {scheme!r} is not supported; use one of "
                        f"{', '.join(s + '://' for s in _SCHEMES)}")
    if base in ("http", "https"):
        register_secret(urlsplit(uri).password)
    return uri


def display_uri(uri: str | None) -> str:
    """``uri`` with any password in its user-info replaced by ``***``: safe for logs and run.json."""
    if not uri:
        return ""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}" if parts.username else f"***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def is_remote(uri: str) -> bool:
    """True for a tracking server reached over HTTP(S) (it may be down; a local file never is)."""
    return urlsplit(uri).scheme.lower() in ("http", "https")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    if not uri.lower().startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):] or ".")


def artifact_location(uri: str) -> str | None:
    """Artifact root for experiments created in a local store: ``mlartifacts`` next to the sqlite
    database (for the default store that is ``<run_root>/mlartifacts``). A server decides its own."""
    db = sqlite_path(uri)
    return None if db is None else (db.resolve().parent / ARTIFACTS_DIR).as_uri()


def resolve_experiment(explicit: str | None, tracking: TrackingSection) -> str:
    """Experiment name: the argument, else the recipe's ``tracking.experiment`` (which has its default)."""
    name = explicit or tracking.experiment
    if not re.fullmatch(r"[^\x00-\x1f]{1,500}", str(name)):
        raise UserError(f"tracking.experiment {name!r} is not a usable MLflow experiment name: use 1-500 "
                        "printable characters")
    return str(name)
