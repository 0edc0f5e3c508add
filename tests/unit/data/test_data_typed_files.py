"""Issue 21, items 1-3: normals read right in every published frame, typed depth/normal files are
checked (a file that is not what its format says is a bad record naming the file and what was
expected), and allow_pickle holds whether the index comes from the cache or not."""
import io
import json
import pickle
import struct

import numpy as np
import pytest
from PIL import Image

from tests.unit.data.data_helpers import convert, id_collate, items, ok, open_one, spec_for
from unigen.model.data.errors import DataError
from unigen.model.data.loader import build_loader
from unigen.model.data.render import depth as depth_r
from unigen.model.data.render import normal as normal_r
from unigen.model.data.synth.formats import image_bytes, write_jsonl

# -- 1. normals ------------------------------------------------------------------------------------------

SIZE, F, C = 64, 32.0, 31.5  # square pinhole camera: the 64-px target is the map itself (no resampling)
BACK, FLOOR, LEFT = 0, 1, 2


def box_room():
    """Depth (z, metres) of a box room seen by an OpenCV camera (x right, y down, z forward) at the origin:
    back wall z = 4, floor y = 1 (1 m below the camera), left wall x = -1.5. Returns (depth, rays, label)."""
    v, u = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    rays = np.stack([(u - C) / F, (v - C) / F, np.ones_like(u)], axis=-1)
    with np.errstate(divide="ignore"):
        t = np.stack([np.full(u.shape, 4.0),
                      np.where(rays[..., 1] > 0, 1.0 / rays[..., 1], np.inf),
                      np.where(rays[..., 0] < 0, -1.5 / rays[..., 0], np.inf)], axis=-1)
    label = t.argmin(-1)
    return t.min(-1), rays, label


def normals_from_depth(depth, rays):
    """Per-pixel normals from the back-projected points' cross product, oriented toward the camera (n.P < 0),
    in OpenCV axes: the physical, outward normals as a camera at the origin sees them."""
    points = depth[..., None] * rays
    n = np.cross(np.gradient(points, axis=1), np.gradient(points, axis=0))
    n *= -np.sign((n * points).sum(-1, keepdims=True))
    return n / np.linalg.norm(n, axis=-1, keepdims=True)


def interior(label):
    """Pixels whose 4-neighbours lie on the same surface (central differences do not straddle an edge)."""
    same = np.ones(label.shape, bool)
    same[1:-1, 1:-1] = ((label[1:-1, 1:-1] == label[:-2, 1:-1]) & (label[1:-1, 1:-1] == label[2:, 1:-1])
                        & (label[1:-1, 1:-1] == label[1:-1, :-2]) & (label[1:-1, 1:-1] == label[1:-1, 2:]))
    same[0, :] = same[-1, :] = same[:, 0] = same[:, -1] = False
    return same


# How each published frame stores the toward-camera OpenCV normals (as per-axis signs), and the options
# that read it. Expected target in ours (OpenGL axes, toward the camera) whatever the frame.
FRAMES = {
    "opengl": ((1, -1, -1), {"convention": "opengl"}),
    "opencv": ((1, 1, 1), {"convention": "opencv"}),
    "opencv_away (DSINE: GeoNet NYUv2, FrameNet ScanNet)": ((-1, -1, -1), {"convention": "opencv_away"}),
    "dsine alias": ((-1, -1, -1), {"convention": "dsine"}),
    "omnidata/taskonomy (x right, y down, z toward the viewer)": ((1, 1, -1), {"convention": "opengl", "flip": ["y"]}),
    "opencv with x mirrored": ((-1, 1, 1), {"convention": "opencv", "flip": ["x"]}),
}
EXPECTED = {BACK: (0.0, 0.0, 1.0), FLOOR: (0.0, 1.0, 0.0), LEFT: (1.0, 0.0, 0.0)}


def write_normal_source(tmp_path, normals):
    (tmp_path / "rgb").mkdir(exist_ok=True)
    (tmp_path / "normal").mkdir(exist_ok=True)
    Image.new("RGB", (SIZE, SIZE), (90, 80, 70)).save(tmp_path / "rgb" / "000001.png")
    # the published packaging: value = (n + 1) / 2 * 255 as an 8-bit RGB PNG
    Image.fromarray(normal_r.encode(normals), "RGB").save(tmp_path / "normal" / "000001.png")
    write_jsonl(tmp_path / "train.jsonl", [{"image": "rgb/000001.png", "normal": "normal/000001.png"}])


def decoded_target(tmp_path, options):
    src = open_one({"name": "normals", "uri": f"{tmp_path}/train.jsonl", "format": "jsonl", "task": "normal",
                    "options": options})
    return normal_r.decode(np.asarray(items(ok(src, 0), "image_gen")[0]["image"]))


def angles(got, want):
    return np.degrees(np.arccos(np.clip((got * np.asarray(want)).sum(-1), -1.0, 1.0)))


def test_the_box_room_shows_all_three_surfaces():
    depth, rays, label = box_room()
    inside = interior(label)
    assert all((inside & (label == s)).sum() > 100 for s in EXPECTED)
    n = normals_from_depth(depth, rays)  # derived normals are the planes' own (toward-camera OpenCV)
    for s, want_cv in ((BACK, (0, 0, -1)), (FLOOR, (0, -1, 0)), (LEFT, (1, 0, 0))):
        assert angles(n[inside & (label == s)], want_cv).max() < 1e-3


@pytest.mark.parametrize("frame", list(FRAMES))
def test_normals_derived_from_depth_decode_to_the_same_target_in_every_frame(tmp_path, frame):
    sign, options = FRAMES[frame]
    depth, rays, label = box_room()
    write_normal_source(tmp_path, normals_from_depth(depth, rays) * np.asarray(sign, float))
    got = decoded_target(tmp_path, options)
    inside = interior(label)
    for surface, want in EXPECTED.items():
        # two 8-bit encodings (the published PNG, then our target): within 1.5 degrees
        assert angles(got[inside & (label == surface)], want).max() < 1.5, (frame, surface)


def test_dsine_packaging_read_with_the_wrong_convention_is_what_issue_21_saw(tmp_path):
    depth, rays, label = box_room()
    write_normal_source(tmp_path, -normals_from_depth(depth, rays))  # DSINE: OpenCV axes, away from camera
    inside = interior(label)
    turned = decoded_target(tmp_path, {"convention": "opencv"})
    assert all(angles(turned[inside & (label == s)], w).min() > 178 for s, w in EXPECTED.items())
    mirrored = decoded_target(tmp_path, {"convention": "opengl"})
    assert angles(mirrored[inside & (label == LEFT)], (-1.0, 0.0, 0.0)).max() < 1.5  # side walls mirrored
    assert angles(mirrored[inside & (label == BACK)], (0.0, 0.0, 1.0)).max() < 1.5
    right = decoded_target(tmp_path, {"convention": "opencv_away"})
    assert angles(right[inside & (label == LEFT)], (1.0, 0.0, 0.0)).max() < 1.5


def test_dsine_documented_examples():
    """DSINE: a wall facing the camera is (0, 0, 1), the floor (0, 1, 0) -> ours (0, 0, 1), (0, 1, 0)."""
    for name in ("opencv_away", "dsine"):
        got = normal_r.to_frame(np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]), name)
        assert np.allclose(got, [[0, 0, 1], [0, 1, 0], [1, 0, 0]])


@pytest.mark.parametrize("options, match", [
    ({"convention": "scannet"},
     r"options.convention: 'scannet'; valid: \['opencv', 'opencv_away', 'opengl', 'dsine'\]"),
    ({"flip": "x"}, r"options.flip: 'x'; expected a list of the axes to negate"),
    ({"flip": ["w"]}, r"options.flip: \['w'\]; expected a list .* valid axes: \['x', 'y', 'z'\]"),
    ({"flip": ["x", "x"]}, r"options.flip: \['x', 'x'\]; expected a list of the axes to negate, each of x, y, z "
                           r"at most once"),
])
def test_bad_convention_or_flip_options_name_the_option_and_the_valid_values(tmp_path, options, match):
    depth, rays, _ = box_room()
    write_normal_source(tmp_path, normals_from_depth(depth, rays))
    with pytest.raises(DataError, match=match):
        open_one({"name": "normals", "uri": f"{tmp_path}/train.jsonl", "format": "jsonl", "task": "normal",
                  "options": options})


# -- 2. typed files --------------------------------------------------------------------------------------

def png(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


GOOD_DEPTH = np.full((32, 40), 5.0, np.float32)


def depth_source(tmp_path, name, files, options):
    """A JSONL depth source; ``files``: [(relative path, bytes)], one record each (image 40x32)."""
    folder = tmp_path / name
    (folder / "depth").mkdir(parents=True)
    (folder / "rgb").mkdir()
    rows = []
    for i, (rel, data) in enumerate(files):
        (folder / rel).write_bytes(data)
        (folder / "rgb" / f"{i}.jpg").write_bytes(image_bytes(Image.new("RGB", (40, 32), (i, 50, 90)), "JPEG"))
        rows.append({"image": f"rgb/{i}.jpg", "depth": rel})
    write_jsonl(folder / "train.jsonl", rows)
    return {"name": name, "uri": f"{folder}/train.jsonl", "format": "jsonl", "task": "depth",
            "options": {"depth_range": [1.0, 10.0], **options}}


def bad_reason(src, index):
    _, events = convert(src, index)
    assert events[0][0] == "bad", events
    return events[0][3]


def test_an_8_bit_png_declared_png16_is_a_bad_record_naming_the_file(tmp_path):
    eight = np.full((32, 40), 200, np.uint8)  # issue 21: read as 200/256 = 0.78 m before
    good = (GOOD_DEPTH * 256).astype(np.uint16)
    for fmt in ("png16", "auto"):
        src = open_one(depth_source(tmp_path, f"kitti-{fmt}", [("depth/0001.png", png(eight)),
                                                             ("depth/0002.png", png(good)),
                                                             ("depth/0003.png", png(np.dstack([eight] * 3)))],
                                    {"depth_format": fmt, "png_scale": 1 / 256}))
        reason = bad_reason(src, 0)
        assert reason.startswith("depth/0001.png: depth_format ")
        assert "expects a 16-bit grayscale PNG (mode I;16), found 8-bit gray PNG" in reason
        assert "found 8-bit RGB PNG" in bad_reason(src, 2)
        ok(src, 1)
    with pytest.raises(Exception, match=r"d.png: depth_format png16 expects a 16-bit grayscale PNG, found a "
                                        r"file that is not a PNG"):
        depth_r.read_depth(npy(GOOD_DEPTH), "png16", name="d.png")


def test_a_dpt_with_a_wrong_tag_or_size_is_a_bad_record_naming_the_file(tmp_path):
    good = depth_r.write_dpt(GOOD_DEPTH)
    wrong_tag = struct.pack("<fii", 1.0, 40, 32) + GOOD_DEPTH.tobytes()
    short = good[:-4]
    long = good + b"\x00" * 8
    src = open_one(depth_source(tmp_path, "sintel", [("depth/a.dpt", wrong_tag), ("depth/b.dpt", short),
                                                      ("depth/c.dpt", long), ("depth/d.dpt", good),
                                                      ("depth/e.dpt", good[:8])],
                                {"depth_format": "dpt"}))
    assert bad_reason(src, 0).startswith("depth/a.dpt: a Sintel .dpt expects the tag 202021.25, found wrong tag 1.0")
    want = 12 + 4 * 40 * 32
    assert bad_reason(src, 1) == (f"depth/b.dpt: a Sintel .dpt of 40x32 (as its header says) expects {want} bytes "
                                  f"(12 + 4*40*32), found {want - 4}: the file is truncated or its header is wrong")
    assert f"depth/c.dpt: a Sintel .dpt of 40x32 (as its header says) expects {want} bytes" in bad_reason(src, 2)
    assert bad_reason(src, 4).startswith("depth/e.dpt: a Sintel .dpt expects a 12-byte header")
    ok(src, 3)


def test_an_npy_of_the_wrong_shape_or_dtype_is_a_bad_record_naming_the_file(tmp_path):
    src = open_one(depth_source(tmp_path, "npys", [
        ("depth/a.npy", npy(np.zeros((32, 40, 3), np.float32))),
        ("depth/b.npy", npy(np.full((32, 40), "5.0"))),
        ("depth/c.npy", npy(np.array([[object()] * 40] * 32, dtype=object))),
        ("depth/d.npy", npy(GOOD_DEPTH)),
        ("depth/e.npy", npy(GOOD_DEPTH[None])),
        ("depth/f.npy", npy(GOOD_DEPTH)[:-20]),
    ], {"depth_format": "npy"}))
    assert bad_reason(src, 0) == ("depth/a.npy: depth_format npy expects an HxW (or HxWx1) array of depths, "
                                  "found shape (32, 40, 3)")
    assert bad_reason(src, 1) == ("depth/b.npy: expected an HxW array of depths in metres in a .npy (a float "
                                  "or integer dtype), found dtype <U3")
    assert bad_reason(src, 2).startswith("depth/c.npy: expected an HxW array of depths in metres in a .npy, "
                                         "found an unreadable file (Object arrays cannot be loaded")
    ok(src, 3)
    assert "depth/e.npy: depth_format npy expects an HxW (or HxWx1) array" in bad_reason(src, 4)
    assert bad_reason(src, 5).startswith("depth/f.npy: expected an HxW array of depths in metres in a .npy, "
                                         "found an unreadable file")


def test_typed_normal_files_are_checked_too(tmp_path):
    (tmp_path / "n").mkdir()
    Image.new("RGB", (40, 32)).save(tmp_path / "n" / "rgb.png")
    (tmp_path / "n" / "gray.png").write_bytes(png(np.full((32, 40), 128, np.uint8)))
    (tmp_path / "n" / "two.npy").write_bytes(npy(np.zeros((32, 40, 2), np.float32)))
    (tmp_path / "n" / "text.npy").write_bytes(npy(np.full((32, 40, 3), "x")))
    write_jsonl(tmp_path / "n.jsonl", [{"image": "n/rgb.png", "normal": f"n/{f}"}
                                       for f in ("gray.png", "two.npy", "text.npy")])
    src = open_one({"name": "nrm", "uri": f"{tmp_path}/n.jsonl", "format": "jsonl", "task": "normal"})
    assert bad_reason(src, 0).startswith("n/gray.png: a normal PNG expects 8-bit RGB (n = rgb/255*2-1), found mode L")
    assert bad_reason(src, 1) == "n/two.npy: normal .npy expects an HxWx3 array, found shape (32, 40, 2)"
    assert bad_reason(src, 2).startswith("n/text.npy: expected an HxWx3 float array of normals in a .npy")


def test_a_source_of_mislabelled_png16_files_fails_by_the_bad_fraction_rule(tmp_path, caplog):
    eight, good = np.full((32, 40), 200, np.uint8), (GOOD_DEPTH * 256).astype(np.uint16)
    files = [(f"depth/{i:04d}.png", png(eight if i % 2 else good)) for i in range(20)]
    spec = spec_for([depth_source(tmp_path, "kitti8", files, {"depth_format": "png16"})],
                    max_bad_fraction=0.05, bad_fraction_min_records=20)
    loader = build_loader(spec, id_collate, seed=0, global_batch_size=10, micro_batch_size=10, rank=0, world_size=1)
    with pytest.raises(DataError, match=r"source kitti8: \d+ of \d+ records are bad \(\d+\.\d% > "
                                        r"data.max_bad_fraction 5.0%\); last bad: .*train.jsonl:"):
        for _ in range(20):
            loader.next_step()
    assert any("expects a 16-bit grayscale PNG" in r.getMessage() for r in caplog.records)
    # under the limit the same bad records are skipped and counted, the run goes on
    spec = spec_for([depth_source(tmp_path, "kitti8b", files, {"depth_format": "png16"})],
                    max_bad_fraction=0.9, bad_fraction_min_records=20)
    loader = build_loader(spec, id_collate, seed=0, global_batch_size=10, micro_batch_size=10, rank=0, world_size=1)
    for _ in range(4):
        loader.next_step()
    stats = loader.stats()["sources"]["kitti8b"]
    assert stats["bad"] > 0 and all("expects a 16-bit grayscale PNG" in b["reason"] for b in stats["last_bad"])


# -- 3. allow_pickle on every read -----------------------------------------------------------------------

def refcoco(tmp_path, refs_name="refs(unc).p"):
    images = [{"id": 1, "file_name": "1.jpg", "width": 40, "height": 32}]
    anns = [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [4.0, 6.0, 20.0, 14.0], "iscrowd": 0}]
    refs = [{"ref_id": 0, "ann_id": 7, "image_id": 1, "split": "train",
             "sentences": [{"raw": "the box on the left", "sent": "the box on the left"}]}]
    (tmp_path / "1.jpg").write_bytes(image_bytes(Image.new("RGB", (40, 32)), "JPEG"))
    (tmp_path / "instances.json").write_text(json.dumps({"images": images, "annotations": anns}))
    (tmp_path / refs_name).write_bytes(pickle.dumps(refs, protocol=2))
    return {"name": "refcoco", "uri": f"{tmp_path}/instances.json", "format": "coco", "task": "grounding",
            "options": {"refs": f"{tmp_path}/{refs_name}", "image_root": str(tmp_path)}}


PICKLE_REFUSED = (r"source refcoco: .*refs\(unc\).p is a pickle; unpickling runs code from the file\. "
                  r"Set options.allow_pickle: true if you trust it, or use a JSON re-export of the refs")


def test_allow_pickle_holds_when_the_index_comes_from_the_cache(tmp_path):
    source = refcoco(tmp_path)
    allowed = {**source, "options": {**source["options"], "allow_pickle": True}}
    assert "the box on the left" in items(ok(open_one(allowed), 0), "text")[0]["text"]  # index now cached
    with pytest.raises(DataError, match=PICKLE_REFUSED):
        open_one(source)
    with pytest.raises(DataError, match=PICKLE_REFUSED):
        open_one({**source, "options": {**source["options"], "allow_pickle": False}})
    assert items(ok(open_one(allowed), 0), "text")  # the opted-in source still reads (from the cache)


def test_a_pickle_under_a_json_name_is_refused_too_cached_or_not(tmp_path):
    source = refcoco(tmp_path, "refs_unc.json")
    allowed = {**source, "options": {**source["options"], "allow_pickle": True}}
    ok(open_one(allowed), 0)
    with pytest.raises(DataError, match=r"refs_unc.json is a pickle; unpickling runs code"):
        open_one(source)
