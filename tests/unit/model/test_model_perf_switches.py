"""The speed switches of the model: what they configure, and that nothing trains a vocabulary table."""
import pytest
import torch

from tests.unit.model.model_helpers import tiny_pipeline
from unigen.model import UniGenModel
from unigen.model.config import get_preset
from unigen.orchestrator.config.recipe import TrainSection
from unigen.orchestrator.runtime.build import build_optimizer


def optimizer_settings(**fields) -> TrainSection:
    """A recipe's train section with the given optimizer fields (the step and batch fields do not matter here)."""
    return TrainSection(max_steps=1, global_batch_size=1, micro_batch_size=1, **fields)


def test_the_optimizer_holds_no_vocabulary_table():
    """MetaQuery's recipe trains the 151,936-row embedding for 258 rows; unigen's queries are their own
    parameter, so AdamW holds exactly queries, slot boundaries, connector and DiT."""
    model = tiny_pipeline().model
    optimizer = build_optimizer(model, optimizer_settings(lr=1e-4))
    held = [p for group in optimizer.param_groups for p in group["params"]]
    vocab = model.config.backbone_config["text_config"]["vocab_size"]
    assert not any(p.shape[0] == vocab for p in held)
    assert sum(p.numel() for p in held) == model.config.parameter_counts()["trainable"]
    embedding = model.backbone.get_input_embeddings().weight
    assert not embedding.requires_grad and all(p is not embedding for p in held)
    # The real shapes, built on the meta device (no memory): 3.2B trainable, none of them vocabulary rows.
    config = get_preset("unigen-3b", backbone_source=None, decoder_source=None)
    with torch.device("meta"):
        real = UniGenModel(config)
    held = [p for group in build_optimizer(real, optimizer_settings(lr=1e-4)).param_groups for p in group["params"]]
    assert sum(p.numel() for p in held) == config.parameter_counts()["trainable"] > 3e9
    assert max(p.shape[0] for p in held) < 151936 and real.queries.shape == (256, 2048)


def test_frozen_dtype_stores_only_the_frozen_parts_in_bf16():
    model = tiny_pipeline(frozen_dtype="bfloat16").model
    assert {p.dtype for p in model.backbone.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.vae.parameters()} == {torch.bfloat16}
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and {p.dtype for p in trainable} == {torch.float32}
    lora = tiny_pipeline(frozen_dtype="bfloat16", backbone_training="lora", lora_rank=2).model
    assert {p.dtype for p in lora.backbone.parameters()} == {torch.float32}  # adapters train: dtype applies


def test_gradient_checkpointing_parts_and_switching_it_off():
    model = tiny_pipeline(gradient_checkpointing=True, gradient_checkpointing_parts=["connector"]).model
    layer = model.backbone.model.language_model.layers[0]
    assert model.connector.gradient_checkpointing and not layer.gradient_checkpointing
    assert not model.dit.gradient_checkpointing
    model.enable_gradient_checkpointing(["backbone", "dit"])
    assert layer.gradient_checkpointing and model.dit.gradient_checkpointing
    model.disable_gradient_checkpointing()
    assert not (layer.gradient_checkpointing or model.dit.gradient_checkpointing or model.connector.gradient_checkpointing)


def test_invalid_switches_name_the_field_and_the_choices():
    with pytest.raises(ValueError, match=r"gradient_checkpointing_parts=\['vae'\]: choose a list of "
                                         r"\['backbone', 'connector', 'dit'\]"):
        get_preset("tiny", gradient_checkpointing_parts=["vae"])
    with pytest.raises(ValueError, match=r"frozen_dtype='fp16': choose one of \['float32', 'bfloat16'\]"):
        get_preset("tiny", frozen_dtype="fp16")
    with pytest.raises(ValueError, match=r"frozen_prefix_cache='yes': must be true or false"):
        get_preset("tiny", frozen_prefix_cache="yes")


def test_the_optimizer_is_fused_adamw_on_cuda_only():
    """On a CUDA device the runtime asks torch for fused AdamW (one kernel launch for every tensor of a
    group), built while the model is still on the CPU (DeepSpeed moves it). torch has the fused kernel on
    CPU too, so its updates are compared here with the default implementation's: same groups, same
    hyperparameters, same weights after a few steps."""
    def net():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 1))

    train = optimizer_settings(lr=1e-2, weight_decay=0.1, betas=(0.8, 0.99))
    fused_net, plain_net = net(), net()
    fused = build_optimizer(fused_net, train, device=torch.device("cuda"))
    plain = build_optimizer(plain_net, train, device=torch.device("cpu"))
    assert [g["fused"] for g in fused.param_groups] == [True, True]
    assert not plain.defaults["fused"] and build_optimizer(plain_net, train).defaults["fused"] is None
    assert [g["weight_decay"] for g in fused.param_groups] == [g["weight_decay"] for g in plain.param_groups]
    x = torch.randn(16, 8)
    for _ in range(3):
        for model, optimizer in ((fused_net, fused), (plain_net, plain)):
            optimizer.zero_grad()
            model(x).pow(2).mean().backward()
            optimizer.step()
    for a, b in zip(fused_net.parameters(), plain_net.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(fused_net[0].weight, net()[0].weight)  # the steps did move the weights
