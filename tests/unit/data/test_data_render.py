"""Dense-target encodings decode back to their values within the stated tolerances."""
import numpy as np
import pytest

from unigen.model.data.render import depth, grounding, normal, pose, segmentation
from unigen.model.data.render.geometry import SquareFit, box_to_xyxy


def test_depth_log_round_trip_within_1_4_percent_and_invalid_stays_invalid():
    rng = np.random.default_rng(0)
    d = rng.uniform(0.1, 100.0, size=(40, 50))
    d[::7, ::5] = 0.0  # no measurement (KITTI's 0)
    back = depth.decode(depth.encode(d))
    valid = d > 0
    assert np.all(back[~valid] == 0)
    rel = np.abs(back[valid] - d[valid]) / d[valid]
    assert rel.max() < 0.014
    img = depth.encode(np.array([[0.5, 5.0, 50.0]]))
    assert img[0, 0, 0] > img[0, 1, 0] > img[0, 2, 0] > 0  # near is bright


def test_depth_linear_round_trip_within_range_over_508():
    d = np.linspace(1.0, 10.0, 1000).reshape(20, 50)
    back = depth.decode(depth.encode(d, (1.0, 10.0), "linear"), (1.0, 10.0), "linear")
    assert np.abs(back - d).max() <= 9.0 / 508 + 1e-9


def test_sintel_dpt_and_kitti_png_decode_to_metres():
    import io

    from PIL import Image
    d = np.arange(12, dtype=np.float32).reshape(3, 4) + 0.25
    assert np.array_equal(depth.read_depth(depth.write_dpt(d)), d)
    raw = np.array([[0, 256, 512], [25600, 1, 65535]], np.uint16)
    buf = io.BytesIO()
    Image.fromarray(raw).save(buf, format="PNG")
    got = depth.read_depth(buf.getvalue(), "auto")
    assert np.allclose(got, raw / 256.0)
    assert got[0, 0] == 0  # invalid stays 0
    vkitti = depth.read_depth(buf.getvalue(), "png16", png_scale=0.01)
    assert vkitti[1, 2] == pytest.approx(655.35)
    from unigen.model.data.errors import BadRecord
    with pytest.raises(BadRecord, match="wrong tag"):
        depth.read_dpt(b"\x00" * 16)


def test_normals_round_trip_within_one_degree_and_conventions():
    rng = np.random.default_rng(1)
    n = rng.normal(size=(30, 30, 3))
    n[..., 2] = np.abs(n[..., 2])
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    n[0, 0] = 0  # invalid
    rgb = normal.encode(n)
    assert tuple(normal.encode(np.array([[[0.0, 0.0, 1.0]]]))[0, 0]) == (128, 128, 255)
    back = normal.decode(rgb)
    assert np.all(back[0, 0] == 0) and tuple(rgb[0, 0]) == (0, 0, 0)
    cos = np.clip((back[1:] * n[1:]).sum(-1), -1, 1)
    assert np.degrees(np.arccos(cos)).max() < 1.0
    up_cv = np.array([[[0.0, -1.0, 0.0]]])  # OpenCV "up" is -y
    assert np.allclose(normal.to_frame(up_cv, "opencv"), [[[0.0, 1.0, 0.0]]])


def test_segmentation_palette_is_exactly_invertible_including_ignore_and_uint16_ids():
    ids = np.arange(150).reshape(10, 15)
    ids[0, 0] = 255
    rgb = segmentation.encode(ids)
    assert tuple(rgb[0, 1]) == (0, 0, 0) or ids[0, 1] != 0
    assert tuple(segmentation.palette()[1]) == (128, 0, 0) and tuple(segmentation.palette()[255]) == (224, 224, 192)
    assert np.array_equal(segmentation.decode(rgb, 150), ids)
    big = np.array([[300, 1000, 4]])
    assert np.array_equal(segmentation.decode(segmentation.encode(big), 1001), big)
    noisy = rgb.astype(np.int16) + 3  # a generated image is never exact: nearest palette entry
    assert np.array_equal(segmentation.decode(np.clip(noisy, 0, 255), 150), ids)


def test_pose_skeleton_decodes_to_keypoints_within_one_pixel():
    size = 256
    rng = np.random.default_rng(2)
    people = []
    for cx in (64, 192):
        # Joints spread on a grid so their discs never overlap.
        xy = np.array([(cx - 40 + 20 * (k % 5), 30 + 45 * (k // 5)) for k in range(17)], float)
        xy += rng.uniform(-3, 3, size=xy.shape)
        people.append(np.concatenate([xy, np.full((17, 1), 2.0)], axis=1))
    people[1][4, 2] = 0  # right_ear not labelled: not drawn
    img = np.asarray(pose.draw(people, size))
    found = pose.decode(img)
    for k in range(17):
        expected = [p[k, :2] for p in people if p[k, 2] > 0]
        assert len(found[k]) == len(expected), pose.KEYPOINTS[k]
        for e in expected:
            assert min(np.hypot(*(np.array(f) - e)) for f in found[k]) < 1.0


def test_grounding_box_drawn_and_recovered_within_one_pixel():
    from PIL import Image
    img = Image.new("RGB", (96, 96), (90, 120, 90))
    box = [10.4, 20.0, 61.0, 47.6]
    found = grounding.find_box(np.asarray(grounding.draw_box(img, box)))
    assert found is not None
    assert np.abs(np.array(found) - np.array(box)).max() <= 1.0
    assert grounding.find_box(np.asarray(img)) is None


def test_square_fit_maps_a_known_box_and_point_consistently():
    fit = SquareFit(200, 100, 50)  # scale 0.5, crop x from 50 to 150
    assert fit.scale == 0.5 and fit.offset == (50.0, 0.0)
    assert np.allclose(fit.points(np.array([[50.0, 0.0], [150.0, 100.0]])), [[0, 0], [50, 50]])
    xyxy = box_to_xyxy([60, 10, 20, 30], "xywh", "pixels", 200, 100)
    assert xyxy == [60, 10, 80, 40]
    assert fit.box_xyxy(xyxy) == [5.0, 5.0, 15.0, 20.0]
    assert box_to_xyxy([0.3, 0.1, 0.4, 0.4], "xyxy", "normalized", 200, 100) == pytest.approx([60, 10, 80, 40])
    assert fit.box_xyxy([0, 0, 40, 40]) is None  # entirely left of the crop
    arr = np.arange(200 * 100).reshape(100, 200)
    small = fit.array(arr)
    assert small.shape == (50, 50) and small[0, 0] == arr[1, 51]
