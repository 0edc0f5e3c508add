"""Benchmark: what a checkpoint costs the training step, and how fast it reaches S3.

For each payload (random bytes split into per-rank files, as DeepSpeed writes them) it measures:
  blocked_s      how long CheckpointManager.save() held the caller (write_fn + sha256 manifests +
                 COMMIT + LATEST; the upload is not included: it runs in the background)
  overhead_s     the part of blocked_s that is the commit protocol, not the caller's own writing
  to_durable_s   from the start of save() to the checkpoint being durable on S3 (COMMIT + LATEST up)
  upload MB/s    payload bytes / time the uploader took for this checkpoint
  put_file MB/s  the same files sent with plain s3fs ``put_file`` (s3fs defaults) to the same server
  ratio          upload MB/s / put_file MB/s (goal >= 0.9)
Medians over --repeats runs, ours and the baseline interleaved so drift hits both alike.

    python bench/checkpoint_sync.py                       # starts its own SeaweedFS (real auth)
    python bench/checkpoint_sync.py --sizes-mb 4,300 --files 2 --repeats 3 --json out.json
    python bench/checkpoint_sync.py --endpoint http://host:8333 --bucket b   # an existing S3 (env creds)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.services.seaweed

from unigen.orchestrator.checkpoint import CheckpointManager, TransferPolicy  # noqa: E402


def make_files(folder: Path, total_mb: float, n_files: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    size = int(total_mb * 2**20 / n_files)
    paths = []
    for r in range(n_files):
        p = folder / f"rank{r}_model_states.pt"
        with open(p, "wb") as f:
            left = size
            while left:
                chunk = min(left, 16 * 2**20)
                f.write(os.urandom(chunk))
                left -= chunk
        paths.append(p)
    return paths


def run_ours(files: list[Path], work: Path, uri: str, options: dict, policy: TransferPolicy, step: int) -> dict:
    """One save() whose write_fn writes fresh copies of ``files`` (as torch.save would: new, unflushed
    pages, so the fsync before COMMIT costs what it costs in a run), and its upload."""
    durable = threading.Event()
    found: dict = {}

    def on_event(kind: str, payload: dict) -> None:
        if kind == "durable":
            found.update(payload)
            durable.set()

    mgr = CheckpointManager(work / "checkpoints", remote_uri=uri, storage_options=options, transfer=policy,
                            keep_last=1, on_event=on_event)

    def write(step_dir: Path) -> list[str]:
        for p in files:
            shutil.copyfile(p, step_dir / p.name)
        return [p.name for p in files]

    t0 = time.monotonic()
    info = mgr.save(step, write, metadata={"bench": True})
    if not durable.wait(3600):
        raise RuntimeError("upload did not finish")
    to_durable = time.monotonic() - t0
    mgr.close()
    nbytes = sum(p.stat().st_size for p in files)
    return {"blocked_s": info.blocked_s, "overhead_s": info.blocked_s - info.timings.get("write_s", 0.0),
            "to_durable_s": to_durable, "upload_mb_s": nbytes / 2**20 / found["upload_s"]}


def run_baseline(files: list[Path], fs, prefix: str) -> float:
    """Plain s3fs put_file of the same files, one after the other; MB/s."""
    t0 = time.monotonic()
    for p in files:
        fs.put_file(str(p), f"{prefix}/{p.name}")
    return sum(p.stat().st_size for p in files) / 2**20 / (time.monotonic() - t0)


def bench(sizes_mb: list[float], n_files: int, repeats: int, endpoint: str | None, bucket: str,
          policy: TransferPolicy) -> list[dict]:
    import fsspec

    with tempfile.TemporaryDirectory(prefix="ckpt-bench-") as tmp:
        tmp = Path(tmp)
        server = None
        if endpoint is None:
            from tests.services.seaweed import SeaweedS3

            server = SeaweedS3(tmp / "seaweed", bucket=bucket).start()
            options = server.storage_options()
        else:
            options = {"endpoint_url": endpoint}
        try:
            fs = fsspec.filesystem("s3", skip_instance_cache=True, client_kwargs={"endpoint_url": options["endpoint_url"]},
                                   **{k: v for k, v in options.items() if k in ("key", "secret")})
            rows = []
            for mb in sizes_mb:
                files = make_files(tmp / f"payload-{mb}", mb, n_files)
                ours, base = [], []
                for i in range(repeats):
                    base.append(run_baseline(files, fs, f"{bucket}/baseline/{mb}/{i}"))
                    ours.append(run_ours(files, tmp / f"run-{mb}-{i}", f"s3://{bucket}/bench/{mb}/{i}", options,
                                         policy, step=i + 1))
                    fs.rm(f"{bucket}/baseline/{mb}/{i}", recursive=True)
                med = {k: statistics.median(o[k] for o in ours) for k in ours[0]}
                put = statistics.median(base)
                rows.append({"payload_mb": mb, "files": n_files, **{k: round(v, 4) for k, v in med.items()},
                             "put_file_mb_s": round(put, 1), "ratio": round(med["upload_mb_s"] / put, 3)})
                for p in files:
                    p.unlink()
            return rows
        finally:
            if server is not None:
                server.close()


def print_table(rows: list[dict]) -> None:
    head = f"{'payload':>9} {'files':>5} {'blocked_s':>9} {'overhead_s':>10} {'to_durable_s':>12} " \
           f"{'upload MB/s':>11} {'put_file MB/s':>13} {'ratio':>6}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['payload_mb']:>6g} MB {r['files']:>5} {r['blocked_s']:>9.3f} {r['overhead_s']:>10.3f} "
              f"{r['to_durable_s']:>12.2f} {r['upload_mb_s']:>11.1f} {r['put_file_mb_s']:>13.1f} {r['ratio']:>6.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes-mb", default="4,300", help="comma-separated payload sizes in MB")
    ap.add_argument("--files", type=int, default=2, help="per-rank files the payload is split into")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--endpoint", help="an existing S3 endpoint (credentials from AWS_* env); default: start SeaweedFS")
    ap.add_argument("--bucket", default="ckpt-bench")
    ap.add_argument("--chunk-mb", type=int, default=TransferPolicy.chunksize // 2**20)
    ap.add_argument("--part-concurrency", type=int, default=TransferPolicy.max_concurrency)
    ap.add_argument("--file-concurrency", type=int, default=TransferPolicy.file_concurrency)
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args()
    policy = TransferPolicy(chunksize=args.chunk_mb * 2**20, max_concurrency=args.part_concurrency,
                            file_concurrency=args.file_concurrency)
    rows = bench([float(s) for s in args.sizes_mb.split(",")], args.files, args.repeats, args.endpoint,
                 args.bucket, policy)
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
