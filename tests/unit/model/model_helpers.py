"""Shared builders for the model tests: tiny pipelines, images, conversations."""
from __future__ import annotations

import pathlib
import numpy as np
import torch
from PIL import Image

# Qwen2.5-VL-Instruct's chat_template (from its tokenizer_config / chat_template.json), verbatim.
QWEN_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in "
    "messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful "
    "assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string "
    "%}{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}{% if "
    "content['type'] == 'image' or 'image' in content or 'image_url' in content %}{% set image_count.value "
    "= image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif "
    "%}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' or 'video' in content "
    "%}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value "
    "}}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ "
    "content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if "
    "add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_pipeline(seed: int = 0, **overrides):
    """A fresh tiny UniGenPipeline with deterministic random weights."""
    from unigen.model import UniGenPipeline

    torch.manual_seed(seed)
    return UniGenPipeline.from_preset("tiny", **overrides)


def pattern(index: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    """A distinct, deterministic RGB image per index (stripes over a coloured ground)."""
    width, height = size
    array = np.zeros((height, width, 3), np.uint8)
    array[..., index % 3] = 60 + 40 * (index % 5)
    band = max(1, height // 4)
    start = band * (index % 4)
    array[start:start + band, :, :] = 255 - 30 * (index % 7)
    return Image.fromarray(array)


def noise_image(seed: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    """A deterministic noise image."""
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8))


def seed_example(images=None, targets=True) -> list[dict]:
    """The seed's example: image, text, image_gen, image, image_gen (slot targets optional)."""
    images = images or [pattern(i) for i in range(4)]
    gen_a = {"type": "image_gen", "image": images[1]} if targets else {"type": "image_gen"}
    gen_b = {"type": "image_gen", "image": images[3]} if targets else {"type": "image_gen"}
    return [{"role": "user", "content": [
        {"type": "image", "image": images[0]}, {"type": "text", "text": "Describe this image.\n"},
        gen_a, {"type": "image", "image": images[2]}, gen_b]}]


def t2i(text: str, target=None) -> list[dict]:
    """A text-to-image conversation with one slot (a target when given)."""
    slot = {"type": "image_gen", "image": target} if target is not None else {"type": "image_gen"}
    return [{"role": "user", "content": [{"type": "text", "text": text}, slot]}]


def edit(source, instruction: str, target=None) -> list[dict]:
    """An edit conversation: input image, instruction, one slot."""
    slot = {"type": "image_gen", "image": target} if target is not None else {"type": "image_gen"}
    return [{"role": "user", "content": [{"type": "image", "image": source},
                                         {"type": "text", "text": instruction}, slot]}]


# ---- pretrained sources in exactly the layouts the hub publishes ------------------------------------------
def _legacy_qwen_key(name: str) -> str:
    """transformers 5 names -> the names in the published Qwen2.5-VL safetensors (transformers 4.49 era):
    ``visual.*`` and ``model.layers.*`` at the top, not ``model.visual.*`` / ``model.language_model.*``."""
    if name.startswith("model.visual."):
        return name[len("model."):]
    if name.startswith("model.language_model."):
        return "model." + name[len("model.language_model."):]
    return name


def _write_sharded(folder, state: dict, stem: str, index_name: str, shards: int = 2) -> None:
    """``<stem>-0000k-of-0000n.safetensors`` + ``<index_name>`` (weight_map), as the hub shards large files."""
    import json

    from safetensors.torch import save_file

    keys = sorted(state)
    per = -(-len(keys) // shards)
    weight_map, total = {}, 0
    for k in range(shards):
        name = f"{stem}-{k + 1:05d}-of-{shards:05d}.safetensors"
        part = {key: state[key].detach().contiguous() for key in keys[k * per:(k + 1) * per]}
        save_file(part, folder / name, metadata={"format": "pt"})
        weight_map.update({key: name for key in part})
        total += sum(t.numel() * t.element_size() for t in part.values())
    (folder / index_name).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))


def save_hub_layout(pipe, root, tokenizer_has_slot_tokens: bool = False):
    """The tiny pipeline's components as a Qwen2.5-VL-Instruct folder and a Sana diffusers folder, file for file
    in the published layouts (see the comments); returns (qwen folder, sana folder).

    Qwen: config.json in the flat transformers-4 form the hub holds, legacy weight names, sharded safetensors +
    model.safetensors.index.json, generation_config.json, tokenizer files WITHOUT our three slot tokens (the real
    Qwen tokenizer does not have them), preprocessor_config.json as published (Qwen2VLImageProcessor).
    Sana: model_index.json, scheduler/scheduler_config.json (flow_shift 3.0), transformer/ with a sharded
    diffusion_pytorch_model + index, vae/ with one diffusion_pytorch_model.safetensors."""
    import json
    import pathlib

    from unigen.model.presets import TINY_BACKBONE

    root = pathlib.Path(root)
    qwen, sana = root / "qwen", root / "sana"
    qwen.mkdir(parents=True)
    backbone = pipe.model.backbone
    text = {k: v for k, v in TINY_BACKBONE["text_config"].items()}
    config = {"architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl", **text,
              "vision_config": {**TINY_BACKBONE["vision_config"], "model_type": "qwen2_5_vl"},
              "attention_dropout": 0.0, "use_sliding_window": False, "sliding_window": 32768,
              "torch_dtype": "bfloat16", "transformers_version": "4.41.2",
              **{k: v for k, v in TINY_BACKBONE.items() if k.endswith("_token_id")}}
    (qwen / "config.json").write_text(json.dumps(config, indent=2))
    state = {_legacy_qwen_key(k): v for k, v in backbone.state_dict().items() if k != "lm_head.weight"}  # tied
    _write_sharded(qwen, state, "model", "model.safetensors.index.json")
    eos = [TINY_BACKBONE["eos_token_id"], TINY_BACKBONE["bos_token_id"]]
    (qwen / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": TINY_BACKBONE["bos_token_id"], "eos_token_id": eos, "pad_token_id": eos[1],
         "do_sample": True, "temperature": 1e-6, "repetition_penalty": 1.05}))
    pipe.processor.tokenizer.save_pretrained(qwen)
    if not tokenizer_has_slot_tokens:
        from unigen.model.chat_template import SLOT_TOKENS
        tok = json.loads((qwen / "tokenizer.json").read_text())
        tok["added_tokens"] = [t for t in tok["added_tokens"] if t["content"] not in SLOT_TOKENS]
        (qwen / "tokenizer.json").write_text(json.dumps(tok))
        cfg = json.loads((qwen / "tokenizer_config.json").read_text())
        if "added_tokens_decoder" in cfg:  # transformers 4 writes it; an empty one would drop every special
            cfg["added_tokens_decoder"] = {k: v for k, v in cfg["added_tokens_decoder"].items()
                                           if v.get("content") not in SLOT_TOKENS}
            (qwen / "tokenizer_config.json").write_text(json.dumps(cfg))
    vision = TINY_BACKBONE["vision_config"]
    (qwen / "preprocessor_config.json").write_text(json.dumps({
        "min_pixels": 3136, "max_pixels": 12845056, "patch_size": vision["patch_size"],
        "temporal_patch_size": vision["temporal_patch_size"], "merge_size": vision["spatial_merge_size"],
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor"}))

    (sana / "scheduler").mkdir(parents=True)
    (sana / "model_index.json").write_text(json.dumps({
        "_class_name": "SanaPipeline", "_diffusers_version": "0.32.0",
        "scheduler": ["diffusers", "DPMSolverMultistepScheduler"], "text_encoder": ["transformers", "Gemma2Model"],
        "tokenizer": ["transformers", "GemmaTokenizerFast"], "transformer": ["diffusers", "SanaTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderDC"]}))
    (sana / "scheduler" / "scheduler_config.json").write_text(json.dumps({
        "_class_name": "DPMSolverMultistepScheduler", "flow_shift": 3.0, "use_flow_sigmas": True,
        "prediction_type": "flow_prediction", "num_train_timesteps": 1000}))
    dit = pipe.model.dit
    (sana / "transformer").mkdir()
    (sana / "transformer" / "config.json").write_text(json.dumps(
        {"_class_name": "SanaTransformer2DModel", "_diffusers_version": "0.32.0", **dict(dit.config)}))
    _write_sharded(sana / "transformer", dit.state_dict(), "diffusion_pytorch_model",
                   "diffusion_pytorch_model.safetensors.index.json")
    pipe.model.vae.save_pretrained(sana / "vae")
    return qwen, sana


def trainable_grads(model) -> dict[str, torch.Tensor]:
    """float32 copies of the gradients of the trainable parts outside the backbone."""
    return {n: p.grad.detach().float().clone() for n, p in model.named_parameters()
            if p.requires_grad and not n.startswith("backbone")}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative difference |a - b| / |b|."""
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def assert_grads_match(grads: dict, want: dict, tol: float, per_tensor: bool = True) -> None:
    """Each trainable part's gradient (queries, slot boundaries, connector, DiT) within ``tol`` relative, and
    with ``per_tensor`` each tensor too, against a floor: some gradients are zero up to rounding by symmetry
    (a key bias shifts every score of a softmax row equally), and rounding noise has no relative precision."""
    assert grads.keys() == want.keys()
    for part in ("queries", "slot_boundaries", "connector.", "dit."):
        names = [n for n in want if n.startswith(part)]
        got, ref = (torch.cat([g[n].flatten() for n in names]) for g in (grads, want))
        assert rel(got, ref) <= tol, part
        if not per_tensor:
            continue
        floor = 1e-3 * float(ref.norm()) / len(names) ** 0.5
        worst = max((float((grads[n] - want[n]).norm()) / max(float(want[n].norm()), floor), n) for n in names)
        assert worst[0] <= tol, worst
    for name in ("queries", "slot_boundaries", "connector.layers.0.qkv.weight", "dit.proj_out.weight"):
        assert want[name].norm() > 0 and rel(grads[name], want[name]) <= tol, name


def run_worker_ranks(worker: str, args_of_rank, reports: list, hang_message: str, timeout: float = 240) -> list[str]:
    """Start ``tests/unit/model/<worker>`` once per entry of ``reports`` (rank r gets ``args_of_rank(r)``),
    wait for all of them (killing every one if any hangs), assert each exited 0 and return their outputs."""
    import os
    import subprocess
    import sys

    import pytest

    root = pathlib.Path(__file__).resolve().parents[3]
    env = dict(os.environ, PYTHONPATH=str(root))
    procs = [subprocess.Popen([sys.executable, str(root / "tests/unit/model" / worker), *map(str, args_of_rank(rank))],
                              cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in range(len(reports))]
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail(hang_message)
    for proc, text in zip(procs, outputs):
        assert proc.returncode == 0, text[-4000:]
    return outputs
