"""slurm.conf for a throwaway test cluster on loopback (Debian slurm-wlm 22.05).

Every path is under the cluster's own folder and every port is chosen free, so two clusters (two
tests, two CI runs, two helpers) can run on one host at once. Settings that matter, and why:
- AuthInfo cred_expire=10: a requeued job may not restart before its credential expires (120 s by
  default, which would make every requeue test wait two minutes).
- Scheduler intervals of 0-2 s: jobs start within a second or two of submission.
- Preemption by partition priority, REQUEUE, with preempt_send_user_signal: a job submitted with
  --signal=USR2@N gets USR2 (not SIGTERM) when preempted, the way submitit expects.
- proctrack/linuxproc + task/none: no cgroups, which a container does not delegate.
- DefMemPerCPU: without it a job asks for the whole node's memory, and no two jobs share a node.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class NodeSpec:
    """One slurmd: its NodeName and its own SlurmdPort."""

    name: str
    port: int


@dataclass(frozen=True)
class ClusterLayout:
    """What render_slurm_conf needs: the folder, ports, nodes and sizes of one test cluster."""

    root: Path
    controller_port: int
    nodes: tuple[NodeSpec, ...]
    cpus_per_node: int = 2
    memory_mb_per_node: int = 4000
    def_mem_per_cpu_mb: int = 256
    grace_time_s: int = 10
    cred_expire_s: int = 10
    munge_socket: str | None = None
    cluster_name: str = "unigen-test"

    @property
    def conf_path(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def spool_dir(self) -> Path:
        return self.root / "spool"

    def slurmd_log(self, node: str) -> Path:
        return self.root / f"slurmd-{node}.log"

    @property
    def slurmctld_log(self) -> Path:
        return self.root / "slurmctld.log"


def render_slurm_conf(layout: ClusterLayout) -> str:
    """The full slurm.conf text for `layout`."""
    r = layout.root
    auth_info = f"cred_expire={layout.cred_expire_s}"
    if layout.munge_socket:
        auth_info = f"socket={layout.munge_socket},{auth_info}"
    # One node named localhost needs no NodeHostname; several nodes on this host must say which host
    # they run on, or slurmd -N n1 would look for a machine called n1.
    hostname = socket.gethostname()
    node_lines = []
    for node in layout.nodes:
        host = "" if node.name == "localhost" else f" NodeHostname={hostname}"
        node_lines.append(
            f"NodeName={node.name}{host} NodeAddr=127.0.0.1 Port={node.port} "
            f"CPUs={layout.cpus_per_node} RealMemory={layout.memory_mb_per_node} State=UNKNOWN")
    names = ",".join(n.name for n in layout.nodes)
    lines = [
        f"ClusterName={layout.cluster_name}",
        "SlurmctldHost=localhost(127.0.0.1)",
        f"SlurmctldPort={layout.controller_port}",
        f"SlurmdPort={layout.nodes[0].port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo={auth_info}",
        f"StateSaveLocation={layout.state_dir}",
        f"SlurmdSpoolDir={layout.spool_dir}/%n",
        f"SlurmctldPidFile={r}/slurmctld.pid",
        f"SlurmdPidFile={r}/slurmd-%n.pid",
        f"SlurmctldLogFile={layout.slurmctld_log}",
        f"SlurmdLogFile={r}/slurmd-%n.log",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "MpiDefault=none",
        "SwitchType=switch/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU_Memory",
        f"DefMemPerCPU={layout.def_mem_per_cpu_mb}",
        "SchedulerType=sched/backfill",
        "SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=2,bf_interval=2",
        "SlurmctldParameters=preempt_send_user_signal",
        "PreemptType=preempt/partition_prio",
        "PreemptMode=REQUEUE",
        "JobRequeue=1",
        "ReturnToService=2",
        # Finished jobs stay visible to `scontrol show job` (there is no accounting database).
        "MinJobAge=600",
        "KillWait=5",
        "InactiveLimit=0",
        "SlurmdTimeout=60",
        "MessageTimeout=10",
        "MailProg=/bin/true",
        f"TmpFS={r}/tmp",
        *node_lines,
        f"PartitionName=low Nodes={names} Default=YES PriorityTier=1 PreemptMode=REQUEUE "
        f"GraceTime={layout.grace_time_s} MaxTime=INFINITE State=UP",
        f"PartitionName=high Nodes={names} PriorityTier=10 PreemptMode=OFF MaxTime=INFINITE State=UP",
    ]
    return "\n".join(lines) + "\n"
