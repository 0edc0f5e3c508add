"""eval.suites and eval.suite_samples: names checked against the model package's suites (with the menu in the
message), a section with only suites evaluates something, and the copies of the names stay equal."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from unigen.model.evaluation.suites import SUITES
from unigen.orchestrator.config.recipe import EvalSection
from unigen.orchestrator.config.resolve import resolve_submission

ROOT = Path(__file__).resolve().parents[3]
MENU = re.escape(", ".join(SUITES))


def _resolve(*overrides):
    """smoke-pretrain with ``overrides``, validated as `unigen validate` does (a UserError lists the problems)."""
    return resolve_submission([ROOT / "recipes" / "smoke-pretrain.yaml"], str(ROOT / "cluster_profiles" / "local.yaml"),
                              list(overrides), purpose="validate", gpu_count=0)


def test_an_unknown_suite_names_the_key_and_the_valid_suites():
    from unigen.orchestrator.errors import UserError

    with pytest.raises(UserError, match=rf"eval\.suites\.1: unknown evaluation suite 'geneval': choose from {MENU}"):
        _resolve("eval.suites=[t2i, geneval]")
    with pytest.raises(ValidationError, match=rf"unknown evaluation suite 'T2I': choose from {MENU}"):
        EvalSection(suites=["T2I"])
    with pytest.raises(ValidationError, match="suite\\(s\\) t2i listed more than once: list each once"):
        EvalSection(suites=["t2i", "edit", "t2i"])
    with pytest.raises(ValidationError, match="suite_samples"):
        EvalSection(suite_samples=0)


def test_a_section_with_only_suites_has_something_to_evaluate():
    sub = _resolve("eval.sources=[]", "eval.prompts=[]", "eval.suites=[t2i, depth]", "eval.suite_samples=4")
    ev = sub.stages[0].recipe.eval
    assert ev.suites == ["t2i", "depth"] and ev.suite_samples == 4 and ev.every == 800
    assert EvalSection().suites == [] and EvalSection().suite_samples == 48


def test_the_copies_of_the_suite_names_equal_the_model_packages():
    from unigen.orchestrator import cli

    assert cli.EVAL_SUITES == SUITES  # `unigen eval --help` lists them without importing the model package
    described = EvalSection.model_fields["suites"].description
    listed = re.search(r"\(([a-z_0-9, ]+);", described).group(1).split(", ")
    assert tuple(listed) == SUITES, "update the eval.suites description (and regenerate the field reference)"


def test_recipes_stay_light_with_suites():
    code = ("import sys\nfrom unigen.orchestrator.config.recipe import EvalSection\n"
            "EvalSection(suites=['t2i', 'understanding'])\n"
            "print(','.join(m for m in ('torch', 'transformers', 'diffusers', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == ""


def test_the_evaluation_runbook_describes_every_suite_and_its_primary_metric():
    from unigen.model.evaluation.suites import PRIMARY

    text = (ROOT / "runbooks" / "evaluation.md").read_text()
    section = text[text.index("## Suites: scored generation"):]
    table = {line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| ")}
    assert set(SUITES) <= table, f"runbooks/evaluation.md's suite table lacks {sorted(set(SUITES) - table)}"
    for suite, metric in PRIMARY.items():
        assert f"`{metric}`" in section, f"the primary metric of {suite} ({metric}) is not in the runbook"
