"""Ground truth rendered by the task's own encoding decodes back to a perfect score (within the
encoding's tolerance), and what a generator adds (noise, mild blur) degrades it gracefully."""
import numpy as np
import pytest
from PIL import Image, ImageFilter

from unigen.model.data.render import depth, grounding, normal, pose, segmentation
from unigen.model.evaluation import decode as D
from unigen.model.evaluation import metrics as M

YY, XX = np.mgrid[0:64, 0:64]


def _generated(rgb, sigma=6.0, blur=0.8, seed=0):
    """What a diffusion decoder makes of a clean target: slightly blurred, with pixel noise."""
    img = Image.fromarray(np.asarray(rgb))
    if blur:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    noisy = np.asarray(img, np.float64) + np.random.default_rng(seed).normal(0, sigma, np.asarray(img).shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def test_depth_round_trip_and_generated_noise():
    d = 1.0 + 4.0 * XX / 63 + 0.5 * np.sin(YY / 5)  # 0.5..5.5 m
    img = depth.encode(d, (0.1, 10.0), "log")
    m = M.depth_metrics(D.decode_depth(img, depth_range=(0.1, 10.0)), d)
    assert m["abs_rel"] < np.expm1(np.log(100) / 254 / 2) and m["delta1"] == 1  # within half a gray step
    m = M.depth_metrics(D.decode_depth(_generated(img), depth_range=(0.1, 10.0)), d)
    assert m["abs_rel"] < 0.08 and m["delta1"] > 0.99
    lin = depth.encode(d, (0.5, 6.0), "linear")
    assert np.abs(D.decode_depth(lin, [0.5, 6.0], "linear") - d).max() <= 5.5 / 508 + 1e-9
    # the wrong inverse is visibly wrong: options must be the adapter's
    assert M.depth_metrics(D.decode_depth(lin, [0.5, 6.0], "log"), d)["abs_rel"] > 0.2


def test_depth_black_is_far_for_predictions_and_invalid_for_ground_truth():
    img = depth.encode(np.array([[0.0, 2.0]]), (0.1, 10.0))
    assert tuple(img[0, 0]) == (0, 0, 0)
    pred = D.decode_depth(img, (0.1, 10.0))
    assert pred[0, 0] == pytest.approx(10.0) and pred[0, 1] == pytest.approx(2.0, rel=0.01)
    assert D.decode_depth(img, (0.1, 10.0), keep_invalid=True)[0, 0] == 0
    with pytest.raises(ValueError, match="depth_range"):
        D.decode_depth(img, (5.0, 1.0))
    with pytest.raises(ValueError, match="encoding 'sqrt'"):
        D.decode_depth(img, encoding="sqrt")


def test_normal_round_trip_and_generated_noise():
    n = np.stack([0.5 * np.sin(XX / 20), 0.3 * np.cos(YY / 15), np.ones(XX.shape)], axis=-1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    n[:4, :4] = 0  # invalid: black, and left out by the metric
    img = normal.encode(n)
    m = M.normal_metrics(D.decode_normal(Image.fromarray(img)), n)
    assert m["mean_angle"] < 0.5 and m["within_11_25"] == 1 and m["count"] == 64 * 64 - 16
    m = M.normal_metrics(D.decode_normal(_generated(img)), n)
    assert m["mean_angle"] < 5 and m["within_11_25"] > 0.99


def test_segmentation_round_trip_noise_and_label_sets():
    ids = (XX // 16 + 3 * (YY // 16)) % 4
    ids[0, :8] = 255  # ignore
    img = segmentation.encode(ids)
    assert np.array_equal(D.decode_segmentation(img, label_set="shapes"), ids)
    m = M.segmentation_metrics(D.decode_segmentation(_generated(img), "shapes"), ids, 4)
    assert m["miou"] > 0.99  # 4 classes: palette colours 128 apart, noise never crosses
    ade = (XX // 16 + 5 * (YY // 16)) % 150
    img = segmentation.encode(ade)
    assert np.array_equal(D.decode_segmentation(Image.fromarray(img)), ade)  # default: ade20k-150
    noisy = _generated(img, sigma=8, blur=0)  # 150 colours are only 32 apart in one channel
    raw = M.segmentation_metrics(D.decode_segmentation(noisy), ade, 150)
    assert raw["pixel_acc"] > 0.9
    assert M.segmentation_metrics(D.decode_segmentation(noisy, mode_filter=3), ade, 150)["miou"] > 0.99
    assert np.array_equal(D.decode_segmentation(img[:2, :4], num_classes=1000), ade[:2, :4])  # custom set


def test_segmentation_bad_options_name_the_argument():
    img = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="label_set 'voc'.*ade20k-150.*num_classes"):
        D.decode_segmentation(img, label_set="voc")
    with pytest.raises(ValueError, match="mode_filter"):
        D.decode_segmentation(img, mode_filter=2)
    with pytest.raises(ValueError, match="image: expected"):
        D.decode_segmentation(np.zeros((4, 4, 2), np.uint8))


def _people(size=256):
    """Two people whose 17 joints sit on a grid, so their discs never overlap."""
    out = []
    for cx in (size // 4, 3 * size // 4):
        xy = [(cx - 40 + 20 * (k % 5), 30 + 45 * (k // 5)) for k in range(17)]
        out.append(np.concatenate([np.asarray(xy, float), np.full((17, 1), 2.0)], axis=1))
    return out


def test_pose_round_trip_and_generated_noise():
    people = _people()
    boxes = [[p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()] for p in people]  # 80 x 135
    img = pose.draw(people, 256)
    tight = 1.0 / 135  # PCK at a 1-pixel threshold: the decoder's stated tolerance
    assert M.pck(D.decode_pose(img), people, boxes, alpha=tight)["pck"] == 1
    found = D.decode_pose(_generated(img))
    assert M.pck(found, people, boxes, alpha=0.05)["pck"] == 1
    assert M.pck(D.decode_pose(_generated(img, sigma=6, blur=1.0), tol=30), people, boxes)["pck"] == 1
    with pytest.raises(ValueError, match="tol"):
        D.decode_pose(img, tol=300)


def test_grounding_round_trip_noise_and_missing_box():
    rng = np.random.default_rng(3)
    background = Image.fromarray(rng.integers(0, 200, (96, 96, 3), dtype=np.uint8))  # busy, no magenta
    box = [10, 20, 61, 48]
    img = grounding.draw_box(background, box)
    acc = M.GroundingAccuracy()
    assert acc.update(D.decode_box(img), box) == 1.0
    assert acc.update(D.decode_box(_generated(img)), box) > 0.9
    assert D.decode_box(background) is None
    acc.update(D.decode_box(background), box)  # the model drew no box: wrong
    assert acc.compute()["acc@0.5"] == pytest.approx(2 / 3)


def test_decode_dispatch_takes_a_sources_adapter_options():
    d = np.full((4, 4), 3.0)
    img = depth.encode(d, (0.5, 20.0), "linear")
    opts = {"depth_format": "png16", "png_scale": 1 / 256, "depth_range": [0.5, 20.0], "encoding": "linear"}
    assert np.allclose(D.decode("depth", img, **opts), 3.0, atol=19.5 / 508)
    seg = D.decode("segmentation", segmentation.encode(np.eye(4, dtype=int)), label_set="shapes", ignore_index=255)
    assert np.array_equal(seg, np.eye(4))
    with pytest.raises(ValueError, match="options \\['colour'\\] do not apply to depth"):
        D.decode("depth", img, colour="red")
    with pytest.raises(ValueError, match="task 'caption'.*depth"):
        D.decode("caption", img)
