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
    # Workers have prefetched up to 8 micro-batches ahead, yet the state is after step 3 exactly.
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
