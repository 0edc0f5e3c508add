"""Who this process is in the job: rank, world size, rendezvous address, attempt."""
from __future__ import annotations

import os
from dataclasses import dataclass

from unigen.orchestrator.errors import UserError

_REQUIRED = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class RankContext:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    attempt: int
    job_id: str | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "RankContext":
        env = os.environ if env is None else env
        missing = [k for k in _REQUIRED if k not in env]
        if missing:
            raise UserError(
                f"the runtime needs {', '.join(missing)} in its environment: start it through `unigen submit` "
                "(or set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT yourself)")
        return cls(rank=int(env["RANK"]), world_size=int(env["WORLD_SIZE"]), local_rank=int(env["LOCAL_RANK"]),
                   master_addr=env["MASTER_ADDR"], master_port=int(env["MASTER_PORT"]),
                   attempt=int(env.get("UNIGEN_ATTEMPT", "1")), job_id=env.get("UNIGEN_JOB_ID"))
