"""``unigen data label-segmentation`` with a tiny random OneFormer built from a config (no downloads):
two ranks split the shards, the PNGs are the labeller's maps at each image's size, the output folder
is a ``task: segmentation`` source as it is, and a rerun skips finished shards but redoes a shard
that has no done marker."""
import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from tests.unit.data.test_data_cli import cli
from unigen.model.data.commands.label_segmentation import resolve_rank

NUM_LABELS = 5
SIZES = {"shard-00000": [(40, 30), (24, 56), (33, 33)], "shard-00001": [(48, 20), (20, 48)],
         "shard-00002": [(36, 44), (30, 30)]}


def _tokenizer_vocab() -> dict:
    """CLIP's byte-level alphabet (each byte as a token, and as a word end) plus its special tokens:
    enough for the processor to tokenize "the task is semantic" without downloading a vocabulary."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    extra = [b for b in range(256) if b not in printable]
    chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(len(extra))]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    return vocab


@pytest.fixture(scope="module")
def tiny_oneformer(tmp_path_factory):
    """A ~130k-parameter OneFormer (Swin with one block per stage) and its processor, saved as a hub
    folder would be. init_std 0.5 so the random model predicts several classes, not one."""
    import torch
    from transformers import (CLIPTokenizer, OneFormerConfig, OneFormerForUniversalSegmentation,
                              OneFormerImageProcessorPil, OneFormerProcessor, SwinConfig)
    folder = tmp_path_factory.mktemp("tiny-oneformer")
    vocab = _tokenizer_vocab()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    backbone = SwinConfig(image_size=64, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                          window_size=2, out_features=["stage1", "stage2", "stage3", "stage4"])
    config = OneFormerConfig(
        backbone_config=backbone, num_labels=NUM_LABELS, num_queries=4, hidden_dim=32, conv_dim=32, mask_dim=32,
        encoder_feedforward_dim=32, dim_feedforward=32, encoder_layers=1, decoder_layers=2, num_attention_heads=2,
        query_dec_layers=1, text_encoder_width=16, text_encoder_num_layers=1, text_encoder_proj_layers=1,
        text_encoder_vocab_size=len(vocab), text_encoder_context_length=16, text_encoder_n_ctx=2, task_seq_len=16,
        max_seq_len=16, init_std=0.5, id2label={i: f"class{i}" for i in range(NUM_LABELS)},
        label2id={f"class{i}": i for i in range(NUM_LABELS)})
    torch.manual_seed(0)
    OneFormerForUniversalSegmentation(config).save_pretrained(folder)
    images = OneFormerImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 96}, num_text=2,
                                        num_labels=NUM_LABELS)
    OneFormerProcessor(image_processor=images, tokenizer=tokenizer, max_seq_length=16,
                       task_seq_length=16).save_pretrained(folder)
    return folder


def _image(w, h, seed) -> bytes:
    rng = np.random.default_rng(seed)
    arr = np.zeros((h, w, 3), np.uint8)
    arr[: h // 2] = rng.integers(0, 255, 3)  # two flat halves and noise: something to segment
    arr[h // 2:] = rng.integers(0, 255, 3)
    arr = np.clip(arr + rng.integers(-20, 20, arr.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


def _write_shard(path, samples):
    with tarfile.open(path, "w") as tar:
        for name, data in samples:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def shards(tmp_path):
    folder = tmp_path / "laion"
    folder.mkdir()
    for s, (name, sizes) in enumerate(SIZES.items()):
        samples = []
        for i, (w, h) in enumerate(sizes):
            key = f"{s:05d}{i:04d}"
            samples += [(f"{key}.jpg", _image(w, h, 10 * s + i)), (f"{key}.txt", f"caption {key}".encode()),
                        (f"{key}.json", json.dumps({"key": key}).encode())]
        if name == "shard-00001":  # what img2dataset can leave: no image, and bytes that are no image
            samples += [("0001x001.txt", b"no image here"), ("0001x002.jpg", b"not a jpeg")]
        _write_shard(folder / f"{name}.tar", samples)
    return folder


def _label(out, *extra):
    return cli("label-segmentation", f"{out.parent}/laion/shard-{{00000..00002}}.tar", "--out", out,
               "--device", "cpu", *extra)


def test_two_ranks_label_every_image_and_the_output_is_a_segmentation_source(tiny_oneformer, shards, tmp_path,
                                                                             capsys):
    from unigen.model.data.commands.check import convert
    from unigen.model.data.commands.oneformer_labeler import OneFormerLabeler
    from unigen.model.data.sources import open_source
    from unigen.model.data.spec import SourceSpec
    out = tmp_path / "labels"
    model = ["--model", tiny_oneformer]
    assert _label(out, *model, "--rank", 0, "--world-size", 2, "--batch-size", 1) == 0
    assert sorted(p.name for p in out.glob("*.jsonl")) == ["shard-00000.jsonl", "shard-00002.jsonl"]
    assert _label(out, *model, "--rank", 1, "--world-size", 2, "--batch-size", 2) == 0
    text = capsys.readouterr()
    assert "labelled 2 images in 1 shards" in text.out and "2 bad samples skipped" in text.out
    assert "no image member" in text.err and "undecodable image" in text.err

    labeler = OneFormerLabeler(str(tiny_oneformer), device="cpu")
    lines = [json.loads(line) for p in sorted(out.glob("*.jsonl")) for line in p.read_text().splitlines()]
    assert len(lines) == 7
    classes = set()
    for line in lines:
        img = Image.open(out / line["image"]).convert("RGB")
        label = Image.open(out / line["label"])
        ids = np.asarray(label)
        assert label.mode == "L" and label.size == img.size
        assert ids.max() < NUM_LABELS
        classes |= set(np.unique(ids).tolist())
        assert line["caption"] == f"caption {line['key'].split('/')[1]}"
        if not line["key"].startswith("shard-00001"):  # rank 0 ran one image per call: maps are exact
            np.testing.assert_array_equal(ids, labeler.label([img])[0])
    assert len(classes) >= 2  # the random model's maps are not constant, so the comparison above bites

    src = open_source(SourceSpec(uri=f"{out}/*.jsonl", format="jsonl", task="segmentation",
                                 options={"label_set": "ade20k-150"}), 32, where="source")
    assert len(src) == 7
    for i in range(len(src)):
        conversation, key, _, reason = convert(src, i)
        assert reason is None, (key, reason)
        assert conversation[1]["content"][0]["image"].size == (32, 32)


def test_a_rerun_skips_finished_shards_and_redoes_one_without_a_marker(tiny_oneformer, shards, tmp_path, capsys):
    out = tmp_path / "labels"
    model = ["--model", tiny_oneformer]
    assert _label(out, *model) == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.jsonl")}
    assert len(stamps) == 3
    capsys.readouterr()
    assert _label(out, "--model", tmp_path / "another-model") == 2  # settings differ
    assert "holds labels made with model:" in capsys.readouterr().err
    assert _label(out, *model) == 0
    assert "3 shards skipped as done" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.jsonl")} == stamps

    # A killed run: shard-00002's labels half written, its marker never renamed into place.
    (out / "shard-00002.jsonl").unlink()
    torn = sorted((out / "shard-00002" / "labels").glob("*.png"))[0]  # key 000020000: 36x44
    torn.write_bytes(torn.read_bytes()[:20])
    assert _label(out, *model, "--rank", 0, "--world-size", 2) == 0
    assert "labelled 2 images in 1 shards" in capsys.readouterr().out
    assert (out / "shard-00002.jsonl").exists()
    assert Image.open(torn).size == (36, 44)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.jsonl")
            if p.name != "shard-00002.jsonl"} == {k: v for k, v in stamps.items() if k != "shard-00002.jsonl"}


def test_usage_errors_exit_2_naming_the_flag(tiny_oneformer, shards, tmp_path, capsys):
    out = tmp_path / "labels"
    assert _label(out, "--rank", 2, "--world-size", 2) == 2
    assert "rank 2 of world size 2" in capsys.readouterr().err
    assert _label(out, "--rank", 1) == 2
    assert "--rank and --world-size go together" in capsys.readouterr().err
    assert cli("label-segmentation", f"{tmp_path}/nothing-*.tar", "--out", out) == 2
    assert "no .tar file matches" in capsys.readouterr().err
    assert _label(out, "--label-set", "no-such-set") == 2
    assert "valid: ade20k-150" in capsys.readouterr().err
    assert _label(out, "--model", tiny_oneformer, "--label-set", "cityscapes-19") == 0
    assert _label(tmp_path / "other", "--model", tiny_oneformer, "--label-set", "shapes") == 2  # 5 > 4
    assert "predicts 5 classes but --label-set shapes has 4" in capsys.readouterr().err
    assert not list((tmp_path / "other").glob("*.jsonl"))
    assert _label(tmp_path / "x", "--model", tmp_path / "no-model") == 2
    assert "cannot be loaded as a OneFormer processor + model" in capsys.readouterr().err
    assert not (tmp_path / "x" / "labeler.txt").exists()  # a typo in --model does not pin the folder


def test_a_cut_shard_keeps_its_complete_samples_and_an_unreadable_one_fails_alone(tiny_oneformer, shards,
                                                                                    tmp_path, capsys):
    cut = shards / "shard-00001.tar"
    cut.write_bytes(cut.read_bytes()[:4500])  # inside the second sample's image
    (shards / "shard-00002.tar").write_bytes(b"not a tar file" * 100)
    out = tmp_path / "labels"
    assert _label(out, "--model", tiny_oneformer) == 1
    text = capsys.readouterr()
    assert "bad shard-00001/000010001: truncated shard: 000010001.jpg runs past the end" in text.err
    assert "failed shard shard-00002:" in text.err and "rerun to retry it" in text.err
    assert "labelled 4 images in 2 shards" in text.out and "1 shards failed" in text.out
    assert sorted(p.name for p in out.glob("*.jsonl")) == ["shard-00000.jsonl", "shard-00001.jsonl"]
    assert [json.loads(x)["key"] for x in (out / "shard-00001.jsonl").read_text().splitlines()] == \
        ["shard-00001/000010000"]


@pytest.mark.parametrize("env, flags, expected", [
    ({}, (None, None), (0, 1)),
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"},
     (None, None), (3, 4)),
    ({"SLURM_ARRAY_TASK_ID": "8", "SLURM_ARRAY_TASK_COUNT": "8", "SLURM_ARRAY_TASK_MIN": "1"}, (None, None), (7, 8)),
    ({"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "RANK": "0", "WORLD_SIZE": "1"}, (None, None), (5, 16)),
    ({"RANK": "2", "WORLD_SIZE": "3"}, (None, None), (2, 3)),
    ({"RANK": "2", "WORLD_SIZE": "3"}, (0, 1), (0, 1)),
])
def test_rank_and_world_size_come_from_flags_then_slurm_then_torchrun_variables(env, flags, expected):
    assert resolve_rank(*flags, env)[:2] == expected


def test_rank_errors_name_the_variable():
    with pytest.raises(ValueError, match=r"\$RANK='x'"):
        resolve_rank(None, None, {"RANK": "x", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match=r"rank 4 of world size 4 \(from \$SLURM_ARRAY_TASK_ID"):
        resolve_rank(None, None, {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4"})


def test_scores_are_cropped_to_each_image_before_resizing():
    """Image 1 fills the left half of the padded batch canvas: class 0 on its left half, class 1 on its
    right, class 0 again over the padding. Resizing the whole canvas (transformers' post-processing)
    would put class 1 in the middle and class 0 on the right; cropping first keeps the right half 1."""
    import torch
    from unigen.model.data.commands.oneformer_labeler import semantic_maps
    class_logits = torch.tensor([[[9.0, -9.0, -9.0], [-9.0, 9.0, -9.0]]]).repeat(2, 1, 1)  # query q -> class q
    masks = torch.full((2, 2, 4, 8), -9.0)
    masks[0, 0, :, :4] = masks[0, 1, :, 4:] = 9.0  # image 0 (whole canvas): left 0, right 1
    masks[1, 0, :, :2] = masks[1, 1, :, 2:4] = masks[1, 0, :, 4:] = 9.0
    pixel_mask = torch.ones(2, 16, 32, dtype=torch.long)
    pixel_mask[1, :, 16:] = 0
    maps = semantic_maps(class_logits, masks, pixel_mask, [(20, 40), (10, 10)])
    assert maps[0].shape == (20, 40) and maps[1].shape == (10, 10)
    assert (maps[0][:, :18] == 0).all() and (maps[0][:, 22:] == 1).all()
    assert (maps[1][:, :4] == 0).all() and (maps[1][:, 6:] == 1).all()
