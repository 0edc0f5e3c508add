"""``unigen validate [RECIPE...] [KEY=VALUE...] [--profile P] [--quiet] [--fields]``.

Checks recipes (with base and overrides) against a profile without running anything or writing any
file; prints the resolved config of every stage, the derived batch numbers, the DeepSpeed config and a
memory estimate per GPU. Problems come out as ``error: file:line: key: message`` lines, exit 2.
Imports no torch, deepspeed, mlflow or ray (tested).
"""
from __future__ import annotations

import argparse
import sys

from unigen.orchestrator.commands.inputs import split_inputs


def run(args: argparse.Namespace) -> int:
    """Entry point of ``unigen validate``."""
    if args.fields:
        from unigen.orchestrator.config.reference import reference_text

        print(reference_text())
        return 0
    from unigen.orchestrator.commands.describe import describe
    from unigen.orchestrator.config import resolve_submission

    recipes, overrides = split_inputs(list(args.inputs))
    sub = resolve_submission(recipes, args.profile, overrides, purpose="validate")
    print(describe(sub, full=not args.quiet, memory=True, profile_yaml=not args.quiet and not recipes))
    for warning in sub.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    what = f"{len(sub.stages)} recipe(s) and profile {sub.profile.name}" if sub.stages else f"profile {sub.profile.name}"
    print(f"\nok: {what} valid" + (f" ({len(sub.warnings)} warning(s) on stderr)" if sub.warnings else ""))
    return 0
