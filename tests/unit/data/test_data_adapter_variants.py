"""Published variants beyond the synthetic corpus's own files: OmniEdit rows, SEED-style list sessions in JSONL,
NYUv2 as Hugging Face Parquet (float depth images), RefCOCO's refs pickle, ScanNet-style OpenCV normals. Each is
written here in its dataset's layout and read through the same adapters."""
import io
import json
import pickle

import numpy as np
import pytest
from PIL import Image

from tests.unit.data.data_helpers import convert, items, ok, open_one
from unigen.model.data.errors import DataError
from unigen.model.data.render import depth as depth_r
from unigen.model.data.render import normal as normal_r
from unigen.model.data.render.geometry import SquareFit
from unigen.model.data.synth.formats import hf_image, image_bytes, write_jsonl, write_parquet


def colour(i, size=(40, 32)):
    return Image.new("RGB", size, ((37 * i) % 255, (91 * i) % 255, 120))


def test_omniedit_rows_pick_one_phrasing_of_the_single_edit(tmp_path):
    """OmniEdit-Filtered: src_img, edited_img, edited_prompt_list (several phrasings of one edit) + scores."""
    rows = [{"omni_edit_id": f"oe-{i}", "task": "attribute_modification", "src_img": hf_image(colour(i), f"{i}.png"),
             "edited_img": hf_image(colour(i + 50), f"{i}_e.png"),
             "edited_prompt_list": [f"turn it shade {i}", f"recolour it to shade {i}", f"shade {i}, please"],
             "width": 40, "height": 32, "sc_score_1": 9, "sc_score_2": 8, "sc_reasoning": "fine", "pq_score": 9}
            for i in range(6)]
    write_parquet(tmp_path / "train-00000-of-00001.parquet", rows)
    src = open_one({"name": "omniedit", "uri": str(tmp_path), "format": "parquet", "task": "edit"})
    seen = set()
    for seed in range(6):
        conv = ok(src, 2, seed)
        assert [m["role"] for m in conv] == ["user", "assistant"]
        (instruction,) = items(conv, "text")
        assert instruction["text"] in rows[2]["edited_prompt_list"]
        seen.add(instruction["text"])
        target = np.asarray(items(conv, "image_gen")[0]["image"])
        assert target.shape == (64, 64, 3) and tuple(target[5, 5]) == colour(52).getpixel((0, 0))
    assert len(seen) >= 2  # the phrasing varies with the sample's RNG ...
    assert ok(src, 2, 3) == ok(src, 2, 3)  # ... deterministically


def test_seed_style_jsonl_session_with_list_fields_and_relative_paths(tmp_path):
    (tmp_path / "images").mkdir()
    rows = []
    for i in range(3):
        colour(10 * i).save(tmp_path / "images" / f"{i}_0.png")
        names = []
        for t in range(1, 4):
            colour(10 * i + t).save(tmp_path / "images" / f"{i}_{t}.png")
            names.append(f"images/{i}_{t}.png")
        rows.append({"source_image": f"images/{i}_0.png", "instructions": [f"step {t} of {i}" for t in (1, 2, 3)],
                     "target_images": names})
    write_jsonl(tmp_path / "annotations.jsonl", rows)
    src = open_one({"name": "seed-lists", "uri": f"{tmp_path}/annotations.jsonl", "format": "jsonl", "task": "edit"})
    conv = ok(src, 1)
    assert [it["text"] for it in items(conv, "text")] == ["step 1 of 1", "step 2 of 1", "step 3 of 1"]
    inputs, targets = items(conv, "image"), items(conv, "image_gen")
    assert len(inputs) == len(targets) == 3
    for k in range(2):
        assert inputs[k + 1]["image"] is targets[k]["image"]  # each target fed back as the next input
    assert np.asarray(targets[2]["image"])[0, 0].tolist() == list(colour(13).getpixel((0, 0)))
    rows[0]["target_images"] = rows[0]["target_images"][:2]  # 3 instructions, 2 targets: a bad record
    write_jsonl(tmp_path / "short.jsonl", rows)
    short = open_one({"name": "short", "uri": f"{tmp_path}/short.jsonl", "format": "jsonl", "task": "edit"})
    _, events = convert(short, 0)
    assert events[0][0] == "bad" and "3 instructions but 2 targets" in events[0][3]


def test_nyu_depth_v2_parquet_float_depth_images_in_metres(tmp_path):
    """sayakpaul/nyu_depth_v2 as Parquet: `image` (RGB) and `depth_map`, a float32 image of metres (mode F)."""
    rng = np.random.default_rng(0)
    rows, truths = [], []
    for i in range(4):
        depth = rng.uniform(0.7, 10.0, size=(48, 64)).astype(np.float32)
        buf = io.BytesIO()
        Image.fromarray(depth, mode="F").save(buf, format="TIFF")
        rows.append({"image": hf_image(colour(i, (64, 48)), f"{i}.jpg", "JPEG"),
                     "depth_map": {"bytes": buf.getvalue(), "path": f"{i}.tiff"}})
        truths.append(depth)
    write_parquet(tmp_path / "train-00000.parquet", rows)
    src = open_one({"name": "nyu", "uri": str(tmp_path), "format": "parquet", "task": "depth",
                    "options": {"depth_format": "float", "depth_range": [0.5, 10.0]}})
    for i in (0, 3):
        back = depth_r.decode(np.asarray(items(ok(src, i), "image_gen")[0]["image"]), (0.5, 10.0))
        want = SquareFit(64, 48, 64).array(truths[i])
        assert np.max(np.abs(back - want) / want) < 0.007  # log over 0.5-10 m: half a gray level is 0.6 %


def test_refcoco_refs_pickle_only_with_allow_pickle(tmp_path):
    images = [{"id": 1, "file_name": "COCO_train2014_000000000001.jpg", "width": 40, "height": 32}]
    anns = [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [4.0, 6.0, 20.0, 14.0], "iscrowd": 0, "area": 280.0}]
    refs = [{"ref_id": 0, "ann_id": 7, "image_id": 1, "category_id": 1, "split": "train",
             "sentences": [{"raw": "the box on the left", "sent": "the box on the left", "tokens": []}]}]
    (tmp_path / "train2014").mkdir()
    (tmp_path / "train2014" / images[0]["file_name"]).write_bytes(image_bytes(colour(1), "JPEG"))
    (tmp_path / "instances.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": []}))
    (tmp_path / "refs(unc).p").write_bytes(pickle.dumps(refs))
    source = {"name": "refcoco", "uri": f"{tmp_path}/instances.json", "format": "coco", "task": "grounding",
              "options": {"refs": f"{tmp_path}/refs(unc).p", "image_root": f"{tmp_path}/train2014"}}
    with pytest.raises(DataError, match=r"refs\(unc\).p is a pickle; unpickling runs code from the file\. Set "
                                        r"options.allow_pickle: true"):
        open_one(source)
    src = open_one({**source, "options": {**source["options"], "allow_pickle": True}})
    conv = ok(src, 0)
    assert "the box on the left" in items(conv, "text")[0]["text"]


def test_scannet_style_opencv_normals_are_flipped_into_the_opengl_rendering(tmp_path):
    """A surface facing the camera is (0, 0, -1) in OpenCV's frame (z forward): rendered ~(128, 128, 255)."""
    facing_cv = np.zeros((32, 40, 3), np.float32)
    facing_cv[..., 2] = -1.0
    facing_cv[:, :20, 1] = -1.0  # left half: pointing up in OpenCV (y down)
    facing_cv[:, :20, 2] = 0.0
    (tmp_path / "images").mkdir()
    colour(3).save(tmp_path / "images" / "0.png")
    Image.fromarray(normal_r.encode(facing_cv)).save(tmp_path / "images" / "0_normal.png")
    write_jsonl(tmp_path / "normals.jsonl", [{"image": "images/0.png", "normal": "images/0_normal.png"}])
    src = open_one({"name": "scannet", "uri": f"{tmp_path}/normals.jsonl", "format": "jsonl", "task": "normal",
                    "options": {"convention": "opencv"}})
    target = np.asarray(items(ok(src, 0), "image_gen")[0]["image"])
    back = normal_r.decode(target)
    # right half: facing the viewer, +z in our frame; left half: up, +y (within the 8-bit steps of two PNGs)
    assert np.abs(target[32, 60].astype(int) - (128, 128, 255)).max() <= 1
    for (y, x), want in (((32, 60), (0.0, 0.0, 1.0)), ((32, 2), (0.0, 1.0, 0.0))):
        assert np.degrees(np.arccos(np.clip(np.dot(back[y, x], want), -1, 1))) < 1.0


def test_webdataset_samples_with_png_or_webp_images_and_json_only_captions(tmp_path):
    """img2dataset writes .jpg by default, .png/.webp with --encode_format; the caption may be only in .json."""
    from unigen.model.data.synth.formats import write_tar
    members = []
    for i, fmt in enumerate(("PNG", "WEBP", "JPEG")):
        key = f"0000{i}"
        ext = {"PNG": "png", "WEBP": "webp", "JPEG": "jpg"}[fmt]
        members.append((f"{key}.{ext}", image_bytes(colour(i, (48, 48)), fmt)))
        if i < 2:
            members.append((f"{key}.txt", f"caption {i}".encode()))
        meta = {"caption": f"caption {i}", "key": key, "status": "success"}
        members.append((f"{key}.json", json.dumps(meta).encode()))
    write_tar(tmp_path / "00000.tar", members)
    src = open_one({"name": "wds", "uri": f"{tmp_path}/{{00000..00000}}.tar", "format": "webdataset", "task": "t2i"})
    assert len(src) == 3
    for i in range(3):
        conv = ok(src, [src.reader.key(k) for k in range(3)].index(f"00000.tar/0000{i}"))
        assert conv[0]["content"][0]["text"] == f"caption {i}"
        pixel = np.asarray(items(conv, "image_gen")[0]["image"])[32, 32].astype(int)
        assert np.abs(pixel - colour(i).getpixel((0, 0))).max() <= 3  # lossy webp/jpeg


def test_obelics_style_parquet_rows_with_aligned_texts_and_images(tmp_path):
    """OBELICS: `texts` and `images` aligned lists, exactly one of each pair null; images after the first are
    generation targets, the text between them starts the next user turn."""
    rows = [{"texts": ["A red room.", None, "Now it is blue.", None, "Then green.", None, "The end."],
             "images": [None, hf_image(colour(1), "a.png"), None, hf_image(colour(2), "b.png"), None,
                        hf_image(colour(3), "c.png"), None]}]
    write_parquet(tmp_path / "obelics.parquet", rows)
    src = open_one({"name": "obelics", "uri": f"{tmp_path}/obelics.parquet", "format": "parquet",
                    "task": "interleaved"})
    conv = ok(src, 0)
    assert [m["role"] for m in conv] == ["user", "assistant", "user", "assistant"]
    assert [it["type"] for it in conv[0]["content"]] == ["text", "image", "text"]
    assert [it["text"] for it in items(conv, "text")] == ["A red room.", "Now it is blue.", "Then green."]
    assert len(items(conv, "image_gen")) == 2  # the trailing text generates nothing and is dropped
    # b.png is fed back right after its slot (later targets see it); c.png, the last, is not.
    assert [it["type"] for it in conv[1]["content"]] == ["image_gen", "image"]
    assert [it["type"] for it in conv[3]["content"]] == ["image_gen"]
    feedback, target = conv[1]["content"][1]["image"], conv[1]["content"][0]["image"]
    assert feedback is target and np.asarray(target)[32, 32].tolist() == list(colour(2).getpixel((0, 0)))


def test_per_source_counts_are_logged_every_log_every_steps(corpus, caplog):
    import logging

    from tests.unit.data.data_helpers import by_name, id_collate, spec_for
    from unigen.model.data.loader import build_loader
    _, manifest = corpus
    spec = spec_for([by_name(manifest, "shapes-t2i"), by_name(manifest, "shapes-ip2p")], log_every=2)
    loader = build_loader(spec, id_collate, seed=0, global_batch_size=4, micro_batch_size=2, rank=0, world_size=1)
    caplog.set_level(logging.INFO, logger="unigen.data")
    for _ in range(4):
        loader.next_step()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("data counts after")]
    assert [line.split(":")[0] for line in lines] == ["data counts after 2 steps", "data counts after 4 steps"]
    served = loader.stats()["sources"]
    assert lines[-1].endswith(f"shapes-t2i: {served['shapes-t2i']['served']} served / 0 bad, "
                              f"shapes-ip2p: {served['shapes-ip2p']['served']} served / 0 bad")


def test_jsonl_sessions_one_turn_per_line_are_grouped_and_ordered_before_sampling(tmp_path):
    """Multi-turn editing written one turn per line, lines out of order: `session` and `turn` mapped in the
    recipe group them into one record per session, turns in order, targets chained."""
    (tmp_path / "img").mkdir()
    lines = []
    for sid in ("s1", "s2"):
        colour(0).save(tmp_path / "img" / f"{sid}_0.png")
        for turn in (1, 2, 3):
            colour(turn + (10 if sid == "s2" else 0)).save(tmp_path / "img" / f"{sid}_{turn}.png")
            lines.append({"session_id": sid, "round": turn, "input": f"img/{sid}_{turn - 1}.png",
                          "text": f"{sid} round {turn}", "output": f"img/{sid}_{turn}.png"})
    order = [4, 0, 2, 5, 1, 3]  # shuffled, as published files may be
    write_jsonl(tmp_path / "turns.jsonl", [lines[k] for k in order])
    src = open_one({"name": "turns", "uri": f"{tmp_path}/turns.jsonl", "format": "jsonl", "task": "edit",
                    "fields": {"session": "session_id", "turn": "round", "source": "input", "instruction": "text",
                               "target": "output"}})
    assert len(src) == 2 and {src.reader.key(i) for i in range(2)} == {"turns.jsonl#s1", "turns.jsonl#s2"}
    index = [src.reader.key(i) for i in range(2)].index("turns.jsonl#s2")
    conv = ok(src, index)
    assert [it["text"] for it in items(conv, "text")] == ["s2 round 1", "s2 round 2", "s2 round 3"]
    inputs, targets = items(conv, "image"), items(conv, "image_gen")
    assert inputs[1]["image"] is targets[0]["image"] and inputs[2]["image"] is targets[1]["image"]
