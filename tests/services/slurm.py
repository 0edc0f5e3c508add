"""A real SLURM cluster (munged + slurmctld + one or two slurmd) on loopback, for tests and debugging.

    with SlurmCluster(nodes=1) as cluster:
        job = cluster.sbatch(script_path, ["--ntasks=2"], args=["out_dir"])
        cluster.wait_job(job)

Pass `cluster.env` (SLURM_CONF) to every subprocess that talks to the cluster (sbatch, srun,
submitit), or `cluster.environ()` for a full environment. Everything lives in a short private folder
under /tmp (unix socket paths are limited to 108 bytes), daemons are stopped by pid, jobs by id.

By hand: `python -m tests.services.slurm [--nodes 2]` starts one and prints the `export` line.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tests.services.munge import Munge
from tests.services.ports import free_ports
from tests.services.procs import (
    Daemon,
    ServiceError,
    find_pids,
    serve_until_stopped,
    start_daemon,
    stop_pids,
    wait_until,
)
from tests.services.slurm_conf import ClusterLayout, NodeSpec, render_slurm_conf

MARKER = "UNIGEN_TEST_SLURM"  # set in the daemons' environment: how leftovers are found
FAILED_STATES = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                 "DEADLINE"}
_KEY = re.compile(r"(?:^| )([A-Za-z][A-Za-z0-9_:/]*)=")


def _sbin(name: str) -> str:
    found = shutil.which(name) or f"/usr/sbin/{name}"
    if not Path(found).exists():
        raise ServiceError(f"{name} not found: apt-get install --no-install-recommends slurmctld "
                           "slurmd slurm-client munge")
    return found


def parse_scontrol_record(line: str) -> dict[str, str]:
    """`scontrol show job -o` prints `Key=value Key=value ...`, values may hold spaces (Command,
    Reason): split at each ` Key=` instead of at every space."""
    text = line.strip()
    keys = list(_KEY.finditer(text))
    out: dict[str, str] = {}
    for i, m in enumerate(keys):
        end = keys[i + 1].start() if i + 1 < len(keys) else len(text)
        out[m.group(1)] = text[m.end():end].strip()
    return out


class SlurmCluster:
    """A throwaway SLURM cluster. `nodes=1`: one slurmd named localhost; `nodes=2`: n1 and n2 on
    this host (a real two-node allocation). Partitions: `low` (default, preemptible by requeue, with
    GraceTime) and `high` (PriorityTier 10, preempts `low`). CPUs and memory are per node."""

    def __init__(self, nodes: int = 1, cpus_per_node: int = 2, memory_mb_per_node: int = 4000,
                 grace_time_s: int = 10, cred_expire_s: int = 10, munge: str = "auto",
                 keep: bool = False, start_timeout: float = 30.0):
        if nodes not in (1, 2):
            raise ValueError(f"SlurmCluster nodes must be 1 or 2, got {nodes}")
        if munge not in ("auto", "own", "system"):
            raise ValueError(f"SlurmCluster munge mode must be auto, own or system, got {munge!r}")
        self.node_count = nodes
        self.cpus_per_node = cpus_per_node
        self.memory_mb_per_node = memory_mb_per_node
        self.grace_time_s = grace_time_s
        self.cred_expire_s = cred_expire_s
        self.munge_mode = munge
        self.keep = keep
        self.start_timeout = start_timeout
        self.root: Path | None = None
        self.layout: ClusterLayout | None = None
        self.munge: Munge | None = None
        self.slurmctld: Daemon | None = None
        self.slurmds: list[Daemon] = []
        self.last_logs = ""

    # ----- lifecycle -------------------------------------------------------------------------------
    def start(self) -> "SlurmCluster":
        """Start munged (if needed), slurmctld and the slurmd(s); return when every node is idle."""
        self.root = Path(tempfile.mkdtemp(prefix="usl-", dir="/tmp"))
        self.root.chmod(0o711)  # a private munged (user munge) must reach its folder inside
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        assert self.root is not None
        self.munge = Munge(self.root / "munge", self.munge_mode).start()
        ports = free_ports(1 + self.node_count)
        names = ["localhost"] if self.node_count == 1 else ["n1", "n2"]
        self.layout = ClusterLayout(
            root=self.root, controller_port=ports[0],
            nodes=tuple(NodeSpec(n, p) for n, p in zip(names, ports[1:], strict=True)),
            cpus_per_node=self.cpus_per_node, memory_mb_per_node=self.memory_mb_per_node,
            grace_time_s=self.grace_time_s, cred_expire_s=self.cred_expire_s,
            munge_socket=self.munge.socket)
        # slurmd does not create its spool folder (its step sockets live there).
        for d in (self.layout.state_dir, self.root / "tmp",
                  *(self.layout.spool_dir / n.name for n in self.layout.nodes)):
            d.mkdir(parents=True)
        self.layout.conf_path.write_text(render_slurm_conf(self.layout))

        daemon_env = {**self.environ(), MARKER: str(self.root)}
        conf = str(self.layout.conf_path)
        self.slurmctld = start_daemon("slurmctld", [_sbin("slurmctld"), "-D", "-i", "-f", conf],
                                      self.root / "slurmctld.out", env=daemon_env, cwd=self.root)
        self.slurmctld.extra_logs.append(self.layout.slurmctld_log)
        self.slurmctld.wait_ready(self._controller_up, self.start_timeout, "answering scontrol ping",
                                  more_logs=self._munge_logs())
        for node in self.layout.nodes:
            d = start_daemon(f"slurmd {node.name}", [_sbin("slurmd"), "-D", "-N", node.name, "-f", conf],
                             self.root / f"slurmd-{node.name}.out", env=daemon_env, cwd=self.root)
            d.extra_logs.append(self.layout.slurmd_log(node.name))
            self.slurmds.append(d)
        for d in self.slurmds:
            d.wait_ready(self.nodes_idle, self.start_timeout, "idle (sinfo)",
                         more_logs=[self.layout.slurmctld_log])

    def stop(self) -> None:
        """Cancel this cluster's jobs (by id), stop every daemon by pid, kill leftovers that carry
        this cluster's marker, and remove the folder (kept when `keep`). Safe to call twice."""
        if self.root is None:
            return
        if self.slurmctld is not None and self.slurmctld.alive():
            try:
                self.cancel_all(wait_s=15)
            except (ServiceError, subprocess.SubprocessError):
                pass  # a broken controller: the pid sweep below still cleans up
        self.last_logs = self.logs()
        for d in self.slurmds:
            d.stop()
        if self.slurmctld is not None:
            self.slurmctld.stop()
        self._sweep_leftovers()
        if self.munge is not None:
            self.munge.stop()
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)
        self.root = self.layout = None
        self.slurmds, self.slurmctld, self.munge = [], None, None

    def _sweep_leftovers(self) -> None:
        # slurmstepd and job processes outlive a killed slurmd. The daemons' descendants carry MARKER;
        # job tasks carry the submitter's SLURM_CONF (ours) plus a SLURM_JOB_ID.
        pids = set(find_pids(env_marker={MARKER: str(self.root)}, cwd_under=self.root))
        if self.layout is not None:
            for pid in find_pids(env_marker={"SLURM_CONF": str(self.layout.conf_path)}):
                if _has_env_key(pid, "SLURM_JOB_ID"):
                    pids.add(pid)
        if pids:
            stop_pids(sorted(pids), timeout=5)

    def __enter__(self) -> "SlurmCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ----- environment and commands ----------------------------------------------------------------
    @property
    def conf_path(self) -> Path:
        if self.layout is None:
            raise ServiceError("SlurmCluster is not started")
        return self.layout.conf_path

    @property
    def env(self) -> dict[str, str]:
        """Variables a subprocess needs to use this cluster."""
        return {"SLURM_CONF": str(self.conf_path)}

    def environ(self, **extra: str) -> dict[str, str]:
        """os.environ without inherited SLURM_* job variables (a test run inside a SLURM job must not
        leak its own job into ours), plus `env` and `extra`."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
        return {**base, **self.env, **extra}

    @property
    def node_names(self) -> list[str]:
        assert self.layout is not None
        return [n.name for n in self.layout.nodes]

    def run(self, *argv: str, timeout: float = 30.0, check: bool = True) -> subprocess.CompletedProcess:
        """Run a SLURM client command (sbatch, scontrol, ...) against this cluster."""
        proc = subprocess.run(list(argv), env=self.environ(), capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise ServiceError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}\n"
                               + self.logs(15))
        return proc

    def sbatch(self, script: Path | str, options: Sequence[str] = (), args: Sequence[str] = ()) -> int:
        """Submit a batch script file: `sbatch --parsable OPTIONS SCRIPT ARGS`; return the job id."""
        out = self.run("sbatch", "--parsable", *options, str(script), *args).stdout.strip()
        return int(out.split(";")[0])

    def job(self, job_id: int) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, Restarts, NodeList, Reason, ...)."""
        out = self.run("scontrol", "show", "job", "-o", str(job_id)).stdout
        return parse_scontrol_record(out.splitlines()[0])

    def job_ids(self) -> list[int]:
        """Ids of every job this cluster's controller still holds."""
        out = self.run("squeue", "-h", "-a", "-o", "%A").stdout
        return [int(x) for x in out.split()]

    def wait_job(self, job_id: int, states: set[str] | frozenset[str] = frozenset({"COMPLETED"}),
                 timeout: float = 60.0) -> dict[str, str]:
        """Wait until the job reaches one of `states`; raise ServiceError (with the job record and the
        daemons' logs) on timeout or when it ends FAILED/CANCELLED/TIMEOUT/... instead."""
        deadline = time.monotonic() + timeout
        info: dict[str, str] = {}
        while time.monotonic() < deadline:
            info = self.job(job_id)
            state = info.get("JobState", "")
            if state in states:
                return info
            if state in FAILED_STATES:
                raise ServiceError(f"job {job_id} ended {state}, wanted {sorted(states)}: {info}\n"
                                   + self.logs(20))
            time.sleep(0.5)
        raise ServiceError(f"job {job_id} not in {sorted(states)} after {timeout:.0f} s: {info}\n"
                           + self.logs(20))

    def cancel(self, job_id: int) -> None:
        self.run("scancel", str(job_id), check=False)

    def cancel_all(self, wait_s: float = 15.0) -> None:
        """Cancel every job of this cluster by id and wait until none is running any more."""
        ids = self.job_ids()
        for job_id in ids:
            self.cancel(job_id)
        if ids:
            wait_until(lambda: not self.run("squeue", "-h", "-t", "R,CG,S", "-o", "%A").stdout.split(),
                       wait_s, interval=0.5)

    def _controller_up(self) -> bool:
        return "UP" in self.run("scontrol", "ping", timeout=10, check=False).stdout

    def nodes_idle(self) -> bool:
        """True when every node reports idle."""
        out = self.run("sinfo", "-h", "-N", "-o", "%N|%T", timeout=10, check=False).stdout
        states = {}
        for line in out.split():
            name, _, state = line.partition("|")
            states[name] = state
        return set(states) == set(self.node_names) and all(s == "idle" for s in states.values())

    # ----- diagnostics -----------------------------------------------------------------------------
    def _munge_logs(self) -> list[Path]:
        return self.munge.log_paths if self.munge else []

    def logs(self, lines: int = 40) -> str:
        """Tails of every daemon log of this cluster, for failure messages."""
        if self.root is None:
            return self.last_logs
        daemons = [d for d in (self.munge.daemon if self.munge else None, self.slurmctld, *self.slurmds) if d]
        return "\n".join(d.logs(lines) for d in daemons)


def _has_env_key(pid: int, key: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return any(item.startswith(key.encode() + b"=") for item in f.read().split(b"\0"))
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    """Start a cluster for debugging by hand, print the environment to export, stop on Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m tests.services.slurm", description=main.__doc__)
    parser.add_argument("--nodes", type=int, choices=(1, 2), default=1)
    parser.add_argument("--munge", choices=("auto", "own", "system"), default="auto")
    parser.add_argument("--keep", action="store_true", help="keep the cluster folder after stopping")
    args = parser.parse_args(argv)
    with SlurmCluster(nodes=args.nodes, munge=args.munge, keep=args.keep) as cluster:
        print(f"export SLURM_CONF={cluster.conf_path}")
        print(f"# folder {cluster.root}  nodes {' '.join(cluster.node_names)}  partitions low, high")
        serve_until_stopped("# Ctrl-C (or SIGTERM to this pid) stops every daemon and removes the folder")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
