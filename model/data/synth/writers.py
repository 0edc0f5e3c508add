"""``write_corpus``: the synthetic shapes corpus in the datasets' published layouts, one folder per task.

    <out>/t2i/{00000..00003}.tar             img2dataset WebDataset (<key>.jpg/.txt/.json) + _stats.json
    <out>/t2i-single/{00000..00001}.tar      the same layout, every caption one coloured shape on a named wall
    <out>/interleaved/{00000..00001}.tar     MMC4-style documents: <key>.json + <key>.<n>.png
    <out>/edit/instructpix2pix/*.parquet     original_image / edit_prompt / edited_image (+ prompts)
    <out>/edit/magicbrush/*.parquet          img_id / turn_index / source_img / mask_img / instruction / target_img
    <out>/edit/seed-real/annotations.jsonl   SEED-Data-Edit pairs: source_image / instruction / target_image
    <out>/edit/seed-multiturn/annotations.jsonl   sessions: source_image, instruction_{n}, target_image_{n}
    <out>/multi_image/train.jsonl, train.parquet  source_images / prompt / target_image
    <out>/depth/{nyu,kitti,sintel}/train.jsonl    image + float .npy metres / KITTI uint16 PNG / Sintel .dpt
    <out>/normal/train.jsonl                 image + normal PNG (OpenGL frame)
    <out>/segmentation/train.jsonl           image + class-id PNG (label set "shapes")
    <out>/pose/annotations/person_keypoints_train.json + pose/train/*.png   COCO keypoints
    <out>/grounding/refcoco.parquet          image / bbox (xywh px) / sentences
    <out>/grounding/coco/annotations/{instances,refs}.json + grounding/coco/train2014/*.png
    <out>/heldout/t2i/00000.tar, heldout/magicbrush/*.parquet   held-out records (none of them in training)
    <out>/heldout/edit-input.png             an input image for editing prompts
    <out>/manifest.json                      what was written + ready ``data.sources`` / ``eval.sources`` lists

Deterministic from the seed (the same seed writes the same bytes).
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from unigen.model.data.render import depth as depth_r
from unigen.model.data.synth import records as R
from unigen.model.data.synth.formats import (hf_image, image_bytes, save, write_jsonl, write_parquet,
                                             write_tar)
from unigen.model.data.synth.layout import heldout_sources_for, sources_for

HELDOUT_FIRST = 1_000_000  # record indices of the held-out split: far past any training record's
BASE_COUNTS = {"t2i_shards": 4, "t2i_per_shard": 256, "t2i_single_shards": 2, "interleaved_shards": 2, "interleaved_per_shard": 8,
               "ip2p": 32, "magicbrush_sessions": 8, "seed_pairs": 16, "seed_sessions": 8,
               "multi_image": 16, "dense": 16, "pose": 16, "grounding": 16, "heldout": 16}


def write_corpus(out: str | Path, seed: int = 0, scale: int = 1) -> dict:
    """Write every task's files under ``out``; returns the manifest (also saved as manifest.json)."""
    if scale < 1:
        raise ValueError(f"--scale must be >= 1, got {scale}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = {k: v * scale if not k.endswith("_shards") else v for k, v in BASE_COUNTS.items()}
    written = {
        "t2i": _t2i(out / "t2i", seed, n["t2i_shards"], n["t2i_per_shard"]),
        "t2i-single": _t2i(out / "t2i-single", seed, n["t2i_single_shards"], n["t2i_per_shard"], single=True),
        "interleaved": _interleaved(out / "interleaved", seed, n["interleaved_shards"], n["interleaved_per_shard"]),
        "edit/instructpix2pix": _ip2p(out / "edit" / "instructpix2pix", seed, n["ip2p"]),
        "edit/magicbrush": _magicbrush(out / "edit" / "magicbrush", seed, n["magicbrush_sessions"]),
        "edit/seed-real": _seed_pairs(out / "edit" / "seed-real", seed, n["seed_pairs"]),
        "edit/seed-multiturn": _seed_sessions(out / "edit" / "seed-multiturn", seed, n["seed_sessions"]),
        "multi_image": _multi_image(out / "multi_image", seed, n["multi_image"]),
        "depth": _depth(out / "depth", seed, n["dense"]),
        "normal": _dense_jsonl(out / "normal", seed, n["dense"], "normal"),
        "segmentation": _dense_jsonl(out / "segmentation", seed, n["dense"], "segmentation"),
        "pose": _pose(out / "pose", seed, n["pose"]),
        "grounding": _grounding(out / "grounding", seed, n["grounding"]),
        **_heldout(out / "heldout", seed, n["heldout"]),
    }
    manifest = {"seed": seed, "scale": scale, "written": written,
                "sources": [s for s in sources_for(str(out))], "heldout_sources": heldout_sources_for(str(out))}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


def _heldout(folder: Path, seed: int, count: int) -> dict:
    """Records drawn with other indices than any training record: what eval.sources points at."""
    written = {"heldout/t2i": _t2i(folder / "t2i", seed, 1, count, first=HELDOUT_FIRST),
               "heldout/magicbrush": _magicbrush(folder / "magicbrush", seed, max(1, count // 4),
                                                 first=HELDOUT_FIRST)}
    written["heldout/t2i"]["uri"] = "heldout/t2i/00000.tar"
    written["heldout/magicbrush"]["uri"] = "heldout/magicbrush"
    save(folder / "edit-input.png", image_bytes(R.edit(seed, HELDOUT_FIRST + count)["source_image"]))
    written["heldout/edit-input.png"] = {"format": "png", "records": 1, "uri": "heldout/edit-input.png"}
    return written


def _t2i(folder: Path, seed: int, shards: int, per_shard: int, first: int = 0, single: bool = False) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        members, meta_rows = [], []
        for j in range(per_shard):
            rec = R.t2i(seed, first + s * per_shard + j, single=single)
            key = f"{s:05d}{j:04d}" if not first else f"{first + s * per_shard + j:09d}"  # held-out: other keys
            img = rec["image"]
            meta = {"caption": rec["caption"], "url": f"synthetic://t2i/{key}.jpg", "key": key,
                    "status": "success", "error_message": None, "width": img.width, "height": img.height,
                    "original_width": img.width, "original_height": img.height, "exif": None}
            members += [(f"{key}.jpg", image_bytes(img, "JPEG")), (f"{key}.txt", rec["caption"].encode()),
                        (f"{key}.json", json.dumps(meta, sort_keys=True).encode())]
            meta_rows.append(meta)
        write_tar(folder / f"{s:05d}.tar", members)
        write_parquet(folder / f"{s:05d}.parquet", meta_rows)
        stats = {"count": per_shard, "successes": per_shard, "failed_to_download": 0, "failed_to_resize": 0,
                 "status_dict": {"success": per_shard}}
        (folder / f"{s:05d}_stats.json").write_text(json.dumps(stats, sort_keys=True), encoding="utf-8")
    return {"format": "webdataset", "records": shards * per_shard,
            "uri": f"{folder.name}/{{00000..{shards - 1:05d}}}.tar"}


def _interleaved(folder: Path, seed: int, shards: int, per_shard: int) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        members = []
        for j in range(per_shard):
            rec = R.interleaved(seed, s * per_shard + j)
            key = f"{s:05d}{j:04d}"
            sentences = [t for t in rec["texts"] if t is not None]
            images = [i for i in rec["images"] if i is not None]
            # MMC4 places an image before the sentence it is matched to: image k follows sentence k.
            info = [{"image_name": f"{k}.png", "matched_text_index": k + 1} for k in range(len(images))]
            doc = {"text_list": sentences, "image_info": info, "url": f"synthetic://doc/{key}"}
            members.append((f"{key}.json", json.dumps(doc, sort_keys=True).encode()))
            members += [(f"{key}.{k}.png", image_bytes(img)) for k, img in enumerate(images)]
        write_tar(folder / f"{s:05d}.tar", members)
    return {"format": "webdataset", "records": shards * per_shard,
            "uri": f"interleaved/{{00000..{shards - 1:05d}}}.tar"}


def _ip2p(folder: Path, seed: int, count: int) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        rec = R.edit(seed, i)
        rows.append({"original_prompt": f"synthetic scene {i}", "original_image": hf_image(rec["source_image"], f"{i}_0.png"),
                     "edit_prompt": rec["instruction"], "edited_prompt": f"synthetic scene {i}, edited",
                     "edited_image": hf_image(rec["target_image"], f"{i}_1.png")})
    write_parquet(folder / "train-00000-of-00001.parquet", rows)
    return {"format": "parquet", "records": count, "uri": "edit/instructpix2pix"}


def _magicbrush(folder: Path, seed: int, sessions: int, first: int = 10_000) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(sessions):
        rec = R.edit(seed, first + i, turns=3)
        img_id = f"{90_000 + first + i}"  # 100000 + i for the training sessions
        previous = rec["source_image"]
        for t, (instruction, target) in enumerate(zip(rec["instructions"], rec["target_images"]), start=1):
            diff = np.abs(np.asarray(previous, np.int16) - np.asarray(target, np.int16)).max(axis=-1) > 0
            mask = Image.fromarray((diff * 255).astype(np.uint8), "L").convert("RGB")
            rows.append({"img_id": img_id, "turn_index": t,
                         "source_img": hf_image(previous, f"{img_id}-input{t}.png"),
                         "mask_img": hf_image(mask, f"{img_id}-mask{t}.png"), "instruction": instruction,
                         "target_img": hf_image(target, f"{img_id}-output{t}.png")})
            previous = target
    # Published rows are not guaranteed to be in session order: shuffle so grouping is really needed.
    order = np.random.default_rng(seed).permutation(len(rows))
    write_parquet(folder / "train-00000-of-00001.parquet", [rows[k] for k in order], row_group_size=8)
    return {"format": "parquet", "records": sessions, "turns": len(rows), "uri": "edit/magicbrush"}


def _seed_pairs(folder: Path, seed: int, count: int) -> dict:
    rows = []
    for i in range(count):
        rec = R.edit(seed, 20_000 + i)
        src = save(folder / "images" / f"{i:06d}_src.jpg", image_bytes(rec["source_image"], "JPEG"))
        tgt = save(folder / "images" / f"{i:06d}_tgt.jpg", image_bytes(rec["target_image"], "JPEG"))
        rows.append({"source_image": f"images/{src}", "instruction": rec["instruction"],
                     "target_image": f"images/{tgt}"})
    write_jsonl(folder / "annotations.jsonl", rows)
    return {"format": "jsonl", "records": count, "uri": "edit/seed-real/annotations.jsonl"}


def _seed_sessions(folder: Path, seed: int, count: int) -> dict:
    rows = []
    for i in range(count):
        turns = 2 + i % 3  # 2..4 rounds
        rec = R.edit(seed, 30_000 + i, turns=turns)
        row = {"source_image": f"images/{i:06d}.jpg"}
        save(folder / row["source_image"], image_bytes(rec["source_image"], "JPEG"))
        for t, (instruction, target) in enumerate(zip(rec["instructions"], rec["target_images"]), start=1):
            row[f"instruction_{t}"] = instruction
            row[f"target_image_{t}"] = f"images/{i:06d}_edit{t}.jpg"
            save(folder / row[f"target_image_{t}"], image_bytes(target, "JPEG"))
        rows.append(row)
    write_jsonl(folder / "annotations.jsonl", rows)
    return {"format": "jsonl", "records": count, "uri": "edit/seed-multiturn/annotations.jsonl"}


def _multi_image(folder: Path, seed: int, count: int) -> dict:
    lines, rows = [], []
    for i in range(count):
        rec = R.multi_image(seed, i)
        srcs = [f"images/{i:06d}_src{k}.png" for k in range(len(rec["source_images"]))]
        for path, img in zip(srcs, rec["source_images"]):
            save(folder / path, image_bytes(img))
        tgt = f"images/{i:06d}_tgt.png"
        save(folder / tgt, image_bytes(rec["target_image"]))
        lines.append({"source_images": srcs, "prompt": rec["prompt"], "target_image": tgt})
        rows.append({"source_images": [hf_image(img, p) for p, img in zip(srcs, rec["source_images"])],
                     "prompt": rec["prompt"], "target_image": hf_image(rec["target_image"], tgt)})
    write_jsonl(folder / "train.jsonl", lines)
    write_parquet(folder / "train.parquet", rows)
    return {"format": "jsonl+parquet", "records": count, "uri": "multi_image/train.jsonl"}


def _depth(folder: Path, seed: int, count: int) -> dict:
    lines: dict = {"nyu": [], "kitti": [], "sintel": []}
    for i in range(count):
        for variant in lines:
            rec = R.dense(seed, i + 1000 * list(lines).index(variant), "depth")
            d = rec["_gt"]["depth"]
            root = folder / variant
            img = save(root / "images" / f"{i:06d}.png", image_bytes(rec["image"]))
            if variant == "nyu":
                name = save(root / "depth" / f"{i:06d}.npy", R.npy_bytes(d))
            elif variant == "kitti":
                # Sparse like LiDAR: about 30 % of pixels measured, value = metres * 256, 0 = none.
                keep = np.random.default_rng([seed, i]).random(d.shape) < 0.3
                png = np.where(keep, np.rint(d * 256.0), 0).astype(np.uint16)
                buf = io.BytesIO()
                Image.fromarray(png).save(buf, format="PNG")
                name = save(root / "depth" / f"{i:06d}.png", buf.getvalue())
            else:
                name = save(root / "depth" / f"{i:06d}.dpt", depth_r.write_dpt(d))
            lines[variant].append({"image": f"images/{img}", "depth": f"depth/{name}"})
    for variant, rows in lines.items():
        write_jsonl(folder / variant / "train.jsonl", rows)
    return {"format": "jsonl", "records": count * 3, "uri": "depth/{nyu,kitti,sintel}/train.jsonl"}


def _dense_jsonl(folder: Path, seed: int, count: int, task: str) -> dict:
    field, sub = ("normal", "normals") if task == "normal" else ("label", "labels")
    rows = []
    for i in range(count):
        rec = R.dense(seed, i, task)
        img = save(folder / "images" / f"{i:06d}.png", image_bytes(rec["image"]))
        tgt = save(folder / sub / f"{i:06d}.png", rec[field])
        rows.append({"image": f"images/{img}", field: f"{sub}/{tgt}"})
    write_jsonl(folder / "train.jsonl", rows)
    return {"format": "jsonl", "records": count, "uri": f"{task}/train.jsonl"}


def _pose(folder: Path, seed: int, count: int) -> dict:
    from unigen.model.data.render.pose import KEYPOINTS, SKELETON
    images, anns = [], []
    for i in range(count):
        rec = R.pose(seed, i)
        image_id = i + 1
        name = f"{image_id:012d}.png"
        save(folder / "train" / name, image_bytes(rec["image"]))
        images.append({"id": image_id, "file_name": name, "width": rec["image"].width, "height": rec["image"].height})
        for person in rec["persons"]:
            x, y, w, h = person["bbox"]
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                         "keypoints": person["keypoints"], "num_keypoints": 17, "bbox": person["bbox"],
                         "area": w * h, "segmentation": []})
    coco = {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "person", "supercategory": "person", "keypoints": list(KEYPOINTS),
                            "skeleton": [list(p) for p in SKELETON]}]}
    (folder / "annotations").mkdir(parents=True, exist_ok=True)
    (folder / "annotations" / "person_keypoints_train.json").write_text(json.dumps(coco), encoding="utf-8")
    return {"format": "coco", "records": count, "people": len(anns),
            "uri": "pose/annotations/person_keypoints_train.json"}


def _grounding(folder: Path, seed: int, count: int) -> dict:
    rows, images, anns, refs = [], [], [], []
    for i in range(count):
        rec = R.grounding(seed, i)
        rows.append({"ref_id": i, "image": hf_image(rec["image"], f"{i:06d}.png"), "bbox": rec["bbox"],
                     "sentences": rec["sentences"]})
        name = f"COCO_train2014_{i + 1:012d}.png"
        save(folder / "coco" / "train2014" / name, image_bytes(rec["image"]))
        images.append({"id": i + 1, "file_name": name, "width": rec["image"].width, "height": rec["image"].height})
        anns.append({"id": 1000 + i, "image_id": i + 1, "category_id": 1, "bbox": rec["bbox"], "iscrowd": 0,
                     "area": rec["bbox"][2] * rec["bbox"][3], "segmentation": []})
        refs.append({"ref_id": i, "ann_id": 1000 + i, "image_id": i + 1, "category_id": 1,
                     "split": "train" if i % 4 else "val",
                     "sentences": [{"raw": s, "sent": s, "tokens": s.split()} for s in rec["sentences"]]})
    write_parquet(folder / "refcoco.parquet", rows)
    (folder / "coco" / "annotations").mkdir(parents=True, exist_ok=True)
    (folder / "coco" / "annotations" / "instances.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "shape"}]}),
        encoding="utf-8")
    (folder / "coco" / "annotations" / "refs.json").write_text(json.dumps(refs), encoding="utf-8")
    return {"format": "parquet+coco", "records": count, "uri": "grounding/refcoco.parquet"}
