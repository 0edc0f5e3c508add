"""Ray Job entrypoint: Ray Train TorchTrainer, 2 CPU workers over gloo, FailureConfig(max_failures=1).

Each step all-reduces (rank + 1) and reports; rank 0 attaches a checkpoint {"step": s}. On the first
attempt, rank 1 writes its pid to --pid-file at step KILL_AT and waits: the test SIGKILLs it from
outside. Ray Train must notice the dead worker, restart the group and resume from the last reported
checkpoint. Every (re)start appends {"rank", "start", "pid"} to --events; the driver prints
`RESULT {"metrics": ..., "error": ...}`.
"""
import argparse
import json
import os
import tempfile
import time

import ray.train
import torch
import torch.distributed as dist
from ray.train import Checkpoint, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

STEPS = 6
KILL_AT = 3


def resume_step() -> int:
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as d, open(os.path.join(d, "state.json")) as f:
        return json.load(f)["step"] + 1


def train_loop(config: dict) -> None:
    rank = ray.train.get_context().get_world_rank()
    start = resume_step()
    with open(config["events"], "a") as f:
        f.write(json.dumps({"rank": rank, "start": start, "pid": os.getpid()}) + "\n")
    for step in range(start, STEPS):
        total = torch.tensor([float(rank + 1)])
        dist.all_reduce(total)
        if rank == 1 and step == KILL_AT and start == 0:
            tmp = config["pid_file"] + ".tmp"
            with open(tmp, "w") as f:
                f.write(str(os.getpid()))
            os.replace(tmp, config["pid_file"])  # atomic: the test never reads half a pid
            time.sleep(600)
        with tempfile.TemporaryDirectory() as d:
            checkpoint = None
            if rank == 0:
                with open(os.path.join(d, "state.json"), "w") as f:
                    json.dump({"step": step}, f)
                checkpoint = Checkpoint.from_directory(d)
            ray.train.report({"step": step, "sum": total.item(), "start": start}, checkpoint=checkpoint)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--storage", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--events", required=True)
    parser.add_argument("--pid-file", required=True)
    args = parser.parse_args()
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"events": args.events, "pid_file": args.pid_file},
        scaling_config=ScalingConfig(num_workers=2, use_gpu=False, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name=args.name, storage_path=args.storage,
                             failure_config=FailureConfig(max_failures=1)),
    )
    result = trainer.fit()
    print("RESULT " + json.dumps({"metrics": result.metrics,
                                  "error": repr(result.error) if result.error else None}), flush=True)


if __name__ == "__main__":
    main()
