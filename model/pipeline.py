"""UniGenPipeline: images for the empty image_gen slots of a conversation, and plain chat answers."""
from __future__ import annotations

import os
from typing import Any

import torch
from PIL import Image

from unigen.model import chat_template as tpl
from unigen.model.cfg_dropout import DROP_BOTH, DROP_TEXT, KEEP
from unigen.model.config import get_preset
from unigen.model.flow import make_scheduler
from unigen.model.images import to_pil
from unigen.model.modeling import UniGenModel
from unigen.model.processor import UniGenProcessor


class UniGenPipeline:
    """Model + processor, with generation (``__call__``) and understanding (``chat``)."""

    def __init__(self, model: UniGenModel, processor: UniGenProcessor) -> None:
        self.model, self.processor = model, processor

    # ---- construction / persistence ---------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> UniGenPipeline:
        """Build the named preset (tiny, unigen-3b, unigen-7b) with config overrides."""
        config = get_preset(name, **overrides)
        return cls(UniGenModel(config), UniGenProcessor.from_config(config))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **overrides: Any) -> UniGenPipeline:
        """Load what save_pretrained wrote (model config overrides allowed, e.g. dtype)."""
        return cls(UniGenModel.from_pretrained(directory, **overrides), UniGenProcessor.from_pretrained(directory))

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Model (config.json, model.safetensors) and processor files into one folder."""
        self.model.save_pretrained(directory)
        self.processor.save_pretrained(directory)

    def to(self, device: Any) -> UniGenPipeline:
        """Move the model."""
        self.model.to(device)
        return self

    def enable_xformers_memory_efficient_attention(self, *args: Any, **kwargs: Any) -> None:
        """Refused: it would swap Sana's linear attention for softmax attention."""
        self.model.enable_xformers_memory_efficient_attention()

    # ---- generation -----------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, messages: list, num_inference_steps: int = 20, guidance_scale: float = 4.5,
                 image_guidance_scale: float = 1.5, height: int | None = None, width: int | None = None,
                 seed: int | None = None) -> list[Image.Image]:
        """One PIL image per image_gen slot without an image, in order of appearance.

        ``messages`` is one conversation or a list of them. Guidance (InstructPix2Pix form): with input
        images and image_guidance_scale != 1, v = v_uncond + s_img (v_img - v_uncond) + s_txt (v - v_img),
        where v_img hides the text and v_uncond hides text and images; otherwise
        v = v_uncond + s_txt (v - v_uncond). The hidden branches use the same CFG drop function as training.
        """
        conversations = [messages] if messages and isinstance(messages[0], dict) else list(messages)
        height, width = self._size(height, width)
        batch = self.processor(conversations).to(self.model.device)
        wanted = ~batch["gen_slot_has_target"]
        count = int(wanted.sum())
        if count == 0:
            return []
        self.model.eval()
        modes = self._guidance_modes(batch, guidance_scale, image_guidance_scale)
        conditions = torch.cat([self.model.slot_conditions(batch, m)[wanted] for m in modes])
        latents = self._sample(conditions, len(modes), count, height, width, num_inference_steps, seed,
                               guidance_scale, image_guidance_scale)
        return [to_pil(img) for img in self.model.decode_latents(latents)]

    def _size(self, height: int | None, width: int | None) -> tuple[int, int]:
        config = self.model.config
        height, width = height or config.image_size, width or config.image_size
        step = config.vae_compression
        if height % step or width % step or height <= 0 or width <= 0:
            raise ValueError(f"height={height}, width={width}: both must be positive multiples of the VAE "
                             f"compression {step}")
        return height, width

    @staticmethod
    def _guidance_modes(batch: dict, guidance_scale: float, image_guidance_scale: float) -> list[int]:
        has_images = batch.get("pixel_values") is not None
        if has_images and image_guidance_scale != 1.0:
            return [KEEP, DROP_TEXT, DROP_BOTH]
        if guidance_scale != 1.0:
            return [KEEP, DROP_BOTH]
        return [KEEP]

    def _sample(self, conditions: torch.Tensor, branches: int, count: int, height: int, width: int,
                steps: int, seed: int | None, guidance_scale: float, image_guidance_scale: float) -> torch.Tensor:
        model, config = self.model, self.model.config
        shape = (count, config.latent_channels, height // config.vae_compression, width // config.vae_compression)
        generator = torch.Generator("cpu").manual_seed(seed) if seed is not None else None
        latents = torch.randn(shape, generator=generator).to(model.device, torch.float32)
        scheduler = make_scheduler(config.flow_shift)
        scheduler.set_timesteps(steps, device=model.device)
        for t in scheduler.timesteps:  # already s * 1000, the timestep scale the DiT trains with
            x = torch.cat([latents] * branches).to(model.dit.dtype)
            with model._autocast():
                v = model.dit(hidden_states=x, encoder_hidden_states=conditions.to(model.dit.dtype),
                              timestep=t.expand(x.shape[0]).to(model.dit.dtype), return_dict=False)[0].float()
            v = _combine(v.chunk(branches), guidance_scale, image_guidance_scale)
            latents = scheduler.step(v, t, latents).prev_sample
        return latents

    # ---- understanding ----------------------------------------------------------------------------------
    @torch.no_grad()
    def chat(self, messages: list[dict], max_new_tokens: int = 128) -> str:
        """The backbone's own greedy answer to one conversation (no image_gen items), as text."""
        return self.processor.decode(self.answer_ids(messages, max_new_tokens))

    @torch.no_grad()
    def answer_ids(self, messages: list[dict], max_new_tokens: int = 128) -> torch.Tensor:
        """The token ids ``chat`` decodes: plain Qwen2.5-VL greedy generation after the prompt. With the
        backbone frozen these are the tokens the original Qwen checkpoint gives (a test checks it)."""
        tpl.check_conversation(messages)
        for m, message in enumerate(messages):
            for i, item in enumerate(tpl.content_items(message)):
                if item["type"] == "image_gen":
                    raise ValueError(f"{tpl.where(0, m, i)}: chat() answers in text; remove image_gen items "
                                     "or call the pipeline itself to generate images")
        batch = self.processor([messages], add_generation_prompt=True).to(self.model.device)
        tokens = self.processor.token_ids
        self.model.eval()
        out = self.model.backbone.generate(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
            pixel_values=batch["pixel_values"], image_grid_thw=batch["image_grid_thw"],
            mm_token_type_ids=batch["mm_token_type_ids"], max_new_tokens=max_new_tokens, do_sample=False,
            eos_token_id=[tokens[tpl.IM_END], self.processor.tokenizer.pad_token_id or tokens[tpl.IM_END]],
            pad_token_id=self.processor.tokenizer.pad_token_id)
        return out[0, batch["input_ids"].shape[1]:]


def _combine(parts: tuple, guidance_scale: float, image_guidance_scale: float) -> torch.Tensor:
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        full, uncond = parts
        return uncond + guidance_scale * (full - uncond)
    full, image_only, uncond = parts
    return uncond + image_guidance_scale * (image_only - uncond) + guidance_scale * (full - image_only)
