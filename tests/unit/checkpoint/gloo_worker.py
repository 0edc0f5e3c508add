"""One rank of a real 2-process torch.distributed (gloo) job, standing in for DeepSpeed: it writes
dummy per-rank files through CheckpointManager and reports what it saw as JSON.

Run: python gloo_worker.py SCENARIO RANK WORLD PORT RUN_DIR OUT_JSON
Scenarios:
  commit   save steps 1..4 (keep_last=2), then a failing save (rank 1's write_fn raises), then resume
  signal   train until a preemption signal arrives (the test sends SIGTERM to rank 1 only; rank 0 gets
           two more signals from itself in the middle of the save), agree, save, exit EXIT_REQUEUE
  resume   resume and report the step folder chosen
  zero3    a tiny torch model (trainable, frozen and buffer tensors) under real DeepSpeed ZeRO-3, one
           optimizer step, then a committed save through the runtime's write_fn, mirrored to
           RUN_DIR/mirror; rank 0 also writes the gathered full weights to RUN_DIR/truth.pt
"""
from __future__ import annotations

import datetime
import json
import os
import signal
import sys
import time
from pathlib import Path


def main() -> int:
    scenario, rank, world, port, run_dir, out = sys.argv[1:7]
    rank, world = int(rank), int(world)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from unigen.orchestrator import signals
    from unigen.orchestrator.exitcodes import EXIT_REQUEUE
    from unigen.orchestrator.checkpoint import CheckpointError, CheckpointManager

    flag = signals.install_handlers()  # before the slow imports: the test may signal early
    import torch.distributed as dist

    from unigen.orchestrator.comm import TorchComm

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    comm = TorchComm()
    events: list = []
    mgr = CheckpointManager(Path(run_dir) / "checkpoints", comm=comm, keep_last=2,
                            on_event=lambda k, p: events.append(k))
    report: dict = {"rank": rank}

    def writer(step: int, fail_rank: int | None = None, self_signals: int = 0):
        def write(step_dir: Path) -> list[str]:
            if rank == fail_rank:
                raise OSError(f"disk full (injected) on rank {rank}")
            # Two ranks writing into one folder, as DeepSpeed does: distinct names per rank.
            (step_dir / f"model_rank{rank}.pt").write_bytes(bytes([rank, step]) * (1000 + 100 * rank))
            sub = step_dir / "optim"
            sub.mkdir(exist_ok=True)
            (sub / f"optim_rank{rank}.pt").write_bytes(os.urandom(500))
            for _ in range(self_signals):  # a second signal in the middle of the save
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
            return [f"model_rank{rank}.pt", f"optim/optim_rank{rank}.pt"]
        return write

    if scenario == "commit":
        report["collectives"] = [comm.all_reduce_max(rank * 10 + 5), comm.all_reduce_any(False),
                                 comm.all_reduce_any(rank == 1), comm.broadcast_object({"from": rank}, src=1)]
        infos = [mgr.save(s, writer(s), metadata={"samples_seen": s * 8, "mlflow_run_id": "abc"}) for s in (1, 2, 3, 4)]
        report["saved"] = [[i.step, i.path, i.source, i.blocked_s > 0] for i in infos]
        try:
            mgr.save(5, writer(5, fail_rank=1), metadata={})
            report["failed_save"] = None
        except CheckpointError as e:
            report["failed_save"] = str(e)
        again = mgr.save(4, writer(4), metadata={"samples_seen": 32})
        report["again_source"] = again.source
        info = mgr.resume()
        report["resume"] = [info.step, info.path, info.metadata, info.world_size]
    elif scenario == "signal":
        step = 0
        while True:
            step += 1
            time.sleep(0.05)  # "training"
            if step == 1:
                Path(run_dir, f"ready-rank{rank}").touch()
            if flag.should_stop(comm):
                report["signal_count_before_save"] = flag.count
                info = mgr.save(step, writer(step, self_signals=2 if rank == 0 else 0), metadata={"step": step})
                report.update(stopped_at=step, reason=flag.reason, signal_count=flag.count, path=info.path)
                mgr.close()
                Path(out).write_text(json.dumps(report))
                dist.destroy_process_group()
                return EXIT_REQUEUE
            if step > 2000:
                report["error"] = "no signal arrived"
                break
    elif scenario == "resume":
        info = mgr.resume()
        report["resume"] = None if info is None else [info.step, info.path, info.metadata]
    elif scenario == "zero3":
        mgr.close()
        mgr = CheckpointManager(Path(run_dir) / "checkpoints", comm=comm, remote_uri=str(Path(run_dir) / "mirror"),
                                on_event=lambda k, p: events.append(k))
        report["saved"] = zero3_save(mgr, rank, Path(run_dir))
        assert mgr.flush(60), "upload to the mirror did not finish"
    report["events"] = events
    mgr.close()
    Path(out).write_text(json.dumps(report))
    dist.destroy_process_group()
    return 0


def zero3_save(mgr, rank: int, run_dir: Path) -> list:
    """Train a tiny model one step under ZeRO-3 (2 gloo ranks on CPU) and commit a checkpoint of it."""
    os.environ.update(DS_ACCELERATOR="cpu", RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")
    import deepspeed
    import torch

    from unigen.orchestrator.runtime.distributed import _skip_cpu_shm_op
    from unigen.orchestrator.runtime.state import make_write_fn

    _skip_cpu_shm_op()
    torch.manual_seed(0)  # the same initial weights on both ranks
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.GELU(), torch.nn.LayerNorm(16), torch.nn.Linear(16, 3))
    model[0].bias.requires_grad_(False)  # a frozen tensor, as the frozen backbone is
    model.register_buffer("scale", torch.arange(3.0))  # and a buffer
    config = {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1, "steps_per_print": 10 ** 9,
              "zero_optimization": {"stage": 3}, "zero_allow_untested_optimizer": True}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    torch.manual_seed(10 + rank)  # different batches per rank
    loss = engine(torch.randn(4, 6)).square().mean()
    engine.backward(loss)
    engine.step()
    params = list(engine.module.parameters())
    with deepspeed.zero.GatheredParameters(params):  # collective: the full weights after the step
        truth = {n: t.detach().clone() for n, t in engine.module.state_dict().items()}
    if rank == 0:
        torch.save(truth, run_dir / "truth.pt")
    info = mgr.save(1, make_write_fn(engine, rank=rank, trainer_state={"step": 1}), metadata={"step": 1})
    return [info.step, info.path, info.source]


if __name__ == "__main__":
    sys.exit(main())
