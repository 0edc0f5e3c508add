"""One DeepSpeed rank (world size 1, gloo on CPU) that saves the tiny model through the runtime's write_fn
and resumes it (run by test_ckpt_frozen.py, not collected by pytest).

argv: zero stage (0 | 3), backbone_training (frozen | lora), output folder, master port.
It trains one step, saves ``ckpt/step-1`` the runtime's way (frozen parameters left out) and ``full/step-1``
with them (DeepSpeed's default: the "before" size), trains a second step, then builds a fresh engine
exactly as a resumed rank does (seed, build, initialize), loads ``ckpt/step-1`` with the runtime's loader and
trains the same second step. Stage 0 also exports ``ckpt/step-1`` and reloads the export. report.json says
what the files hold and whether the resumed and exported weights equal the uninterrupted ones.
"""
import datetime
import json
import os
import sys
from pathlib import Path

stage, mode, out, port = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4]
os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                  DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")

import deepspeed  # noqa: E402
import torch  # noqa: E402

from tests.unit.model.model_helpers import seed_example  # noqa: E402
from unigen.orchestrator.config.recipe import Recipe  # noqa: E402
from unigen.orchestrator.deepspeed_config import build_deepspeed_config  # noqa: E402
from unigen.orchestrator.runtime import rng  # noqa: E402
from unigen.orchestrator.runtime.build import build_pipeline  # noqa: E402
from unigen.orchestrator.runtime.distributed import _skip_cpu_shm_op  # noqa: E402
from unigen.orchestrator.runtime.state import (build_seed, frozen_parameter_names, load_engine_state,  # noqa: E402
                                               make_write_fn)

torch.set_num_threads(1)
_skip_cpu_shm_op()
deepspeed.init_distributed(dist_backend="gloo", timeout=datetime.timedelta(seconds=120), verbose=False)

# train.seed 7, not 0: the export must seed like the runtime, not with a constant of its own. The data section
# is never read (the batch is seed_example's).
RECIPE = Recipe.model_validate({
    "name": "frozen-ckpt", "stage": "pretrain", "model": {"preset": "tiny", "backbone_training": mode},
    "data": {"sources": [{"uri": "unused.jsonl", "format": "jsonl", "task": "t2i"}]},
    "train": {"max_steps": 2, "seed": 7, "global_batch_size": 1, "micro_batch_size": 1, "lr": 1e-2,
              "precision": "fp32", "grad_clip": 1.0},
    "deepspeed": {"zero_stage": stage}})


def fresh_engine():
    """What Trainer.setup does before a resume: seed, build, initialize."""
    rng.seed_everything(build_seed(RECIPE.train))
    pipe = build_pipeline(RECIPE.model, init_weights=None)
    optimizer = torch.optim.AdamW([p for p in pipe.model.parameters() if p.requires_grad], lr=1e-2)
    engine, *_ = deepspeed.initialize(model=pipe.model, optimizer=optimizer,
                                      config=build_deepspeed_config(RECIPE.train, RECIPE.deepspeed, 1))
    return pipe, engine


def step(engine, batch, seed: int) -> float:
    torch.manual_seed(seed)
    loss = engine(**batch).loss
    engine.backward(loss)
    engine.step()
    return float(loss)


def weights(model) -> dict:
    with deepspeed.zero.GatheredParameters(list(model.parameters())):
        return {k: v.detach().clone() for k, v in model.state_dict().items()}


def unequal(got: dict, want: dict) -> list[str]:
    return sorted(k for k in want if k not in got or got[k].dtype != want[k].dtype or not torch.equal(got[k], want[k]))


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def saved_names(step_dir: Path) -> dict:
    """Parameter names in the model-states files: the module state, the ZeRO param shapes, the frozen ones."""
    module, shapes, frozen = set(), set(), set()
    for path in step_dir.glob("*model_states.pt"):
        state = torch.load(path, map_location="cpu", weights_only=False)
        module |= set(state["module"])
        for group in state.get("param_shapes") or []:
            shapes |= set(group)
        frozen |= set(state.get("frozen_param_shapes") or {}) | set(state.get("frozen_param_fragments") or {})
    return {"module": sorted(module), "param_shapes": sorted(shapes), "frozen_in_file": sorted(frozen)}


pipe, engine = fresh_engine()
model = pipe.model
batch = pipe.processor([seed_example()])
report = {"frozen": sorted(frozen_parameter_names(model)),
          "trainable": sorted(n for n, p in model.named_parameters() if p.requires_grad),
          "losses": [step(engine, batch, 1)]}
at_step_1 = weights(model)
ckpt = out / "ckpt" / "step-1"
ckpt.mkdir(parents=True)
report["files"] = make_write_fn(engine, rank=0, trainer_state={"step": 1})(ckpt)
engine.save_checkpoint(str(out / "full"), tag="step-1", save_latest=False)  # DeepSpeed's default: everything
report["bytes"] = {"without_frozen": folder_bytes(ckpt), "with_frozen": folder_bytes(out / "full" / "step-1")}
report["saved"] = saved_names(ckpt)
report["losses"].append(step(engine, batch, 2))
uninterrupted = weights(model)

pipe2, engine2 = fresh_engine()
load_engine_state(engine2, ckpt)
report["restored_unequal_at_step_1"] = unequal(weights(pipe2.model), at_step_1)
report["resumed_loss"] = step(engine2, batch, 2)
report["resumed_unequal"] = unequal(weights(pipe2.model), uninterrupted)

if stage == 0:
    from unigen.model import UniGenPipeline
    from unigen.orchestrator.runtime.export import export_checkpoint

    (ckpt / "COMMIT.json").write_text(json.dumps({"step": 1}))
    exported = export_checkpoint(RECIPE, ckpt, out / "export", run_id=None)
    back = UniGenPipeline.from_pretrained(exported)
    report["export_unequal"] = unequal(back.model.state_dict(), {k: v for k, v in at_step_1.items()
                                                                 if k in dict(back.model.named_parameters())})
(out / "report.json").write_text(json.dumps(report))
torch.distributed.destroy_process_group()
