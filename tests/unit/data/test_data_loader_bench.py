"""bench/data_loader.py --real-size keeps working: it writes JPEG shards (t2i + edit pairs), reads them through
unigen's loader with unigen-3b's image-processor settings and through the plain webdataset peer, and prints
one table. Speeds are not judged here (the figures live in runbooks/performance.md); what is judged is that
every record loads, both pipelines deliver, and the input-image grid is unigen-3b's."""
import importlib.util
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[3]
BENCH = ROOT / "bench" / "data_loader.py"


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_data_loader", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_real_size_bench_runs_both_pipelines_at_tiny_size(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH), "--real-size", "--image-size", "64", "--records", "16",
                           "--steps", "2", "--warmup", "1", "--rounds", "1", "--workers", "0", "1",
                           "--data", str(tmp_path / "shards")],
                          cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "input image grid (t, h, w) [1, 4, 4]" in out, out  # 64 px -> 56 x 56 at unigen-3b's min_pixels
    assert "unigen bad records 0" in out, out
    rows = {int(m[1]): (float(m[2]), float(m[3])) for m in re.finditer(r"^\s+(\d)\s+([\d.]+)\s+([\d.]+)\s+[\d.]+$",
                                                                        out, re.M)}
    assert set(rows) == {0, 1}, out
    assert all(unigen > 0 and peer > 0 for unigen, peer in rows.values()), rows
    assert re.search(r"a GPU at 40 samples/s needs \d+ workers", out), out
    # img2dataset layout: each sample's members share a key; edit samples carry an input image and a target
    import tarfile
    with tarfile.open(tmp_path / "shards" / "edit" / "00000.tar") as tar:
        names = tar.getnames()
    assert names[:3] == [f"{names[0].split('.')[0]}.{ext}" for ext in ("source.jpg", "target.jpg", "txt")]


def test_real_size_processor_gives_unigen_3b_image_grid():
    """A 512 px input image becomes 36 x 36 patches of 14 px (504 px, under max_pixels 512 * 512):
    1296 patches, 324 tokens after the 2 x 2 merge, as Qwen2.5-VL-3B's processor makes them."""
    bench = _bench_module()
    processor = bench.real_size_processor(512)
    assert bench.input_grid(processor, 512) == [1, 36, 36]
    assert processor.num_queries == 256


def test_a_worker_step_is_packed_when_pickled_into_shared_memory():
    """A worker's step is packed only when its queue pickles it (in the feeder thread, overlapping the next
    step's loading), into a buffer born in shared memory, so the hand-over copies the step once (transfer.py)."""
    import io
    import pickle
    from multiprocessing.reduction import ForkingPickler

    import torch

    from unigen.model.data.transfer import LazyPack, PackedStep, pack, pack_lazily, unpack

    batches = [{"x": torch.arange(10, dtype=torch.float32)}, {"x": torch.ones(2, 3), "y": None}]
    assert pack(batches).buffer.is_shared()
    lazy = pack_lazily(batches)
    assert isinstance(lazy, LazyPack) and unpack(lazy) is batches  # never pickled: the batches themselves
    buf = io.BytesIO()
    ForkingPickler(buf).dump(lazy)  # what the DataLoader's queue does
    sent = pickle.loads(buf.getvalue())
    assert isinstance(sent, PackedStep) and sent.buffer.is_shared()
    back = unpack(sent)
    assert torch.equal(back[0]["x"], batches[0]["x"]) and torch.equal(back[1]["x"], batches[1]["x"])
    assert back[1]["y"] is None
