"""Hand tools for checkpoints (runbooks/checkpoint-recovery.md), usable while a run is live.

    python -m unigen.orchestrator.checkpoint plan RUN_DIR [--remote URI] [--level size] [--json]
    python -m unigen.orchestrator.checkpoint verify STEP_DIR
    python -m unigen.orchestrator.checkpoint pull URI STEP RUN_DIR

``plan`` and ``verify`` only read. ``pull`` downloads one remote checkpoint into the run's folder
(temp name, full sha256 check, then rename). Credentials for a remote come from the environment
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL), never from the command line.
Exit codes: 0 usable / verified, 2 not (the reason is printed), 1 a usage error.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from unigen.orchestrator.checkpoint.errors import CheckpointError
from unigen.orchestrator.exitcodes import EXIT_FATAL
from unigen.orchestrator.checkpoint.layout import parse_step_dir
from unigen.orchestrator.checkpoint.manager import CheckpointManager
from unigen.orchestrator.checkpoint.verify import LocalStepView, verify_step


def checkpoints_dir(path: str) -> Path:
    """A run folder or its checkpoints folder -> the checkpoints folder."""
    p = Path(path)
    return p / "checkpoints" if (p / "checkpoints").is_dir() or (p / "run.json").exists() else p


def cmd_plan(args: argparse.Namespace) -> int:
    mgr = CheckpointManager(checkpoints_dir(args.run_dir), remote_uri=args.remote)
    plan = mgr.plan_resume(level=args.level, strict=False)
    print(json.dumps(plan.to_dict(), indent=2) if args.json else plan.describe())
    return 2 if plan.error else 0


def cmd_verify(args: argparse.Namespace) -> int:
    folder = Path(args.step_dir)
    step = parse_step_dir(folder.name)
    if step is None or not folder.is_dir():
        print(f"error: {folder} is not a step-<N> folder", file=sys.stderr)
        return 1
    verdict = verify_step(LocalStepView(folder), step, level="sha256")
    if verdict.ok:
        print(f"OK {folder}: {len(verdict.files)} files, {verdict.bytes / 1e6:.1f} MB, sha256 verified")
        return 0
    print(f"BAD {folder}: {verdict.reason}")
    return EXIT_FATAL


def cmd_pull(args: argparse.Namespace) -> int:
    from unigen.orchestrator.checkpoint.remote import Remote

    local = checkpoints_dir(args.run_dir)
    local.mkdir(parents=True, exist_ok=True)
    path, verdict = Remote(args.uri).download(args.step, local)
    print(f"pulled {args.uri.rstrip('/')}/step-{args.step} -> {path} ({verdict.bytes / 1e6:.1f} MB, sha256 verified)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m unigen.orchestrator.checkpoint", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plan", help="which checkpoint a resume would load, and why not the newer ones")
    p.add_argument("run_dir", help="the run folder (or its checkpoints/ folder)")
    p.add_argument("--remote", help="the run's checkpoint.uri, e.g. s3://bucket/runs/<run id>")
    p.add_argument("--level", choices=("sha256", "size"), default="sha256",
                   help="sha256 hashes every local file (exact, slow on big checkpoints); size is quick")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_plan)
    p = sub.add_parser("verify", help="verify one step folder against its COMMIT and manifests (sha256)")
    p.add_argument("step_dir")
    p.set_defaults(fn=cmd_verify)
    p = sub.add_parser("pull", help="download one remote checkpoint into the run's checkpoints folder")
    p.add_argument("uri")
    p.add_argument("step", type=int)
    p.add_argument("run_dir")
    p.set_defaults(fn=cmd_pull)
    args = ap.parse_args(argv)
    try:
        return args.fn(args)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FATAL


if __name__ == "__main__":
    sys.exit(main())
