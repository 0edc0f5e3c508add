"""The held-out set of eval.sources: the same samples on any number of ranks, split without overlap, every rank
running the same number of micro-batches; and the synthetic corpus's held-out split shares no record with
training."""
from __future__ import annotations

import pytest

from tests.unit.data.data_helpers import id_collate, open_one, spec_for
from unigen.model.data.errors import DataError
from unigen.model.data.heldout import heldout_batches


def _heldout(manifest):
    return spec_for(manifest["heldout_sources"])


def _split(spec, world: int, samples: int = 11, micro: int = 2, seed: int = 0):
    return [heldout_batches(spec, id_collate, seed=seed, samples=samples, micro_batch_size=micro, rank=r,
                            world_size=world) for r in range(world)]


def _real(per_rank) -> dict[int, tuple]:
    """Global micro-batch index -> (sample identities, source indices), over all ranks' real batches."""
    out = {}
    for _, batches in per_rank:
        for b in batches:
            if b.real:
                assert b.index not in out, f"micro-batch {b.index} on two ranks"
                out[b.index] = (tuple(b.batch), b.sources)
    return out


def test_the_same_samples_on_any_world_size(corpus):
    _, manifest = corpus
    spec = _heldout(manifest)
    one = _real(_split(spec, 1))
    assert sorted(one) == list(range(6))  # 11 samples in micro-batches of 2: the last holds one
    assert [len(one[j][0]) for j in range(6)] == [2, 2, 2, 2, 2, 1]
    for world in (2, 3, 4, 7):
        per_rank = _split(spec, world)
        assert _real(per_rank) == one
        counts = {len(batches) for _, batches in per_rank}
        assert counts == {-(-6 // world)}, f"ranks run different numbers of micro-batches at world {world}"
        for rank, (names, batches) in enumerate(per_rank):
            assert names == ["heldout-t2i", "heldout-magicbrush"]
            assert [b.index for b in batches if b.real] == list(range(rank, 6, world))
    # More ranks than micro-batches: the idle ranks run a stand-in of micro-batch 0 and count nothing.
    _, idle = _split(spec, 7)[6]
    assert [(b.index, b.real) for b in idle] == [(0, False)]


def test_both_sources_are_drawn_and_the_seed_picks_the_set(corpus):
    _, manifest = corpus
    spec = _heldout(manifest)
    first = _real(_split(spec, 1, samples=16))
    assert _real(_split(spec, 1, samples=16)) == first
    sources = {s for _, srcs in first.values() for s in srcs}
    assert sources == {0, 1}
    other = _real(_split(spec, 1, samples=16, seed=1))
    assert sorted(x for ids, _ in other.values() for x in ids) != sorted(x for ids, _ in first.values() for x in ids)


def test_heldout_records_are_not_training_records(corpus):
    _, manifest = corpus
    train = open_one(next(s for s in manifest["sources"] if s["name"] == "shapes-t2i"))
    held = open_one(manifest["heldout_sources"][0])
    train_keys = {train.reader.key(i) for i in range(len(train))}
    held_keys = {held.reader.key(i) for i in range(len(held))}
    assert len(held_keys) == 16 and not held_keys & train_keys
    train_images = {train.reader.read(i)["jpg"] for i in range(len(train))}
    held_images = {held.reader.read(i)["jpg"] for i in range(len(held))}
    assert len(held_images) == 16 and not held_images & train_images


def test_a_broken_heldout_source_names_eval_sources(corpus, tmp_path):
    _, manifest = corpus
    broken = tmp_path / "broken.tar"
    broken.write_bytes(b"not a tar at all" * 64)
    spec = spec_for([{"name": "broken", "uri": str(broken), "format": "webdataset", "task": "t2i"}])
    with pytest.raises(DataError, match=r"source broken: .*check eval\.sources\[0\]"):
        heldout_batches(spec, id_collate, seed=0, samples=4, micro_batch_size=2, rank=0, world_size=1)


@pytest.mark.parametrize("kwargs", [{"samples": 0}, {"micro_batch_size": 0}, {"rank": 2}])
def test_bad_arguments_are_refused(corpus, kwargs):
    _, manifest = corpus
    args = {"seed": 0, "samples": 4, "micro_batch_size": 2, "rank": 0, "world_size": 2, **kwargs}
    with pytest.raises(ValueError, match="must be positive"):
        heldout_batches(_heldout(manifest), id_collate, **args)
