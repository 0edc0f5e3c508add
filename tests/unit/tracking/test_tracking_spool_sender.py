"""The spool file and the background sender's outage handling (order, one warning, bounded calls).

The sender is driven by a backend that fails on command: the state machine is what is under test
here; the real MLflow client against a real server is in tests/integration/test_mlflow_lineage.py.
"""
import logging
import threading
import time

import pytest

from unigen.orchestrator.tracking.backend import MlflowBackend
from unigen.orchestrator.tracking.sender import Sender, replay_spool
from unigen.orchestrator.tracking.spool import Spool


class MlflowDown(Exception):
    error_code = "INTERNAL_ERROR"  # what MlflowClient raises for a refused connection


class Rejected(Exception):
    error_code = "INVALID_PARAMETER_VALUE"


class ScriptedBackend(MlflowBackend):
    """Records what reaches 'MLflow'; raises MlflowDown while ``down`` is set."""

    def __init__(self, run_dir):
        super().__init__(run_dir, "http://127.0.0.1:9")
        self.down = threading.Event()
        self.received: list[tuple] = []
        self.metric_calls = 0

    def apply(self, op):
        if self.down.is_set():
            raise MlflowDown("connection refused")
        if op["op"] == "tags" and op["tags"].get("bad"):
            raise Rejected("bad tag")
        if op["op"] == "start":
            self.run_id = "r1"
        self.received.append((op["op"], op.get("tags") or op.get("n")))

    def apply_metric_ops(self, ops):
        if self.down.is_set():
            raise MlflowDown("connection refused")
        self.metric_calls += 1
        for op in ops:
            self.received.extend(("metric", row[3]) for row in op["metrics"])


def metric(step):
    return {"op": "metrics", "metrics": [["loss", 1.0 / step, 0, step]]}


def test_spool_appends_in_order_skips_a_torn_line_and_rewrites(tmp_path, caplog):
    spool = Spool(tmp_path / "tracking" / "spool.jsonl")
    assert spool.read() == [] and spool.pending() == 0
    spool.append([metric(1), metric(2)])
    spool.append([metric(3)])
    with open(spool.path, "a") as fh:
        fh.write('{"op": "metr')  # a process killed mid-append
    with caplog.at_level(logging.WARNING, "unigen.tracking"):
        assert [op["metrics"][0][3] for op in spool.read()] == [1, 2, 3]
    assert "last line is not JSON" in caplog.text
    spool.rewrite([metric(3)])
    assert spool.read() == [metric(3)]
    spool.rewrite([])
    assert not spool.path.exists()


def test_healthy_sender_merges_consecutive_metric_ops(tmp_path):
    backend = ScriptedBackend(tmp_path)
    sender = Sender(backend, Spool(tmp_path / "spool.jsonl"))
    for step in range(1, 51):
        sender.submit(metric(step))
    sender.start()
    assert sender.flush(5)
    assert [s for kind, s in backend.received if kind == "metric"] == list(range(1, 51))
    assert backend.metric_calls < 50  # batched, not one call per step
    assert sender.close(5) == 0


def test_outage_spools_in_order_warns_once_and_replays(tmp_path, caplog):
    backend = ScriptedBackend(tmp_path)
    spool = Spool(tmp_path / "spool.jsonl")
    sender = Sender(backend, spool, retry_initial_s=0.05, retry_max_s=0.2)
    sender.start()
    sender.submit({"op": "start", "tags": {}})
    sender.submit(metric(1))
    assert sender.flush(5)
    backend.down.set()
    slowest = 0.0
    with caplog.at_level(logging.INFO, "unigen.tracking"):
        for step in range(2, 200):
            t = time.perf_counter()
            sender.submit(metric(step))
            slowest = max(slowest, time.perf_counter() - t)
            if step % 50 == 0:
                time.sleep(0.3)  # let several retries fail
        assert sender.in_outage and spool.pending() > 0
        backend.down.clear()
        assert sender.flush(10)
    assert slowest < 0.1, f"submit blocked {slowest:.3f} s while MLflow was down"
    assert [s for kind, s in backend.received if kind == "metric"] == list(range(1, 200))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "not answering" in warnings[0].getMessage()
    assert "answers again" in caplog.text
    assert spool.pending() == 0
    assert sender.close(5) == 0


def test_close_during_outage_keeps_everything_in_the_spool_for_a_replay(tmp_path):
    backend = ScriptedBackend(tmp_path)
    backend.down.set()
    spool = Spool(tmp_path / "spool.jsonl")
    sender = Sender(backend, spool, retry_initial_s=10)
    sender.start()
    sender.submit({"op": "start", "tags": {}})
    for step in range(1, 6):
        sender.submit(metric(step))
    t = time.monotonic()
    assert sender.close(5) == 6
    assert time.monotonic() - t < 2, "close waited for a server that is down"
    backend.down.clear()
    sent, left, error = replay_spool(backend, spool, on_drop=lambda *a: pytest.fail("nothing to drop"))
    assert (sent, left, error) == (6, 0, None)
    assert backend.received[0][0] == "start"
    assert [s for kind, s in backend.received if kind == "metric"] == [1, 2, 3, 4, 5]


def test_a_rejected_op_is_dropped_with_a_warning_and_does_not_block_the_rest(tmp_path, caplog):
    backend = ScriptedBackend(tmp_path)
    sender = Sender(backend, Spool(tmp_path / "spool.jsonl"))
    sender.start()
    with caplog.at_level(logging.WARNING, "unigen.tracking"):
        sender.submit({"op": "tags", "tags": {"bad": "1"}})
        sender.submit(metric(1))
        assert sender.flush(5)
    assert sender.dropped == 1 and ("metric", 1) in backend.received
    assert "rejected a tracking call (tags" in caplog.text
    sender.close(5)


def test_a_spool_left_by_an_earlier_attempt_goes_first(tmp_path):
    spool = Spool(tmp_path / "spool.jsonl")
    spool.append([{"op": "start", "tags": {"attempt": "1"}}, metric(1), metric(2)])
    backend = ScriptedBackend(tmp_path)
    sender = Sender(backend, spool)
    sender.submit({"op": "start", "tags": {"attempt": "2"}})
    sender.submit(metric(3))
    sender.start()
    assert sender.flush(5)
    assert backend.received == [("start", {"attempt": "1"}), ("metric", 1), ("metric", 2),
                                ("start", {"attempt": "2"}), ("metric", 3)]
    assert sender.close(5) == 0


def test_a_replay_that_fails_midway_keeps_exactly_the_unsent_ops(tmp_path):
    """Metric ops go out in groups of at most 1000 rows; a failure after the first group leaves the
    spool holding the rest and nothing that was sent (a retry never duplicates a point)."""
    spool = Spool(tmp_path / "spool.jsonl")
    spool.append([metric(step) for step in range(1, 2501)])
    backend = ScriptedBackend(tmp_path)
    backend.run_id = "r1"
    real = backend.apply_metric_ops

    def fail_second_call(ops):
        if backend.metric_calls == 1:
            raise MlflowDown("server went away")
        real(ops)

    backend.apply_metric_ops = fail_second_call
    sent, left, error = replay_spool(backend, spool, on_drop=lambda *a: pytest.fail("nothing to drop"))
    assert (sent, left) == (1000, 1500) and isinstance(error, MlflowDown)
    assert [op["metrics"][0][3] for op in spool.read()] == list(range(1001, 2501))
    backend.apply_metric_ops = real
    assert replay_spool(backend, spool, on_drop=lambda *a: None)[:2] == (1500, 0)
    assert [s for kind, s in backend.received] == list(range(1, 2501))


def test_a_full_disk_holds_ops_in_memory_in_order_until_the_spool_takes_them(tmp_path, caplog):
    backend = ScriptedBackend(tmp_path)
    spool = Spool(tmp_path / "spool.jsonl")
    disk_full = threading.Event()
    disk_full.set()
    real_append = spool.append

    def append(ops):
        if disk_full.is_set():
            raise OSError(28, "No space left on device")
        real_append(ops)

    spool.append = append
    sender = Sender(backend, spool, retry_initial_s=0.05, retry_max_s=0.1)
    sender.start()
    sender.submit({"op": "start", "tags": {}})
    assert sender.flush(5)
    backend.down.set()
    with caplog.at_level(logging.WARNING, "unigen.tracking"):
        for step in range(1, 40):
            sender.submit(metric(step))
            time.sleep(0.005)
        time.sleep(0.3)
        assert spool.pending() == 0 and sender.in_outage  # nothing reached the file, nothing was dropped
        disk_full.clear()
        backend.down.clear()
        assert sender.flush(10)
    assert [s for kind, s in backend.received if kind == "metric"] == list(range(1, 40))
    assert caplog.text.count("cannot write the tracking spool") == 1
    assert sender.close(5) == 0
