"""Start, watch and stop the daemons that tests run (munged, slurmctld, slurmd, ray).

Rules these helpers keep, because other helpers and CI runs share the machine and run the same
daemons: every daemon gets its own session (process group), is stopped by its pid (SIGTERM, then
SIGKILL), and leftovers are found by a marker only our processes carry (an environment variable, a
private path in the command line, or a working directory inside a private folder), never by a
process name.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path


class ServiceError(RuntimeError):
    """A test service did not start, answer or stop. The message carries the daemons' log tails."""


def log_tail(path: Path | str, lines: int = 40) -> str:
    """The last `lines` lines of a log file, or a note that it does not exist (yet)."""
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"--- {path}: (no log file)"
    tail = text.splitlines()[-lines:]
    return f"--- {path} (last {len(tail)} lines)\n" + "\n".join(tail)


def logs_report(paths: Iterable[Path | str], lines: int = 40) -> str:
    """Tails of several logs, one block each, for failure messages."""
    return "\n".join(log_tail(p, lines) for p in paths)


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a zombie holds no resources and ignores signals)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # The state letter follows the command name, which is in parentheses and may hold spaces.
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != b"Z"


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Poll `check` until it returns True (-> True) or `timeout` seconds pass (-> False).
    Exceptions from `check` count as "not yet": services refuse connections while starting."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return True
        except Exception:  # noqa: BLE001 - a starting service fails in many ways; keep polling
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def serve_until_stopped(announce: str) -> None:
    """Print ``announce``, then block until Ctrl-C or SIGTERM: the run-by-hand mains of the services, whose
    `with` block then stops the daemons by pid. The handler is in place before the announcement, so a SIGTERM
    sent as soon as it is read cannot kill the process past its `with` block (and leave daemons running)."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    print(announce, flush=True)
    try:
        while not stop:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass


def stop_pids(pids: Iterable[int], timeout: float = 10.0) -> list[int]:
    """SIGTERM every pid, wait up to `timeout` s, SIGKILL the ones still alive. Returns the pids that
    needed SIGKILL. Never signals our own process."""
    pids = [p for p in pids if p != os.getpid()]
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    wait_until(lambda: not any(pid_alive(p) for p in pids), timeout, interval=0.1)
    killed = [p for p in pids if pid_alive(p)]
    for pid in killed:
        _signal(pid, signal.SIGKILL)
    wait_until(lambda: not any(pid_alive(p) for p in killed), 5.0, interval=0.05)
    return killed


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _own_lineage() -> set[int]:
    """Our pid and all our ancestors: a marker sweep must never hit the test runner itself."""
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                pid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def find_pids(env_marker: Mapping[str, str] | None = None, cmdline_contains: str | None = None,
              cwd_under: str | Path | None = None) -> list[int]:
    """Pids of live processes that match ANY of: all `env_marker` variables with exactly these values
    in their environment; `cmdline_contains` in their command line; a working directory inside
    `cwd_under`. Our own process and its ancestors are never returned.

    Why three markers: a process that rewrites its title (Ray's agents and workers, via setproctitle)
    loses both its command line and, in /proc/<pid>/environ, the start of its environment; its
    working directory survives, and children inherit it."""
    if not env_marker and not cmdline_contains and not cwd_under:
        raise ValueError("find_pids needs a marker: it never matches every process")
    wanted = {f"{k}={v}".encode() for k, v in (env_marker or {}).items()}
    needle = cmdline_contains.encode() if cmdline_contains else None
    cwd_root = str(cwd_under).rstrip("/") if cwd_under else None
    skip = _own_lineage()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in skip:
            continue
        pid = int(entry)
        try:
            if _matches(pid, wanted, needle, cwd_root):
                found.append(pid)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # gone meanwhile, or not ours to read
    return [p for p in found if pid_alive(p)]


def _matches(pid: int, wanted: set[bytes], needle: bytes | None, cwd_root: str | None) -> bool:
    if needle is not None:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if needle in f.read():
                return True
    if cwd_root is not None:
        cwd = os.readlink(f"/proc/{pid}/cwd").removesuffix(" (deleted)")
        if cwd == cwd_root or cwd.startswith(cwd_root + "/"):
            return True
    if wanted:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return wanted <= set(f.read().split(b"\0"))
    return False


@dataclass
class Daemon:
    """One daemon we started in the foreground (so its pid is the Popen pid), in its own session,
    its stdout and stderr appended to `log_path`."""

    name: str
    proc: subprocess.Popen
    log_path: Path
    extra_logs: list[Path] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def logs(self, lines: int = 40) -> str:
        """Tail of the daemon's own log files (`extra_logs`) where they exist, else of its captured
        output: a daemon in the foreground writes the same lines to both, but errors from before
        its log file opens (a bad config line) only to its output."""
        existing = [p for p in self.extra_logs if p.exists()]
        return logs_report(existing or [self.log_path], lines)

    def wait_ready(self, check: Callable[[], bool], timeout: float, what: str,
                   more_logs: Iterable[Path] = ()) -> None:
        """Wait until `check()` is true (exceptions count as "not yet"). Raises ServiceError at once
        if the daemon exits meanwhile, or after `timeout` s, with the log tails in the message."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise ServiceError(
                    f"{self.name} (pid {self.pid}) exited with code {self.proc.returncode} before "
                    f"{what}\n" + self.logs() + "\n" + logs_report(more_logs))
            if wait_until(check, 0):
                return
            if time.monotonic() >= deadline:
                raise ServiceError(f"{self.name} (pid {self.pid}) not {what} after {timeout:.0f} s\n"
                                   + self.logs() + "\n" + logs_report(more_logs))
            time.sleep(0.2)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` s; reaps the process. Safe to call twice."""
        if self.alive():
            stop_pids([self.pid], timeout)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL did not take: kernel trouble
            raise ServiceError(f"{self.name} (pid {self.pid}) survived SIGKILL") from None


def start_daemon(name: str, argv: list[str], log_path: Path, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None, user: str | None = None) -> Daemon:
    """Start `argv` (which must stay in the foreground) in a new session, output to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env=dict(env) if env is not None else None, cwd=cwd,
                                    start_new_session=True, user=user)
        except FileNotFoundError as e:
            raise ServiceError(f"cannot start {name}: {argv[0]} not found ({e}); is its package "
                               "installed? (see runbooks/test-clusters.md)") from None
    return Daemon(name=name, proc=proc, log_path=log_path)
