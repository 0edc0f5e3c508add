"""Fast checks of the service helpers' pure parts and of stop-by-pid (real processes, no daemons)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.services.ports import free_port_block, free_ports, is_port_free, listening_sockets
from tests.services.procs import ServiceError, find_pids, log_tail, pid_alive, start_daemon, stop_pids
from tests.services.slurm import parse_scontrol_record
from tests.services.slurm_conf import ClusterLayout, NodeSpec, render_slurm_conf


def test_free_ports_are_distinct_and_bindable():
    ports = free_ports(5)
    assert len(set(ports)) == 5
    assert all(is_port_free(p) for p in ports)
    with pytest.raises(ValueError, match="count must be >= 1"):
        free_ports(0)


def test_free_port_block_is_free_and_below_the_ephemeral_range():
    start = free_port_block(16)
    assert 20000 <= start and start + 16 <= 30000
    assert all(is_port_free(p) for p in range(start, start + 16))


def test_listening_sockets_sees_our_own_listener_with_its_address():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert ("127.0.0.1", port, os.getpid()) in listening_sockets([os.getpid()])
    assert all(p != port for _, p, _ in listening_sockets([os.getpid()]))


def test_scontrol_record_values_may_hold_spaces():
    line = ("JobId=7 JobName=a b UserId=root(0) JobState=PENDING Reason=Dependency "
            "Command=/x/run.sh --flag value WorkDir=/tmp/w d Restarts=1")
    rec = parse_scontrol_record(line)
    assert rec["JobName"] == "a b"
    assert rec["Command"] == "/x/run.sh --flag value"
    assert rec["WorkDir"] == "/tmp/w d"
    assert (rec["JobState"], rec["Reason"], rec["Restarts"]) == ("PENDING", "Dependency", "1")


def test_slurm_conf_for_two_nodes(tmp_path):
    layout = ClusterLayout(root=tmp_path, controller_port=7001,
                           nodes=(NodeSpec("n1", 7002), NodeSpec("n2", 7003)), munge_socket="/m/s")
    conf = render_slurm_conf(layout)
    assert "SlurmctldPort=7001" in conf
    assert "AuthInfo=socket=/m/s,cred_expire=10" in conf
    assert f"NodeName=n1 NodeHostname={socket.gethostname()} NodeAddr=127.0.0.1 Port=7002" in conf
    assert "NodeName=n2" in conf and "Port=7003" in conf
    assert f"SlurmdSpoolDir={tmp_path}/spool/%n" in conf
    assert "PartitionName=low Nodes=n1,n2 Default=YES PriorityTier=1 PreemptMode=REQUEUE GraceTime=10" in conf
    assert "PartitionName=high Nodes=n1,n2 PriorityTier=10" in conf
    assert "SlurmctldParameters=preempt_send_user_signal" in conf


def test_slurm_conf_single_node_uses_the_system_munge_when_told(tmp_path):
    layout = ClusterLayout(root=tmp_path, controller_port=1, nodes=(NodeSpec("localhost", 2),))
    conf = render_slurm_conf(layout)
    assert "AuthInfo=cred_expire=10\n" in conf
    assert "NodeName=localhost NodeAddr=127.0.0.1 Port=2" in conf


def test_find_pids_needs_a_marker_and_never_returns_ourselves():
    with pytest.raises(ValueError, match="needs a marker"):
        find_pids()
    assert os.getpid() not in find_pids(cmdline_contains="python")


def test_stop_pids_escalates_to_sigkill_for_a_process_that_ignores_sigterm(tmp_path):
    marker = f"UNIGEN_UNIT_{uuid.uuid4().hex}"
    code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('up', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, marker: "1"},
                            stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout.readline().strip() == b"up"
    assert find_pids(env_marker={marker: "1"}) == [proc.pid]
    assert stop_pids([proc.pid], timeout=0.5) == [proc.pid]  # needed SIGKILL
    assert proc.wait(5) == -signal.SIGKILL
    assert not pid_alive(proc.pid)


def test_serve_until_stopped_returns_on_sigterm_so_the_with_block_can_stop_the_daemons():
    code = "from tests.services.procs import serve_until_stopped; serve_until_stopped('up'); print('returned', flush=True)"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[3],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "up"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0 and proc.stdout.read().strip() == "returned"
    finally:
        stop_pids([proc.pid], timeout=1)


def test_daemon_that_dies_reports_its_log_tail(tmp_path):
    code = "print('boom: bad config line 3'); raise SystemExit(2)"
    daemon = start_daemon("failing", [sys.executable, "-c", code], tmp_path / "failing.log")
    with pytest.raises(ServiceError, match=r"(?s)exited with code 2 before ready.*boom: bad config line 3"):
        daemon.wait_ready(lambda: False, timeout=10, what="ready")


def test_daemon_not_ready_in_time_is_stopped_by_pid(tmp_path):
    daemon = start_daemon("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"],
                          tmp_path / "s.log")
    with pytest.raises(ServiceError, match="not answering after 1 s"):
        daemon.wait_ready(lambda: False, timeout=1, what="answering")
    daemon.stop(timeout=2)
    assert not daemon.alive()


def test_missing_binary_names_the_install(tmp_path):
    with pytest.raises(ServiceError, match="not found"):
        start_daemon("nothing", ["/nonexistent/daemon"], tmp_path / "n.log")
    assert "no log file" in log_tail(Path(tmp_path / "absent.log"))
