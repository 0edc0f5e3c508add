"""Save/load round trips, loading components from hub-layout folders, dtype and attention guards."""
import json

import pytest
import torch
from safetensors.torch import load_file

from tests.unit.model.model_helpers import pattern, save_hub_layout, seed_example, t2i, tiny_pipeline
from unigen.model import UniGenModel, UniGenPipeline, UniGenProcessor
from unigen.model.config import get_preset


def losses(model, batch, seed=11):
    torch.manual_seed(seed)
    with torch.no_grad():
        return model.eval()(**batch).slot_losses


def trained_a_little(pipe, steps=2):
    """Move weights off their initial values so a round trip that ignored them would show."""
    model = pipe.model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(steps):
        model(**pipe.processor([t2i("a", pattern(0))])).loss.backward()
        opt.step()
        opt.zero_grad()
    return pipe


def test_model_round_trip_gives_identical_outputs(tmp_path):
    pipe = trained_a_little(tiny_pipeline())
    batch = pipe.processor([seed_example()])
    pipe.model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["preset"] == "tiny"
    torch.manual_seed(999)  # a reload must not depend on the seed at build time
    loaded = UniGenModel.from_pretrained(tmp_path)
    assert torch.equal(losses(pipe.model, batch), losses(loaded, batch))
    reference = pipe.model.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, reference[name]), name


def test_pipeline_round_trip_gives_identical_images_and_processor(tmp_path):
    pipe = trained_a_little(tiny_pipeline())
    pipe.save_pretrained(tmp_path)
    loaded = UniGenPipeline.from_pretrained(tmp_path)
    request = t2i("a red cube")
    first = pipe(request, num_inference_steps=3, seed=4)
    second = loaded(request, num_inference_steps=3, seed=4)
    assert [im.tobytes() for im in first] == [im.tobytes() for im in second]
    assert loaded.processor.token_ids == pipe.processor.token_ids


def test_components_load_from_hub_layout_folders_through_the_same_code(tmp_path):
    source = tiny_pipeline(seed=3)
    qwen, sana = save_hub_layout(source, tmp_path)
    torch.manual_seed(0)
    pipe = UniGenPipeline.from_preset("tiny", backbone_source=str(qwen), decoder_source=str(sana))
    model = pipe.model
    for part in ("backbone", "dit", "vae"):
        mine, theirs = getattr(model, part).state_dict(), getattr(source.model, part).state_dict()
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine), part
    batch = pipe.processor([seed_example()])
    assert torch.equal(batch["input_ids"], source.processor([seed_example()])["input_ids"])

    # A model-level checkpoint of a model built from sources stores only what the sources do not hold (an
    # export, UniGenPipeline.save_pretrained, stores every part: tests/unit/model/test_export_layout.py).
    trained_a_little(pipe)
    pipe.model.save_pretrained(tmp_path / "ckpt")
    stored = load_file(tmp_path / "ckpt" / "model.safetensors")
    assert not any(k.startswith(("backbone.", "vae.")) for k in stored)
    assert any(k.startswith("dit.") for k in stored) and "queries" in stored
    loaded = UniGenModel.from_pretrained(tmp_path / "ckpt")
    assert torch.equal(losses(pipe.model, batch), losses(loaded, batch))


def test_a_source_that_does_not_fit_the_config_is_refused(tmp_path):
    _, sana = save_hub_layout(tiny_pipeline(), tmp_path)
    dit = json.loads((sana / "transformer" / "config.json").read_text())
    dit["caption_channels"] = 48
    (sana / "transformer" / "config.json").write_text(json.dumps(dit))
    with pytest.raises(ValueError, match=r"decoder_source=.*transformer caption_channels is 48 but the "
                                         r"UniGenConfig expects 32"):
        UniGenPipeline.from_preset("tiny", decoder_source=str(sana))


def test_bfloat16_gives_bfloat16_parameters_random_and_loaded(tmp_path):
    random_init = tiny_pipeline(dtype="bfloat16").model
    assert {p.dtype for p in random_init.parameters()} == {torch.bfloat16}
    qwen, sana = save_hub_layout(tiny_pipeline(), tmp_path)
    loaded = UniGenPipeline.from_preset("tiny", dtype="bfloat16", backbone_source=str(qwen),
                                        decoder_source=str(sana))
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    out = loaded.model.train()(**loaded.processor([t2i("a", pattern(0))]))
    assert torch.isfinite(out.loss)
    random_init.save_pretrained(tmp_path / "bf16")
    assert {p.dtype for p in UniGenModel.from_pretrained(tmp_path / "bf16").parameters()} == {torch.bfloat16}


def test_xformers_is_refused_everywhere_with_the_reason():
    pipe = tiny_pipeline()
    for call in (pipe.enable_xformers_memory_efficient_attention, pipe.model.enable_xformers_memory_efficient_attention,
                 pipe.model.dit.enable_xformers_memory_efficient_attention):
        with pytest.raises(ValueError, match=r"LINEAR self-attention with softmax attention"):
            call()


def test_incomplete_or_foreign_checkpoints_are_errors(tmp_path):
    pipe = tiny_pipeline()
    pipe.model.save_pretrained(tmp_path)
    from safetensors.torch import save_file

    state = load_file(tmp_path / "model.safetensors")
    del state["queries"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"1 tensors are missing, e.g. \['queries'\]"):
        UniGenModel.from_pretrained(tmp_path)
    state["queries"], state["extra.weight"] = pipe.model.queries.detach(), torch.zeros(1)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"tensors the model does not have, e.g. \['extra.weight'\]"):
        UniGenModel.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"no model.safetensors"):
        (tmp_path / "model.safetensors").unlink()
        UniGenModel.from_pretrained(tmp_path)


def test_processor_from_a_hub_folder_adds_the_slot_tokens(tmp_path):
    """The published Qwen tokenizer lacks our three tokens: the processor adds them, as special tokens, at the
    ids the config names (vocabulary end: 151665..151667 for the real one, 406..408 for the tiny one)."""
    from transformers import AutoTokenizer

    from unigen.model.chat_template import SLOT_TOKENS

    source = tiny_pipeline()
    qwen, _ = save_hub_layout(source, tmp_path)
    assert not set(SLOT_TOKENS) & set(AutoTokenizer.from_pretrained(qwen).get_vocab())
    config = source.model.config.__class__.from_dict({**source.model.config.to_dict(), "backbone_source": str(qwen)})
    processor = UniGenProcessor.from_config(config)
    assert processor.token_ids == source.processor.token_ids
    assert [processor.tokenizer.convert_tokens_to_ids(t) for t in SLOT_TOKENS] == [406, 407, 408]
    assert processor.image_processor.size == source.processor.image_processor.size
    conversations = [seed_example(), t2i("a red cube")]
    assert torch.equal(processor(conversations)["input_ids"], source.processor(conversations)["input_ids"])
    processor.save_pretrained(tmp_path / "saved")
    reloaded = UniGenProcessor.from_pretrained(tmp_path / "saved")
    assert all(reloaded.tokenizer.added_tokens_decoder[i].special for i in (406, 407, 408))
    assert torch.equal(reloaded(conversations)["input_ids"], source.processor(conversations)["input_ids"])


def test_a_hub_tokenizer_whose_vocabulary_does_not_end_where_the_config_expects_is_refused(tmp_path):
    qwen, _ = save_hub_layout(tiny_pipeline(), tmp_path)
    config = get_preset("tiny", backbone_source=str(qwen), image_gen_start_token_id=410,
                        image_gen_pad_token_id=411, image_gen_end_token_id=412)
    with pytest.raises(ValueError, match=r"slot token ids .*406.* differ from the config's .*410.*; set "
                                         r"image_gen_\*_token_id"):
        UniGenProcessor.from_config(config)


def test_backbone_attention_is_sdpa_by_default_and_sana_keeps_its_own_processors():
    model = tiny_pipeline().model
    assert model.config.attn_implementation == "sdpa"
    assert model.backbone.config._attn_implementation == "sdpa"
    assert model.backbone.config.text_config._attn_implementation == "sdpa"
    assert model.backbone.config.vision_config._attn_implementation == "sdpa"
    processors = {type(p).__name__ for p in model.dit.attn_processors.values()}
    assert processors and not any("XFormers" in name for name in processors)
    eager = tiny_pipeline(attn_implementation="eager").model
    assert eager.backbone.config._attn_implementation == "eager"


def test_compiled_blocks_keep_parameter_names_and_an_export_loads_without_them(tmp_path):
    """Module.compile compiles in place (torch.compile(module) would prefix every name with _orig_mod.)."""
    pipe = tiny_pipeline(compile_blocks=True)
    blocks = lambda model: (*model.connector.layers, *model.dit.transformer_blocks)  # noqa: E731
    assert all(b._compiled_call_impl is not None for b in blocks(pipe.model))
    assert list(pipe.model.state_dict()) == list(tiny_pipeline().model.state_dict())
    pipe.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "unigen" / "config.json").read_text())["unigen_config"]["compile_blocks"] is True
    loaded = UniGenPipeline.from_pretrained(tmp_path / "m", compile_blocks=False)
    assert not loaded.model.config.compile_blocks
    assert all(b._compiled_call_impl is None for b in blocks(loaded.model))
    mine, theirs = pipe.model.state_dict(), loaded.model.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
