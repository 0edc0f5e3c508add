"""An export in the ecosystem's layouts: every part loads with its own library's from_pretrained and gives the
in-memory model's tensors; AutoProcessor renders unigen's text; UniGenPipeline and diffusers' custom-pipeline
mechanism both read the folder; the older one-file layout still loads; the bytes are a function of the weights."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.unit.model.model_helpers import seed_example, t2i, tiny_pipeline

REPO = Path(__file__).resolve().parents[3]


def build(seed: int = 0):
    """The tiny pipeline with every weight moved off its initial value (a loader that rebuilt the model from
    a seed instead of reading the files would show), deterministic in any process."""
    pipe = tiny_pipeline(seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for param in pipe.model.parameters():
            param.add_(torch.randn(param.shape, generator=generator).to(param.dtype) * 0.01)
    return pipe


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    pipe = build()
    folder = tmp_path_factory.mktemp("export") / "model"
    pipe.save_pretrained(folder)
    torch.manual_seed(999)  # loading must not depend on the global seed
    return pipe, folder


def _same(mine: dict, theirs: dict, what: str) -> None:
    assert mine.keys() == theirs.keys(), what
    for name, tensor in mine.items():
        assert tensor.dtype == theirs[name].dtype and torch.equal(tensor, theirs[name]), f"{what}: {name}"


def test_the_folder_is_diffusers_style_and_names_each_part(exported):
    _, folder = exported
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_unigen", "UniGenDiffusionPipeline"]
    assert index["transformer"] == ["diffusers", "SanaTransformer2DModel"]
    assert index["vae"] == ["diffusers", "AutoencoderDC"]
    assert index["backbone"] == ["transformers", "Qwen2_5_VLForConditionalGeneration"]
    assert index["unigen"] == ["unigen.model.diffusers_pipeline", "UniGenParts"]
    assert json.loads((folder / "backbone" / "config.json").read_text())["model_type"] == "qwen2_5_vl"
    for part in ("transformer", "vae", "unigen"):
        assert (folder / part / "diffusion_pytorch_model.safetensors").is_file(), part
    assert (folder / "backbone" / "model.safetensors").is_file()
    assert not (folder / "config.json").exists() and not (folder / "model.safetensors").exists()


def test_each_library_loads_its_part_standalone_with_the_same_tensors(exported):
    from diffusers import AutoencoderDC, SanaTransformer2DModel
    from transformers import Qwen2_5_VLForConditionalGeneration

    from unigen.model.diffusers_pipeline import OWN_PREFIXES, UniGenParts

    pipe, folder = exported
    model = pipe.model
    _same(model.dit.state_dict(), SanaTransformer2DModel.from_pretrained(folder / "transformer").state_dict(), "dit")
    _same(model.vae.state_dict(), AutoencoderDC.from_pretrained(folder / "vae").state_dict(), "vae")
    qwen = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder / "backbone")
    _same(model.backbone.state_dict(), qwen.state_dict(), "backbone")
    parts = UniGenParts.from_pretrained(folder / "unigen")
    own = {k: v for k, v in model.state_dict().items() if k.startswith(OWN_PREFIXES)}
    _same(own, parts.state_dict(), "unigen parts")
    assert parts.unigen == model.config
    # and the standalone backbone computes what the model's backbone computes
    ids = pipe.processor([[{"role": "user", "content": "a red circle"}]])["input_ids"]
    with torch.no_grad():
        assert torch.equal(qwen.eval()(input_ids=ids).logits, model.backbone.eval()(input_ids=ids).logits)


CONVERSATIONS = [
    [{"role": "user", "content": "plain string content"}],
    [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
     {"role": "user", "content": [{"type": "text", "text": "draw {{ braces }} and <|im_end|> as text"},
                                  {"type": "image_gen"}]}],
    [{"role": "user", "content": [{"type": "text", "text": "a cat"}]},
     {"role": "assistant", "content": [{"type": "image_gen"}]},
     {"role": "user", "content": [{"type": "text", "text": "now\nin red"}, {"type": "image_gen"}]}],
]


def test_autoprocessor_and_autotokenizer_render_unigens_chat_text(exported):
    from transformers import AutoProcessor, AutoTokenizer

    pipe, folder = exported
    processor = AutoProcessor.from_pretrained(folder / "processor", trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    assert type(processor.image_processor).__name__.startswith("Qwen2VLImageProcessor")
    assert processor.image_processor.to_dict() == pipe.processor.image_processor.to_dict()
    for conversation in [seed_example(), *CONVERSATIONS]:
        for prompt in (False, True):
            ours = pipe.processor.apply_chat_template(conversation, add_generation_prompt=prompt)
            assert processor.apply_chat_template(conversation, tokenize=False, add_generation_prompt=prompt) == ours
            assert tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=prompt) == ours
    assert ours.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    # Without trust_remote_code the folder names transformers' own Qwen2_5_VLProcessor, which needs
    # torchvision for its video processor: where that is installed it loads with the same template.
    try:
        qwen = AutoProcessor.from_pretrained(folder / "processor")
    except ImportError as err:
        assert "Torchvision" in str(err)
    else:
        assert type(qwen).__name__ == "Qwen2_5_VLProcessor"
        assert qwen.apply_chat_template(seed_example(), tokenize=False) == pipe.processor.apply_chat_template(
            seed_example())


def test_unigen_pipeline_round_trip_gives_the_same_tensors_and_image(exported):
    from unigen.model import UniGenModel, UniGenPipeline

    pipe, folder = exported
    loaded = UniGenPipeline.from_pretrained(folder)
    _same(pipe.model.state_dict(), loaded.model.state_dict(), "model")
    assert loaded.model.config == pipe.model.config
    assert loaded.processor.token_ids == pipe.processor.token_ids
    request = t2i("a red cube")
    first = pipe(request, num_inference_steps=3, seed=4)
    assert [im.tobytes() for im in first] == [im.tobytes() for im in loaded(request, num_inference_steps=3, seed=4)]
    _same(pipe.model.state_dict(), UniGenModel.from_pretrained(folder).state_dict(), "UniGenModel.from_pretrained")
    bf16 = UniGenPipeline.from_pretrained(folder, dtype="bfloat16")
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}


def test_diffusers_loads_the_export_as_its_custom_pipeline(exported):
    from diffusers import AutoencoderDC, DiffusionPipeline, SanaTransformer2DModel

    pipe, folder = exported
    with pytest.raises(ValueError, match=r"trust_remote_code=True"):
        DiffusionPipeline.from_pretrained(folder)
    loaded = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    assert type(loaded).__name__ == "UniGenDiffusionPipeline"
    assert isinstance(loaded.transformer, SanaTransformer2DModel) and isinstance(loaded.vae, AutoencoderDC)
    assert type(loaded.backbone).__name__ == "Qwen2_5_VLForConditionalGeneration"
    request = t2i("a red cube")
    expected = pipe(request, num_inference_steps=3, seed=4)
    images = loaded(request, num_inference_steps=3, seed=4).images
    assert [im.tobytes() for im in images] == [im.tobytes() for im in expected]
    assert loaded.unigen_pipeline.model.dit is loaded.transformer  # assembled, not loaded twice
    _same(pipe.model.state_dict(), loaded.unigen_pipeline.model.state_dict(), "assembled model")
    # the explicit form names the module file
    explicit = DiffusionPipeline.from_pretrained(folder, custom_pipeline=str(folder / "pipeline_unigen.py"),
                                                 trust_remote_code=True)
    assert type(explicit).__name__ == "UniGenDiffusionPipeline"


def test_the_root_is_not_a_folder_transformers_builds_a_default_qwen_from(exported):
    from transformers import Qwen2_5_VLForConditionalGeneration

    pipe, folder = exported
    # No config.json and no weights at the root: transformers stops at the weights, before building a model
    # (its config alone would be the 72B default, as for any folder without config.json) ...
    with pytest.raises(OSError, match=r"no file named model\.safetensors"):
        Qwen2_5_VLForConditionalGeneration.from_pretrained(folder)
    # ... and the backbone is one subfolder away, in transformers' own subfolder argument too
    qwen = Qwen2_5_VLForConditionalGeneration.from_pretrained(folder, subfolder="backbone")
    _same(pipe.model.backbone.state_dict(), qwen.state_dict(), "backbone via subfolder")


def test_an_old_one_file_export_still_loads_and_other_folders_fail_clearly(exported, tmp_path):
    from unigen.model import UniGenPipeline
    from unigen.model.processor import UniGenProcessor

    pipe, _ = exported
    old = tmp_path / "old"
    pipe.model.save_pretrained(old)  # the layout exports had before: config.json + model.safetensors + processor
    UniGenProcessor.save_pretrained(pipe.processor, old)
    os.remove(old / "processor_config.json")
    os.remove(old / "processing_unigen.py")
    loaded = UniGenPipeline.from_pretrained(old)
    _same(pipe.model.state_dict(), loaded.model.state_dict(), "old layout")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"not a unigen export: expected model_index.json \+ unigen/config.json"):
        UniGenPipeline.from_pretrained(tmp_path / "empty")
    (tmp_path / "sana").mkdir()
    (tmp_path / "sana" / "model_index.json").write_text("{}")
    with pytest.raises(ValueError, match=r"a diffusers folder without unigen/config.json"):
        UniGenPipeline.from_pretrained(tmp_path / "sana")


def test_a_lora_backbone_is_exported_merged(tmp_path):
    from transformers import Qwen2_5_VLForConditionalGeneration

    from unigen.model import UniGenPipeline

    pipe = tiny_pipeline(backbone_training="lora")
    with torch.no_grad():
        for name, param in pipe.model.backbone.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    pipe.save_pretrained(tmp_path / "lora")
    qwen = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path / "lora" / "backbone").eval()
    merged = qwen.state_dict()
    assert not any("lora" in k or "base_layer" in k for k in merged)
    base = {k.replace(".base_layer.", "."): v for k, v in pipe.model.backbone.state_dict().items() if "lora_" not in k}
    assert merged.keys() == base.keys()
    changed = [k for k in merged if not torch.equal(merged[k], base[k])]
    assert changed and all(k.endswith("proj.weight") and "language_model" in k for k in changed)
    ids = pipe.processor([[{"role": "user", "content": "a red circle"}]])["input_ids"]
    with torch.no_grad():
        trained = pipe.model.backbone.eval()(input_ids=ids).logits
        torch.testing.assert_close(qwen(input_ids=ids).logits, trained, atol=1e-5, rtol=1e-5)
        reloaded = UniGenPipeline.from_pretrained(tmp_path / "lora").model.backbone.eval()
        torch.testing.assert_close(reloaded(input_ids=ids).logits, trained, atol=1e-5, rtol=1e-5)


SAVE = """
import os, sys
os.umask(0o027)
from tests.unit.model.test_export_layout import build
build().save_pretrained(sys.argv[1])
"""


def test_an_export_is_the_same_bytes_in_another_process_and_follows_the_umask(exported, tmp_path):
    _, folder = exported
    other = tmp_path / "other"
    subprocess.run([sys.executable, "-c", SAVE, str(other)], check=True, timeout=600, cwd=REPO,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    files = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(other) for p in other.rglob("*") if p.is_file())
    for name in files:
        assert (folder / name).read_bytes() == (other / name).read_bytes(), name
        assert (other / name).stat().st_mode & 0o777 == 0o640, name
    assert not list(other.rglob(".mode-probe-*"))


def test_a_recipe_may_start_from_an_export(exported):
    """model.pretrained names an export: recipe validation reads its unigen/config.json (torch-free)."""
    from unigen.model.config import load_pretrained_config
    from unigen.orchestrator.config import resolve_submission

    pipe, folder = exported
    assert load_pretrained_config(folder) == pipe.model.config
    sub = resolve_submission([REPO / "recipes" / "smoke-pretrain.yaml"], str(REPO / "cluster_profiles" / "local.yaml"),
                             [f"model.pretrained={folder}", "model.preset=null"], purpose="validate", gpu_count=0)
    assert sub.stages[0].model_config["num_queries"] == pipe.model.config.num_queries
