"""Sources on an object store (moto's S3 server through s3fs) and the retry policy of reads."""
import logging

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from tests.unit.data.data_helpers import id_collate, spec_for
from unigen.model.data import fs as data_fs
from unigen.model.data.loader import build_loader


@pytest.fixture(scope="module")
def s3(corpus):
    from moto.server import ThreadedMotoServer
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3fs = fsspec.filesystem("s3", key="testing", secret="testing", client_kwargs={"endpoint_url": endpoint},
                             skip_instance_cache=True)
    s3fs.mkdir("shapes")
    root, _ = corpus
    for sub in ("t2i", "edit/magicbrush", "edit/seed-real"):
        s3fs.put(str(root / sub), f"shapes/{sub}", recursive=True)
    yield endpoint
    server.stop()


def test_loader_reads_webdataset_parquet_and_jsonl_from_s3(s3, corpus, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    opts = {"storage_options": {"client_kwargs": {"endpoint_url": s3}}}
    remote = [
        {"name": "t2i", "uri": "s3://shapes/t2i/{00000..00003}.tar", "format": "webdataset", "task": "t2i", "options": opts},
        {"name": "mb", "uri": "s3://shapes/edit/magicbrush", "format": "parquet", "task": "edit", "options": opts},
        {"name": "seed", "uri": "s3://shapes/edit/seed-real/annotations.jsonl", "format": "jsonl", "task": "edit",
         "options": opts},
    ]
    root, _ = corpus
    local = [{"name": "t2i", "uri": f"{root}/t2i/{{00000..00003}}.tar", "format": "webdataset", "task": "t2i"},
             {"name": "mb", "uri": f"{root}/edit/magicbrush", "format": "parquet", "task": "edit"},
             {"name": "seed", "uri": f"{root}/edit/seed-real/annotations.jsonl", "format": "jsonl", "task": "edit"}]
    kw = dict(seed=0, global_batch_size=6, micro_batch_size=3, rank=0, world_size=1)
    got = build_loader(spec_for(remote), id_collate, **kw)
    want = build_loader(spec_for(local), id_collate, **kw)
    assert [got.next_step() for _ in range(4)] == [want.next_step() for _ in range(4)]
    assert {n: s["served"] for n, s in got.stats()["sources"].items()} == \
        {n: s["served"] for n, s in want.stats()["sources"].items()}
    assert got.stats()["bad"] == 0


class FlakyFS(MemoryFileSystem):
    """In-memory files whose reads fail ``failures`` times with a connection error first."""
    protocol = "flaky"
    failures = 0

    def cat_file(self, path, start=None, end=None, **kw):
        if FlakyFS.failures > 0:
            FlakyFS.failures -= 1
            raise ConnectionError("connection reset by peer")
        return super().cat_file(path, start=start, end=end, **kw)


def test_reads_retry_with_backoff_then_fail_naming_the_url(monkeypatch):
    fsspec.register_implementation("flaky", FlakyFS, clobber=True)
    monkeypatch.setattr(data_fs.time, "sleep", lambda s: None)
    FlakyFS().pipe("flaky://bucket/shard.tar", b"0123456789")
    FlakyFS.failures = 2
    assert data_fs.read_bytes("flaky://bucket/shard.tar", 2, 5, retries=3) == b"234"
    FlakyFS.failures = 10
    with pytest.raises(OSError, match=r"flaky://bucket/shard.tar: unreachable after 4 attempts"):
        data_fs.read_bytes("flaky://bucket/shard.tar", retries=3)
    with pytest.raises(FileNotFoundError):
        FlakyFS.failures = 0
        data_fs.read_bytes("flaky://bucket/missing.tar")


def test_brace_expansion_keeps_padding_and_lists():
    assert data_fs.expand_braces("s3://b/{00008..00011}.tar") == [f"s3://b/{i:05d}.tar" for i in range(8, 12)]
    assert data_fs.expand_braces("d/{a,b}/{0..2}.tar") == ["d/a/0.tar", "d/a/1.tar", "d/a/2.tar",
                                                           "d/b/0.tar", "d/b/1.tar", "d/b/2.tar"]
    with pytest.raises(ValueError, match="goes backwards"):
        data_fs.expand_braces("{5..1}.tar")
    assert data_fs.join("s3://bucket/root", "images/a.png") == "s3://bucket/root/images/a.png"
    assert data_fs.join("s3://bucket/root", "s3://other/x.png") == "s3://other/x.png"
