"""The S3 path (s3fs, multipart) against moto's in-process S3 server, fast; and the credentials test:
a planted secret never appears in anything the checkpoint code writes, logs or reports."""
import json
import logging
import os
import shutil

import pytest

from tests.unit.checkpoint.ckpt_helpers import writer
from unigen.orchestrator.checkpoint import CheckpointManager, TransferPolicy

SECRET = "Pl4nted-S3cret-NeverLeak-9f8e7d"
KEY_ID = "AKIAPLANTEDKEYID0001"


@pytest.fixture(scope="module")
def moto_endpoint():
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(moto_endpoint, request):
    import fsspec

    name = f"b{abs(hash(request.node.name)) % 10**8}"
    fs = fsspec.filesystem("s3", key=KEY_ID, secret=SECRET, client_kwargs={"endpoint_url": moto_endpoint},
                           skip_instance_cache=True)
    fs.mkdir(name)
    return fs, name


def test_multipart_upload_and_resume_over_s3_with_no_secret_anywhere(tmp_path, moto_endpoint, bucket, caplog,
                                                                      monkeypatch):
    caplog.set_level(logging.DEBUG)
    fs, name = bucket
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET + "-env")  # a second planted value
    options = {"key": KEY_ID, "secret": SECRET, "endpoint_url": moto_endpoint}
    policy = TransferPolicy(chunksize=5 * 2**20, max_concurrency=2, retry_base_s=0.05, retry_max_s=0.2)
    events = []
    big = os.urandom(12 * 2**20)  # 3 parts of 5 MiB: multipart

    mgr = CheckpointManager(tmp_path / "run" / "checkpoints", remote_uri=f"s3://{name}/runs/r1",
                            storage_options=options, transfer=policy, keep_last=2,
                            on_event=lambda k, p: events.append([k, p]))
    mgr.save(1, writer({"big.bin": big, "small.json": b"{}"}), metadata={"mlflow_run_id": "m1"})
    # Named as DeepSpeed names a ZeRO partition: the mirror also gets DeepSpeed's script (deepspeed_tools.py).
    zero = {"zero_pp_rank_0_mp_rank_00_optim_states.pt": b"z"}
    mgr.save(2, writer({"big.bin": big[::-1], "small.json": b"{}", **zero}), metadata={"mlflow_run_id": "m1"})
    assert mgr.flush(60)
    mgr.close()
    assert fs.cat_file(f"{name}/runs/r1/step-2/big.bin") == big[::-1]
    assert fs.cat_file(f"{name}/runs/r1/LATEST") == b"step-2"
    # DeepSpeed's pointer and script, so `python zero_to_fp32.py . out` works in a copy of the prefix;
    # uploaded after COMMIT (S3 times are whole seconds: >= is what can be checked).
    script = fs.cat_file(f"{name}/runs/r1/zero_to_fp32.py")
    assert fs.cat_file(f"{name}/runs/r1/latest") == b"step-2" and b"def convert_zero_checkpoint" in script
    assert fs.info(f"{name}/runs/r1/latest")["LastModified"] >= fs.info(f"{name}/runs/r1/step-2/COMMIT.json")[
        "LastModified"]

    shutil.rmtree(tmp_path / "run")
    again = CheckpointManager(tmp_path / "run" / "checkpoints", remote_uri=f"s3://{name}/runs/r1",
                              storage_options=options, transfer=policy, on_event=lambda k, p: events.append([k, p]))
    info = again.resume()
    assert info.step == 2 and info.source == "remote"
    assert (tmp_path / "run" / "checkpoints" / "step-2" / "big.bin").read_bytes() == big[::-1]
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text() == "step-2"  # not taken for a step
    assert again.plan_resume().describe()
    again.close()

    # A remote that refuses every request: errors are retried, logged and reported - still no secret.
    dead = CheckpointManager(tmp_path / "dead", remote_uri=f"s3://{name}-missing/x", storage_options=options,
                             transfer=policy, on_event=lambda k, p: events.append([k, p]))
    dead.save(1, writer({"a.bin": b"a"}), metadata={})
    assert dead.flush(1.0) is False
    dead.close(0)
    assert any(k == "upload_retry" for k, _ in events)

    texts = [json.dumps(events), caplog.text]
    texts += [p.read_bytes().decode("latin-1") for p in tmp_path.rglob("*") if p.is_file()]
    texts += [fs.cat_file(k).decode("latin-1") for k in fs.find(name)]
    for planted in (SECRET, SECRET + "-env"):
        assert not [t[:200] for t in texts if planted in t]
    assert caplog.text  # the grep above read real logs
