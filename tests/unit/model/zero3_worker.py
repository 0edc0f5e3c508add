"""One rank of the two-rank DeepSpeed ZeRO-3 check (run by test_model_zero3.py, not collected by pytest).

argv: rank, master port, mode ("frozen" | "lora" | "ckpt" | "compile": regional compilation, which the
runtime allows only under ZeRO-0..2, so that mode runs stage 2), report path. Each rank trains the tiny model on
its OWN batches, which differ on purpose (input images or none, pixel targets or precomputed latents, a
batch without any target), and writes its losses as JSON.
"""
import datetime
import json
import os
import sys

rank, port, mode, report = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                  MASTER_PORT=port, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")

import deepspeed  # noqa: E402
import torch  # noqa: E402

from tests.unit.model.model_helpers import edit, pattern, seed_example, t2i, tiny_pipeline  # noqa: E402
from unigen.orchestrator.runtime.distributed import _skip_cpu_shm_op  # noqa: E402

torch.set_num_threads(1)
_skip_cpu_shm_op()
deepspeed.init_distributed(dist_backend="gloo", timeout=datetime.timedelta(seconds=120), verbose=False)


def batches(processor, rank):
    if rank == 0:
        return [processor([seed_example()]), processor([edit(pattern(1), "x", pattern(2))]),
                processor([t2i("a", pattern(3))])]
    first = processor([t2i("b", pattern(4))])
    latents = first["gen_pixel_values"]  # replaced below by precomputed latents
    return [first, processor([t2i("no target")]), processor([edit(pattern(5), "y", pattern(6))]), latents]


pipe = tiny_pipeline(seed=0, gradient_checkpointing=mode == "ckpt", compile_blocks=mode == "compile",
                     backbone_training="lora" if mode == "lora" else "frozen")
model, processor = pipe.model, pipe.processor
mine = batches(processor, rank)
if rank == 1:  # step 0 of rank 1 uses precomputed latents: no VAE encoding needed on this rank
    pixels = mine.pop()
    mine[0]["gen_latents"], mine[0]["gen_pixel_values"] = model.encode_latents(pixels), None
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
config = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1, "steps_per_print": 10 ** 9,
          "zero_optimization": {"stage": 2 if mode == "compile" else 3}, "zero_allow_untested_optimizer": True}
engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
torch.manual_seed(100 + rank)
losses = []
for batch in mine:
    out = engine(**batch)
    engine.backward(out.loss)
    engine.step()
    losses.append([float(out.loss), int(out.slot_losses.numel())])
with open(report, "w") as fh:
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]  # what torch.compile really compiled
    breaks = sum(torch._dynamo.utils.counters["graph_break"].values())
    json.dump({"losses": losses, "graphs": graphs, "graph_breaks": breaks}, fh)
torch.distributed.destroy_process_group()
