"""Evaluation during training (the recipe's ``eval:`` section): ``val_loss`` on a fixed held-out set,
sample images of fixed prompts and the evaluation suites (``eval.suites``: scored generation from held-out
cases, ``unigen.model.evaluation.suites``), every ``eval.every`` steps and after the last step.

Why fixed: the training loss of a flow model mixes the weights' quality with the flow times and noise each
step happens to draw, so its curve is noisy and two steps do not compare. Here everything but the weights
is fixed by eval.seed: the same held-out samples (unigen.model.data.heldout), and for held-out micro-batch
j the same flow times and noise (torch's RNG seeded from (eval.seed, j)) at every evaluation and on any
number of ranks, no CFG dropout (eval mode); the sample images start from the same noise. So the val_loss
curve moves only when the weights do, also after a resume on another world size.

Training is not disturbed: no gradient is computed, every RNG state is restored afterwards
(``torch.random.fork_rng``), and the model goes back to train mode; a run with evaluation logs the same
training losses as one without. Every rank runs the same forward passes in the same order (ZeRO-3 gathers
parameters collectively, so each rank evaluates its share of the held-out set plus stand-ins, and every
rank draws every sample image and runs every suite on the same cases); rank 0 writes the images and the
suite results (``suite_results``).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unigen.model.data.spec import DataSpec
from unigen.orchestrator.config.recipe import EvalSection
from unigen.orchestrator.runtime.distributed import to_device
from unigen.orchestrator.runtime.rng import derive_seed

log = logging.getLogger("unigen.runtime")
EVAL_DIR = "eval"


def step_folder(run_dir: Path, step: int) -> Path:
    """Where the sample images of the evaluation at ``step`` go."""
    return run_dir / EVAL_DIR / f"step-{step}"


@dataclass
class EvalResult:
    step: int
    metrics: dict[str, float]
    """val_loss, val_loss/<source> (with eval.sources), eval_s."""
    images: list[dict[str, Any]] = field(default_factory=list)
    """Rank 0: one entry per image written: file (relative to the run folder), prompt (its index), text."""
    folder: Path | None = None
    """Rank 0: the step's folder, when images or suite results were written."""
    suites: list[dict[str, Any]] = field(default_factory=list)
    """Rank 0: one row per suite (``suite_results.suite_rows``), with eval.suites."""


class Evaluator:
    """The eval section of one run, set up once per attempt (loads the held-out set up front, so a bad
    eval source fails the attempt at its start rather than at the first evaluation)."""

    def __init__(self, section: EvalSection, data: DataSpec, *, pipe, run_dir: Path, device: str,
                 rank: int, world_size: int, micro_batch_size: int, max_steps: int):
        from unigen.orchestrator.config.eval_checks import as_conversation

        self.every, self.seed = section.every, section.seed
        self.pipe, self.run_dir, self.device = pipe, Path(run_dir), device
        self.rank, self.max_steps = rank, max_steps
        self.prompts = list(section.prompts) if self.every else []
        self.conversations = [_load_images(as_conversation(p), i) for i, p in enumerate(self.prompts)]
        self.sampling = {"num_inference_steps": section.num_inference_steps, "guidance_scale": section.guidance_scale,
                         "image_guidance_scale": section.image_guidance_scale}
        self.suites = list(section.suites) if self.every else []
        self.suite_samples = section.suite_samples
        self.source_names: list[str] = []
        self.batches: list = []
        if self.every and section.sources:
            from unigen.model.data.heldout import heldout_batches

            # Read like data.sources: data's image_size, max_length, ... apply to them.
            spec = DataSpec.model_validate({**data.model_dump(), "sources": section.sources})
            self.source_names, self.batches = heldout_batches(
                spec, pipe.processor, seed=self.seed, samples=section.samples,
                micro_batch_size=micro_batch_size, rank=rank, world_size=world_size)
            log.info("eval: %d held-out micro-batches on this rank (%s), %d prompts, every %d steps",
                     len(self.batches), ", ".join(self.source_names), len(self.prompts), self.every)
        if self.suites and rank == 0:
            log.info("eval: suites %s, %d cases each, every %d steps", ", ".join(self.suites), self.suite_samples,
                     self.every)

    @property
    def enabled(self) -> bool:
        return bool(self.every and (self.batches or self.prompts or self.suites))

    def due(self, step: int) -> bool:
        """Whether an evaluation follows optimizer step ``step``."""
        return self.enabled and (step % self.every == 0 or step == self.max_steps)

    def run(self, step: int) -> EvalResult:
        """Evaluate the current weights (a collective: every rank calls it after the same step)."""
        import torch

        model = self.pipe.model
        was_training = model.training
        start = time.perf_counter()
        devices = [torch.device(self.device).index or 0] if str(self.device).startswith("cuda") else []
        try:
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                model.eval()
                metrics = self._val_loss(model) if self.batches else {}
                images = self._images(step) if self.prompts else []
                suites = self._suites(step) if self.suites else []
        finally:
            model.train(was_training)
        metrics["eval_s"] = time.perf_counter() - start
        folder = step_folder(self.run_dir, step) if images or suites else None
        return EvalResult(step, metrics, images, folder, suites)

    # -- val_loss -------------------------------------------------------------------------------
    def _val_loss(self, model) -> dict[str, float]:
        """Mean rectified-flow loss over the held-out target slots, overall and per source."""
        import torch.distributed as dist

        totals = self.local_totals(model)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(totals, op=dist.ReduceOp.SUM)
        return self.loss_metrics(totals.cpu())

    def local_totals(self, model):
        """(sources, 2) float64: per source, the sum of this rank's held-out slot losses and their count
        (float64, so the order in which ranks' sums meet barely matters)."""
        import torch

        totals = torch.zeros(len(self.source_names), 2, dtype=torch.float64, device=self.device)
        for held in self.batches:
            torch.manual_seed(derive_seed(self.seed, "val", held.index))
            out = model(**to_device(held.batch, self.device))
            if not held.real:
                continue
            has_target = held.batch["gen_slot_has_target"].bool()
            rows = held.batch["gen_slot_batch_index"][has_target]
            source = torch.tensor(held.sources, dtype=torch.long)[rows].to(self.device)
            losses = out.slot_losses.detach().double()
            totals.index_add_(0, source, torch.stack([losses, torch.ones_like(losses)], dim=1))
        return totals

    def loss_metrics(self, totals) -> dict[str, float]:
        """val_loss and val_loss/<source> from all ranks' summed totals."""
        metrics = {}
        if totals[:, 1].sum() > 0:
            metrics["val_loss"] = float(totals[:, 0].sum() / totals[:, 1].sum())
        for name, (total, count) in zip(self.source_names, totals.tolist()):
            if count:
                metrics[f"val_loss/{name}"] = total / count
        return metrics

    # -- sample images --------------------------------------------------------------------------
    def _images(self, step: int) -> list[dict[str, Any]]:
        """Every rank draws every prompt (ZeRO-3); rank 0 writes them to eval/step-<N>/."""
        drawn = [self.pipe(conversation, seed=derive_seed(self.seed, "image", i), **self.sampling)
                 for i, conversation in enumerate(self.conversations)]
        if self.rank != 0:
            return []
        folder = step_folder(self.run_dir, step)
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for i, images in enumerate(drawn):
            for k, image in enumerate(images):
                name = f"prompt-{i}.png" if len(images) == 1 else f"prompt-{i}-{k}.png"
                image.save(folder / name)
                written.append({"file": f"{EVAL_DIR}/{folder.name}/{name}", "prompt": i, "text": _prompt_text(
                    self.prompts[i])})
        (folder / "prompts.json").write_text(json.dumps(written, indent=1) + "\n", encoding="utf-8")
        return written

    # -- suites -------------------------------------------------------------------------------
    def _suites(self, step: int) -> list[dict[str, Any]]:
        """Every rank generates every case of every suite (the same inputs, so the same forward passes under
        ZeRO-3); rank 0 writes suites.json, suites.md and the example pictures to eval/step-<N>/."""
        from unigen.model.evaluation.suites import run_suites
        from unigen.orchestrator.runtime.suite_results import write_suite_files

        say = (lambda line: log.info("%s", line)) if self.rank == 0 else None
        results = run_suites(self.pipe, self.suites, samples=self.suite_samples, seed=self.seed,
                             sampling=self.sampling, log=say)
        if self.rank != 0:
            return []
        settings = {"samples": self.suite_samples, "seed": self.seed, **self.sampling}
        return write_suite_files(step_folder(self.run_dir, step), results, step=step, settings=settings)


def _load_images(conversation: list[dict[str, Any]], index: int) -> list[dict[str, Any]]:
    """The conversation with its input images read now: a missing file stops the attempt at its start, with
    the recipe key that names it, and later evaluations do not read it again."""
    from unigen.model.images import load_image
    from unigen.orchestrator.errors import UserError

    loaded = []
    for m, message in enumerate(conversation):
        content = message["content"]
        if isinstance(content, list):
            items = []
            for i, item in enumerate(content):
                if item.get("type") == "image" and isinstance(item.get("image"), str):
                    try:
                        item = {**item, "image": load_image(item["image"], f"eval.prompts.{index}, message {m}, "
                                                             f"item {i}")}
                    except ValueError as err:
                        raise UserError(f"{err} (paths are relative to the folder you submitted from)") from None
                items.append(item)
            message = {**message, "content": items}
        loaded.append(message)
    return loaded


def _prompt_text(prompt: Any) -> str:
    """The text of an eval.prompts entry, for captions (a conversation's text items joined)."""
    if isinstance(prompt, str):
        return prompt
    texts = []
    for message in prompt:
        content = message.get("content")
        items = [{"type": "text", "text": content}] if isinstance(content, str) else content
        texts += [item["text"] for item in items if item.get("type") == "text"]
    return " / ".join(texts)
