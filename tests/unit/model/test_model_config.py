"""UniGenConfig, presets and analytic parameter counts: torch-free, strict about keys."""
import inspect
import json
import subprocess
import sys

import pytest

from unigen.model.config import PRESET_NAMES, UniGenConfig, get_preset


def test_presets_exist_and_have_the_contract_fields():
    assert PRESET_NAMES == ("tiny", "tiny-shapes", "unigen-3b", "unigen-7b", "medium")
    three = get_preset("unigen-3b")
    assert three.backbone_source == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert three.decoder_source == "Efficient-Large-Model/Sana_1600M_512px_diffusers"
    assert get_preset("unigen-7b").backbone_source == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert (three.num_queries, three.connector_layers, three.image_size) == (256, 24, 512)
    assert (three.backbone_training, three.dtype, three.attn_implementation) == ("frozen", "float32", "sdpa")
    tiny = get_preset("tiny")
    assert tiny.backbone_source is None and tiny.decoder_source is None and tiny.image_size == 64
    for name in ("num_queries", "image_size", "connector_layers", "backbone_training", "lora_rank",
                 "gradient_checkpointing", "dtype", "autocast", "cfg_drop_text", "cfg_drop_image",
                 "cfg_drop_both", "max_length", "attn_implementation"):
        assert hasattr(tiny, name)
    shapes = get_preset("tiny-shapes")  # the pretrained tiny world shipped in the package's assets
    assert (shapes.backbone_source, shapes.decoder_source) == ("assets://tiny-shapes/backbone",
                                                               "assets://tiny-shapes/decoder")
    assert (shapes.image_size, shapes.backbone_training) == (64, "frozen")


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown preset 'unigen-13b'.*'tiny', 'tiny-shapes', 'unigen-3b', 'unigen-7b'"):
        get_preset("unigen-13b")


def test_unknown_override_names_the_key_and_lists_valid_keys():
    with pytest.raises(ValueError, match=r"unknown override key 'num_querys'.*valid keys:.*'num_queries'"):
        get_preset("tiny", num_querys=8)


def test_overrides_apply():
    cfg = get_preset("tiny", num_queries=8, dtype="bfloat16", backbone_training="lora")
    assert (cfg.num_queries, cfg.dtype, cfg.backbone_training, cfg.preset) == (8, "bfloat16", "lora", "tiny")


def test_from_dict_rejects_unknown_keys_listing_valid_ones():
    data = get_preset("tiny").to_dict()
    data["connector_layer"] = 3
    with pytest.raises(ValueError, match=r"unknown UniGenConfig key\(s\) \['connector_layer'\].*connector_layers"):
        UniGenConfig.from_dict(data)


def test_json_round_trip_and_file_named_in_errors(tmp_path):
    cfg = get_preset("unigen-7b", backbone_training="lora", lora_rank=8)
    path = tmp_path / "config.json"
    cfg.save_json(path)
    assert UniGenConfig.load_json(path) == cfg
    data = json.loads(path.read_text())
    data["bogus"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"config\.json: unknown UniGenConfig key\(s\) \['bogus'\]"):
        UniGenConfig.load_json(path)


def test_every_invalid_field_is_reported_at_once_with_the_choices():
    with pytest.raises(ValueError) as err:
        get_preset("tiny", backbone_training="partial", dtype="float16", cfg_drop_text=1.5, num_queries=0)
    text = str(err.value)
    assert "backbone_training='partial': choose one of ['frozen', 'lora', 'full']" in text
    assert "dtype='float16': choose one of ['float32', 'bfloat16']" in text
    assert "cfg_drop_text=1.5: must be a probability" in text
    assert "num_queries=0: must be a positive integer" in text


def test_image_size_must_fit_the_vae_and_slot_ids_the_vocab():
    with pytest.raises(ValueError, match=r"image_size=60: must be a multiple of the VAE compression 8"):
        get_preset("tiny", image_size=60)
    with pytest.raises(ValueError, match=r"image_gen_pad_token_id=999999: must be a token id below"):
        get_preset("tiny", image_gen_pad_token_id=999999)


def test_xformers_is_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"xformers.*LINEAR self-attention with softmax attention"):
        get_preset("unigen-3b", attn_implementation="xformers")


def test_lora_targets_are_checked():
    with pytest.raises(ValueError, match=r"lora_target_modules=\['qkv'\]"):
        get_preset("tiny", lora_target_modules=["qkv"])


def test_parameter_counts_keys_and_trainable_by_mode():
    frozen = get_preset("unigen-3b").parameter_counts()
    for key in ("backbone_text", "backbone_vision", "queries", "connector", "dit", "vae", "total", "trainable"):
        assert isinstance(frozen[key], int) and frozen[key] > 0
    parts = ("backbone_text", "backbone_vision", "lora", "queries", "connector", "dit", "vae")
    assert frozen["total"] == sum(frozen[k] for k in parts)
    assert frozen["trainable"] == frozen["queries"] + frozen["connector"] + frozen["dit"]
    lora = get_preset("unigen-3b", backbone_training="lora").parameter_counts()
    full = get_preset("unigen-3b", backbone_training="full").parameter_counts()
    assert lora["lora"] > 0 and lora["trainable"] == frozen["trainable"] + lora["lora"]
    assert full["trainable"] == full["total"] - full["vae"]
    # Published sizes: Qwen2.5-VL-3B-Instruct 3,754,622,976 and 7B 8,292,166,656 parameters.
    assert frozen["backbone_text"] + frozen["backbone_vision"] == 3_754_622_976
    seven = get_preset("unigen-7b").parameter_counts()
    assert seven["backbone_text"] + seven["backbone_vision"] == 8_292_166_656


def test_config_module_and_parameter_counts_import_no_heavy_packages():
    code = (
        "import sys\n"
        "from unigen.model.config import get_preset\n"
        "get_preset('unigen-7b').parameter_counts()\n"
        "print(','.join(m for m in ('torch', 'transformers', 'diffusers', 'deepspeed') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_count_defaults_match_the_installed_diffusers_signatures():
    from diffusers import AutoencoderDC, SanaTransformer2DModel

    from unigen.model.param_count import DCAE_DEFAULTS, SANA_DEFAULTS

    for cls, defaults in ((SanaTransformer2DModel, SANA_DEFAULTS), (AutoencoderDC, DCAE_DEFAULTS)):
        signature = inspect.signature(cls.__init__).parameters
        for key, value in defaults.items():
            assert signature[key].default == value, (cls.__name__, key)
