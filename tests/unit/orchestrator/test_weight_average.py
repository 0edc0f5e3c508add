"""The weight average of train.ema_decay: its update rule, the weights it lends evaluation (given back bit for
bit), and its checkpoint form: ZeRO-3 partitions joined into whole tensors and cut again for another number of
ranks. ZeRO-3 is stood in for by parameters carrying ``ds_tensor``/``ds_shape`` as DeepSpeed sets them; the
real thing runs in the e2e tests (tests/e2e/cli.py SHORT keeps an average: resumes and evaluation check it)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from unigen.orchestrator.runtime.state import rank_state_name
from unigen.orchestrator.runtime.weight_average import STATE_KEY, WeightAverage, full_average


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 5), nn.Linear(5, 2))
    model[1].bias.requires_grad_(False)  # frozen: never averaged
    return model


def test_the_average_follows_each_step_by_the_decay():
    model = _model()
    average = WeightAverage(model, decay=0.9)
    start = model[0].weight.detach().clone()
    assert average.names == ["0.weight", "0.bias", "1.weight"]
    with torch.no_grad():
        model[0].weight.add_(1.0)
    average.update()
    assert torch.allclose(average.tensors[0], start + 0.1)
    average.update()
    assert torch.allclose(average.tensors[0], start + (1 - 0.9 ** 2))  # 1 - 0.9^2 of the way to the new weights
    assert torch.equal(average.tensors[2], model[2 - 1].weight)  # unchanged weights: unchanged average


def test_evaluation_computes_with_the_average_and_gets_the_weights_back_bit_for_bit():
    model = _model()
    average = WeightAverage(model, decay=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0).add_(0.1)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    average.update()
    x = torch.randn(4, 3)
    with average.in_place():
        assert torch.equal(model[0].weight, average.tensors[0])
        inside = model(x)
    assert not torch.equal(inside, model(x))
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())


def _partition(model: nn.Module, rank: int, world: int) -> nn.Module:
    """Make ``model`` look like rank ``rank`` of a ZeRO-3 world: each trained parameter's ds_tensor is its
    flattened, zero-padded r-th slice."""
    for p in model.parameters():
        if not p.requires_grad:
            continue
        size = math.ceil(p.numel() / world)
        flat = torch.cat([p.detach().flatten(), p.new_zeros(size * world - p.numel())])
        p.ds_tensor = flat[rank * size:(rank + 1) * size].clone()
        p.ds_shape = p.shape
    return model


def _save(step_dir, averages) -> None:
    step_dir.mkdir(parents=True, exist_ok=True)
    for rank, average in enumerate(averages):
        torch.save({"rng": None, "trainer": {}, STATE_KEY: average.state(rank)}, step_dir / rank_state_name(rank))


def test_partitions_are_joined_into_whole_tensors_and_cut_again_for_another_world(tmp_path):
    whole = _model(seed=3)
    ranks = [WeightAverage(_partition(_model(seed=3), r, 2), decay=0.9) for r in range(2)]
    assert all(a.partitioned for a in ranks)
    _save(tmp_path / "step-1", ranks)

    joined = full_average(tmp_path / "step-1")
    trained = {n: p for n, p in whole.named_parameters() if p.requires_grad}
    assert joined.keys() == trained.keys()
    assert all(torch.equal(joined[n], trained[n].detach()) for n in trained)  # 5 x 3 = 15 over 2: padded

    for rank in range(3):  # the same checkpoint resumed on three ranks
        other = _partition(_model(seed=9), rank, 3)
        average = WeightAverage(other, decay=0.9)
        average.load(tmp_path / "step-1", rank=rank, own=None)
        expected = _partition(_model(seed=3), rank, 3)
        assert all(torch.equal(a, p.ds_tensor) for a, p in
                   zip(average.tensors, [p for p in expected.parameters() if p.requires_grad]))


def test_a_resume_on_the_same_ranks_takes_its_own_partitions(tmp_path):
    ranks = [WeightAverage(_partition(_model(seed=3), r, 2), decay=0.9) for r in range(2)]
    _save(tmp_path / "step-1", ranks)
    average = WeightAverage(_partition(_model(seed=5), 1, 2), decay=0.9)
    average.load(tmp_path / "step-1", rank=1, own=torch.load(tmp_path / "step-1" / rank_state_name(1)))
    assert all(torch.equal(a, b) for a, b in zip(average.tensors, ranks[1].tensors))


def test_without_zero3_rank_0_saves_the_whole_average_for_every_rank(tmp_path):
    averages = [WeightAverage(_model(seed=3), decay=0.9) for _ in range(2)]
    assert averages[1].state(1) is None
    _save(tmp_path / "step-1", averages)
    restored = WeightAverage(_model(seed=4), decay=0.9)
    restored.load(tmp_path / "step-1", rank=1, own=None)
    assert all(torch.equal(a, b) for a, b in zip(restored.tensors, averages[0].tensors))


def test_a_checkpoint_without_an_average_is_refused_by_a_run_that_keeps_one(tmp_path):
    from unigen.orchestrator.checkpoint import CheckpointError

    step_dir = tmp_path / "step-1"
    step_dir.mkdir()
    torch.save({"rng": None, "trainer": {}}, step_dir / rank_state_name(0))
    assert full_average(step_dir) is None
    with pytest.raises(CheckpointError, match="holds no weight average.*train.ema_decay"):
        WeightAverage(_model(), decay=0.9).load(step_dir, rank=0, own=None)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_a_decay_outside_0_1_is_refused_by_the_recipe(decay):
    from pydantic import ValidationError

    from unigen.orchestrator.config.recipe import TrainSection

    with pytest.raises(ValidationError, match="ema_decay"):
        TrainSection(max_steps=1, global_batch_size=1, micro_batch_size=1, lr=1e-4, ema_decay=decay)
