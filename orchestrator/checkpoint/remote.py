"""The remote copy of a run's checkpoints, on any fsspec URL (s3://bucket/prefix, a shared path).

Credentials come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL,
which botocore reads itself) or from ``storage_options`` (fsspec keyword arguments; a top-level
``endpoint_url`` is moved into s3fs's ``client_kwargs``). Every secret value found in the options is
registered with :mod:`unigen.orchestrator.secrets`, so error text is scrubbed before it is logged or
reported. fsspec and s3fs are imported here only, when a remote is opened.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets as _random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unigen.orchestrator.atomic import fsync_dir
from unigen.orchestrator.checkpoint.deepspeed_tools import DS_LATEST
from unigen.orchestrator.checkpoint.errors import CheckpointError
from unigen.orchestrator.checkpoint.layout import (
    COMMIT_NAME,
    INCOMING_PREFIX,
    LATEST_NAME,
    check_relpath,
    parse_step_dir,
    resolve_inside,
    step_dir_name,
)
from unigen.orchestrator.checkpoint.transfer import FileJob, TransferPolicy, run_transfers
from unigen.orchestrator.checkpoint.verify import LocalStepView, Verdict, verify_step
from unigen.orchestrator.secrets import is_secret_key, register_secret, scrub

if TYPE_CHECKING:  # the typed profile is only an annotation here
    from unigen.orchestrator.config.profile import Profile


def _register_option_secrets(options: Any) -> None:
    if isinstance(options, dict):
        for k, v in options.items():
            if isinstance(v, str) and is_secret_key(str(k)):
                register_secret(v)
            else:
                _register_option_secrets(v)


def fs_options(uri: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """fsspec keyword arguments for ``uri`` (a copy; secrets registered for scrubbing)."""
    opts = dict(storage_options or {})
    _register_option_secrets(opts)
    if uri.startswith(("s3://", "s3a://")) and "endpoint_url" in opts:
        client_kwargs = dict(opts.pop("client_kwargs", None) or {})
        client_kwargs.setdefault("endpoint_url", opts.pop("endpoint_url"))
        opts["client_kwargs"] = client_kwargs
    return opts


class RemoteStepView:
    """A remote step folder, seen through one listing taken beforehand (sizes come from it)."""

    def __init__(self, remote: "Remote", step: int, sizes: dict[str, int]):
        self._remote, self._step, self._sizes = remote, step, sizes
        self.where = remote.url(step_dir_name(step))

    def size(self, rel: str) -> int | None:
        return self._sizes.get(check_relpath(rel))

    def read_bytes(self, rel: str) -> bytes:
        path = self._remote.path(step_dir_name(self._step), check_relpath(rel))
        return self._remote.fs.cat_file(path)

    def sha256_many(self, rels: list[str]) -> None:
        return None


@dataclass
class Listing:
    """What a remote prefix holds: {step: {relative path: size}}."""

    steps: dict[int, dict[str, int]]

    def committed(self) -> list[int]:
        return sorted(s for s, files in self.steps.items() if COMMIT_NAME in files)


class Remote:
    """One remote checkpoint prefix."""

    def __init__(self, uri: str, storage_options: dict[str, Any] | None = None,
                 policy: TransferPolicy | None = None):
        import fsspec

        self.uri = uri.rstrip("/")
        self.policy = policy or TransferPolicy()
        try:
            self.fs, root = fsspec.core.url_to_fs(self.uri, **fs_options(self.uri, storage_options))
        except (ImportError, ValueError, TypeError) as e:
            raise CheckpointError(f"checkpoint.uri {self.uri!r}: cannot open it ({scrub(str(e))})") from None
        self.root = root.rstrip("/")

    def path(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    def url(self, *parts: str) -> str:
        return "/".join((self.uri, *parts))

    def list(self) -> Listing:
        """Every object under the prefix, grouped by step folder (one recursive listing)."""
        self.fs.invalidate_cache()
        try:
            # withdirs: a path store keeps the empty folder of an upload that failed at once.
            found = self.fs.find(self.root, detail=True, withdirs=True)
        except FileNotFoundError:
            found = {}
        steps: dict[int, dict[str, int]] = {}
        prefix = self.root + "/"
        for key, info in found.items():
            key = key.rstrip("/")
            if not key.startswith(prefix):
                continue
            head, _, rest = key[len(prefix):].partition("/")
            step = parse_step_dir(head)
            if step is None:
                continue
            files = steps.setdefault(step, {})
            if rest and info.get("type") != "directory":
                files[rest] = int(info.get("size") or 0)
        return Listing(steps)

    def view(self, step: int, listing: Listing) -> RemoteStepView:
        return RemoteStepView(self, step, listing.steps.get(step, {}))

    def read_commit(self, step: int) -> bytes | None:
        try:
            return self.fs.cat_file(self.path(step_dir_name(step), COMMIT_NAME))
        except FileNotFoundError:
            return None

    def read_latest(self) -> str | None:
        try:
            return self.fs.cat_file(self.path(LATEST_NAME)).decode().strip()
        except FileNotFoundError:
            return None

    def write_latest(self, step: int) -> None:
        self.fs.pipe_file(self.path(LATEST_NAME), step_dir_name(step).encode())

    def write_deepspeed_files(self, step: int, scripts: dict[str, bytes]) -> None:
        """After LATEST: DeepSpeed's scripts, then its ``latest`` (see deepspeed_tools), so a copy of the
        prefix runs ``python zero_to_fp32.py . out`` as DeepSpeed documents it."""
        for name, data in scripts.items():
            self.fs.pipe_file(self.path(name), data)
        self.fs.pipe_file(self.path(DS_LATEST), step_dir_name(step).encode())

    def uncommit(self, step: int) -> None:
        """Remove a step's COMMIT first, so a step being replaced or deleted is never 'valid'; and
        DeepSpeed's ``latest`` before it when it names that step."""
        with contextlib.suppress(FileNotFoundError):
            if self.fs.cat_file(self.path(DS_LATEST)).decode().strip() == step_dir_name(step):
                self.fs.rm_file(self.path(DS_LATEST))
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(step_dir_name(step), COMMIT_NAME))

    def delete_step(self, step: int) -> None:
        self.uncommit(step)
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.path(step_dir_name(step)), recursive=True)

    # -- download -------------------------------------------------------------------------------
    def download(self, step: int, local_root: Path, *, on_event: Any = None) -> tuple[Path, Verdict]:
        """Fetch step-<step> into ``local_root`` and verify every sha256 before it gets its real name.

        Files land in ``.incoming-step-<N>-<hex>/`` (names checked against escape first), the folder
        is verified in full, then renamed to ``step-<N>``. On any failure the temp folder is removed
        and CheckpointError says why; a half-downloaded checkpoint is never visible under its name.
        """
        name = step_dir_name(step)
        final = local_root / name
        if final.exists():
            raise CheckpointError(f"cannot download {self.url(name)}: {final} already exists")
        tmp = local_root / f"{INCOMING_PREFIX}{name}-{_random.token_hex(4)}"
        tmp.mkdir(parents=True)
        try:
            listing = self.list()
            verdict = verify_step(self.view(step, listing), step, level="size")
            if not verdict.ok:
                raise CheckpointError(f"{self.url(name)} does not verify: {verdict.reason}")
            meta = [m["path"] for m in verdict.commit["manifests"]] + [COMMIT_NAME]
            jobs = []
            for rel in [f for f, _, _ in verdict.files] + meta:
                target = resolve_inside(tmp, rel)
                target.parent.mkdir(parents=True, exist_ok=True)
                jobs.append(FileJob("get", str(target), self.path(name, rel), label=f"{name}/{rel}"))
            # A resume must not hang on a dead remote: bounded attempts, then the next candidate.
            policy = dataclasses.replace(self.policy, max_attempts=self.policy.max_attempts or 5)
            run_transfers(self.fs, jobs, policy, on_event=on_event)
            local = verify_step(LocalStepView(tmp), step, level="sha256")
            if not local.ok:
                raise CheckpointError(f"{self.url(name)} downloaded but does not verify: {local.reason}")
            os.replace(tmp, final)
            fsync_dir(local_root)
            return final, local
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, Exception) and not isinstance(e, CheckpointError):
                raise CheckpointError(f"downloading {self.url(name)} failed: {scrub(f'{type(e).__name__}: {e}')}") \
                    from None
            raise


def storage_options_from_profile(profile: Profile) -> dict[str, Any] | None:
    """fsspec storage options for checkpoint URIs from the profile's ``storage.s3`` section. Profiles name
    the environment variables that hold credentials (``access_key_id_env``, ``secret_access_key_env``,
    ``session_token_env``), never the credentials: the values are read here, registered with the secret
    scrubber and passed to fsspec only. Without the section, s3fs falls back to the usual AWS_* variables."""
    s3 = profile.storage.s3
    if s3 is None:
        return None
    options: dict[str, Any] = {}
    client_kwargs = {k: v for k, v in (("endpoint_url", s3.endpoint_url), ("region_name", s3.region)) if v}
    for name, option in ((s3.access_key_id_env, "key"), (s3.secret_access_key_env, "secret"),
                         (s3.session_token_env, "token")):
        if name and os.environ.get(name):
            register_secret(os.environ[name])
            options[option] = os.environ[name]
    if client_kwargs:
        options["client_kwargs"] = client_kwargs
    return options or None
