"""``python -m unigen.orchestrator.runtime RUN_DIR``: one rank of one attempt of a run."""
from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path

from unigen.orchestrator.errors import UserError
from unigen.orchestrator.exitcodes import EXIT_CRASH, EXIT_FATAL, EXIT_USAGE
from unigen.orchestrator.runs import RunLedger
from unigen.orchestrator.runtime.distributed import RankContext, shutdown
from unigen.orchestrator.secrets import ScrubFilter, scrub

# No progress bars from the hub libraries in a rank: a rank's log is a file, where a bar is noise, and a bar
# starts tqdm's monitor thread, one more thread alive when the data loader forks its workers.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _setup_logging(rank: int) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(ScrubFilter())
    handler.setFormatter(logging.Formatter(f"%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for noisy in ("DeepSpeed", "deepspeed", "torch.distributed", "urllib3", "botocore", "s3fs", "fsspec",
                  "alembic", "mlflow", "httpx", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run(run_dir: Path) -> int:
    """Run this rank's attempt; the exit code is what the launcher acts on."""
    from unigen.orchestrator.runtime.export import export_checkpoint
    from unigen.orchestrator.runtime.trainer import Trainer

    ctx = RankContext.from_env()
    _setup_logging(ctx.rank)
    trainer = Trainer(run_dir, ctx)
    status = "failed"
    try:
        trainer.setup()
        code = trainer.train()
        if code == 0 and ctx.is_main:
            ledger = trainer.ledger
            step_dir = ledger.paths.checkpoints / f"step-{trainer.step}"
            out = export_checkpoint(trainer.recipe, step_dir, ledger.paths.export, run_id=ledger.run_id)
            ledger.set_export(out, trainer.step)
            if trainer.reporter.tracker is not None:
                trainer.reporter.tracker.log_export(str(out))
        status = "completed" if code == 0 else "requeued"
        return code
    except UserError as e:
        msg = scrub(str(e))
        logging.getLogger("unigen.runtime").error("%s", msg)
        if ctx.is_main:
            RunLedger(run_dir).set_error(msg)
        return EXIT_FATAL
    except BaseException as e:
        if isinstance(e, SystemExit):
            raise
        text = scrub("".join(traceback.format_exception(e)))
        logging.getLogger("unigen.runtime").error("rank %d crashed:\n%s", ctx.rank, text)
        if ctx.is_main:
            last = scrub(f"{type(e).__name__}: {e}")[:500]
            RunLedger(run_dir).set_error(last)
        return EXIT_CRASH
    finally:
        trainer.close(status=status)
        shutdown()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m unigen.orchestrator.runtime RUN_DIR", file=sys.stderr)
        return EXIT_USAGE
    return run(Path(argv[0]))


if __name__ == "__main__":
    sys.exit(main())
