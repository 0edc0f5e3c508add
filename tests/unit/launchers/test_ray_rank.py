"""The rank process an actor owns, run here without Ray: the runtime command line, the log appended
per attempt, SIGTERM to the rank only (its loader workers must survive to let it save), SIGKILL to
everything it started, and no rank left behind when its actor process dies."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from unigen.orchestrator.launchers.ray.rank import RankProcess

# Stands in for the interpreter: called as `FAKE -m unigen.orchestrator.runtime RUN_DIR`.
FAKE_PYTHON = """\
#!/bin/bash
run_dir="$3"
echo "argv: $*"
echo "env: RANK=$RANK WORLD_SIZE=$WORLD_SIZE cwd=$(pwd)"
sleep 300 &                       # a data-loader worker, in the rank's process group
echo $! > "$run_dir/loader-$RANK.pid"
trap 'echo "got TERM"; exit 75' TERM
wait
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False


def wait_for(check, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def fake_python(tmp_path: Path, body: str = FAKE_PYTHON) -> str:
    path = tmp_path / "fake python"  # a space: the command is an argv list, never a shell line
    path.write_text(body)
    path.chmod(0o755)
    return str(path)


def test_rank_log_signal_and_kill(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "logs").mkdir(parents=True)
    work = tmp_path / "submit dir"
    work.mkdir()
    python = fake_python(tmp_path)
    rank = RankProcess()
    info = rank.start(run_dir=str(run_dir), rank=1, env={"RANK": "1", "WORLD_SIZE": "2"}, cwd=str(work),
                      header="attempt 1 (ray job j) rank 1", python=python)
    assert info["cwd"] == str(work) and alive(info["pid"])
    loader_file = run_dir / "loader-1.pid"
    wait_for(loader_file.exists)
    wait_for(lambda: loader_file.read_text().strip() != "")
    loader = int(loader_file.read_text())
    assert rank.poll() is None
    assert rank.signal(signal.SIGTERM)
    wait_for(lambda: rank.poll() is not None)
    assert rank.poll() == 75
    assert alive(loader)  # SIGTERM went to the rank only
    rank.kill()
    wait_for(lambda: not alive(loader))  # SIGKILL took its whole process group
    assert rank.signal(signal.SIGTERM) is False  # ended: nothing to signal

    # A second attempt appends to the same log.
    loader_file.unlink()
    rank.start(run_dir=str(run_dir), rank=1, env={"RANK": "1", "WORLD_SIZE": "2"}, cwd=str(tmp_path / "gone"),
               header="attempt 2 (ray job j) rank 1", python=python)
    wait_for(loader_file.exists)
    rank.kill()
    text = (run_dir / "logs" / "rank-1.log").read_text()
    assert text.index("===== attempt 1 (ray job j) rank 1 host") < text.index("===== attempt 2 (ray job j) rank 1")
    assert f"argv: -m unigen.orchestrator.runtime {run_dir}" in text
    assert "env: RANK=1 WORLD_SIZE=2" in text and "got TERM" in text
    assert "submit folder" in text and "not on this node" in text  # attempt 2's cwd did not exist


def test_a_rank_dies_with_the_actor_process_that_started_it(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "logs").mkdir(parents=True)
    python = fake_python(tmp_path, "#!/bin/bash\nexec sleep 300\n")
    # The "actor": a process that starts the rank, prints its pid, then waits to be killed.
    actor_code = textwrap.dedent(f"""
        import json, sys, time
        from unigen.orchestrator.launchers.ray.rank import RankProcess
        rank = RankProcess()
        info = rank.start(run_dir={str(run_dir)!r}, rank=0, env={{}}, cwd=None, header="a", python={python!r})
        print(json.dumps(info), flush=True)
        time.sleep(300)
    """)
    actor = subprocess.Popen([sys.executable, "-c", actor_code], stdout=subprocess.PIPE, text=True)
    try:
        pid = json.loads(actor.stdout.readline())["pid"]
        assert alive(pid)
        os.kill(actor.pid, signal.SIGKILL)  # what ray.kill or a lost raylet does to an actor
        actor.wait(10)
        wait_for(lambda: not alive(pid))
    finally:
        if actor.poll() is None:
            actor.kill()
            actor.wait()


def test_node_info_and_paths_outside_ray(tmp_path):
    rank = RankProcess()
    info = rank.node_info()
    assert info["gpu_ids"] == [] and info["hostname"]
    assert rank.check_paths([str(tmp_path), str(tmp_path / "nope")]) == [str(tmp_path / "nope")]
    assert 0 < rank.free_port("127.0.0.1") < 65536
