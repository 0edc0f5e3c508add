"""The recipe: one training stage (what to train, on what data, how long), as typed models.

Every field has a description: ``unigen validate --fields`` and the runbook's field reference are built
from them. Unknown keys are rejected. The ``data`` section IS ``unigen.model.data.spec.DataSpec`` (the
data package owns it); the ``model`` section is a preset name plus flat overrides of
``unigen.model.config.UniGenConfig`` fields, checked by ``model_section.check_model_section``.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from unigen.model.data.spec import DataSpec, SourceSpec

Stage = Literal["pretrain", "instruct"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(BaseModel):
    """Which model to build: a preset (or a saved model folder) plus overrides of its config fields."""

    # Extra keys are UniGenConfig field overrides (model.num_queries=64): checked against that class,
    # so the list of valid keys stays the model package's.
    model_config = ConfigDict(extra="allow")

    preset: str | None = Field(None, description="Model preset: tiny (random, CPU tests), tiny-shapes (the smoke "
                               "model, pretrained frozen parts shipped), medium (random, host-memory benchmarks), "
                               "unigen-3b, unigen-7b. Required unless `pretrained` is given.")
    pretrained: str | None = Field(None, description="Folder written by UniGenPipeline.save_pretrained (or "
                                   "`unigen export`); its config.json replaces the preset's.")


class TrainSection(_Strict):
    """Optimisation: steps, batch sizes, AdamW and the learning-rate schedule."""

    max_steps: int = Field(gt=0, description="Optimizer steps to train for.")
    global_batch_size: int = Field(gt=0, description="Samples per optimizer step over all ranks: "
                                   "micro_batch_size x accumulation x world size (accumulation is derived).")
    micro_batch_size: int = Field(gt=0, description="Samples per rank per forward/backward pass.")
    lr: float = Field(gt=0, description="Peak learning rate (reached after warmup_steps).")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Cosine decay ends at lr x min_lr_ratio "
                                "(1.0 = constant LR after warmup).")
    warmup_steps: int = Field(0, ge=0, description="Linear warmup steps before the cosine decay.")
    seed: int = Field(0, ge=0, description="Seed of model init, data order and CFG dropout.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW (beta1, beta2), each in [0, 1).")
    eps: float = Field(1e-8, gt=0, description="AdamW epsilon.")
    grad_clip: float = Field(1.0, ge=0, description="Clip the global gradient norm to this (0 = no clipping).")
    log_every: int = Field(10, gt=0, description="Log loss, lr, grad norm and throughput every N steps.")
    precision: Literal["bf16", "fp32"] = Field("bf16", description="bf16 mixed precision (DeepSpeed bf16) or "
                                               "full fp32.")
    ema_decay: float | None = Field(None, gt=0, lt=1, description="Keep an exponential moving average of the "
                                    "trained weights with this decay per optimizer step (e.g. 0.999); the export, "
                                    "evaluation and the next stage use it. null: the last weights.")

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in value):
            raise ValueError(f"each beta must be in [0, 1), got {list(value)}")
        return value


class DeepSpeedSection(_Strict):
    """DeepSpeed: the ZeRO stage, plus raw keys merged into the generated DeepSpeed config."""

    zero_stage: Literal[0, 1, 2, 3] = Field(3, description="ZeRO stage: 0 none, 1 optimizer states, "
                                            "2 + gradients, 3 + weights sharded over data-parallel ranks.")
    config: dict[str, Any] = Field(default_factory=dict, description="Raw DeepSpeed config keys merged over "
                                   "the generated config (e.g. zero_optimization.stage3_prefetch_bucket_size). "
                                   "Keys that recipe fields own are refused.")


class CheckpointSection(_Strict):
    """When checkpoints are saved, how many are kept, and where they are copied durably."""

    every: int = Field(500, gt=0, description="Save a committed checkpoint every N optimizer steps "
                       "(and always at the end and on preemption).")
    keep_last: int = Field(3, ge=1, description="Keep the newest N committed checkpoints (locally and remotely).")
    keep_every: int | None = Field(None, gt=0, description="Also keep every checkpoint whose step is a "
                                   "multiple of N (null: none).")
    uri: str | None = Field(None, description="Durable copy of committed checkpoints (s3://bucket/prefix, or a "
                            "local folder, made absolute from where you submit), one folder per run id; "
                            "null keeps them in the run folder only.")


class TrackingSection(_Strict):
    """MLflow: experiment, store and run name."""

    experiment: str = Field("unigen", min_length=1, description="MLflow experiment name.")
    tracking_uri: str | None = Field(None, description="MLflow store (http://host:5000, sqlite:///path.db); "
                                     "null: MLFLOW_TRACKING_URI, the profile's, else <run_root>/mlflow.db.")
    run_name: str | None = Field(None, description="MLflow run name; null: <stage>-<unigen run id>.")


def _prompt_shape(value: Any) -> Any:
    # One clear message instead of one per branch of the union; the conversation's own rules are checked by
    # unigen.orchestrator.config.eval_checks with the model package's chat template.
    if isinstance(value, (str, list)):
        return value
    raise ValueError(f"a prompt is text, or a conversation: a list of messages {{role: user, content: [...]}}; "
                     f"got {value!r:.60}")


Prompt = Annotated[str | list[Any], BeforeValidator(_prompt_shape)]


def check_suite_name(name: str) -> str:
    """``name`` when it is one of the model package's evaluation suites, else a ValueError naming the valid ones
    (eval.suites and ``unigen eval --suite`` share it). The names are read from
    ``unigen.model.evaluation.suites.SUITES`` when needed, so importing a recipe stays light."""
    from unigen.model.evaluation.suites import SUITES

    if name not in SUITES:
        raise ValueError(f"unknown evaluation suite {name!r}: choose from {', '.join(SUITES)}")
    return name


def _unique_suites(names: list[str]) -> list[str]:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"suite(s) {', '.join(repeated)} listed more than once: list each once")
    return names


Suite = Annotated[str, AfterValidator(check_suite_name)]


class EvalSection(_Strict):
    """Evaluation during training: a validation loss on held-out data, sample images and scored evaluation
    suites, all fixed by a seed so that evaluations at different steps compare (runbooks/evaluation.md)."""

    every: int = Field(0, ge=0, description="Evaluate every N optimizer steps and after the last one (0: never). "
                       "Results: eval.jsonl and eval/step-<N>/ in the run folder, and MLflow.")
    sources: list[SourceSpec] = Field(default_factory=list, description="Held-out data for val_loss, in the form "
                                      "of data.sources (data.image_size and data.max_length apply). Empty: no "
                                      "val_loss.")
    samples: int = Field(32, gt=0, description="Held-out samples per evaluation: the first N of the eval.sources "
                         "mixture, the same ones every time, split over the ranks.")
    seed: int = Field(0, ge=0, description="Seed of the held-out selection, the flow times and noise of val_loss, "
                      "the starting noise of the sample images, and the suites' cases and noise.")
    prompts: list[Prompt] = Field(default_factory=list, description="Sample images: a text prompt (one image), or "
                                  "a whole conversation of messages with text, image and image_gen items (one image "
                                  "per image_gen without an image; image paths relative to where you submit).")
    suites: Annotated[list[Suite], AfterValidator(_unique_suites)] = Field(
        default_factory=list, description="Evaluation suites to score at every evaluation: generate from held-out "
        "cases of each task and score them with its standard metric beside a trivial baseline (t2i, edit, "
        "edit_multiturn, multi_image, interleaved, depth, normal, segmentation, pose, grounding, understanding; "
        "runbooks/evaluation.md). Also what `unigen eval RUN` runs by default.")
    suite_samples: int = Field(48, gt=0, description="Held-out cases per suite, the same ones every time (t2i draws "
                               "this many GenEval prompts and as many attribute prompts).")
    num_inference_steps: int = Field(20, gt=0, description="Sampler steps of the sample images and the suites.")
    guidance_scale: float = Field(4.5, gt=0, description="Text guidance of the sample images and the suites "
                                  "(1.0: none).")
    image_guidance_scale: float = Field(1.5, gt=0, description="Input-image guidance of sample images and suite "
                                        "cases that have input images (1.0: none).")


class Recipe(_Strict):
    """One training stage. ``model_dump(mode="json")`` is the resolved recipe recorded in run.json."""

    name: str = Field(min_length=1, description="Name of the recipe; run ids start with it (or with --name).")
    stage: Stage = Field(description="pretrain (stage 1: generation from scratch on the frozen backbone) or "
                         "instruct (stage 2: editing, dense prediction, grounding, multi-image).")
    base: str | None = Field(None, description="A recipe this one extends (path relative to this file). "
                             "Mappings merge key by key; lists and values are replaced. One level deep.")
    init_from: str | None = Field(None, description="Weights to start from: run:<run id> (that run's last "
                                  "committed checkpoint) or a local step-<N> checkpoint folder; checked before "
                                  "anything is queued. Empty in a later stage of a multi-recipe submit: it is set "
                                  "to the previous stage's run.")
    model: ModelSection = Field(description="The model: preset or pretrained folder, plus config overrides.")
    data: DataSpec = Field(description="Data mixture (unigen.model.data.spec.DataSpec).")
    train: TrainSection = Field(description="Optimisation settings.")
    deepspeed: DeepSpeedSection = Field(default_factory=DeepSpeedSection, description="DeepSpeed settings.")
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection, description="Checkpoint settings.")
    tracking: TrackingSection = Field(default_factory=TrackingSection, description="MLflow settings.")
    eval: EvalSection = Field(default_factory=EvalSection, description="Evaluation during training "
                              "(off unless eval.every is set).")
