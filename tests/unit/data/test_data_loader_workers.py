"""The loader with DataLoader worker processes and prefetch: same samples as in-process loading, and
the saved state is where the consumer is, not where prefetching got."""
import json

from tests.unit.data.data_helpers import id_collate, spec_for
from unigen.model.data.loader import build_loader


def sources(manifest):
    names = {"shapes-t2i", "shapes-seed-multiturn", "shapes-pose", "shapes-segmentation", "shapes-interleaved",
             "shapes-magicbrush", "shapes-refcoco"}  # Parquet read in forked workers after the index build
    return [s for s in manifest["sources"] if s["name"] in names]


def steps(loader, n):
    return [loader.next_step() for _ in range(n)]


def test_workers_and_prefetch_serve_the_same_sequence_and_state_as_in_process(corpus):
    _, manifest = corpus
    inproc = build_loader(spec_for(sources(manifest)), id_collate, seed=7, global_batch_size=8,
                          micro_batch_size=2, rank=1, world_size=2)
    workers = build_loader(spec_for(sources(manifest), num_workers=2, prefetch_factor=4), id_collate, seed=7,
                           global_batch_size=8, micro_batch_size=2, rank=1, world_size=2)
    a, b = steps(inproc, 3), steps(workers, 3)
    assert a == b
    # Workers have prefetched up to 8 steps ahead (2 workers x 4), yet the state is after step 3 exactly.
    assert workers.state_dict() == inproc.state_dict() and workers.state_dict()["global_index"] == 24
    resumed = build_loader(spec_for(sources(manifest), num_workers=2), id_collate, seed=7, global_batch_size=8,
                           micro_batch_size=2, rank=1, world_size=2,
                           state=json.loads(json.dumps(workers.state_dict())))
    assert steps(resumed, 2) == steps(workers, 2) == steps(inproc, 2)
    stats = workers.stats()
    assert stats["steps"] == 5 and stats["served"] == 5 * 4 and stats["bad"] == 0
    assert sum(s["served"] for s in stats["sources"].values()) == 20
    for loader in (workers, resumed):
        loader.close()


def test_a_process_that_never_closes_its_loader_still_exits(corpus):
    """Workers ignore SIGTERM (worker.ignore_stop_signals), so multiprocessing's exit hook could not stop them
    and would join them forever; the loader's own exit hook shuts them down first."""
    import os
    import pathlib
    import subprocess
    import sys

    root, _ = corpus
    repo = pathlib.Path(__file__).resolve().parents[3]
    code = (
        "from tests.unit.data.data_helpers import id_collate, spec_for\n"
        "from unigen.model.data.loader import build_loader\n"
        "from unigen.model.data.synth.layout import sources_for\n"
        f"spec = spec_for(sources_for({str(root)!r})[:2], num_workers=1)\n"
        "loader = build_loader(spec, id_collate, seed=0, global_batch_size=4, micro_batch_size=2, rank=0,"
        " world_size=1)\n"
        "loader.next_step()\n"
        "print('stepped', flush=True)\n"  # ... and exit without loader.close()
    )
    env = dict(os.environ, PYTHONPATH=str(repo))
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, env=env, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0 and "stepped" in out.stdout, out.stderr[-2000:]


def test_pack_and_unpack_keep_every_value_dtype_shape_and_batch_class():
    import torch

    from unigen.model.data.transfer import PackedStep, pack, unpack
    from unigen.model.processor import UniGenBatch

    batches = [UniGenBatch(ids=torch.arange(7).view(1, 7), mask=torch.tensor([True, False, True]),
                           pixels=torch.randn(2, 3, 5), none=None, scalar=torch.tensor(3.5),
                           empty=torch.zeros(0, 4, dtype=torch.long), half=torch.randn(3).to(torch.bfloat16)),
               UniGenBatch(ids=torch.arange(3), none=None)]
    packed = pack(batches)
    assert isinstance(packed, PackedStep) and packed.buffer.dtype == torch.uint8
    back = unpack(packed)
    assert [type(b) for b in back] == [UniGenBatch, UniGenBatch]
    for mine, theirs in zip(back, batches):
        assert mine.keys() == theirs.keys()
        for key, value in theirs.items():
            if value is None:
                assert mine[key] is None
            else:
                assert mine[key].dtype == value.dtype and mine[key].shape == value.shape
                assert torch.equal(mine[key], value), key
    assert pack([["a"], ["b"]]) == [["a"], ["b"]]  # not dicts: passed through


def test_workers_hand_over_the_same_tensors_as_in_process_loading(corpus):
    """With the model's processor as collate: a worker's packed step unpacks to exactly the in-process batches."""
    import torch

    from unigen.model.config import get_preset
    from unigen.model.processor import UniGenProcessor
    _, manifest = corpus
    processor = UniGenProcessor.from_config(get_preset("tiny"))
    kw = dict(seed=3, global_batch_size=4, micro_batch_size=2, rank=0, world_size=1)
    inproc = build_loader(spec_for(sources(manifest)), processor, **kw)
    workers = build_loader(spec_for(sources(manifest), num_workers=1), processor, **kw)
    for _ in range(2):
        for a, b in zip(inproc.next_step(), workers.next_step()):
            assert type(a) is type(b) and a.keys() == b.keys()
            for key in a:
                if a[key] is None:
                    assert b[key] is None, key
                else:
                    assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
    workers.close()
