"""MUNGE for the test SLURM clusters: reuse a munged that already answers, or run a private one.

A private munged gets its own socket, pid file, log, seed and KEY under a folder of ours, so it needs
nothing from /etc/munge (a fresh CI machine works whether or not the package created a key) and
never disturbs a system munged. SLURM finds it through `AuthInfo=socket=...` in slurm.conf.
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from tests.services.procs import Daemon, ServiceError, start_daemon

DEFAULT_SOCKET = "/run/munge/munge.socket.2"
MUNGE_USER = "munge"


def munge_answers(socket: str | None = None, timeout: float = 5.0) -> bool:
    """True when a munged on `socket` (default: the system one) encodes and decodes a credential."""
    sock = ["--socket", socket] if socket else []
    try:
        cred = subprocess.run(["munge", "-n", *sock], capture_output=True, timeout=timeout)
        if cred.returncode != 0:
            return False
        back = subprocess.run(["unmunge", *sock], input=cred.stdout, capture_output=True,
                              timeout=timeout)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False
    return back.returncode == 0


class Munge:
    """The munged a cluster uses. `socket` is None when the system munged (default socket) is used.

    mode: "auto" reuses a system munged that answers, else starts a private one; "own" always starts
    a private one; "system" requires the system one and fails when it does not answer.
    """

    def __init__(self, folder: Path, mode: str = "auto"):
        if mode not in ("auto", "own", "system"):
            raise ValueError(f"munge mode must be auto, own or system, got {mode!r}")
        self.folder = folder
        self.mode = mode
        self.socket: str | None = None
        self.daemon: Daemon | None = None

    def start(self, timeout: float = 15.0) -> "Munge":
        if self.mode != "own" and munge_answers():
            return self
        if self.mode == "system":
            raise ServiceError(f"no munged answers on {DEFAULT_SOCKET}: start it (runuser -u munge -- "
                               "/usr/sbin/munged) or use munge mode 'auto'/'own'")
        self._start_private(timeout)
        return self

    def _start_private(self, timeout: float) -> None:
        if shutil.which("munged") is None and not Path("/usr/sbin/munged").exists():
            raise ServiceError("munged not found: apt-get install --no-install-recommends munge")
        try:
            user = pwd.getpwnam(MUNGE_USER)
        except KeyError:
            raise ServiceError(f"user {MUNGE_USER!r} missing: the Debian munge package creates it") from None
        # munged runs as `munge`, refuses a socket folder others may write, and wants clients to be
        # able to reach the socket: munge's own folder, 0711. The parent must let munge traverse too
        # (the caller makes it 0711).
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chown(self.folder, user.pw_uid, user.pw_gid)
        self.folder.chmod(0o711)
        key = self.folder / "munge.key"
        with open(os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(os.urandom(1024))
        os.chown(key, user.pw_uid, user.pw_gid)
        self.socket = str(self.folder / "munge.sock")
        munged = shutil.which("munged") or "/usr/sbin/munged"
        argv = [munged, "--foreground", f"--socket={self.socket}", f"--key-file={key}",
                f"--pid-file={self.folder / 'munged.pid'}", f"--log-file={self.folder / 'munged.log'}",
                f"--seed-file={self.folder / 'munged.seed'}"]
        # In the foreground munged logs to its output (munged.out), not to --log-file.
        self.daemon = start_daemon("munged", argv, self.folder.parent / "munged.out", user=MUNGE_USER)
        self.daemon.wait_ready(lambda: munge_answers(self.socket), timeout, "answering on " + self.socket)

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
            self.daemon = None

    @property
    def log_paths(self) -> list[Path]:
        return [self.daemon.log_path] if self.daemon else []
