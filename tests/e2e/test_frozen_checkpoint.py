"""A smoke run's checkpoints (the real runtime through the CLI: tiny-shapes, 2 CPU ranks, ZeRO-3) hold no
frozen parameter, and its export still has the pretrained frozen weights."""
from __future__ import annotations

import pytest

from tests.e2e.cli import record

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def test_the_smoke_checkpoints_hold_no_frozen_parameter(reference_run):
    import torch

    from unigen.model import UniGenPipeline
    from unigen.orchestrator.config.recorded import recorded_recipe
    from unigen.orchestrator.runtime import rng
    from unigen.orchestrator.runtime.build import build_pipeline
    from unigen.orchestrator.runtime.state import build_seed, frozen_parameter_names

    run = record(reference_run)
    recipe = recorded_recipe(run)
    rng.seed_everything(build_seed(recipe.train))
    built = build_pipeline(recipe.model, init_weights=None).model
    frozen = frozen_parameter_names(built)
    trainable = {n for n, p in built.named_parameters() if p.requires_grad}
    assert len(frozen) > 100 and trainable
    step_dir = reference_run / "checkpoints" / "step-12"
    files = sorted(step_dir.glob("*model_states.pt"))
    assert [f.name for f in files] == [f"zero_pp_rank_{r}_mp_rank_00_model_states.pt" for r in (0, 1)]
    for path in files:
        state = torch.load(path, map_location="cpu", weights_only=False)
        assert not frozen & set(state["module"]), sorted(frozen & set(state["module"]))[:5]
        assert not state.get("frozen_param_shapes") and not state.get("frozen_param_fragments")
        shapes = set().union(*(set(group) for group in state["param_shapes"]))
        assert shapes == trainable
    # The export (built from the recipe, trained tensors from the checkpoint) keeps the pretrained frozen weights.
    exported = UniGenPipeline.from_pretrained(reference_run / "export").model.state_dict()
    for name, tensor in built.state_dict().items():
        if name in frozen:
            assert torch.equal(exported[name].to(tensor.dtype), tensor), name
