"""Checkpoint sync against a real S3 server (SeaweedFS, real authentication): protocol order, resume
from the remote, an outage in the middle of an upload, a stalled server, remote retention, and no
credential in anything written."""
import json
import logging
import shutil
import threading
import time

import pytest

from tests.services.seaweed import SeaweedS3
from tests.unit.checkpoint.ckpt_helpers import writer
from unigen.orchestrator.checkpoint import CheckpointManager, TransferPolicy
from unigen.orchestrator.checkpoint.plan import make_plan
from unigen.orchestrator.checkpoint.remote import Remote

pytestmark = [pytest.mark.services, pytest.mark.timeout(300)]

MB = 2**20
# Small parts so that modest files still go multipart and an outage lands in the middle of a file.
POLICY = TransferPolicy(chunksize=5 * MB, max_concurrency=2, file_concurrency=1, retry_base_s=0.5,
                        retry_max_s=2.0, stall_timeout_s=3.0)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed"))
    server.start()
    yield server
    server.close()


class Run:
    """A CheckpointManager on a fresh local folder, recording its events."""

    def __init__(self, tmp_path, s3, prefix, *, options=True, policy=POLICY, **kw):
        self.events, self.cv = [], threading.Condition()
        self.local = tmp_path / prefix / "checkpoints"
        self.uri = f"s3://{s3.bucket}/{prefix}"
        self.mgr = CheckpointManager(self.local, remote_uri=self.uri, transfer=policy, on_event=self._on,
                                     storage_options=s3.storage_options() if options else None, **kw)

    def _on(self, kind, payload):
        with self.cv:
            self.events.append((time.time(), kind, payload))
            self.cv.notify_all()

    def kinds(self, kind):
        return [p for _, k, p in self.events if k == kind]

    def wait_for(self, kind, timeout=60, pred=lambda p: True, after=0.0):
        """Wait for an event of ``kind`` (or any of several, "a|b") emitted after time ``after``."""
        kinds = kind.split("|")
        with self.cv:
            assert self.cv.wait_for(lambda: any(pred(p) for t, k, p in self.events if k in kinds and t >= after),
                                    timeout), f"no {kind} event; got {[k for _, k, _ in self.events]}"


def files(step, n, size):
    return {f"rank{r}/state.pt": bytes([step % 256, r]) * (size // 2) for r in range(n)}


def test_checkpoints_appear_with_commit_after_their_data_and_no_secret_leaks(tmp_path, s3, caplog):
    caplog.set_level(logging.DEBUG)
    run = Run(tmp_path, s3, "order")
    run.mgr.save(5, writer({**files(5, 2, 12 * MB), "meta/extra.json": b"{}"}), metadata={"samples_seen": 40})
    assert run.mgr.flush(120)
    fs = s3.filesystem()
    prefix = f"{s3.bucket}/order/step-5"

    # Event log: all data, then the manifest, then COMMIT; LATEST and "durable" after that.
    uploaded = [p["file"] for p in run.kinds("upload_file")]
    assert uploaded[-2:] == ["step-5/manifest-rank0.json", "step-5/COMMIT.json"]
    assert sorted(uploaded[:-2]) == ["step-5/meta/extra.json", "step-5/rank0/state.pt", "step-5/rank1/state.pt"]
    kinds = [k for _, k, _ in run.events]
    assert kinds.index("durable") > max(i for i, k in enumerate(kinds) if k == "upload_file")
    # The server's own clocks agree (1 s resolution): nothing was written after COMMIT but LATEST.
    stamps = {k.split("/step-5/")[1]: v["LastModified"] for k, v in fs.find(prefix, detail=True).items()}
    assert stamps["COMMIT.json"] >= max(stamps.values())
    assert fs.info(f"{s3.bucket}/order/LATEST")["LastModified"] >= stamps["COMMIT.json"]
    assert fs.cat_file(f"{s3.bucket}/order/LATEST") == b"step-5"
    # DeepSpeed's pointer, after COMMIT too (no zero_to_fp32.py: these files are no ZeRO partitions).
    assert fs.cat_file(f"{s3.bucket}/order/latest") == b"step-5"
    assert fs.info(f"{s3.bucket}/order/latest")["LastModified"] >= stamps["COMMIT.json"]
    assert not fs.exists(f"{s3.bucket}/order/zero_to_fp32.py")
    assert fs.cat_file(f"{prefix}/COMMIT.json") == (run.local / "step-5" / "COMMIT.json").read_bytes()
    assert fs.cat_file(f"{prefix}/rank1/state.pt") == files(5, 2, 12 * MB)["rank1/state.pt"]
    run.mgr.close()

    # The real secret key authenticated every request above; it is in nothing we wrote or said.
    texts = [json.dumps([e[1:] for e in run.events]), caplog.text]
    texts += [p.read_bytes().decode("latin-1") for p in (tmp_path / "order").rglob("*") if p.is_file()]
    texts += [fs.cat_file(k)[:4096].decode("latin-1") for k in fs.find(f"{s3.bucket}/order")]
    assert not [t[:120] for t in texts if s3.secret_key in t]


def test_wrong_secret_is_refused_by_the_server(tmp_path, s3):
    bad = CheckpointManager(tmp_path / "bad", remote_uri=f"s3://{s3.bucket}/refused",
                            storage_options={**s3.storage_options(), "secret": "not-the-secret"},
                            transfer=TransferPolicy(retry_base_s=0.1, retry_max_s=0.2))
    plan = bad.plan_resume(strict=False)
    # Real authentication: refused, and a resume refuses to guess (it might have checkpoints there).
    assert plan.remote_error and "cannot be listed" in plan.error and plan.chosen is None
    bad.close()


def test_resume_from_s3_when_local_checkpoints_are_gone_using_env_credentials(tmp_path, s3, monkeypatch):
    for k, v in s3.env().items():
        monkeypatch.setenv(k, v)
    run = Run(tmp_path, s3, "fromenv", options=False)
    for step in (10, 20):
        run.mgr.save(step, writer(files(step, 2, 1 * MB)), metadata={"samples_seen": step * 4, "mlflow_run_id": "r"})
    assert run.mgr.flush(120)
    run.mgr.close()
    shutil.rmtree(run.local)

    again = Run(tmp_path, s3, "fromenv", options=False)
    plan = again.mgr.plan_resume()
    assert plan.chosen.step == 20 and plan.chosen.source == "remote"
    info = again.mgr.resume()
    assert info.step == 20 and info.source == "remote" and info.metadata["samples_seen"] == 80
    assert (again.local / "step-20" / "rank1" / "state.pt").read_bytes() == files(20, 2, 1 * MB)["rank1/state.pt"]
    assert again.mgr.plan_resume().chosen.source == "local"
    again.mgr.close()


@pytest.mark.slow
def test_server_down_in_the_middle_of_an_upload(tmp_path, s3):
    # Retries 6.4-8 s apart: a window, after the server is back, in which the half upload is visible.
    run = Run(tmp_path, s3, "outage", policy=TransferPolicy(
        chunksize=5 * MB, max_concurrency=1, file_concurrency=1, retry_base_s=8.0, retry_max_s=8.0,
        stall_timeout_s=4.0))
    run.mgr.save(1, writer(files(1, 1, 1 * MB)), metadata={"n": 1})
    assert run.mgr.flush(120)
    run.mgr.save(2, writer(files(2, 3, 20 * MB)), metadata={"n": 2})
    run.wait_for("upload_file", pred=lambda p: p["step"] == 2)  # one data file is up, more to go
    s3.stop(hard=True)  # the server dies mid-upload
    run.wait_for("upload_retry")
    assert run.mgr.status()["durable_step"] == 1 and run.mgr.status()["pending_uploads"] == [2]

    s3.start()
    # The remote now holds part of step 2 and no COMMIT: a resume elsewhere (no local copy) takes step 1.
    plan = make_plan(tmp_path / "elsewhere", Remote(run.uri, s3.storage_options()))
    assert plan.chosen.step == 1 and plan.chosen.source == "remote"
    assert [(c.step, c.has_commit) for c in plan.rejected] == [(2, False)]
    assert "no COMMIT.json" in plan.rejected[0].reason

    # Later the upload completes, by itself.
    assert run.mgr.flush(180)
    assert run.mgr.status()["durable_step"] == 2 and run.kinds("durable")[-1]["step"] == 2
    plan = make_plan(tmp_path / "elsewhere", Remote(run.uri, s3.storage_options()))
    assert plan.chosen.step == 2 and plan.rejected == []

    # A second outage: training goes on (a save only queues its upload), the upload catches up later.
    s3.stop()
    before = time.time()
    info = run.mgr.save(3, writer(files(3, 1, 2 * MB)), metadata={"n": 3})
    assert info.blocked_s < 2.0
    run.wait_for("upload_retry|remote_retry", after=before)
    s3.start()
    assert run.mgr.flush(180)
    assert run.mgr.status()["durable_step"] == 3
    assert s3.filesystem().cat_file(f"{s3.bucket}/outage/LATEST") == b"step-3"
    plan = make_plan(tmp_path / "elsewhere", Remote(run.uri, s3.storage_options()))
    assert plan.chosen.step == 3 and plan.chosen.source == "remote"
    run.mgr.close()


def test_a_stalled_server_trips_the_watchdog_and_the_upload_completes(tmp_path, s3):
    run = Run(tmp_path, s3, "stall", policy=TransferPolicy(
        chunksize=5 * MB, max_concurrency=1, file_concurrency=1, retry_base_s=0.5, retry_max_s=1.0,
        stall_timeout_s=2.0))
    run.mgr.save(1, writer(files(1, 2, 20 * MB)), metadata={})
    run.wait_for("upload_file")
    s3.pause()  # SIGSTOP: connections hang, nothing fails
    try:
        run.wait_for("upload_stalled", timeout=30)
    finally:
        s3.resume()
    assert run.mgr.flush(120)
    assert run.kinds("durable")[0]["step"] == 1
    assert s3.filesystem().cat_file(f"{s3.bucket}/stall/step-1/rank1/state.pt") == files(1, 2, 20 * MB)["rank1/state.pt"]
    run.mgr.close()


def test_remote_retention_mirrors_keep_last_and_keep_every(tmp_path, s3):
    run = Run(tmp_path, s3, "retention", keep_last=2, keep_every=30)
    for step in (10, 20, 30, 40, 50, 60, 70):
        run.mgr.save(step, writer(files(step, 1, 64 * 1024)), metadata={})
        assert run.mgr.flush(60)  # each one durable before the next: every upload happens
    run.mgr.close()
    fs = s3.filesystem()
    # Objects, not "directories": SeaweedFS keeps listing an emptied prefix as a folder for a while.
    remote = sorted({int(k.split("/step-")[1].split("/")[0]) for k in fs.find(f"{s3.bucket}/retention")
                     if "/step-" in k})
    assert remote == [30, 60, 70]
    assert sorted(int(p.name[5:]) for p in run.local.glob("step-*")) == [30, 60, 70]
    assert {p["step"] for p in run.kinds("remote_deleted")} == {10, 20, 40, 50}
    assert fs.cat_file(f"{s3.bucket}/retention/LATEST") == b"step-70"
