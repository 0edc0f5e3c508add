"""The cluster profile: where a recipe runs (launcher, resources, scheduler settings, storage).

Generic resource fields plus one section per launcher; only the section of the profile's own launcher
may be present (``checks.profile_problems`` says so instead of ignoring the others). Credentials never
appear here: a profile names the ENVIRONMENT VARIABLES that hold them.
"""
from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# sbatch --time: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS.
SLURM_TIME = re.compile(r"^(?:\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d{1,2}(?::\d{1,2}(?::\d{1,2})?)?)$")
Launcher = Literal["local", "slurm", "ray"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ResourcesSection(_Strict):
    """What one job asks for (SLURM); the GPU size also feeds the memory estimate."""

    nodes: int = Field(1, ge=1, description="Nodes (SLURM). The local launcher runs on one node.")
    gpus_per_node: int = Field(0, ge=0, description="GPUs per node (SLURM). 0: a CPU job.")
    ranks_per_node: int | None = Field(None, gt=0, description="Training processes per node (SLURM); "
                                       "default gpus_per_node (one per GPU); required for CPU jobs.")
    cpus_per_task: int = Field(1, ge=1, description="CPU cores per rank.")
    mem_gb: float | None = Field(None, gt=0, description="Host memory per node in GB (null: the partition's default); "
                                 "`unigen validate` compares its host-memory estimate per node with it.")
    gpu_type: str | None = Field(None, description="GPU model, informational (e.g. A100-80GB).")
    gpu_memory_gb: float | None = Field(None, gt=0, description="Memory of one GPU in GB; `unigen validate` "
                                        "compares the memory estimate with it.")

    @property
    def node_ranks(self) -> int:
        """Ranks on each SLURM node: ranks_per_node, else one per GPU (0 for a CPU job that names none)."""
        return self.ranks_per_node or self.gpus_per_node


class LocalSection(_Strict):
    """The local launcher: all ranks as child processes on this machine."""

    cpu_ranks: int = Field(2, ge=1, description="Ranks when no GPU is used (gloo).")
    max_restarts: int = Field(3, ge=0, description="Restarts after a crash, each from the last committed checkpoint.")
    backend: Literal["auto", "gloo", "nccl"] = Field("auto", description="auto: nccl with one rank per visible "
                                                     "GPU, else gloo with cpu_ranks; gloo forces CPU ranks.")


class SlurmSection(_Strict):
    """sbatch settings (the SLURM launcher submits each run through submitit; see launchers/slurm/)."""

    partition: str | None = Field(None, description="Partition (null: the cluster's default).")
    account: str | None = Field(None, description="Account to charge.")
    qos: str | None = Field(None, description="Quality of service.")
    time: str | None = Field(None, description="Time limit per attempt: minutes or [D-]HH:MM:SS (quote it).")
    constraint: str | None = Field(None, description="Node feature constraint (e.g. a100-80gb).")
    exclusive: bool = Field(False, description="Ask for whole nodes.")
    signal_grace_s: int = Field(120, gt=0, description="USR2 is sent this many seconds before preemption or "
                                "the time limit: enough for one checkpoint save.")
    max_requeues: int = Field(10, ge=0, description="Requeues after preemption or time limit.")
    max_failures: int = Field(2, ge=0, description="Requeues after a crash (from the last checkpoint).")
    extra_sbatch: list[str] = Field(default_factory=list, description="More sbatch options, one per item, "
                                    "written --key=value (e.g. --gres-flags=enforce-binding).")
    setup: list[str] = Field(default_factory=list, description="Shell lines run before the ranks start "
                             "(module load ..., source venv/bin/activate).")
    python: str | None = Field(None, description="Interpreter the job runs after the setup lines: a name on "
                               "PATH (python) or an absolute path, not expanded by the shell. null: the one "
                               "running `unigen submit` (fine when it lives on a shared filesystem).")
    srun_args: list[str] = Field(default_factory=list, description="More options for the srun that starts "
                                 "the ranks, one per item (e.g. --gpu-bind=closest, --mpi=none).")

    @field_validator("time", mode="before")
    @classmethod
    def _minutes_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("partition", "account", "qos", "constraint", "python")
    @classmethod
    def _one_word(cls, value: str | None) -> str | None:
        # These land in #SBATCH lines (or the exec line), which cannot hold a newline.
        if value is not None and (not value.strip() or any(ord(c) < 32 or ord(c) == 127 for c in value)):
            raise ValueError("must be non-empty text on one line (no newline or control character)")
        return value

    @field_validator("srun_args")
    @classmethod
    def _options(cls, value: list[str]) -> list[str]:
        for item in value:
            if not item.startswith("-") or any(ord(c) < 32 for c in item):
                raise ValueError(f"{item!r}: write one srun option per item, e.g. --gpu-bind=closest")
        return value


class RaySection(_Strict):
    """The Ray launcher: a Ray Job whose workers run the ranks."""

    address: str = Field("auto", description="Ray cluster address (ray://host:10001, http://host:8265 or auto).")
    runtime_env: dict[str, Any] = Field(default_factory=dict, description="Ray runtime_env of the job "
                                        "(working_dir, pip, env_vars; no secrets).")
    workers: int = Field(1, ge=1, description="Training workers = ranks (the world size).")
    gpus_per_worker: float = Field(1, ge=0, description="GPUs per worker: 1 (one rank per GPU, NCCL) or 0 "
                                   "(CPU workers, gloo).")
    cpus_per_worker: float = Field(1, gt=0, description="CPUs per worker (also the rank's OMP_NUM_THREADS).")
    max_failures: int = Field(2, ge=0, description="Worker-group restarts after a failure (from the last checkpoint).")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="How the placement group spreads the workers over nodes (PACK: fewest nodes).")
    cancel_grace_s: int = Field(300, gt=0, description="After a cancel, how long the ranks may take to save "
                                "before they are killed (also what `ray job stop` waits).")
    python: str = Field("python", min_length=1, description="Interpreter of the job's driver on the Ray head "
                        "(a venv path if unigen is not on the head's PATH python).")

    @field_validator("gpus_per_worker")
    @classmethod
    def _one_rank_per_gpu(cls, value: float) -> float:
        if value not in (0, 1):
            raise ValueError("must be 1 (one rank per GPU) or 0 (CPU workers): a rank uses exactly one GPU")
        return value


class S3Section(_Strict):
    """S3-compatible object store for checkpoints and data; credentials by env var NAME."""

    endpoint_url: str | None = Field(None, description="Endpoint of an S3-compatible store (null: AWS).")
    region: str | None = Field(None, description="Region name.")
    access_key_id_env: str | None = Field(None, description="NAME of the env var holding the access key id "
                                          "(null: the AWS default chain, e.g. AWS_ACCESS_KEY_ID).")
    secret_access_key_env: str | None = Field(None, description="NAME of the env var holding the secret key.")
    session_token_env: str | None = Field(None, description="NAME of the env var holding a session token.")

    @field_validator("access_key_id_env", "secret_access_key_env", "session_token_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not ENV_NAME.match(value):
            # Never echo the value: it may be the secret itself, pasted in the wrong place.
            raise ValueError("must be the NAME of an environment variable (letters, digits, _), not the secret itself")
        return value


class StorageSection(_Strict):
    """Where runs live and how object storage is reached."""

    run_root: str | None = Field(None, description="Folder holding one folder per run (relative to where "
                                 "unigen runs). $UNIGEN_RUN_ROOT wins; default ./unigen-runs.")
    s3: S3Section | None = Field(None, description="S3 settings used for s3:// checkpoint and data URIs.")


class ProfileTracking(_Strict):
    """MLflow store for every run of this profile (a recipe's tracking.tracking_uri wins)."""

    tracking_uri: str | None = Field(None, description="MLflow store URI (http://..., sqlite:///...).")


class Profile(_Strict):
    """Where and how stages run. ``model_dump(mode="json")`` is what run.json records."""

    name: str = Field(min_length=1, description="Name of the profile (what --profile NAME finds as NAME.yaml).")
    base: str | None = Field(None, description="A profile this one extends (path relative to this file). One level deep.")
    launcher: Launcher = Field(description="local (this machine), slurm (an sbatch job per stage) or ray (a Ray Job).")
    resources: ResourcesSection = Field(default_factory=ResourcesSection, description="Resources per job.")
    local: LocalSection | None = Field(None, description="Local launcher settings (launcher: local).")
    slurm: SlurmSection | None = Field(None, description="SLURM settings (launcher: slurm).")
    ray: RaySection | None = Field(None, description="Ray settings (launcher: ray).")
    env: dict[str, str] = Field(default_factory=dict, description="Environment variables set for every rank "
                                "(no secrets: export those in the submitting shell).")
    storage: StorageSection = Field(default_factory=StorageSection, description="Run folders and object storage.")
    tracking: ProfileTracking = Field(default_factory=ProfileTracking, description="MLflow store.")

    @field_validator("env", mode="before")
    @classmethod
    def _scalars_as_text(cls, value: Any) -> Any:
        # `OMP_NUM_THREADS: 1` is an int in YAML; the environment only holds text.
        if isinstance(value, dict):
            return {k: (("true" if v else "false") if isinstance(v, bool) else str(v))
                    if isinstance(v, (int, float)) else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _own_section_present(self) -> "Profile":
        # The active launcher's section always exists after validation, with its defaults.
        defaults = {"local": LocalSection, "slurm": SlurmSection, "ray": RaySection}
        if getattr(self, self.launcher) is None:
            setattr(self, self.launcher, defaults[self.launcher]())
        return self
