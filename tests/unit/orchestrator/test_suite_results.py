"""The suite results in the forms they leave a run in (orchestrator/runtime/suite_results.py): JSON-safe rows,
MLflow's flat metrics, the step's table files, the runs/status figures and run.json's latest evaluation."""
from __future__ import annotations

import json
import math

import pytest
from PIL import Image

from unigen.model.evaluation.suites import PRIMARY, SuiteResult
from unigen.orchestrator.runtime import suite_results as sr


def _results():
    picture = Image.new("RGB", (8, 8), (200, 10, 10))
    return [SuiteResult("edit", {"success": 0.25, "change": 0.5, "rest": 0.75}, {"success": 0.0, "change": 0.0,
                                                                                "rest": 1.0}, 4, 1.234,
                        examples=[("edit-0.png", picture), ("edit-1.png", picture)]),
            SuiteResult("t2i", {"colors": 1.0, "position": math.nan, "overall": 0.625},
                        {"colors": 0.0, "position": math.nan, "overall": 0.125}, 4, 0.5,
                        examples=[("t2i-0.png", picture)])]


def test_rows_are_json_safe_and_name_their_primary_metric():
    rows = sr.suite_rows(_results())
    assert [r["primary"] for r in rows] == [PRIMARY["edit"], PRIMARY["t2i"]] == ["success", "overall"]
    assert rows[1]["metrics"]["position"] is None and rows[1]["baseline"]["position"] is None  # NaN: no case
    assert rows[0] == {"suite": "edit", "primary": "success", "count": 4, "seconds": 1.23,
                       "metrics": {"success": 0.25, "change": 0.5, "rest": 0.75},
                       "baseline": {"success": 0.0, "change": 0.0, "rest": 1.0}}
    json.dumps(rows, allow_nan=False)


def test_flat_metrics_for_mlflow_leave_unmeasured_metrics_out():
    flat = sr.flat_metrics(sr.suite_rows(_results()))
    assert flat["eval/edit/success"] == 0.25 and flat["eval/edit/success.baseline"] == 0.0
    assert flat["eval/t2i/overall"] == 0.625 and flat["eval/t2i/overall.baseline"] == 0.125
    assert "eval/t2i/position" not in flat and "eval/t2i/position.baseline" not in flat
    assert len(flat) == 2 * 3 + 2 * 2


def test_table_puts_each_primary_metric_first():
    rows = sr.table_rows(sr.suite_rows(_results()))
    assert rows[0] == ("edit", "success", "0.250", "0.000", True)
    assert [r[1] for r in rows] == ["success", "change", "rest", "overall", "colors", "position"]
    assert rows[-1] == ("t2i", "position", "-", "-", False)
    markdown = sr.markdown_table(sr.suite_rows(_results())).splitlines()
    assert markdown[0] == "| suite | metric | value | baseline |"
    assert markdown[2] == "| edit | **success** | 0.250 | 0.000 |" and "| t2i | colors | 1.000 | 0.000 |" in markdown


def test_write_suite_files_replaces_an_earlier_evaluations_files(tmp_path):
    folder = tmp_path / "eval" / "step-7"
    (folder / "suites").mkdir(parents=True)
    (folder / "suites" / "depth-0.png").write_bytes(b"old")
    (folder / "prompt-0.png").write_bytes(b"a sample image of the same step")
    rows = sr.write_suite_files(folder, _results(), step=7, settings={"samples": 4, "seed": 0})
    document = json.loads((folder / "suites.json").read_text())
    assert document["step"] == 7 and document["suites"] == rows and document["settings"] == {"samples": 4, "seed": 0}
    assert document["examples"] == {"edit": ["suites/edit-0.png", "suites/edit-1.png"], "t2i": ["suites/t2i-0.png"]}
    assert sorted(p.name for p in (folder / "suites").iterdir()) == ["edit-0.png", "edit-1.png", "t2i-0.png"]
    assert Image.open(folder / "suites" / "t2i-0.png").size == (8, 8)
    assert (folder / "prompt-0.png").read_bytes() == b"a sample image of the same step"
    text = (folder / "suites.md").read_text()
    assert "# Evaluation suites at step 7" in text and "| t2i | **overall** | 0.625 | 0.125 |" in text


def test_headline_and_status_lines():
    rows = sr.suite_rows(_results())
    assert sr.headline(rows) == "t2i 0.62"  # t2i first when present, whatever the order
    assert sr.headline(rows[:1]) == "edit 0.25" and sr.headline([]) is None and sr.headline(None) is None
    assert sr.suite_lines(rows) == ["edit: success 0.250 (baseline 0.000), 4 cases",
                                    "t2i: overall 0.625 (baseline 0.125), 4 cases"]


T2I = {"suite": "t2i", "primary": "overall", "metrics": {"overall": 0.5}}
T2I_NEW = {"suite": "t2i", "primary": "overall", "metrics": {"overall": 0.75}}
EDIT = {"suite": "edit", "primary": "success", "metrics": {"success": 0.25}}


@pytest.mark.parametrize("held, new, expected", [
    (None, {"step": 4, "suites": [T2I]}, {"step": 4, "suites": [T2I]}),
    ({"step": 8, "val_loss": 0.3}, {"step": 4, "suites": [T2I]}, {"step": 8, "val_loss": 0.3}),  # older: kept
    ({"step": 4, "val_loss": 0.3}, {"step": 8, "suites": [T2I]}, {"step": 8, "suites": [T2I]}),  # newer: replaces
    ({"step": 8, "val_loss": 0.3, "images": "x", "suites": [T2I, EDIT]}, {"step": 8, "suites": [T2I_NEW]},
     {"step": 8, "val_loss": 0.3, "images": "x", "suites": [T2I_NEW, EDIT]}),  # same step: merged, by suite
    ({"step": 8, "suites": [T2I]}, {"step": 8, "suites": [EDIT]}, {"step": 8, "suites": [T2I, EDIT]}),
    ({"step": 8, "suites": [T2I]}, {"step": 8, "val_loss": 0.2}, {"step": 8, "suites": [T2I], "val_loss": 0.2}),
    ({"val_loss": 0.3}, {"step": 0, "suites": [T2I]}, {"step": 0, "suites": [T2I]}),  # no step: older than any
])
def test_merge_latest_eval(held, new, expected):
    assert sr.merge_latest_eval(held, new) == expected
