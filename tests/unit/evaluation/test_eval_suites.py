"""Every suite runs end to end on a (random) tiny pipeline and reports its metrics beside its baseline,
the same numbers for the same weights and seed; the trivial baselines are what they should be."""
import math

import pytest

from unigen.model.evaluation import suites


@pytest.fixture(scope="module")
def pipe():
    import torch

    from unigen.model import UniGenPipeline

    torch.manual_seed(0)
    return UniGenPipeline.from_preset("tiny")


@pytest.fixture(scope="module")
def results(pipe):
    return {r.suite: r for r in suites.run_suites(pipe, suites.SUITES, samples=3,
                                                  sampling={"num_inference_steps": 2})}


def test_every_suite_reports_its_metrics_beside_a_baseline(results):
    assert list(results) == list(suites.SUITES)
    for name, result in results.items():
        assert result.primary in result.metrics and result.primary in result.baseline, name
        assert result.count > 0 and result.seconds > 0
        for key, value in result.metrics.items():
            assert math.isnan(value) or math.isfinite(value), (name, key)
        assert set(result.row()) == {"suite", "count", "seconds", "metrics", "baseline"}


def test_trivial_baselines(results):
    # copying the input never makes the edit; a constant normal facing the camera is right on the wall
    assert results["edit"].baseline == {"success": 0.0, "change": 0.0, "rest": 1.0}
    assert results["multi_image"].baseline["success"] == 0.0
    assert 0.0 < results["normal"].baseline["within_11_25"] <= 1.0
    assert results["segmentation"].baseline["miou"] < 0.5  # all background: one class of four right


def test_same_weights_same_numbers(pipe, results):
    again = suites.run_suites(pipe, ["t2i", "depth"], samples=3, sampling={"num_inference_steps": 2})
    for result in again:
        assert result.metrics == pytest.approx(results[result.suite].metrics, nan_ok=True)


def test_unknown_suite_is_refused_with_the_menu(pipe):
    with pytest.raises(ValueError, match=r"unknown evaluation suite\(s\) \['t2v'\]; choose from \['t2i', "):
        suites.run_suites(pipe, ["t2v"])
