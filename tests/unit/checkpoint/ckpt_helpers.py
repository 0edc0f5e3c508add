"""Shared helpers for the checkpoint tests: dummy rank files, 2-process gloo launches."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

WORKER = Path(__file__).with_name("gloo_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def writer(files: dict[str, bytes]):
    """A write_fn that writes ``files`` (relative path -> bytes) and returns their paths."""
    def write(step_dir: Path) -> list[str]:
        for rel, data in files.items():
            p = step_dir / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        return list(files)
    return write


def payload(step: int, n: int = 3, size: int = 2000) -> dict[str, bytes]:
    return {f"shard{i}.bin" if i else "model/weights.bin": os.urandom(size) + bytes([step % 256]) for i in range(n)}


class Ranks:
    """Two (or more) gloo ranks of gloo_worker.py running as real processes."""

    def __init__(self, scenario: str, run_dir: Path, world: int = 2):
        self.outs = [run_dir / f"rank{r}.json" for r in range(world)]
        port = free_port()
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        self.procs = [subprocess.Popen([sys.executable, str(WORKER), scenario, str(r), str(world), str(port),
                                        str(run_dir), str(self.outs[r])], env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                      for r in range(world)]

    def signal(self, rank: int, sig: int = signal.SIGTERM) -> None:
        self.procs[rank].send_signal(sig)

    def wait(self, timeout: float = 120) -> list[tuple[int, dict | None, str]]:
        deadline = time.monotonic() + timeout
        results = []
        try:
            for proc, out in zip(self.procs, self.outs):
                text, _ = proc.communicate(timeout=max(1, deadline - time.monotonic()))
                report = json.loads(out.read_text()) if out.exists() else None
                results.append((proc.returncode, report, text))
        finally:
            for proc in self.procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        return results


# -- a path filesystem with injectable faults, registered as "faultfs://" ---------------------------
def _fault_fs_class():
    from fsspec.implementations.local import LocalFileSystem

    class FaultFS(LocalFileSystem):
        """A local path store whose next writes can hang (a stalled network) or fail (an outage)."""

        protocol = ("faultfs",)
        stall_puts = 0  # the next N uploads hang until released (or for 30 s)
        fail_puts = 0  # the next N uploads raise OSError
        release = None  # threading.Event set by tests to un-hang

        @classmethod
        def _strip_protocol(cls, path):
            path = path[len("faultfs://"):] if str(path).startswith("faultfs://") else path
            return super()._strip_protocol(path)

        def open(self, path, mode="rb", **kw):
            if "w" in mode and ".partial-" in str(path):
                cls = type(self)
                if cls.fail_puts > 0:
                    cls.fail_puts -= 1
                    raise OSError("injected outage")
                if cls.stall_puts > 0:
                    cls.stall_puts -= 1
                    cls.release.wait(30)
                    raise OSError("stalled write finally gave up")
            return super().open(path, mode, **kw)

    return FaultFS


def fault_fs():
    """The FaultFS class, registered with fsspec and reset."""
    import threading

    import fsspec

    cls = getattr(fault_fs, "_cls", None)
    if cls is None:
        cls = fault_fs._cls = _fault_fs_class()
        fsspec.register_implementation("faultfs", cls, clobber=True)
    cls.stall_puts = cls.fail_puts = 0
    cls.release = threading.Event()
    return cls
