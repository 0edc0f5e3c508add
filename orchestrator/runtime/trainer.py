"""One rank's training attempt: set up (or resume), run the steps, save, export.

The loop is deliberately plain; each concern lives in its own module:
build (model, optimizer), state (checkpoint contents), init_from (stage 2's start), reporting
(run.json progress, metrics.jsonl, MLflow), evaluation (val_loss, sample images), signals (preemption),
checkpoint (commit protocol).
"""
from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from unigen.orchestrator.checkpoint import CheckpointManager
from unigen.orchestrator.checkpoint.remote import storage_options_from_profile
from unigen.orchestrator.config.recorded import recorded_profile, recorded_recipe
from unigen.orchestrator.deepspeed_config import build_deepspeed_config
from unigen.orchestrator.errors import UserError
from unigen.orchestrator.exitcodes import EXIT_REQUEUE
from unigen.orchestrator.runs import RunLedger, checkpoint_mirror
from unigen.orchestrator.runtime import rng, throughput
from unigen.orchestrator.runtime.build import build_optimizer, build_pipeline, build_scheduler
from unigen.orchestrator.runtime.distributed import RankContext, to_device
from unigen.orchestrator.runtime.evaluation import Evaluator
from unigen.orchestrator.runtime.init_from import resolve_init
from unigen.orchestrator.runtime.reporting import Reporter
from unigen.orchestrator.runtime.state import build_seed, load_engine_state, load_rank_state, make_write_fn
from unigen.orchestrator.runtime.weight_average import WeightAverage
from unigen.orchestrator.signals import install_handlers

log = logging.getLogger("unigen.runtime")


class Trainer:
    """Everything one rank needs for one attempt of a run."""

    def __init__(self, run_dir: Path, ctx: RankContext):
        self.ctx = ctx
        self.ledger = RunLedger(run_dir)
        self.record = self.ledger.read()
        self.flag = install_handlers()

    # -- setup ----------------------------------------------------------------------------------
    def setup(self) -> None:
        import torch

        from unigen.model.data.loader import build_loader
        from unigen.orchestrator.comm import TorchComm
        from unigen.orchestrator.runtime.distributed import init_distributed

        import deepspeed

        # Typed from run.json here, not in __init__: a recipe that no longer validates is a UserError (exit 2).
        self.recipe = recorded_recipe(self.record, source=str(self.ledger.paths.ledger))
        self.train_section = train = self.recipe.train
        self.device = init_distributed(self.ctx)
        self.comm = TorchComm()
        storage = storage_options_from_profile(recorded_profile(self.record, source=str(self.ledger.paths.ledger)))
        init_weights, self.lineage = resolve_init(self.recipe.init_from, run_dir=self.ledger.paths.root,
                                                  comm=self.comm, storage_options=storage)
        # Identical initial parameters on every rank (ZeRO-3 partitions them), and the same frozen parts on a
        # resume and in the export: checkpoints leave them out (state.build_seed).
        rng.seed_everything(build_seed(train))
        # GPU ranks overlap communication with backward; CPU ranks keep program order (bit-exact resume).
        ds_config = build_deepspeed_config(train, self.recipe.deepspeed, self.ctx.world_size,
                                           gpus=str(self.device).startswith("cuda"))
        # Under ZeRO-3 the model is built partitioned with this same config (unigen.model.zero_init).
        self.pipe = build_pipeline(self.recipe.model, init_weights, ds_config=ds_config)
        model = self.pipe.model
        self.ds_config = ds_config
        self.accumulation = ds_config["gradient_accumulation_steps"]
        optimizer = build_optimizer(model, train, device=self.device)
        self.max_steps = train.max_steps
        scheduler = build_scheduler(optimizer, warmup_steps=train.warmup_steps, max_steps=self.max_steps,
                                    min_lr_ratio=train.min_lr_ratio)
        self.engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                                    config=ds_config)
        # Starts at the weights training starts from (stage 1's for a stage 2); a resume overwrites it.
        self.average = WeightAverage(self.engine.module, train.ema_decay) if train.ema_decay else None
        ckpt = self.recipe.checkpoint
        remote = checkpoint_mirror(self.recipe, self.record["run_id"])
        self.reporter = Reporter(self.ledger, self.ctx, train=train, ds_config=ds_config, lineage=self.lineage)
        self.ckpt = CheckpointManager(self.ledger.paths.checkpoints, comm=self.comm, remote_uri=remote,
                                      storage_options=storage, keep_last=ckpt.keep_last, keep_every=ckpt.keep_every,
                                      on_event=self.reporter.on_checkpoint_event)
        self.save_every = ckpt.every
        self.step, data_state = 0, None
        info = self.ckpt.resume(self.comm)
        if info is not None:
            data_state = self._restore(Path(info.path), info.world_size)
        else:
            torch.manual_seed(rng.derive_seed(train.seed, "rank", self.ctx.rank))
        self.reporter.start(resumed_step=self.step if info is not None else None,
                            mlflow_run_id=(info.metadata.get("mlflow_run_id") if info else None))
        self.loader = build_loader(self.recipe.data, self.pipe.processor, seed=train.seed,
                                   global_batch_size=train.global_batch_size,
                                   micro_batch_size=train.micro_batch_size,
                                   rank=self.ctx.rank, world_size=self.ctx.world_size, state=data_state)
        self._check_latents()
        self.evaluator = Evaluator(self.recipe.eval, self.recipe.data, pipe=self.pipe,
                                   run_dir=self.ledger.paths.root, device=self.device, rank=self.ctx.rank,
                                   world_size=self.ctx.world_size, max_steps=self.max_steps,
                                   micro_batch_size=train.micro_batch_size)

    def _check_latents(self) -> None:
        """Precomputed latents must come from this model's VAE: other numbers of the same shape would train
        silently on wrong targets. A mismatch is the user's to fix (re-encode), so no restart tries it again."""
        from unigen.model.data.errors import DataError
        stores = [s for s in self.loader.sources if s.latents is not None]
        if not stores:
            return
        fingerprint = self.pipe.model.vae_fingerprint()
        try:
            for source in stores:
                source.latents.check_model(fingerprint, where=f"data.sources[{source.index}]")
        except DataError as err:
            raise UserError(str(err)) from None

    def _restore(self, step_dir: Path, saved_world: int) -> dict[str, Any]:
        """Load the engine and this rank's state from a committed checkpoint; returns the data state."""
        from unigen.orchestrator.runtime.consolidate import is_zero_partitioned

        # Only ZeRO partitions depend on the world size; whole weights (stage 0) load on any number of ranks.
        if saved_world != self.ctx.world_size and is_zero_partitioned(step_dir):
            from unigen.orchestrator.runtime.reshard import load_resharded

            load_resharded(self.engine, step_dir, comm=self.comm)
        else:  # the frozen parameters are not in the files: they keep the values setup() built
            load_engine_state(self.engine, step_dir)
        own = load_rank_state(step_dir, self.ctx.rank)
        trainer_state = (own or load_rank_state(step_dir, 0))["trainer"]
        same_ranks = own is not None and saved_world == self.ctx.world_size
        if same_ranks:
            rng.restore(own["rng"])
        if self.average is not None:
            self.average.load(step_dir, rank=self.ctx.rank, own=own if same_ranks else None)
        self.step = int(trainer_state["step"])
        log.info("rank %d resumed at step %d from %s", self.ctx.rank, self.step, step_dir)
        return trainer_state["data"]

    # -- loop -----------------------------------------------------------------------------------
    def train(self) -> int:
        """Run to max_steps; returns the process exit code (0, or EXIT_REQUEUE after a preemption)."""
        while self.step < self.max_steps:
            if self.flag.should_stop(self.comm):
                self._save(reason=f"preempted ({self.flag.reason})")
                self.reporter.preempted(self.step, self.flag.reason)
                return EXIT_REQUEUE
            self._one_step()
            if self.evaluator.due(self.step):
                # On the weights this run hands on (its export reads the same): the average with train.ema_decay.
                with self.average.in_place() if self.average is not None else contextlib.nullcontext():
                    self.reporter.evaluation(self.evaluator.run(self.step))
            if self.save_every and self.step % self.save_every == 0 and self.step < self.max_steps:
                self._save(reason="periodic")
        self._save(reason="final")
        self.reporter.finish_training(self.step)
        return 0

    def _one_step(self) -> None:
        import torch

        t0 = time.perf_counter()
        micro_batches = self.loader.next_step()
        data_wait = time.perf_counter() - t0
        losses = []
        for m, batch in enumerate(micro_batches):
            # Rank r's micro-batch m holds global samples [g*micro, (g+1)*micro) with g = r*accumulation+m,
            # whatever the world size (see unigen.model.data.loader). Seeding noise and CFG dropout by
            # (seed, step, g) gives the same samples the same randomness on any number of ranks.
            index = self.ctx.rank * self.accumulation + m
            torch.manual_seed(rng.derive_seed(self.train_section.seed, self.step, index))
            out = self.engine(**to_device(batch, self.device))
            self.engine.backward(out.loss)
            if m == len(micro_batches) - 1:
                unclipped = self._grad_norm_without_zero()
            self.engine.step()
            losses.append(out.loss.detach().float())
        if self.average is not None:
            self.average.update()
        loss = _mean_over_ranks(torch.stack(losses).mean())
        self.step += 1
        step_time = time.perf_counter() - t0
        self.reporter.step(self.step, {
            "loss": loss,
            "lr": self.engine.get_lr()[0],
            "grad_norm": float(self.engine.get_global_grad_norm() or unclipped or 0.0),
            "step_time_s": step_time,
            "data_wait_s": data_wait,
            "samples_per_s": self.train_section.global_batch_size / step_time,
            # mfu and model_tflops of this rank, on GPUs only (unigen.orchestrator.runtime.throughput)
            **throughput.mfu_metrics(self.pipe.model.config, micro_batches, step_time, self.device),
        })

    def _grad_norm_without_zero(self) -> float | None:
        """The gradient norm before clipping when DeepSpeed does not report one: without ZeRO it clips a
        torch optimizer's gradients but drops the norm. None under ZeRO (DeepSpeed reports it)."""
        if int(self.ds_config["zero_optimization"]["stage"]) != 0:
            return None
        import torch

        grads = [p.grad for p in self.pipe.model.parameters() if p.grad is not None]
        return float(torch.nn.utils.get_total_norm(grads)) if grads else None

    def _save(self, *, reason: str) -> None:
        state = {"step": self.step, "samples_seen": self.step * self.train_section.global_batch_size,
                 "data": self.loader.state_dict(), "mlflow_run_id": self.reporter.mlflow_run_id,
                 "attempt": self.ctx.attempt}
        write = make_write_fn(self.engine, rank=self.ctx.rank, trainer_state=state, weight_average=self.average)
        info = self.ckpt.save(self.step, write,
                              metadata={k: v for k, v in state.items() if k != "data"} | {"reason": reason})
        if self.ctx.is_main:
            self.reporter.checkpoint_saved(info)

    # -- end ------------------------------------------------------------------------------------
    def close(self, *, status: str) -> None:
        """End the attempt, closing what setup() got to: ``status`` is completed, requeued or failed (see
        Reporter.close)."""
        if hasattr(self, "loader"):
            # Stop the data workers now. They ignore SIGTERM (so a scheduler's signal cannot kill them
            # mid-step), and multiprocessing's exit hook would otherwise SIGTERM and join them forever.
            self.loader.close()
        if hasattr(self, "ckpt") and self.ctx.is_main:
            # Durable copies matter more than a fast exit: wait for the uploads of this attempt.
            self.ckpt.close(timeout=600 if status != "failed" else 120)
        if hasattr(self, "reporter"):
            self.reporter.close(status=status)


def _mean_over_ranks(value) -> float:
    import torch.distributed as dist

    value = value.clone()
    if dist.is_initialized():
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= dist.get_world_size()
    return float(value)
