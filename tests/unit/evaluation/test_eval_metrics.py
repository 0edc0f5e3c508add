"""Every metric scores ground truth perfectly and deliberately wrong outputs at hand-computed values."""
import numpy as np
import pytest

from unigen.model.evaluation import metrics as M


def _depth(h=8, w=10):
    return np.linspace(1.0, 9.0, h * w).reshape(h, w)


# -- depth ---------------------------------------------------------------------------------------------

def test_depth_perfect_and_uniformly_scaled_predictions():
    d = _depth()
    perfect = M.depth_metrics(d, d)
    assert perfect["abs_rel"] == 0 and perfect["rmse"] == 0 and perfect["delta1"] == 1 and perfect["count"] == 80
    m = M.depth_metrics(1.1 * d, d)
    assert m["abs_rel"] == pytest.approx(0.1) and m["delta1"] == 1
    assert m["rmse"] == pytest.approx(0.1 * np.sqrt(np.mean(d ** 2)))
    m = M.depth_metrics(1.3 * d, d)
    assert m["abs_rel"] == pytest.approx(0.3) and m["delta1"] == 0 and m["delta2"] == 1  # 1.3 < 1.5625
    assert M.depth_metrics(d / 1.3, d)["delta1"] == 0  # the ratio is symmetric


def test_depth_alignment_recovers_scale_and_shift():
    d = _depth()
    assert M.depth_metrics(1.3 * d, d, align="median")["abs_rel"] == pytest.approx(0, abs=1e-12)
    shifted = 0.5 * d + 2.0  # affine: median alignment cannot undo the shift, least squares can
    assert M.depth_metrics(shifted, d, align="median")["abs_rel"] > 0.05
    m = M.depth_metrics(shifted, d, align="least_squares")
    assert m["abs_rel"] == pytest.approx(0, abs=1e-9) and m["delta1"] == 1


def test_depth_valid_pixels_caps_and_crop_mask():
    d = _depth()
    gt = d.copy()
    gt[0, :3] = [0.0, np.nan, np.inf]  # no measurement: left out whatever the prediction says
    pred = d.copy()
    pred[0, :3] = 1e6
    assert M.depth_metrics(pred, gt)["abs_rel"] == 0 and M.depth_metrics(pred, gt)["count"] == 77
    pred = d.copy()
    pred[d > 5] *= 2  # wrong only beyond the NYU-style 5 m cap
    assert M.depth_metrics(pred, d, max_depth=5.0)["abs_rel"] == 0
    crop = np.zeros(d.shape, bool)
    crop[:, :5] = True
    pred = d.copy()
    pred[:, 5:] = 0.0
    assert M.depth_metrics(pred, d, mask=crop) == pytest.approx(M.depth_metrics(d[:, :5], d[:, :5]))


def test_depth_non_positive_or_nan_prediction_is_clipped_not_inf():
    d = _depth()
    pred = np.zeros_like(d)
    pred[0, 0], pred[0, 1] = -3.0, np.nan
    m = M.depth_metrics(pred, d, min_depth=1e-3)
    assert all(np.isfinite(v) for v in m.values())
    assert m["abs_rel"] == pytest.approx(np.mean(np.abs(1e-3 - d) / d)) and m["delta1"] == 0
    m = M.depth_metrics(np.full_like(d, -1.0), d, align="median")  # no positive depth to take a ratio of
    assert all(np.isfinite(v) for v in m.values())


def test_depth_split_averages_per_image_and_skips_empty_images():
    acc = M.DepthMetrics()
    small = _depth(2, 2)
    acc.update(1.1 * small, small)  # 4 pixels at abs_rel 0.1
    acc.update(_depth(), _depth())  # 80 pixels at 0
    acc.update(_depth(), np.zeros((8, 10)))  # nothing to score
    out = acc.compute()
    assert out["abs_rel"] == pytest.approx(0.05)  # image mean; the pixel mean would be 0.1 * 4 / 84
    assert out["count"] == 2 and out["pixels"] == 84 and acc.count == 2
    assert np.isnan(M.DepthMetrics().compute()["abs_rel"])


def test_depth_bad_input_names_the_argument():
    d = _depth()
    with pytest.raises(ValueError, match="pred shape"):
        M.depth_metrics(d[:4], d)
    with pytest.raises(ValueError, match="align 'affine'.*median"):
        M.depth_metrics(d, d, align="affine")
    with pytest.raises(ValueError, match="align"):
        M.DepthMetrics(align="scale")
    with pytest.raises(ValueError, match="min_depth"):
        M.depth_metrics(d, d, min_depth=10, max_depth=1)
    with pytest.raises(ValueError, match="mask"):
        M.depth_metrics(d, d, mask=np.ones((2, 2), bool))


# -- surface normals -----------------------------------------------------------------------------------

def _normals(n=12):
    """Unit normals tilted up or down by up to 40 degrees: all perpendicular to the x axis, so a rotation
    about x moves each of them by exactly its angle."""
    a = np.radians(np.linspace(-40, 40, n * n)).reshape(n, n)
    return np.stack([np.zeros_like(a), np.sin(a), np.cos(a)], axis=-1)


def _rotate_x(n, degrees):
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return n @ np.array([[1, 0, 0], [0, c, -s], [0, s, c]]).T


def test_normals_perfect_and_rotated_by_15_degrees():
    n = _normals()
    m = M.normal_metrics(n, n)
    assert m["mean_angle"] == pytest.approx(0, abs=1e-9) and m["within_11_25"] == 1 and m["count"] == 144
    m = M.normal_metrics(_rotate_x(n, 15), n)
    assert m["mean_angle"] == pytest.approx(15) and m["median_angle"] == pytest.approx(15)
    assert m["within_11_25"] == 0 and m["within_22_5"] == 1 and m["within_30"] == 1
    assert M.normal_metrics(3.0 * n, n)["mean_angle"] == pytest.approx(0, abs=1e-9)  # renormalised


def test_normals_zero_prediction_is_90_degrees_and_invalid_gt_is_left_out():
    n = _normals(2)
    pred = n.copy()
    pred[0, 0] = 0.0
    pred[0, 1] = np.nan
    gt = n.copy()
    gt[1, 1] = 0.0  # no normal here: not scored
    m = M.normal_metrics(pred, gt)
    assert m["count"] == 3 and m["mean_angle"] == pytest.approx(60.0) and m["within_30"] == pytest.approx(1 / 3)


def test_normals_split_pools_pixels():
    acc = M.NormalMetrics()
    n = _normals(10)  # 100 pixels at 15 degrees
    acc.update(_rotate_x(n, 15), n)
    acc.update(_rotate_x(n[:5], 40), n[:5])  # 50 pixels at 40 degrees
    out = acc.compute()
    assert out["mean_angle"] == pytest.approx((100 * 15 + 50 * 40) / 150)
    assert out["median_angle"] == pytest.approx(15, abs=0.01) and out["within_30"] == pytest.approx(100 / 150)
    assert out["count"] == 150 == acc.count
    with pytest.raises(ValueError, match="3 vectors"):
        M.normal_metrics(n[..., :2], n[..., :2])


# -- segmentation --------------------------------------------------------------------------------------

GT = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 2, 2]])


def test_segmentation_perfect_and_one_region_swapped():
    assert M.segmentation_metrics(GT, GT, 3) == {"miou": 1.0, "pixel_acc": 1.0, "count": 16}
    pred = GT.copy()
    pred[3, :2] = 1  # two pixels of class 2 called class 1
    m = M.segmentation_metrics(pred, GT, 3)
    # IoU0 = 8/8, IoU1 = 4/(4 + 2 FP), IoU2 = 2/(2 + 2 FN)
    assert m["miou"] == pytest.approx((1 + 4 / 6 + 2 / 4) / 3) and m["pixel_acc"] == pytest.approx(14 / 16)
    assert M.segmentation_metrics(pred, GT, 10)["miou"] == pytest.approx(m["miou"])  # absent classes left out
    acc = M.SegmentationMetrics(3)
    acc.update(pred, GT)
    assert np.allclose(acc.per_class_iou(), [1, 4 / 6, 2 / 4])


def test_segmentation_ignore_index_and_out_of_range_predictions():
    gt = GT.copy()
    gt[0, :2] = 255
    pred = GT.copy()
    pred[0, :2] = 2  # under "ignore": not scored
    assert M.segmentation_metrics(pred, gt, 3) == {"miou": 1.0, "pixel_acc": 1.0, "count": 14}
    pred = GT.copy()
    pred[2, 0] = 255  # a decoded "ignore" colour where the gt is class 1: wrong, a false positive of none
    m = M.segmentation_metrics(pred, GT, 3)
    assert m["miou"] == pytest.approx((1 + 3 / 4 + 1) / 3)
    pred = GT.copy()
    pred[0, 0] = 3  # a class absent from the gt: IoU 0 counts in the mean
    assert M.segmentation_metrics(pred, GT, 4)["miou"] == pytest.approx((7 / 8 + 1 + 1 + 0) / 4)


def test_segmentation_split_sums_one_confusion_matrix():
    acc = M.SegmentationMetrics(2)
    acc.update(np.array([[0, 0, 0, 1]]), np.array([[0, 0, 0, 0]]))  # image mIoU (3/4 + 0) / 2
    acc.update(np.array([[1, 1, 1, 1]]), np.array([[1, 1, 1, 1]]))  # image mIoU 1
    out = acc.compute()  # over the summed matrix: IoU0 = 3/4, IoU1 = 4/(4 + 1 FP)
    assert out["miou"] == pytest.approx((3 / 4 + 4 / 5) / 2) and out["count"] == 8 == acc.count


def test_segmentation_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="target: class id 7"):
        M.segmentation_metrics(GT, np.where(GT == 2, 7, GT), 3)
    with pytest.raises(ValueError, match="num_classes"):
        M.SegmentationMetrics(0)
    with pytest.raises(ValueError, match="pred shape"):
        M.segmentation_metrics(GT[:2], GT, 3)


# -- pose ----------------------------------------------------------------------------------------------

def _person(x0, y0):
    kps = np.zeros((17, 3))
    kps[:, 0] = x0 + 10 * (np.arange(17) % 5)
    kps[:, 1] = y0 + 20 * (np.arange(17) // 5)
    kps[:, 2] = 2
    return kps


def _candidates(persons):
    return [[tuple(p[k, :2]) for p in persons if p[k, 2] > 0] for k in range(17)]


def test_pck_perfect_and_one_keypoint_beyond_the_threshold():
    people = [_person(10, 10), _person(100, 10)]
    boxes = [[5, 5, 55, 85], [95, 5, 145, 105]]  # max sides 80 and 100: thresholds 8 and 10 px
    assert M.pck(_candidates(people), people, boxes) == {"pck": 1.0, "count": 34, "correct": 34}
    cands = _candidates(people)
    cands[3][0] = (cands[3][0][0] + 7.9, cands[3][0][1])  # still within 8 px
    cands[5][1] = (cands[5][1][0], cands[5][1][1] + 10.5)  # beyond 10 px
    assert M.pck(cands, people, boxes)["pck"] == pytest.approx(33 / 34)
    people[1][4, 2] = 0  # unlabelled: not counted, its candidate is simply spare
    assert M.pck(_candidates(people), people, boxes)["count"] == 33


def test_pck_uses_each_candidate_once_across_persons():
    a, b = _person(10, 10), _person(14, 10)  # two people 4 px apart, threshold 8 px each
    boxes = [[0, 0, 80, 80], [0, 0, 80, 80]]
    one_each = _candidates([a])  # only one candidate per keypoint type
    m = M.pck(one_each, [a, b], boxes)
    assert m["pck"] == pytest.approx(0.5) and m["correct"] == 17


def test_pck_split_and_errors():
    acc = M.PCK(alpha=0.1)
    p = _person(0, 0)
    acc.update(_candidates([p]), [p], [[0, 0, 100, 100]])
    acc.update([[] for _ in range(17)], [p], [[0, 0, 100, 100]])  # nothing found: all wrong
    assert acc.compute() == {"pck": 0.5, "count": 34}
    assert M.pck(_candidates([p]), [p])["pck"] == 1.0  # no boxes: the keypoints' own box
    with pytest.raises(ValueError, match="candidates: expected 17"):
        M.pck([[]] * 16, [p])
    with pytest.raises(ValueError, match=r"persons\[0\]"):
        M.pck(_candidates([p]), [p[:5]])
    with pytest.raises(ValueError, match="boxes: 2 boxes for 1 persons"):
        M.pck(_candidates([p]), [p], [[0, 0, 1, 1], [0, 0, 1, 1]])
    with pytest.raises(ValueError, match="boxes: expected one xyxy box"):
        M.pck(_candidates([p]), [p], [[0, 0, 1]])


# -- grounding -----------------------------------------------------------------------------------------

def test_box_iou_and_accuracy_at_half():
    box = [0, 0, 10, 10]
    assert M.box_iou(box, box) == 1 and M.box_iou(box, [20, 20, 30, 30]) == 0
    s = 30 / 7  # shift by s: IoU = (10 - s) / (10 + s) = 0.4
    assert M.box_iou(box, [s, 0, 10 + s, 10]) == pytest.approx(0.4)
    acc = M.GroundingAccuracy()
    acc.update(box, box)
    acc.update([s, 0, 10 + s, 10], box)  # IoU 0.4: wrong
    acc.update([0, 0, 10, 5], box)  # IoU 0.5 exactly: right
    acc.update(None, box)  # no box found in the generated image: wrong
    out = acc.compute()
    assert out["acc@0.5"] == pytest.approx(0.5) and out["count"] == 4
    assert out["mean_iou"] == pytest.approx((1 + 0.4 + 0.5) / 4)
    assert M.box_iou([5, 5, 5, 9], box) == 0  # empty box
    with pytest.raises(ValueError, match="b: expected 4"):
        M.box_iou(box, [1, 2, 3])


# -- understanding -------------------------------------------------------------------------------------

@pytest.mark.parametrize("pred, answers", [
    ("Two", "2"), ("The red cube.", "red cube"), ("  a   Dog ", ["cat", "dog"]), ("1,000", "1000"),
    ("don't know", "dont know"), ("yes!", "Yes"), ("3.5", "3.5"), ("none", "0")])
def test_exact_match_uses_vqa_normalisation(pred, answers):
    assert M.exact_match(pred, answers)


def test_exact_match_rejects_wrong_answers_and_accumulates():
    assert not M.exact_match("3", "2") and not M.exact_match("35", "3.5") and not M.exact_match(None, "x")
    acc = M.ExactMatch()
    for pred, ans in (("two", "2"), ("blue", ["red", "green"]), ("a cat", "cat"), (None, "dog")):
        acc.update(pred, ans)
    assert acc.compute() == {"accuracy": 0.5, "count": 4}
    with pytest.raises(ValueError, match="answers"):
        M.exact_match("x", [])
