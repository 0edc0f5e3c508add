"""Analytic parameter counts equal what the code builds (meta tensors), and the docs table equals both."""
import pathlib
import re

import pytest
import torch

from unigen.model.config import get_preset
from unigen.model.modeling import UniGenModel

DOCS = pathlib.Path(__file__).resolve().parents[3] / "docs" / "model.md"


def built_counts(model: UniGenModel) -> dict[str, int]:
    def count(params):
        return sum(p.numel() for p in params)

    backbone = dict(model.backbone.named_parameters())
    return {
        "backbone_text": count(p for n, p in backbone.items() if ".visual." not in n and "lora_" not in n),
        "backbone_vision": count(model.backbone.model.visual.parameters()),
        "lora": count(p for n, p in backbone.items() if "lora_" in n),
        "queries": model.queries.numel() + model.slot_boundaries.numel(),
        "connector": count(model.connector.parameters()),
        "dit": count(model.dit.parameters()),
        "vae": count(model.vae.parameters()),
        "total": count(model.parameters()),
        "trainable": count(p for p in model.parameters() if p.requires_grad),
    }


@pytest.mark.parametrize("preset,training", [("tiny", "frozen"), ("unigen-3b", "frozen"), ("unigen-7b", "frozen"),
                                             ("unigen-3b", "lora"), ("unigen-7b", "full")])
def test_analytic_counts_equal_a_meta_build(preset, training):
    config = get_preset(preset, backbone_source=None, decoder_source=None, backbone_training=training)
    with torch.device("meta"):
        model = UniGenModel(config)
    assert built_counts(model) == config.parameter_counts()


def test_docs_table_is_the_one_the_code_computes():
    from unigen.model.param_count import markdown_table

    table = markdown_table(["unigen-3b", "unigen-7b"])
    text = DOCS.read_text()
    assert table in text, "docs/model.md: regenerate the table with unigen.model.param_count.markdown_table"
    # and it states the numbers in full, e.g. the 3B backbone
    assert re.search(r"3,754,622,976", text)
