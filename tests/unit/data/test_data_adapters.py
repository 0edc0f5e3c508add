"""Every task adapter on the synthetic corpus written in its dataset's real on-disk format."""
import json
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.unit.data.data_helpers import by_name, convert, items, ok, open_one
from unigen.model.data.errors import DataError
from unigen.model.data.render import depth as depth_r
from unigen.model.data.render import grounding as ground_r
from unigen.model.data.render import normal as normal_r
from unigen.model.data.render import pose as pose_r
from unigen.model.data.render import segmentation as seg_r
from unigen.model.data.render.geometry import SquareFit, box_to_xyxy
from unigen.model.data.synth import records as R


def test_t2i_webdataset_caption_from_txt_or_json(corpus):
    root, manifest = corpus
    from unigen.model.data.synth.writers import BASE_COUNTS

    src = open_one(by_name(manifest, "shapes-t2i"))
    assert len(src) == BASE_COUNTS["t2i_shards"] * BASE_COUNTS["t2i_per_shard"]
    with tarfile.open(root / "t2i" / "00001.tar") as tar:
        caption = tar.extractfile("000010003.txt").read().decode()
        meta = json.loads(tar.extractfile("000010003.json").read())
    key_index = next(i for i in range(len(src)) if src.reader.key(i) == "00001.tar/000010003")
    conv = ok(src, key_index)
    assert [m["role"] for m in conv] == ["user", "assistant"]
    assert conv[0]["content"] == [{"type": "text", "text": caption}]
    target = items(conv, "image_gen")[0]["image"]
    assert target.size == (64, 64) and target.mode == "RGB"
    via_json = open_one({**by_name(manifest, "shapes-t2i"), "fields": {"caption": "json.caption"}})
    assert ok(via_json, key_index)[0]["content"][0]["text"] == meta["caption"] == caption


def test_instructpix2pix_parquet_pair(corpus):
    root, manifest = corpus
    src = open_one(by_name(manifest, "shapes-ip2p"))
    rows = pq.read_table(root / "edit" / "instructpix2pix").to_pylist()
    conv = ok(src, 5)
    assert conv[0]["content"][0]["type"] == "image"
    assert conv[0]["content"][1] == {"type": "text", "text": rows[5]["edit_prompt"]}
    assert conv[1] == {"role": "assistant", "content": [{"type": "image_gen", "image": conv[1]["content"][0]["image"]}]}


def test_magicbrush_three_turn_session_grouped_and_chained(corpus):
    root, manifest = corpus
    src = open_one(by_name(manifest, "shapes-magicbrush"))
    assert len(src) == 8  # 24 shuffled rows -> 8 sessions
    rows = pq.read_table(root / "edit" / "magicbrush").to_pylist()
    for i in range(len(src)):
        conv = ok(src, i)
        session = sorted((r for r in rows if r["img_id"] == src.reader.key(i).split("#")[-1]),
                         key=lambda r: r["turn_index"])
        assert [r["turn_index"] for r in session] == [1, 2, 3]
        assert [m["role"] for m in conv] == ["user", "assistant"] * 3
        texts = [it["text"] for it in items(conv, "text")]
        assert texts == [r["instruction"] for r in session]
        inputs, targets = items(conv, "image"), items(conv, "image_gen")
        for k in range(2):  # turn k's target is turn k+1's input, the very same image
            assert inputs[k + 1]["image"] is targets[k]["image"]
        # The first input is the session's turn-1 source, fitted like every image.
        from PIL import Image
        import io
        src_img = Image.open(io.BytesIO(session[0]["source_img"]["bytes"])).convert("RGB")
        fitted = SquareFit(src_img.width, src_img.height, 64).image(src_img)
        assert np.array_equal(np.asarray(inputs[0]["image"]), np.asarray(fitted))
        assert src.reader.key(i).endswith(str(session[0]["img_id"]))


def test_seed_data_edit_pairs_and_numbered_multi_turn_sessions(corpus):
    root, manifest = corpus
    pairs = open_one(by_name(manifest, "shapes-seed-real"))
    line = json.loads((root / "edit" / "seed-real" / "annotations.jsonl").read_text().splitlines()[3])
    conv = ok(pairs, 3)
    assert items(conv, "text")[0]["text"] == line["instruction"]
    sessions = open_one(by_name(manifest, "shapes-seed-multiturn"))
    lines = [json.loads(x) for x in (root / "edit" / "seed-multiturn" / "annotations.jsonl").read_text().splitlines()]
    for i, obj in enumerate(lines):
        conv = ok(sessions, i)
        n_turns = 2 + i % 3
        assert len(conv) == 2 * n_turns
        assert [it["text"] for it in items(conv, "text")] == [obj[f"instruction_{t}"] for t in range(1, n_turns + 1)]
    # Without the numbered mapping the defaults do not match this layout: a bad record naming the field.
    plain = open_one({k: v for k, v in by_name(manifest, "shapes-seed-multiturn").items() if k != "fields"})
    conv, events = convert(plain, 0)
    assert events[0][0] == "bad" and "missing field" in events[0][3]


def test_interleaved_mmc4_order_first_image_context_later_images_targets(corpus):
    root, manifest = corpus
    src = open_one(by_name(manifest, "shapes-interleaved"))
    with tarfile.open(root / "interleaved" / "00000.tar") as tar:
        doc = json.loads(tar.extractfile("000000000.json").read())
    conv = ok(src, 0)
    roles = [m["role"] for m in conv]
    assert roles == ["user", "assistant", "user", "assistant"]
    assert [it["type"] for it in conv[0]["content"]] == ["text", "image", "text"]
    assert [it["text"] for it in items(conv, "text")] == doc["text_list"]
    assert len(items(conv, "image_gen")) == 2
    # A target is fed back as an input right after it, so the later target is conditioned on it (as
    # UniGenPipeline fills slots at inference); the last target has nothing after it to feed.
    assert [it["type"] for it in conv[1]["content"]] == ["image_gen", "image"]
    assert conv[1]["content"][1]["image"] is conv[1]["content"][0]["image"]
    assert [it["type"] for it in conv[3]["content"]] == ["image_gen"]
    limited = open_one({**by_name(manifest, "shapes-interleaved"), "options": {"max_images": 2}})
    short = ok(limited, 0)
    assert len(items(short, "image_gen")) == 1 and len(items(short, "image")) == 1
    assert short[-1]["content"][-1]["type"] == "image_gen"


def test_multi_image_jsonl_and_parquet_give_the_same_conversation(corpus):
    _, manifest = corpus
    a = ok(open_one(by_name(manifest, "shapes-multi-image")), 4)
    b = ok(open_one(by_name(manifest, "shapes-multi-image-parquet")), 4)
    assert [it["type"] for it in a[0]["content"]] == ["image", "image", "text"]
    for x, y in zip(items(a, "image") + items(a, "image_gen"), items(b, "image") + items(b, "image_gen")):
        assert np.array_equal(np.asarray(x["image"]), np.asarray(y["image"]))
    assert items(a, "text") == items(b, "text")


@pytest.mark.parametrize("variant,offset", [("nyu", 0), ("kitti", 1000), ("sintel", 2000)])
def test_depth_targets_decode_to_ground_truth_metres(corpus, variant, offset):
    _, manifest = corpus
    src = open_one(by_name(manifest, f"shapes-depth-{variant}"))
    for i in (0, 7):
        gt = R.dense(0, i + offset, "depth")["_gt"]["depth"]
        conv = ok(src, i)
        back = depth_r.decode(np.asarray(items(conv, "image_gen")[0]["image"]), (1.0, 10.0), "log")
        want = SquareFit(gt.shape[1], gt.shape[0], 64).array(gt)
        valid = back > 0
        if variant == "kitti":
            assert 0.15 < valid.mean() < 0.5  # sparse: 0 = no measurement survives the pipeline
        else:
            assert valid.all()
        # log over 1-10 m: half a gray level is 0.45 %; KITTI's 1/256 m steps add < 0.1 %.
        assert np.max(np.abs(back[valid] - want[valid]) / want[valid]) < 0.006


def test_normal_targets_decode_to_ground_truth_within_1_5_degrees(corpus):
    _, manifest = corpus
    src = open_one(by_name(manifest, "shapes-normal"))
    gt = R.dense(0, 2, "normal")["_gt"]["normal"]
    back = normal_r.decode(np.asarray(items(ok(src, 2), "image_gen")[0]["image"]))
    want = SquareFit(gt.shape[1], gt.shape[0], 64).array(gt)
    angle = np.degrees(np.arccos(np.clip((back * want).sum(-1), -1, 1)))
    assert angle.max() < 1.5  # two 8-bit quantisations: the published PNG, then our target


def test_segmentation_targets_decode_exactly_to_class_ids(corpus):
    _, manifest = corpus
    src = open_one(by_name(manifest, "shapes-segmentation"))
    gt = R.dense(0, 9, "segmentation")["_gt"]["classes"]
    back = seg_r.decode(np.asarray(items(ok(src, 9), "image_gen")[0]["image"]), 4)
    assert np.array_equal(back, SquareFit(gt.shape[1], gt.shape[0], 64).array(gt))
    assert set(np.unique(back)) >= {0}


def test_pose_coco_keypoints_rendered_skeleton_decodes_back(corpus):
    root, manifest = corpus
    size = 256
    src = open_one(by_name(manifest, "shapes-pose"), image_size=size)
    coco = json.loads((root / "pose" / "annotations" / "person_keypoints_train.json").read_text())
    assert coco["categories"][0]["skeleton"] == [list(p) for p in pose_r.SKELETON]
    _, radius = pose_r.sizes(size)
    checked = 0
    for i in range(3):
        record = src.reader.read(i)
        im = next(x for x in coco["images"] if x["file_name"] == record["file_name"])
        anns = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
        fit = SquareFit(im["width"], im["height"], size)
        found = pose_r.decode(np.asarray(items(ok(src, i), "image_gen")[0]["image"]))
        people = [fit.points(np.array(a["keypoints"]).reshape(17, 3)[:, :2]) for a in anns]
        all_pts = np.concatenate(people)
        for xy in people:
            for k in range(17):
                d = np.hypot(*(all_pts - xy[k]).T)
                if not (0 <= xy[k][0] < size and 0 <= xy[k][1] < size):
                    assert len(found[k]) < len(people)  # outside the crop: dropped, not drawn
                    continue
                if np.sort(d)[1] <= 2 * radius + 2:
                    continue  # disc overlaps a neighbour (the face at this scale): centroid is biased
                assert min(np.hypot(fx - xy[k][0], fy - xy[k][1]) for fx, fy in found[k]) < 1.0
                checked += 1
    assert checked >= 30


def test_grounding_parquet_and_coco_refs_box_lands_where_it_should(corpus):
    root, manifest = corpus
    rows = pq.read_table(root / "grounding" / "refcoco.parquet").to_pylist()
    for name in ("shapes-refcoco", "shapes-refcoco-coco"):
        src = open_one(by_name(manifest, name), image_size=96)
        for i in range(4):
            conv = ok(src, i)
            ref_id = int(src.reader.key(i).split("#")[-1]) if name == "shapes-refcoco" else int(src.reader.key(i))
            row = rows[ref_id]
            assert any(s in items(conv, "text")[0]["text"] for s in row["sentences"])
            xyxy = box_to_xyxy(row["bbox"], "xywh", "pixels", 96, 80)
            want = SquareFit(96, 80, 96).box_xyxy(xyxy)
            got = ground_r.find_box(np.asarray(items(conv, "image_gen")[0]["image"]))
            assert got is not None and np.abs(np.array(got) - np.array(want)).max() <= 1.0, (name, i)
    coco_src = open_one(by_name(manifest, "shapes-refcoco-coco"))
    assert len(coco_src) == 12  # split "train" keeps refs with i % 4 != 0


def test_unknown_field_or_option_names_the_recipe_path_and_valid_choices(corpus):
    _, manifest = corpus
    with pytest.raises(DataError, match=r"data.sources\[0\].fields: unknown field\(s\) \['captoin'\].*valid: "
                                         r"\['boxes', 'caption', 'image', 'reasoning'\]"):
        open_one({**by_name(manifest, "shapes-t2i"), "fields": {"captoin": "txt"}})
    with pytest.raises(DataError, match=r"options.depth_format: 'meters'; valid: auto, npy"):
        open_one({**by_name(manifest, "shapes-depth-nyu"), "options": {"depth_format": "meters"}})
    with pytest.raises(DataError, match=r"options: unknown option\(s\) \['box_fmt'\]"):
        open_one({**by_name(manifest, "shapes-refcoco"), "options": {"box_fmt": "xyxy"}})
    with pytest.raises(DataError, match=r"source shapes-t2i: none of the 2 shard\(s\) .* can be read"):
        open_one({**by_name(manifest, "shapes-t2i"), "uri": "/nonexistent/{00000..00001}.tar"})


def test_synthetic_format_serves_the_same_records_as_the_generator():
    src = open_one({"uri": "synthetic", "format": "synthetic", "task": "t2i", "options": {"size": 10, "seed": 3}})
    assert len(src) == 10
    conv = ok(src, 4)
    assert conv[0]["content"][0]["text"] == R.t2i(3, 4)["caption"]


def test_validate_spec_collects_every_problem_without_touching_files():
    from unigen.model.data.spec import DataSpec
    from unigen.model.data.validate import validate_spec
    spec = DataSpec(sources=[
        {"uri": "/nowhere/a/{0..9}.tar", "format": "webdataset", "task": "t2i", "fields": {"img": "jpg"}},
        {"uri": "/nowhere/b.json", "format": "coco", "task": "depth"},
        {"uri": "/nowhere/c.json", "format": "coco", "task": "grounding"},
        {"uri": "/nowhere/d.jsonl", "format": "jsonl", "task": "segmentation", "options": {"label_set": "voc"}},
        {"uri": "/nowhere/e.jsonl", "format": "jsonl", "task": "edit"},
    ])
    problems = validate_spec(spec)
    assert len(problems) == 4
    assert problems[0].startswith("data.sources[0].fields: unknown field(s) ['img']")
    assert problems[1] == "data.sources[1].format: coco serves tasks pose and grounding, not depth"
    assert problems[2].startswith("data.sources[2].options.refs")
    assert problems[3].startswith("data.sources[3].options.label_set: 'voc' is not known")
