"""``unigen validate [RECIPE...] [KEY=VALUE...] [--profile P] [--quiet] [--fields]``.

Checks recipes (with base and overrides) against a profile without running anything or writing any
file; prints the resolved config of every stage, the derived batch numbers, the DeepSpeed config, a
memory estimate per GPU and, also with --quiet, each stage's data sources by name (task, format, weight,
share of the mixture, where it is read from). Problems come out as ``error: file:line: key: message`` lines, exit 2.
Imports no torch, deepspeed, mlflow or ray (tested).
"""
from __future__ import annotations

import argparse
import sys

from unigen.orchestrator.commands.inputs import split_inputs


def run(args: argparse.Namespace) -> int:
    if args.fields:
        from unigen.orchestrator.config.reference import reference_text

        print(reference_text())
        return 0
    from unigen.orchestrator.commands.describe import describe
    from unigen.orchestrator.config import resolve_submission
    from unigen.orchestrator.weights_cache import check_offline_weights

    recipes, overrides = split_inputs(list(args.inputs))
    sub = resolve_submission(recipes, args.profile, overrides, purpose="validate")
    for note in check_offline_weights(sub, args.inputs, args.profile):  # an offline profile: weights cached?
        print(f"note: {note}", file=sys.stderr)
    print(describe(sub, full=not args.quiet, memory=True, profile_yaml=not args.quiet and not recipes))
    for stage in sub.stages:
        print(source_table(stage))
    for warning in sub.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    what = f"{len(sub.stages)} recipe(s) and profile {sub.profile.name}" if sub.stages else f"profile {sub.profile.name}"
    print(f"\nok: {what} valid" + (f" ({len(sub.warnings)} warning(s) on stderr)" if sub.warnings else ""))
    return 0


def source_table(stage) -> str:
    """One line per data source of a resolved stage: what the mixture trains on, by name."""
    sources = stage.recipe.data.sources
    total = sum(src.weight for src in sources)
    rows = [(src.label(), src.task, src.format, f"{src.weight:g}", f"{100 * src.weight / total:.1f}%", src.uri)
            for src in sources]
    head = ("name", "task", "format", "weight", "share", "uri")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(5)]
    lines = [f"\nstage {stage.index} data sources ({stage.path}): {len(sources)}"]
    for row in [head] + rows:
        lines.append("  " + "  ".join(cell.ljust(w) if i != 3 else cell.rjust(w)
                                      for i, (cell, w) in enumerate(zip(row, widths))) + "  " + row[5])
    return "\n".join(lines)
