"""NYUv2 as published in HDF5 (issue 21, item 4): the labeled .mat (MATLAB v7.3, transposed) and the
fast-depth tars of ``<scene>/<n>.h5`` the hub download gives, read through the real source path with
``task: depth`` using the runbook's own YAML snippet."""
import io
import pathlib
import re
import tarfile

import h5py
import numpy as np
import pytest
import yaml
from PIL import Image

from tests.unit.data.data_helpers import convert, items, ok, open_one
from unigen.model.data.spec import DataSpec
from unigen.model.data.synth.formats import image_bytes, write_jsonl
from unigen.model.data.validate import validate_spec

RUNBOOK = pathlib.Path(__file__).resolve().parents[3] / "runbooks" / "data-preparation.md"
H, W = 16, 20  # non-square, so a missing transpose changes the shape


def runbook_source(name: str, root) -> dict:
    """The runbook's snippet for ``name`` with its ``nyu/`` prefix pointed at ``root``."""
    for text in re.findall(r"```yaml\n(.*?)```", RUNBOOK.read_text(), flags=re.S):
        for src in yaml.safe_load(text).get("sources", []):
            if src.get("name") == name:
                assert src["uri"].startswith("nyu/")
                return {**src, "uri": f"{root}/{src['uri'][len('nyu/'):]}"}
    raise AssertionError(f"runbook has no source {name}")


def scene(i: int) -> tuple[np.ndarray, np.ndarray]:
    """An H x W x 3 image with a distinct top-right pixel, and an H x W depth unique per pixel."""
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = np.arange(W, dtype=np.uint8) * 10
    rgb[..., 1] = (np.arange(H, dtype=np.uint8) * 12)[:, None]
    rgb[..., 2] = 40 * i
    rgb[0, W - 1] = (255, 0, 255)
    depth = (1.0 + np.arange(H * W, dtype=np.float32).reshape(H, W) / 40 + i).astype(np.float32)
    return rgb, depth


def write_mat(path, n=3):
    with h5py.File(path, "w") as f:  # MATLAB v7.3 order: images N x 3 x W x H, depths N x W x H
        f["images"] = np.stack([scene(i)[0].transpose(2, 1, 0) for i in range(n)])
        f["depths"] = np.stack([scene(i)[1].T for i in range(n)])
        f["labels"] = np.zeros((n, W, H), np.uint16)


def h5_bytes(rgb=None, depth=None) -> bytes:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        if rgb is not None:
            f["rgb"] = rgb.transpose(2, 0, 1)  # fast-depth: 3 x H x W
        if depth is not None:
            f["depth"] = depth
    return buf.getvalue()


def write_tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def assert_record(src, index, i):
    raw = src.reader.read(index)
    rgb, depth = scene(i)
    img = np.asarray(raw["image"])
    assert img.shape == (H, W, 3) and tuple(img[0, W - 1]) == (255, 0, 255)
    np.testing.assert_array_equal(img, rgb)
    d = np.load(io.BytesIO(raw["depth"]), allow_pickle=False)
    assert d.dtype == np.float32
    np.testing.assert_array_equal(d, depth)


def reference(tmp_path, i):
    """The same pair as a JSONL source (PNG + .npy), the form the depth adapter already reads."""
    folder = tmp_path / f"ref{i}"
    folder.mkdir()
    rgb, depth = scene(i)
    (folder / "a.png").write_bytes(image_bytes(Image.fromarray(rgb), "PNG"))
    buf = io.BytesIO()
    np.save(buf, depth)
    (folder / "a.npy").write_bytes(buf.getvalue())
    write_jsonl(folder / "t.jsonl", [{"image": "a.png", "depth": "a.npy"}])
    return open_one({"name": f"ref{i}", "uri": f"{folder}/t.jsonl", "format": "jsonl", "task": "depth",
                     "options": {"depth_range": [0.5, 10.0]}})


def same_images(a, b):
    for kind in ("image", "image_gen"):
        xs, ys = items(a, kind), items(b, kind)
        assert len(xs) == len(ys) == 1
        np.testing.assert_array_equal(np.asarray(xs[0]["image"]), np.asarray(ys[0]["image"]))


def test_labeled_mat_reads_every_index_upright(tmp_path):
    write_mat(tmp_path / "nyu_depth_v2_labeled.mat")
    spec = runbook_source("nyu-labeled", tmp_path)
    assert not validate_spec(DataSpec(sources=[spec]))
    src = open_one(spec)
    assert len(src) == 3
    for i in range(3):
        assert_record(src, i, i)
        same_images(ok(src, i), ok(reference(tmp_path, i), 0))


def test_fast_depth_tars_read_one_record_per_h5(tmp_path):
    (tmp_path / "data").mkdir()
    write_tar(tmp_path / "data" / "train-000000.tar",
              [("kitchen_0001/00001.h5", h5_bytes(*scene(0))), ("kitchen_0001/00002.h5", h5_bytes(*scene(1)))])
    write_tar(tmp_path / "data" / "train-000001.tar", [("office_0003/00007.h5", h5_bytes(*scene(2)))])
    write_tar(tmp_path / "data" / "val-000000.tar", [("bath_0001/00001.h5", h5_bytes(*scene(2)))])
    spec = runbook_source("nyu-h5-train", tmp_path)
    assert not validate_spec(DataSpec(sources=[spec]))
    src = open_one(spec)
    assert len(src) == 3  # the val tar is not matched by train-*.tar
    assert src.reader.key(2) == "train-000001.tar/office_0003/00007.h5"
    for i in range(3):
        assert_record(src, i, i)
        same_images(ok(src, i), ok(reference(tmp_path, i), 0))


def test_loose_h5_files_in_a_folder(tmp_path):
    (tmp_path / "h5" / "kitchen").mkdir(parents=True)
    (tmp_path / "h5" / "kitchen" / "00001.h5").write_bytes(h5_bytes(*scene(1)))
    src = open_one({"uri": f"{tmp_path}/h5", "format": "nyu_h5", "task": "depth"})
    assert len(src) == 1
    assert_record(src, 0, 1)


def bad_reason(src, index):
    _, events = convert(src, index)
    assert events[0][0] == "bad", events
    return events[0][3]


def test_missing_dataset_or_corrupt_member_is_a_bad_record_naming_file_and_keys(tmp_path):
    rgb, depth = scene(0)
    shard = tmp_path / "train-000000.tar"
    write_tar(shard, [("a/1.h5", h5_bytes(rgb, None)), ("a/2.h5", b"not hdf5 at all"),
                      ("a/3.h5", h5_bytes(rgb, depth)), ("a/4.h5", h5_bytes(None, depth))])
    src = open_one({"name": "nyu", "uri": str(shard), "format": "nyu_h5", "task": "depth"})
    reason = bad_reason(src, 0)
    assert f"{shard}:a/1.h5" in reason and "missing dataset 'depth'" in reason
    assert "expected keys rgb, depth" in reason and "found rgb" in reason
    reason = bad_reason(src, 1)
    assert f"{shard}:a/2.h5" in reason and "not a readable HDF5 file" in reason and "rgb, depth" in reason
    ok(src, 2)
    assert "missing dataset 'rgb'" in bad_reason(src, 3)

    mat = tmp_path / "nyu_depth_v2_labeled.mat"
    with h5py.File(mat, "w") as f:
        f["images"] = np.zeros((2, 3, W, H), np.uint8)
    src = open_one({"name": "mat", "uri": str(mat), "format": "nyu_mat", "task": "depth"})
    assert len(src) == 2
    reason = bad_reason(src, 1)
    assert f"{mat}[1]" in reason and "missing dataset 'depths'" in reason and "images, depths" in reason


def test_the_formats_serve_depth_only_and_survive_pickling(tmp_path):
    import pickle
    write_mat(tmp_path / "n.mat", n=2)
    src = open_one({"uri": f"{tmp_path}/n.mat", "format": "nyu_mat", "task": "depth"})
    assert_record(src, 1, 1)  # opens a handle, which pickling drops
    again = pickle.loads(pickle.dumps(src.reader))
    assert len(again) == 2
    np.testing.assert_array_equal(np.asarray(again.read(0)["image"]), scene(0)[0])
    problems = validate_spec(DataSpec(sources=[{"uri": "x.mat", "format": "nyu_mat", "task": "t2i"}]))
    assert any("nyu_mat serves task depth, not t2i" in p for p in problems)


@pytest.mark.parametrize("uri,fmt", [("nyu/nyu_depth_v2_labeled.mat", "nyu_mat"), ("nyu/x/00001.h5", "nyu_h5")])
def test_cli_infers_the_format_from_the_extension(uri, fmt):
    from unigen.model.data.cli import infer_format
    assert infer_format(uri) == fmt
