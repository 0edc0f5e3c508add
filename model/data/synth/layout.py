"""The synthetic corpus's ``data.sources`` entries, one per dataset folder ``write_corpus`` writes.

Used by the smoke recipes (paths like ``unigen-data/shapes/t2i/{00000..00003}.tar``), the benchmark,
the runbook and the tests, so the field mappings and options shown there are the ones that work.
"""
from __future__ import annotations


def sources_for(root: str, shards: dict | None = None) -> list[dict]:
    """SourceSpec dicts for the corpus at ``root`` (a path or URL)."""
    r = root.rstrip("/")
    n_t2i = (shards or {}).get("t2i", 4)
    n_il = (shards or {}).get("interleaved", 2)
    return [
        {"name": "shapes-t2i", "uri": f"{r}/t2i/{{00000..{n_t2i - 1:05d}}}.tar", "format": "webdataset", "task": "t2i"},
        {"name": "shapes-t2i-single", "uri": f"{r}/t2i-single/{{00000..00001}}.tar", "format": "webdataset",
         "task": "t2i"},
        {"name": "shapes-interleaved", "uri": f"{r}/interleaved/{{00000..{n_il - 1:05d}}}.tar",
         "format": "webdataset", "task": "interleaved"},
        {"name": "shapes-ip2p", "uri": f"{r}/edit/instructpix2pix", "format": "parquet", "task": "edit"},
        {"name": "shapes-magicbrush", "uri": f"{r}/edit/magicbrush", "format": "parquet", "task": "edit"},
        {"name": "shapes-seed-real", "uri": f"{r}/edit/seed-real/annotations.jsonl", "format": "jsonl", "task": "edit"},
        {"name": "shapes-seed-multiturn", "uri": f"{r}/edit/seed-multiturn/annotations.jsonl", "format": "jsonl",
         "task": "edit", "fields": {"instruction": "instruction_{n}", "target": "target_image_{n}"}},
        {"name": "shapes-multi-image", "uri": f"{r}/multi_image/train.jsonl", "format": "jsonl", "task": "multi_image"},
        {"name": "shapes-multi-image-parquet", "uri": f"{r}/multi_image/train.parquet", "format": "parquet",
         "task": "multi_image"},
        {"name": "shapes-depth-nyu", "uri": f"{r}/depth/nyu/train.jsonl", "format": "jsonl", "task": "depth",
         "options": {"depth_range": [1.0, 10.0]}},
        {"name": "shapes-depth-kitti", "uri": f"{r}/depth/kitti/train.jsonl", "format": "jsonl", "task": "depth",
         "options": {"depth_format": "png16", "png_scale": 1 / 256, "depth_range": [1.0, 10.0]}},
        {"name": "shapes-depth-sintel", "uri": f"{r}/depth/sintel/train.jsonl", "format": "jsonl", "task": "depth",
         "options": {"depth_format": "dpt", "depth_range": [1.0, 10.0]}},
        {"name": "shapes-normal", "uri": f"{r}/normal/train.jsonl", "format": "jsonl", "task": "normal"},
        {"name": "shapes-segmentation", "uri": f"{r}/segmentation/train.jsonl", "format": "jsonl",
         "task": "segmentation", "options": {"label_set": "shapes"}},
        {"name": "shapes-pose", "uri": f"{r}/pose/annotations/person_keypoints_train.json", "format": "coco",
         "task": "pose", "options": {"image_root": f"{r}/pose/train"}},
        {"name": "shapes-refcoco", "uri": f"{r}/grounding/refcoco.parquet", "format": "parquet", "task": "grounding"},
        {"name": "shapes-refcoco-coco", "uri": f"{r}/grounding/coco/annotations/instances.json", "format": "coco",
         "task": "grounding", "options": {"refs": f"{r}/grounding/coco/annotations/refs.json",
                                          "image_root": f"{r}/grounding/coco/train2014", "split": "train"}},
    ]


def heldout_sources_for(root: str) -> list[dict]:
    """``eval.sources`` entries for the corpus's held-out split (records no training source holds)."""
    r = root.rstrip("/")
    return [
        {"name": "heldout-t2i", "uri": f"{r}/heldout/t2i/00000.tar", "format": "webdataset", "task": "t2i"},
        {"name": "heldout-magicbrush", "uri": f"{r}/heldout/magicbrush", "format": "parquet", "task": "edit"},
    ]
