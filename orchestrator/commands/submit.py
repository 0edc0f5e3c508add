"""``unigen submit RECIPE [RECIPE...] --profile P [KEY=VALUE...] [--name N] [--dry-run] [--wait]``.

This module is the front: parse, resolve and check every stage (nothing is created when anything is
wrong), then hand the ``Submission`` to ``unigen.orchestrator.submit.submit_stages``, which creates the
run folders and starts the launcher. ``--dry-run`` prints the resolved config of every stage (and the
launcher's own preview, e.g. the sbatch script, when that module provides ``describe_launch``).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from unigen.orchestrator.commands.inputs import split_inputs
from unigen.orchestrator.errors import UserError

EXIT_UNAVAILABLE = 2
_SUBMIT_MODULE = "unigen.orchestrator.submit"


def _submit_module():
    try:
        return importlib.import_module(_SUBMIT_MODULE)
    except ModuleNotFoundError as err:
        if err.name != _SUBMIT_MODULE:
            raise
        return None


def run(args: argparse.Namespace) -> int:
    """Entry point of ``unigen submit``."""
    from unigen.orchestrator.commands.describe import describe
    from unigen.orchestrator.config import resolve_submission

    recipes, overrides = split_inputs(list(args.inputs))
    if not recipes:
        raise UserError("no recipe file given: unigen submit RECIPE.yaml [RECIPE.yaml ...] --profile P [KEY=VALUE ...]")
    sub = resolve_submission(recipes, args.profile, overrides, args.name, purpose="submit")
    for warning in sub.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    module = _submit_module()
    grace_warnings = getattr(module, "grace_warnings", None)
    for warning in (grace_warnings(sub) if grace_warnings is not None else []):
        print(f"warning: {warning}", file=sys.stderr)
    if args.dry_run:
        print(describe(sub, full=True, memory=False, profile_yaml=True))
        preview = getattr(module, "describe_launch", None) if module is not None else None
        if preview is not None:
            print("\n" + preview(sub).rstrip())
        print(f"\ndry run: nothing was submitted ({len(sub.stages)} stage(s) would run with launcher "
              f"{sub.profile.launcher})")
        return 0
    if module is None:
        print(f"error: submitting is not available in this build ({_SUBMIT_MODULE} is missing); "
              "`unigen submit --dry-run` shows what would run", file=sys.stderr)
        return EXIT_UNAVAILABLE
    return int(module.submit_stages(sub, wait=args.wait) or 0)
