"""One rank of a torch.distributed (gloo) exchange under srun: rank r contributes r + 1, all-reduces,
and gathers every rank's SLURMD_NODENAME. Writes OUT_DIR/gloo-rank<r>.json.
Needs MASTER_ADDR and MASTER_PORT in the environment; rank and world size come from SLURM."""
import json
import os
import sys

import torch
import torch.distributed as dist


def main(out_dir: str) -> None:
    rank, world = int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"])
    dist.init_process_group("gloo", rank=rank, world_size=world)
    value = torch.tensor([float(rank + 1)])
    dist.all_reduce(value)
    nodes = [None] * world
    dist.all_gather_object(nodes, os.environ["SLURMD_NODENAME"])
    dist.destroy_process_group()
    with open(os.path.join(out_dir, f"gloo-rank{rank}.json"), "w") as f:
        json.dump({"rank": rank, "world": world, "node": os.environ["SLURMD_NODENAME"],
                   "sum": value.item(), "nodes": nodes}, f)


if __name__ == "__main__":
    main(sys.argv[1])
