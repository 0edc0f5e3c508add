"""Model FLOPs (unigen.model.flops) equal what torch's FlopCounterMode counts in a real step, and the
runtime's MFU metrics are built from them."""
import pytest
import torch

from tests.unit.model.model_helpers import edit, pattern, seed_example, t2i, tiny_pipeline
from unigen.model.flops import flop_counter, step_flops
from unigen.orchestrator.runtime.throughput import device_peak_flops, mfu_from, mfu_metrics


@pytest.fixture(scope="module")
def batches():
    proc = tiny_pipeline().processor
    mixed = proc([seed_example(), t2i("a long caption about a red square", pattern(6))])
    latents = dict(mixed, gen_latents=tiny_pipeline().model.encode_latents(mixed["gen_pixel_values"]),
                   gen_pixel_values=None)
    return {"images+pixels": mixed, "latents": latents, "edit": proc([edit(pattern(1), "x", pattern(2))])}


@pytest.mark.parametrize("switches,names", [({}, ["images+pixels", "latents", "edit"]),
                                            ({"frozen_prefix_cache": False}, ["latents"]),
                                            ({"backbone_training": "full"}, ["images+pixels"])], ids=str)
def test_formula_equals_the_counted_step(switches, names, batches):
    model = tiny_pipeline(**switches).model.train()
    for name in names:
        batch = batches[name]
        torch.manual_seed(0)
        with flop_counter() as counter:
            model(**batch).loss.backward()
        model.zero_grad(set_to_none=True)
        formula = step_flops(model.config, batch)
        assert formula.total == pytest.approx(counter.get_total_flops(), rel=1e-9), (name, vars(formula))
        assert formula.vae > 0 if name != "latents" else formula.vae == 0


def test_the_split_counts_less_backbone_work_than_the_plain_step(batches):
    config = tiny_pipeline().model.config
    split = step_flops(config, batches["latents"], split=True)
    plain = step_flops(config, batches["latents"], split=False)
    assert split.backbone < plain.backbone and split.dit == plain.dit and split.connector == plain.connector


def test_depthwise_convolution_backward_is_counted_once_per_gradient():
    """torch's own formula ignores groups and charges a depthwise conv's backward as a dense one."""
    from torch.utils.flop_counter import FlopCounterMode

    conv = torch.nn.Conv2d(64, 64, 3, padding=1, groups=64)
    x = torch.randn(1, 64, 16, 16, requires_grad=True)
    forward = 2 * 64 * 9 * 16 * 16
    with flop_counter() as fixed:
        conv(x).sum().backward()
    with FlopCounterMode(display=False) as raw:
        conv(x).sum().backward()
    assert fixed.get_total_flops() == 3 * forward
    assert raw.get_total_flops() > 10 * fixed.get_total_flops()


def test_peaks_by_device_name_and_override():
    assert device_peak_flops("NVIDIA H100 80GB HBM3", {}) == 989.4e12
    assert device_peak_flops("NVIDIA H100 PCIe", {}) == 756.0e12
    assert device_peak_flops("NVIDIA H200", {}) == 989.4e12
    assert device_peak_flops("NVIDIA A100-SXM4-80GB", {}) == 312.0e12
    assert device_peak_flops("Some Future GPU", {}) is None
    assert device_peak_flops("Some Future GPU", {"UNIGEN_PEAK_TFLOPS": "500"}) == 500e12


def test_mfu_metrics_from_the_batches_of_a_step(batches):
    config = tiny_pipeline().model.config
    micro = [batches["latents"], batches["edit"]]
    flops = sum(step_flops(config, b).total for b in micro)
    metrics = mfu_from(config, micro, 0.5, 1e12)
    assert metrics["mfu"] == pytest.approx(flops / 0.5 / 1e12) and metrics["model_tflops"] == pytest.approx(flops / 0.5 / 1e12)
    assert mfu_from(config, micro, 0.5, None) == {}
    assert mfu_metrics(config, micro, 0.5, "cpu") == {}  # CPU runs log no MFU
