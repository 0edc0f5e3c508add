"""unigen in diffusers' terms: its own parts as a diffusers model, and the export as a diffusers pipeline.

- ``UniGenParts`` (a diffusers ``ModelMixin``): what unigen adds to the pretrained components, the learned
  queries, the slot-boundary embeddings and the connector, under the names UniGenModel gives them. Its
  config.json holds the whole UniGenConfig (``unigen_config``), so an export's ``unigen/`` folder says how
  every other part fits.
- ``UniGenDiffusionPipeline`` (a ``DiffusionPipeline``): the class an export's model_index.json names;
  ``DiffusionPipeline.from_pretrained(export, trust_remote_code=True)`` loads each component with its own
  library and this class assembles them, without loading anything twice, into the model that
  ``UniGenPipeline`` runs (``.unigen``); calling it generates as ``UniGenPipeline`` does.
"""
from __future__ import annotations

from typing import Any

import torch
from diffusers import ConfigMixin, DiffusionPipeline, ModelMixin  # noqa: F401  (diffusers looks ModelMixin up here)
from diffusers.configuration_utils import register_to_config
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from torch import nn

from unigen.model.config import UniGenConfig
from unigen.model.connector import Connector

OWN_PREFIXES = ("queries", "slot_boundaries", "connector.")
"""UniGenModel state-dict names that are unigen's own (everything else is backbone., dit. or vae.)."""
COMPONENT_PREFIXES = ("backbone.", "dit.", "vae.")


class UniGenParts(ModelMixin, ConfigMixin):
    """unigen's own trained parts, loadable with ``UniGenParts.from_pretrained(export / "unigen")``."""

    config_name = "config.json"

    @register_to_config
    def __init__(self, unigen_config: dict) -> None:
        super().__init__()
        config = UniGenConfig.from_dict(unigen_config)
        width = config.backbone_width
        # Shapes as UniGenModel builds them; values always come from a checkpoint.
        self.queries = nn.Parameter(torch.zeros(config.num_queries, width))
        self.slot_boundaries = nn.Parameter(torch.zeros(2, width))
        self.connector = Connector(width, config.caption_width, config.connector_layers,
                                   config.connector_head_dim, config.connector_mlp_ratio)

    @property
    def unigen(self) -> UniGenConfig:
        """The UniGenConfig this export was written with."""
        return UniGenConfig.from_dict(self.config.unigen_config)

    @classmethod
    def of(cls, model: Any) -> UniGenParts:
        """The parts of a UniGenModel (copies of its tensors, in its dtype). Refuses a model that holds
        tensors outside the backbone, the DiT, the VAE and these parts: an export would silently drop
        them."""
        state = model.state_dict()
        unknown = [k for k in state if not k.startswith(COMPONENT_PREFIXES + OWN_PREFIXES)]
        if unknown:
            raise ValueError(f"UniGenModel holds tensors no export part stores, e.g. {unknown[:5]}; add them to "
                             "unigen.model.diffusers_pipeline.UniGenParts (OWN_PREFIXES and __init__)")
        parts = cls(unigen_config=model.config.to_dict())
        parts.load_state_dict({k: v for k, v in state.items() if k.startswith(OWN_PREFIXES)}, strict=True)
        return nn.Module.to(parts, model.dtype)  # diffusers own .to() warns about an empty fp32 list


class UniGenDiffusionPipeline(DiffusionPipeline):
    """An export as a diffusers pipeline; ``pipe(messages)`` returns ImagePipelineOutput(images=[PIL...])."""

    model_cpu_offload_seq = "backbone->unigen->transformer->vae"

    def __init__(self, backbone: Any, transformer: Any, vae: Any, scheduler: Any, tokenizer: Any,
                 image_processor: Any, unigen: UniGenParts) -> None:
        super().__init__()
        self.register_modules(backbone=backbone, transformer=transformer, vae=vae, scheduler=scheduler,
                              tokenizer=tokenizer, image_processor=image_processor, unigen=unigen)
        self._unigen_pipeline = None

    @property
    def unigen_pipeline(self):
        """The UniGenPipeline over these very components (built on first use; nothing is copied)."""
        if self._unigen_pipeline is None:
            from unigen.model.export_layout import assemble_pipeline

            self._unigen_pipeline = assemble_pipeline(
                self.unigen.unigen, backbone=self.backbone, transformer=self.transformer, vae=self.vae,
                parts=self.unigen, tokenizer=self.tokenizer, image_processor=self.image_processor)
        return self._unigen_pipeline

    @torch.no_grad()
    def __call__(self, messages: list, return_dict: bool = True, **kwargs: Any):
        """Images for the empty image_gen slots of ``messages``; keyword arguments as UniGenPipeline's
        (num_inference_steps, guidance_scale, image_guidance_scale, height, width, seed)."""
        images = self.unigen_pipeline(messages, **kwargs)
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    def chat(self, messages: list, max_new_tokens: int = 128) -> str:
        """The backbone's answer as text (UniGenPipeline.chat)."""
        return self.unigen_pipeline.chat(messages, max_new_tokens)
