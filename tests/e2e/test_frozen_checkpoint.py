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


def test_the_export_is_the_weight_average_and_the_last_weights_export_on_request(reference_run, workspace,
                                                                                  tmp_path):
    """SHORT keeps a weight average (train.ema_decay=0.9): the run's export holds it, joined from the two
    ranks' ZeRO-3 partitions; `unigen export --last-weights` gives the weights after the last step instead."""
    import json
    import shutil

    import torch

    from tests.e2e.cli import cli, cli_env, exported_tensors
    from unigen.model.export_layout import export_tensors
    from unigen.orchestrator.runtime.consolidate import fp32_state_dict
    from unigen.orchestrator.runtime.weight_average import full_average

    step_dir = reference_run / "checkpoints" / "step-12"
    average, last = full_average(step_dir), fp32_state_dict(step_dir, average=False)
    assert average and average.keys() <= last.keys() and any(name.startswith("dit.") for name in average)
    assert all(not torch.equal(average[k], last[k]) for k in average if k.endswith(".weight"))
    exported = exported_tensors(reference_run)
    assert all(torch.equal(exported[k].float(), v) for k, v in average.items())
    assert json.loads((reference_run / "export" / "unigen_export.json").read_text())["weights"] == "average"

    copy = tmp_path / "runs" / reference_run.name  # the export is recorded on the run: not on the shared one
    shutil.copytree(reference_run, copy, ignore=shutil.ignore_patterns("export", "tracking"))
    out = cli(workspace, "export", str(copy), "--out", str(tmp_path / "last"), "--last-weights",
              env=cli_env(copy.parent), check=True)
    assert "exported" in out.stdout
    other = export_tensors(tmp_path / "last")
    assert all(torch.equal(other[k].float(), last[k]) for k in average)
    assert json.loads((tmp_path / "last" / "unigen_export.json").read_text())["weights"] == "last"
