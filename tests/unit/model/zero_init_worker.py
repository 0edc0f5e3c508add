"""One rank of the partitioned-construction check (run by test_model_zero_init.py, not collected by pytest).

argv: rank, world size, master port, build ("plain" | "partitioned"), preset, init weights path or "-",
report path. Builds the model through the runtime's build_pipeline under ZeRO-3 (fp32, as the CPU recipes
run), records how each parameter is held right after construction (before deepspeed.initialize), then
trains three steps on fixed batches and writes the losses as JSON.
"""
import datetime
import json
import os
import sys

rank, world, port, build, preset, init, report = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4],
                                                  sys.argv[5], sys.argv[6], sys.argv[7])
os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                  MASTER_PORT=port, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")

import deepspeed  # noqa: E402
import torch  # noqa: E402

from tests.unit.model.model_helpers import edit, pattern, seed_example, t2i  # noqa: E402
from unigen.orchestrator.config.recipe import ModelSection  # noqa: E402
from unigen.orchestrator.runtime.build import build_pipeline  # noqa: E402
from unigen.orchestrator.runtime.distributed import _skip_cpu_shm_op  # noqa: E402

torch.set_num_threads(1)
_skip_cpu_shm_op()
deepspeed.init_distributed(dist_backend="gloo", timeout=datetime.timedelta(seconds=120), verbose=False)

# The runtime's ZeRO-3 settings on CPU ranks (unigen.orchestrator.deepspeed_config), fp32.
ds_config = {"train_batch_size": world, "train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
             "gradient_clipping": 1.0, "bf16": {"enabled": False}, "fp16": {"enabled": False},
             "zero_optimization": {"stage": 3, "contiguous_gradients": True, "overlap_comm": False,
                                   "stage3_gather_16bit_weights_on_model_save": False},
             "zero_allow_untested_optimizer": True, "steps_per_print": 10 ** 9}
torch.manual_seed(0)  # the runtime seeds every rank alike before building (state.build_seed)
pipe = build_pipeline(ModelSection(preset=preset), None if init == "-" else init, ds_config=ds_config,
                      partitioned=build == "partitioned")
model, processor = pipe.model, pipe.processor


def held(name, param):
    """How this rank holds the parameter now: whole elements, local elements, and the full size."""
    partitioned = hasattr(param, "ds_id")
    local = param.ds_tensor.numel() if partitioned else param.numel()
    return {"name": name, "trainable": param.requires_grad, "partitioned": partitioned,
            "full": int(param.ds_numel) if partitioned else param.numel(), "local": int(local),
            "data": param.data.numel()}


construction = [held(n, p) for n, p in model.named_parameters()]
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
# Each rank its own batches (a pixel target, an edit with an input image, two targets in one conversation).
mine = ([processor([seed_example()]), processor([t2i("a", pattern(3))]), processor([edit(pattern(1), "x", pattern(2))])]
        if rank == 0 else
        [processor([t2i("b", pattern(4))]), processor([edit(pattern(5), "y", pattern(6))]), processor([seed_example()])])
losses = []
for step, batch in enumerate(mine):
    torch.manual_seed(100 * step + rank)
    out = engine(**batch)
    engine.backward(out.loss)
    engine.step()
    losses.append(float(out.loss))
with open(report, "w") as fh:
    json.dump({"losses": losses, "construction": construction}, fh)
torch.distributed.destroy_process_group()
