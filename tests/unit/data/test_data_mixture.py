"""The sample order: a pure function of (seed, global index), resumable, world-size independent."""
import collections

import pytest

from tests.unit.data.data_helpers import id_collate, spec_for
from unigen.model.data.errors import DataError
from unigen.model.data.loader import build_loader
from unigen.model.data.mixture import Mixture, MixtureState
from unigen.model.data.permute import Permutation


def mixed_sources(manifest):
    pick = {"shapes-t2i": 2.0, "shapes-magicbrush": 1.0, "shapes-depth-kitti": 1.0, "shapes-refcoco": 1.0}
    return [{**s, "weight": pick[s["name"]]} for s in manifest["sources"] if s["name"] in pick]


def run(spec, steps, *, seed=0, gbs=8, mbs=2, rank=0, world=1, state=None):
    loader = build_loader(spec, id_collate, seed=seed, global_batch_size=gbs, micro_batch_size=mbs,
                          rank=rank, world_size=world, state=state)
    out = [loader.next_step() for _ in range(steps)]
    return out, loader


def flat(step):
    return [x for mb in step for x in mb]


def test_permutation_is_a_bijection_and_epochs_differ():
    for n in (1, 2, 5, 64, 1000, 4099):
        assert sorted(Permutation(n, 7)(i) for i in range(n)) == list(range(n))
    m = Mixture(["a"], [1.0], [50], seed=0)
    epoch0 = [m.record_of(0, c) for c in range(50)]
    epoch1 = [m.record_of(0, c) for c in range(50, 100)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(50)) and epoch0 != epoch1


def test_weights_are_respected_and_plan_is_a_pure_function_of_seed_and_index():
    m = Mixture(["a", "b", "c"], [2.0, 1.0, 1.0], [10, 20, 30], seed=5)
    items, state = m.plan(MixtureState(), 4000)
    share = collections.Counter(it.source for it in items)
    assert abs(share[0] / 4000 - 0.5) < 0.04 and abs(share[1] / 4000 - 0.25) < 0.04
    again, _ = Mixture(["a", "b", "c"], [2.0, 1.0, 1.0], [10, 20, 30], seed=5).plan(MixtureState(), 4000)
    assert again == items
    other, _ = Mixture(["a", "b", "c"], [2.0, 1.0, 1.0], [10, 20, 30], seed=6).plan(MixtureState(), 4000)
    assert other != items
    # Planning in two halves from the saved state gives the same sequence.
    first, mid = m.plan(MixtureState(), 1500)
    second, end = m.plan(mid, 2500)
    assert first + second == items and end == state
    assert state.cursors == {"a": share[0], "b": share[1], "c": share[2]}


def test_same_seed_same_order_different_seed_different(corpus):
    _, manifest = corpus
    spec = spec_for(mixed_sources(manifest))
    a, _ = run(spec, 4, seed=1)
    b, _ = run(spec, 4, seed=1)
    c, _ = run(spec, 4, seed=2)
    assert a == b and a != c
    assert all(len(step) == 4 and all(len(mb) == 2 for mb in step) for step in a)  # 8 / (2 x 1) = 4 micro-batches


def test_restored_state_mid_epoch_continues_identically(corpus):
    _, manifest = corpus
    spec = spec_for(mixed_sources(manifest))
    whole, _ = run(spec, 10)
    head, loader = run(spec, 4)
    state = loader.state_dict()
    import json
    state = json.loads(json.dumps(state))  # what a checkpoint stores
    assert state["global_index"] == 32
    tail, _ = run(spec, 6, state=state)
    assert head + tail == whole


def test_two_ranks_then_one_rank_no_sample_repeated_or_skipped(corpus):
    _, manifest = corpus
    spec = spec_for(mixed_sources(manifest))
    whole, _ = run(spec, 6, gbs=8, mbs=2, world=1)
    r0, l0 = run(spec, 3, gbs=8, mbs=2, rank=0, world=2)
    r1, l1 = run(spec, 3, gbs=8, mbs=2, rank=1, world=2)
    assert l0.state_dict() == l1.state_dict()  # the state is global, not per rank
    for t in range(3):
        assert len(r0[t]) == 2  # 8 / (2 x 2) = 2 micro-batches each
        assert sorted(flat(r0[t]) + flat(r1[t])) == sorted(flat(whole[t]))  # same set per step
        assert flat(r0[t]) + flat(r1[t]) == flat(whole[t])  # and rank slices in order
    after, _ = run(spec, 3, gbs=8, mbs=2, world=1, state=l0.state_dict())
    assert after == whole[3:]
    # A 1 -> 4 rank change with a different micro-batch also continues the same global sequence.
    quarters = [run(spec, 3, gbs=8, mbs=1, rank=r, world=4, state=l0.state_dict())[0] for r in range(4)]
    for t in range(3):
        assert [x for q in quarters for x in flat(q[t])] == flat(whole[3 + t])


def test_bad_batch_geometry_and_foreign_state_are_clear_errors(corpus):
    _, manifest = corpus
    spec = spec_for(mixed_sources(manifest))
    with pytest.raises(ValueError, match=r"global_batch_size 10 is not a multiple of micro_batch_size 2 x world "
                                         r"size 2 = 4"):
        build_loader(spec, id_collate, seed=0, global_batch_size=10, micro_batch_size=2, rank=0, world_size=2)
    _, loader = run(spec, 1, seed=3)
    with pytest.raises(DataError, match="saved with seed 3 but this run uses seed 4"):
        run(spec, 1, seed=4, state=loader.state_dict())
    with pytest.raises(ValueError, match="duplicate|both named"):
        spec_for([mixed_sources(manifest)[0]] * 2)
