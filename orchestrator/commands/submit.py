"""``unigen submit RECIPE [RECIPE...] --profile P [KEY=VALUE...] [--name N] [--dry-run] [--wait]``.

This module is the front: parse, resolve and check every stage (nothing is created when anything is
wrong), then hand the ``Submission`` to ``unigen.orchestrator.submission.submit_stages``, which creates the
run folders and starts the launcher. ``--dry-run`` prints the resolved config of every stage and the
launcher's own preview (e.g. the exact sbatch script).
"""
from __future__ import annotations

import argparse
import sys

from unigen.orchestrator.commands.inputs import split_inputs
from unigen.orchestrator.errors import UserError


def run(args: argparse.Namespace) -> int:
    from unigen.orchestrator import submission
    from unigen.orchestrator.commands.describe import describe
    from unigen.orchestrator.config import resolve_submission
    from unigen.orchestrator.weights_cache import check_offline_weights

    recipes, overrides = split_inputs(list(args.inputs))
    if not recipes:
        raise UserError("no recipe file given: unigen submit RECIPE.yaml [RECIPE.yaml ...] --profile P [KEY=VALUE ...]")
    sub = resolve_submission(recipes, args.profile, overrides, args.name, purpose="submit")
    for note in check_offline_weights(sub, args.inputs, args.profile):  # an offline profile: weights cached?
        print(f"note: {note}", file=sys.stderr)
    for warning in (*sub.warnings, *submission.grace_warnings(sub)):
        print(f"warning: {warning}", file=sys.stderr)
    if args.dry_run:
        print(describe(sub, full=True, memory=False, profile_yaml=True))
        print("\n" + submission.describe_launch(sub).rstrip())
        print(f"\ndry run: nothing was submitted ({len(sub.stages)} stage(s) would run with launcher "
              f"{sub.profile.launcher})")
        return 0
    return int(submission.submit_stages(sub, wait=args.wait) or 0)
