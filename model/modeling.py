"""UniGenModel: Qwen2.5-VL reads the conversation, query slots condition Sana, trained by rectified flow.

forward(**batch) runs four readable steps:
  1. ``target_latents``: DC-AE latents of every slot that carries a target (precomputed or encoded here);
  2. ``slot_hidden_states``: embed the tokens, scatter the learned queries (and slot-boundary embeddings)
     into the slot positions, run the backbone, gather the final hidden states at each slot's queries
     (a frozen backbone in training runs the prompt before the first slot without autograd:
     unigen.model.frozen_prefix);
  3. ``connector``: those hidden states -> Sana caption embeddings;
  4. ``flow_loss``: rectified-flow loss of the DiT on every target slot (with image_latent_conditioning, the
     DiT also reads each slot's source image latent beside its noisy latent: ``source_latents``).
Randomness (CFG drop modes, flow times, noise; in that order) comes from torch's global RNG on the
model's device, so a runtime that checkpoints that RNG resumes bit-exactly. Every parameter is used
inside the forward of the module that owns it (the queries inside this forward), and every module runs
on every rank in every step, as DeepSpeed ZeRO-3 needs.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers.utils import ModelOutput

from unigen.model import components, frozen_prefix
from unigen.model.cfg_dropout import DROP_BOTH, DROP_IMAGE, KEEP, condition_mask, sample_drop_modes
from unigen.model.config import UniGenConfig
from unigen.model.connector import Connector
from unigen.model.flow import (TIMESTEP_SCALE, noisy_latents, per_sample_mse, sample_flow_times, shift_times,
                               velocity_target)
from unigen.model.positions import rope_positions
from unigen.model.weights import load_weights, save_weights

if TYPE_CHECKING:
    from unigen.model.zero_init import PartitionedBuild

CONFIG_FILE = "config.json"


@dataclass
class UniGenOutput(ModelOutput):
    """What forward returns; a dict subclass too (transformers' ModelOutput), because DeepSpeed ZeRO-3 finds
    the tensors of a module's output only in tuples, lists and dicts to hook their backward."""

    loss: torch.Tensor | None = None
    """Mean of slot_losses (0, still connected to every trainable module, when no slot has a target)."""
    slot_losses: torch.Tensor | None = None
    """Rectified-flow loss of each target slot, in order of appearance."""
    flow_times: torch.Tensor | None = None
    """The flow time s of each target slot."""
    drop_modes: torch.Tensor | None = None
    """CFG drop mode of each conversation (unigen.model.cfg_dropout: 0 keep, 1 text, 2 image, 3 both)."""


class UniGenModel(nn.Module):
    """The unified model. Build with ``UniGenModel(config)``; see the module docstring for forward."""

    def __init__(self, config: UniGenConfig, *, partitioned: PartitionedBuild | None = None) -> None:
        """``partitioned``: set by unigen.model.zero_init.build_partitioned, which runs this under DeepSpeed's
        zero.Init: the parts built whole (backbone, VAE, LoRA adapters) are then built with it paused."""
        super().__init__()
        self.config = config
        whole = partitioned.whole if partitioned is not None else contextlib.nullcontext
        with whole():
            self.backbone = components.build_backbone(config)
        width, dtype = config.backbone_width, components.torch_dtype(config)
        # Ours, not vocabulary rows: the frozen backbone's untrained rows for new tokens stay unused.
        self.queries = nn.Parameter(torch.randn(config.num_queries, width, dtype=dtype) * 0.02)
        self.slot_boundaries = nn.Parameter(torch.randn(2, width, dtype=dtype) * 0.02)
        self.connector = components.cast_module(Connector(width, config.caption_width, config.connector_layers,
                                                          config.connector_head_dim, config.connector_mlp_ratio),
                                                dtype)
        self.dit = components.build_dit(config) if partitioned is None else partitioned.build_dit(config)
        with whole():
            self.vae = components.build_vae(config)
            self.set_up_parts()
        # Whether every module runs in every step, on dummies when the batch does not need it (the VAE
        # encoder without pixel targets, the vision tower without input images). None = only under
        # torch.distributed, where ZeRO-3 gathers parameters collectively and checks that all ranks run
        # their modules in the same order.
        self.run_every_module: bool | None = None

    # ---- setup -----------------------------------------------------------------------------------
    def set_up_parts(self) -> None:
        """What follows once the parts exist, here and for a model assembled from already-loaded parts
        (unigen.model.export_layout): xformers refused on the diffusers parts, trainable flags (LoRA
        adapters), gradient checkpointing and compilation as the config says."""
        self.dit.enable_xformers_memory_efficient_attention = components.refuse_xformers
        self.vae.enable_xformers_memory_efficient_attention = components.refuse_xformers
        self._set_trainable()
        if self.config.gradient_checkpointing:
            self.enable_gradient_checkpointing()
        if self.config.compile_blocks:
            self.compile_blocks()

    def _set_trainable(self) -> None:
        mode = self.config.backbone_training
        self.backbone.requires_grad_(mode == "full")
        if mode == "lora":
            components.inject_lora(self.backbone, self.config)
            for name, param in self.backbone.named_parameters():
                param.requires_grad_("lora_" in name)
        self.vae.requires_grad_(False)
        for part in (self.connector, self.dit):
            part.requires_grad_(True)
        self.queries.requires_grad_(True)
        self.slot_boundaries.requires_grad_(True)

    def enable_gradient_checkpointing(self, parts: list[str] | tuple[str, ...] | None = None) -> None:
        """Recompute activations during backward in ``parts`` (default: config.gradient_checkpointing_parts);
        the other parts keep theirs."""
        parts = tuple(self.config.gradient_checkpointing_parts if parts is None else parts)
        if "backbone" in parts:
            components.enable_backbone_checkpointing(self.backbone)
        if "dit" in parts:
            self.dit.enable_gradient_checkpointing()
        if "connector" in parts:
            self.connector.gradient_checkpointing = True

    def disable_gradient_checkpointing(self) -> None:
        """Keep every activation (fastest while memory allows)."""
        components.disable_backbone_checkpointing(self.backbone)
        self.dit.disable_gradient_checkpointing()
        self.connector.gradient_checkpointing = False

    def compile_blocks(self) -> None:
        """Regional torch.compile of each connector layer and Sana block: the layers of a stack share code
        and shapes, so they share one compiled graph, and a graph break or a recompilation stays inside one
        block. ``Module.compile`` compiles in place: parameter names (checkpoints, state dicts) do not
        change, and the frozen parts run as written."""
        for block in (*self.connector.layers, *self.dit.transformer_blocks):
            block.compile()

    def enable_xformers_memory_efficient_attention(self, *args, **kwargs) -> None:
        """Refused: it would swap Sana's linear attention for softmax attention."""
        components.refuse_xformers()

    def train(self, mode: bool = True) -> UniGenModel:
        super().train(mode)
        self.vae.eval()  # frozen, and its norms must never switch to batch statistics
        return self

    @property
    def device(self) -> torch.device:
        return self.queries.device

    @property
    def dtype(self) -> torch.dtype:
        return self.queries.dtype

    def _autocast(self):
        if not self.config.autocast:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    # ---- forward -----------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                pixel_values: torch.Tensor | None = None, image_grid_thw: torch.Tensor | None = None,
                mm_token_type_ids: torch.Tensor | None = None, content_type_ids: torch.Tensor | None = None,
                gen_pixel_values: torch.Tensor | None = None, gen_latents: torch.Tensor | None = None,
                gen_slot_batch_index: torch.Tensor | None = None,
                gen_slot_has_target: torch.Tensor | None = None, source_pixel_values: torch.Tensor | None = None,
                gen_slot_source_index: torch.Tensor | None = None) -> UniGenOutput:
        """Rectified-flow loss over every target slot of the batch (keys as UniGenProcessor returns)."""
        n_slots = int((input_ids == self.config.image_gen_start_token_id).sum())
        has_target = (gen_slot_has_target.to(self.device).bool() if gen_slot_has_target is not None
                      else torch.zeros(n_slots, dtype=torch.bool, device=self.device))
        if has_target.numel() != n_slots:
            raise ValueError(f"gen_slot_has_target has {has_target.numel()} entries but input_ids hold {n_slots} "
                             "image_gen slots; pass the processor's batch unchanged")
        latents = self.target_latents(gen_pixel_values, gen_latents, int(has_target.sum()))
        batch = input_ids.shape[0]
        if self.training:
            modes = sample_drop_modes(batch, self.config.cfg_drop_text, self.config.cfg_drop_image,
                                      self.config.cfg_drop_both, self.device)
        else:
            modes = torch.full((batch,), KEEP, dtype=torch.long, device=self.device)
        sources = self.source_latents(source_pixel_values, gen_slot_source_index, gen_slot_batch_index, modes)
        with self._autocast():
            hidden = self.slot_hidden_states(input_ids, condition_mask(attention_mask, content_type_ids, modes),
                                             pixel_values, image_grid_thw, mm_token_type_ids)
            if latents is None:  # nothing to learn here; keep every module in the step (ZeRO-3)
                return self._empty_output(hidden, modes)
            conditions = self.connector(hidden[has_target])
            if sources is not None:
                sources = sources[has_target]
            slot_losses, times = self.flow_loss(latents, conditions, sources)
        return UniGenOutput(loss=slot_losses.mean(), slot_losses=slot_losses, flow_times=times, drop_modes=modes)

    def target_latents(self, gen_pixel_values: torch.Tensor | None, gen_latents: torch.Tensor | None,
                       n_targets: int) -> torch.Tensor | None:
        """DC-AE latents of the target slots (model-scaled), or None when there are none."""
        if gen_latents is not None:
            latents = gen_latents.to(self.device, self.dit.dtype)
            side = self.config.image_size // self.config.vae_compression
            expected = (self.config.latent_channels, side, side)
            if tuple(latents.shape[1:]) != expected:
                raise ValueError(f"gen_latents have shape {tuple(latents.shape[1:])} per slot, this model takes "
                                 f"{expected}; re-encode the targets with this model's encode_latents")
        elif gen_pixel_values is not None:
            latents = self.encode_latents(gen_pixel_values).to(self.dit.dtype)
        else:
            latents = None
        if gen_pixel_values is None and self._run_every_module():  # keep the VAE encoder in every step
            side = self.config.vae_compression
            self.encode_latents(torch.zeros(1, 3, side, side, device=self.device))
        count = 0 if latents is None else latents.shape[0]
        if count != n_targets:
            raise ValueError(f"{count} target latents/images for {n_targets} slots with a target; pass the "
                             "processor's batch unchanged")
        return latents

    def slot_hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                           pixel_values: torch.Tensor | None, image_grid_thw: torch.Tensor | None,
                           mm_token_type_ids: torch.Tensor | None) -> torch.Tensor:
        """(n_slots, num_queries, width): backbone final hidden states at every slot's query positions."""
        cfg = self.config
        embeds = self.backbone.get_input_embeddings()(input_ids)
        embeds = self._scatter_images(embeds, input_ids, pixel_values, image_grid_thw)
        pad = input_ids == cfg.image_gen_pad_token_id
        starts, ends = input_ids == cfg.image_gen_start_token_id, input_ids == cfg.image_gen_end_token_id
        n_slots = int(starts.sum())
        if int(pad.sum()) != n_slots * cfg.num_queries or int(ends.sum()) != n_slots:
            raise ValueError(f"input_ids hold {int(pad.sum())} <|image_gen_pad|> tokens for {n_slots} slots; each "
                             f"slot needs exactly {cfg.num_queries} (use UniGenProcessor)")
        embeds = self._scatter(embeds, pad, self.queries.repeat(n_slots, 1))
        embeds = self._scatter(embeds, starts, self.slot_boundaries[0].expand(n_slots, -1))
        embeds = self._scatter(embeds, ends, self.slot_boundaries[1].expand(n_slots, -1))
        merge = self.backbone.config.vision_config.spatial_merge_size
        positions = rope_positions(attention_mask, mm_token_type_ids, image_grid_thw, merge)
        if self._split_at_slots():
            prefix, end = frozen_prefix.split_points(input_ids, cfg.image_gen_start_token_id,
                                                     cfg.image_gen_pad_token_id)
            span = frozen_prefix.slot_span_hidden(self.backbone, embeds, attention_mask, positions, prefix, end,
                                                  keep_order=self._run_every_module())
            hidden = span[pad[:, prefix:end]]
        else:
            out = self.backbone.model(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=positions,
                                      use_cache=False)
            hidden = out.last_hidden_state[pad]
        # The connector's dtype: a frozen_dtype backbone hands over bf16 states to float32 trainable parts.
        return hidden.view(n_slots, cfg.num_queries, hidden.shape[-1]).to(self.dtype)

    def _split_at_slots(self) -> bool:
        """Whether slot_hidden_states runs the prompt prefix without autograd (unigen.model.frozen_prefix)."""
        if not (self.config.frozen_prefix_cache and self.config.backbone_training == "frozen"
                and torch.is_grad_enabled()):
            return False  # without autograd the plain forward costs the same
        layer = self.backbone.model.language_model.layers[0]
        return frozen_prefix.usable(self.backbone, recompute=bool(getattr(layer, "gradient_checkpointing", False)))

    @staticmethod
    def _scatter(embeds: torch.Tensor, mask: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        # masked_scatter fills positions in row-major order: slots in order of appearance, queries in order.
        return embeds.masked_scatter(mask.unsqueeze(-1), values.to(embeds.dtype))

    def _run_every_module(self) -> bool:
        if self.run_every_module is not None:
            return self.run_every_module
        return torch.distributed.is_available() and torch.distributed.is_initialized()

    def _scatter_images(self, embeds: torch.Tensor, input_ids: torch.Tensor, pixel_values: torch.Tensor | None,
                        image_grid_thw: torch.Tensor | None) -> torch.Tensor:
        """Vision-tower features into the <|image_pad|> positions, as Qwen2.5-VL does. Done here rather than
        inside the backbone so the vision tower runs at the same point of every step, on a dummy image
        when a batch has none under torch.distributed (ZeRO-3 gathers parameters collectively and
        checks every rank runs its modules in the same order)."""
        model = self.backbone.model
        if pixel_values is None:
            if not self._run_every_module():
                return embeds
            vision = self.backbone.config.vision_config
            merge, patch = vision.spatial_merge_size, vision.patch_size
            dummy = torch.zeros(merge * merge, vision.in_chans * vision.temporal_patch_size * patch * patch,
                                device=embeds.device, dtype=embeds.dtype)
            grid = torch.tensor([[1, merge, merge]], device=embeds.device)
            return embeds + 0.0 * _image_tensor(model.get_image_features(dummy, grid)).sum().to(embeds.dtype)
        features = _image_tensor(model.get_image_features(pixel_values, image_grid_thw.to(pixel_values.device)))
        slots = input_ids == self.backbone.config.image_token_id
        if int(slots.sum()) != features.shape[0]:
            raise ValueError(f"input_ids hold {int(slots.sum())} <|image_pad|> tokens for {features.shape[0]} image "
                             "features; pass the processor's batch unchanged")
        return embeds.masked_scatter(slots.unsqueeze(-1), features.to(embeds.dtype))

    def source_latents(self, source_pixel_values: torch.Tensor | None, gen_slot_source_index: torch.Tensor | None,
                       gen_slot_batch_index: torch.Tensor | None, modes: torch.Tensor) -> torch.Tensor | None:
        """(n_slots, channels, side, side): each slot's source image latent (model-scaled), zeros where the
        slot has no source or its conversation's CFG mode hides the images; None without
        image_latent_conditioning."""
        if not self.config.image_latent_conditioning:
            return None
        if gen_slot_source_index is None or gen_slot_batch_index is None:
            raise ValueError("this model reads source image latents (image_latent_conditioning) but the batch has "
                             "no gen_slot_source_index; build the processor with UniGenProcessor.from_config("
                             "model.config) so it returns them")
        index = gen_slot_source_index.to(self.device)
        side = self.config.image_size // self.config.vae_compression
        out = torch.zeros(index.numel(), self.config.latent_channels, side, side, device=self.device,
                          dtype=self.dit.dtype)
        has_source = index >= 0
        if source_pixel_values is not None and bool(has_source.any()):
            out[has_source] = self.encode_latents(source_pixel_values)[index[has_source]].to(out.dtype)
        elif self._run_every_module():  # the VAE encoder runs the same number of times on every rank
            step = self.config.vae_compression
            self.encode_latents(torch.zeros(1, 3, step, step, device=self.device))
        hidden = (modes == DROP_IMAGE) | (modes == DROP_BOTH)
        out[hidden[gen_slot_batch_index.to(self.device)]] = 0
        return out

    def flow_loss(self, latents: torch.Tensor, conditions: torch.Tensor,
                  sources: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-slot rectified-flow loss of the DiT, and the sampled flow times. ``sources``: the slots' source
        latents (image_latent_conditioning), read beside the noisy latents."""
        times = shift_times(sample_flow_times(latents.shape[0], self.config.timestep_sampling, self.device),
                            self.config.timestep_shift)
        noise = torch.randn(latents.shape, device=self.device, dtype=latents.dtype)
        prediction = self.dit(hidden_states=dit_input(noisy_latents(latents, noise, times), sources),
                              encoder_hidden_states=conditions.to(self.dit.dtype),
                              timestep=times * TIMESTEP_SCALE, return_dict=False)[0]
        return per_sample_mse(prediction, velocity_target(latents, noise)), times

    def _empty_output(self, hidden: torch.Tensor, modes: torch.Tensor) -> UniGenOutput:
        width, side = self.config.backbone_width, self.config.image_size // self.config.vae_compression
        dummy = torch.zeros(1, self.config.num_queries, width, device=self.device, dtype=hidden.dtype)
        dummy = dummy + 0.0 * (self.queries.sum() + self.slot_boundaries.sum() + hidden.sum())
        latents = torch.zeros(1, self.config.latent_channels, side, side, device=self.device, dtype=self.dit.dtype)
        sources = torch.zeros_like(latents) if self.config.image_latent_conditioning else None
        losses, times = self.flow_loss(latents, self.connector(dummy), sources)
        zero = 0.0 * losses.sum()
        return UniGenOutput(loss=zero, slot_losses=losses[:0], flow_times=times[:0], drop_modes=modes)

    # ---- conditioning and latents (shared with the pipeline) -----------------------------------------
    @torch.no_grad()
    def slot_conditions(self, batch: dict, mode: int = KEEP) -> torch.Tensor:
        """Caption embeddings (n_slots, num_queries, caption width) of every slot under a CFG drop mode."""
        modes = torch.full((batch["input_ids"].shape[0],), mode, dtype=torch.long, device=self.device)
        mask = condition_mask(batch["attention_mask"], batch.get("content_type_ids"), modes)
        with self._autocast():
            hidden = self.slot_hidden_states(batch["input_ids"], mask, batch.get("pixel_values"),
                                             batch.get("image_grid_thw"), batch.get("mm_token_type_ids"))
            return self.connector(hidden)

    @torch.no_grad()
    def slot_sources(self, batch: dict, mode: int = KEEP) -> torch.Tensor | None:
        """Source latents of every slot under a CFG drop mode (None without image_latent_conditioning)."""
        modes = torch.full((batch["input_ids"].shape[0],), mode, dtype=torch.long, device=self.device)
        return self.source_latents(batch.get("source_pixel_values"), batch.get("gen_slot_source_index"),
                                   batch.get("gen_slot_batch_index"), modes)

    @torch.no_grad()
    def encode_latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """DC-AE latents of images in [-1, 1], multiplied by the VAE scaling factor (as forward consumes
        them); float32. ``unigen data encode`` stores these as precomputed ``latents``."""
        latents = self.vae.encode(pixels.to(self.device, self.vae.dtype)).latent
        return latents.float() * self.vae.config.scaling_factor

    def vae_fingerprint(self) -> str:
        """sha256 of the VAE's weights (as float32) and scaling factor: what precomputed latents were
        encoded with, so training can refuse latents of another VAE (same shapes, other numbers)."""
        import hashlib
        digest = hashlib.sha256(repr(float(self.vae.config.scaling_factor)).encode())
        for name, tensor in sorted(self.vae.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return digest.hexdigest()

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (float32) from model-scaled latents."""
        latents = latents.to(self.device, self.vae.dtype) / self.vae.config.scaling_factor
        return self.vae.decode(latents).sample.float().clamp(-1, 1)

    # ---- persistence ---------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """config.json + model.safetensors (see unigen.model.weights for what is stored)."""
        os.makedirs(directory, exist_ok=True)
        self.config.save_json(os.path.join(directory, CONFIG_FILE))
        save_weights(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **overrides) -> UniGenModel:
        """Rebuild from config.json (overrides applied, e.g. dtype) and load model.safetensors; the model of
        an export (UniGenPipeline.save_pretrained: unigen.model.export_layout) too."""
        from unigen.model import export_layout

        if export_layout.layout(directory) == "export":
            return export_layout.load_export(directory, **overrides)[0]
        config = UniGenConfig.load_json(os.path.join(directory, CONFIG_FILE))
        if overrides:
            config = UniGenConfig.from_dict({**config.to_dict(), **overrides})
        model = cls(config)
        load_weights(model, directory)
        return model


def dit_input(latents: torch.Tensor, sources: torch.Tensor | None) -> torch.Tensor:
    """What the DiT reads: the noisy latents, and the source latents beside them along channels if any."""
    if sources is None:
        return latents
    return torch.cat([latents, sources.to(latents.dtype)], dim=1)


def _image_tensor(value) -> torch.Tensor:
    """All image features as one (tokens, width) tensor, from what get_image_features returns across
    transformers versions: a tensor, a tuple of per-image tensors, or an output with pooler_output."""
    if isinstance(value, torch.Tensor):
        return value
    pooled = getattr(value, "pooler_output", None)
    if pooled is not None:
        return _image_tensor(pooled)
    return torch.cat([_image_tensor(v) for v in value], dim=0)
