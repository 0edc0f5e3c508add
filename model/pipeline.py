"""UniGenPipeline: images for the empty image_gen slots of a conversation, and plain chat answers.

Also the conversation helpers generation and chat share: copying a conversation, finding and filling
empty slots (a filled slot's image is fed back as an input right after it), and ``slots_as_images``,
which turns a filled conversation into one ``chat()`` accepts.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from unigen.model import chat_template as tpl
from unigen.model.cfg_dropout import DROP_BOTH, DROP_TEXT, KEEP
from unigen.model.export_layout import load_export, save_export
from unigen.model.config import get_preset
from unigen.model.flow import make_scheduler
from unigen.model.images import to_pil
from unigen.model.modeling import UniGenModel, dit_input
from unigen.model.processor import UniGenProcessor


@dataclass(frozen=True)
class _Sampling:
    """The sampler settings shared by every round of one call."""

    steps: int
    guidance_scale: float
    image_guidance_scale: float
    height: int
    width: int


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
        """Load what save_pretrained wrote (model config overrides allowed, e.g. dtype); also the one-file
        layout of older unigen versions. See unigen.model.export_layout."""
        return cls(*load_export(directory, **overrides))

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """An export: the diffusers-style folder (model_index.json, backbone/, transformer/, vae/,
        scheduler/, tokenizer/, image_processor/, processor/, unigen/) whose parts diffusers and
        transformers load with their own from_pretrained (unigen.model.export_layout)."""
        save_export(self.model, self.processor, directory)

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
        """One PIL image per image_gen slot without an image, in order of appearance (conversation by
        conversation when ``messages`` is a list of conversations).

        Slots are filled one after another, each seeing the images of the slots before it; see
        ``generate_conversation`` for the rule, the seeds and the guidance.
        """
        return self.generate_conversation(messages, num_inference_steps, guidance_scale, image_guidance_scale,
                                          height, width, seed)[0]

    @torch.no_grad()
    def generate_conversation(self, messages: list, num_inference_steps: int = 20, guidance_scale: float = 4.5,
                              image_guidance_scale: float = 1.5, height: int | None = None,
                              width: int | None = None, seed: int | None = None) -> tuple[list[Image.Image], list]:
        """(images, filled conversation(s)): what ``__call__`` returns, plus the conversation with every
        empty slot filled, ready to be continued (``unigen chat`` keeps it as its history).

        ``messages`` is one conversation or a list of them; the filled result has the same shape. The
        caller's messages are not changed (items are copied, PIL images shared).

        Slot filling: the backbone is causal, so a slot's queries see only what precedes them and a later
        slot can see an earlier generated image only as an input placed after the earlier slot. Round k
        therefore generates the k-th empty slot of every conversation that has one (one batch), puts the
        image into that slot's ``image`` (a filled slot is a target, which generation skips) and inserts
        the same image as an ``image`` item right after it, unless the slot is the conversation's last
        item (nothing follows to see it: the layout the interleaved and edit adapters train on).

        Seeds: round k samples its noise with ``seed + k`` (round 0 is exactly the one-slot behaviour).

        Guidance (InstructPix2Pix form): with input images and image_guidance_scale != 1,
        v = v_uncond + s_img (v_img - v_uncond) + s_txt (v - v_img), where v_img hides the text and v_uncond
        hides text and images; otherwise v = v_uncond + s_txt (v - v_uncond). The hidden branches use the
        same CFG drop function as training. Images fed back from earlier slots count as input images.
        """
        single = bool(messages) and isinstance(messages[0], dict)
        conversations = [messages] if single else list(messages)
        if not conversations:
            raise ValueError("no conversations: pass a conversation (a list of messages) or a list of them")
        for c, conversation in enumerate(conversations):
            tpl.check_conversation(conversation, c)
        sampling = _Sampling(num_inference_steps, guidance_scale, image_guidance_scale, *self._size(height, width))
        filled = [copy_conversation(c) for c in conversations]
        made: list[list[Image.Image]] = [[] for _ in filled]
        rounds = max((len(empty_slots(c)) for c in filled), default=0)
        for k in range(rounds):
            rows = [c for c, conversation in enumerate(filled) if empty_slots(conversation)]
            images = self._generate_round([filled[c] for c in rows], sampling, None if seed is None else seed + k)
            for c, image in zip(rows, images):
                fill_slot(filled[c], *empty_slots(filled[c])[0], image)
                made[c].append(image)
        return [image for row in made for image in row], (filled[0] if single else filled)

    def _generate_round(self, conversations: list[list[dict]], sampling: _Sampling,
                        seed: int | None) -> list[Image.Image]:
        """One image per conversation, for its first empty slot (later empty slots do not influence it:
        they come after it and the backbone is causal)."""
        batch = self.processor(conversations).to(self.model.device)
        pick = _first_empty_per_row(batch["gen_slot_batch_index"], batch["gen_slot_has_target"], len(conversations))
        self.model.eval()
        modes = self._guidance_modes(batch, sampling.guidance_scale, sampling.image_guidance_scale)
        conditions = torch.cat([self.model.slot_conditions(batch, m)[pick] for m in modes])
        sources = None
        if self.model.config.image_latent_conditioning:
            sources = torch.cat([self.model.slot_sources(batch, m)[pick] for m in modes])
        latents = self._sample(conditions, sources, len(modes), len(pick), sampling, seed)
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

    def _sample(self, conditions: torch.Tensor, sources: torch.Tensor | None, branches: int, count: int,
                sampling: _Sampling, seed: int | None) -> torch.Tensor:
        model, config = self.model, self.model.config
        step = config.vae_compression
        shape = (count, config.latent_channels, sampling.height // step, sampling.width // step)
        generator = torch.Generator("cpu").manual_seed(seed) if seed is not None else None
        latents = torch.randn(shape, generator=generator).to(model.device, torch.float32)
        if sources is not None and sources.shape[-2:] != latents.shape[-2:]:
            # Sources are encoded at the model's image_size; another output size reads them resampled.
            sources = torch.nn.functional.interpolate(sources.float(), size=latents.shape[-2:], mode="bilinear")
        scheduler = make_scheduler(config.flow_shift)
        scheduler.set_timesteps(sampling.steps, device=model.device)
        for t in scheduler.timesteps:  # already s * 1000, the timestep scale the DiT trains with
            x = dit_input(torch.cat([latents] * branches), sources).to(model.dit.dtype)
            with model._autocast():
                v = model.dit(hidden_states=x, encoder_hidden_states=conditions.to(model.dit.dtype),
                              timestep=t.expand(x.shape[0]).to(model.dit.dtype), return_dict=False)[0].float()
            v = _combine(v.chunk(branches), sampling.guidance_scale, sampling.image_guidance_scale)
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
        # A text-only conversation has no pixel_values: passing None would send transformers' generate
        # into the vision encoder anyway (it keys on the argument being present).
        vision = {k: batch[k] for k in ("pixel_values", "image_grid_thw") if batch[k] is not None}
        out = self.model.backbone.generate(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **vision,
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


# ---- conversations: empty slots, filling, and the view chat() takes ---------------------------------------
def is_empty_slot(item: dict) -> bool:
    """An image_gen item to generate: no target image and no precomputed latents (the processor's rule)."""
    return item.get("type") == "image_gen" and item.get("image") is None and item.get("latents") is None


def copy_conversation(conversation: list[dict]) -> list[dict]:
    """New message dicts, content lists and item dicts, so filling never touches the caller's
    conversation; the images themselves (PIL, paths) are shared, not copied."""
    out = []
    for message in conversation:
        content = message["content"]
        out.append({**message, "content": content if isinstance(content, str) else [dict(i) for i in content]})
    return out


def empty_slots(conversation: list[dict]) -> list[tuple[int, int]]:
    """(message, item) of every empty slot, in order of appearance."""
    return [(m, i) for m, message in enumerate(conversation) for i, item in enumerate(tpl.content_items(message))
            if is_empty_slot(item)]


def fill_slot(conversation: list[dict], message: int, item: int, image: Image.Image) -> None:
    """Put ``image`` into the slot and feed it back as an ``image`` item right after it, so that later
    items see it; no feedback when the slot is the conversation's last item (as in training data)."""
    content = conversation[message]["content"]
    content[item] = {**content[item], "image": image}
    is_last = message == len(conversation) - 1 and item == len(content) - 1
    if not is_last:
        content.insert(item + 1, {"type": "image", "image": image})


def slots_as_images(conversation: list[dict]) -> list[dict]:
    """The conversation as ``chat()`` takes it: each filled slot becomes the ``image`` item of its image
    (dropped when its fed-back copy already follows it), so the backbone sees what was generated.
    ``chat()`` refuses image_gen items because it answers in text; an empty slot here is an error."""
    tpl.check_conversation(conversation)
    out = []
    for m, message in enumerate(conversation):
        items = tpl.content_items(message)
        content = []
        for i, item in enumerate(items):
            if item["type"] != "image_gen":
                content.append(item)
                continue
            if is_empty_slot(item):
                raise ValueError(f"{tpl.where(0, m, i)}: an empty image_gen slot has no image to show chat(); "
                                 "generate it first (UniGenPipeline.generate_conversation) or remove it")
            follows = items[i + 1] if i + 1 < len(items) else None
            if not (follows and follows["type"] == "image" and follows.get("image") is item["image"]):
                content.append({"type": "image", "image": item["image"]})
        out.append({**message, "content": content})
    return out


def _first_empty_per_row(slot_rows: torch.Tensor, has_target: torch.Tensor, rows: int) -> torch.Tensor:
    """Index (into the batch's slots) of each row's first slot without a target, rows in order."""
    picks = []
    for row in range(rows):
        empty = ((slot_rows == row) & ~has_target).nonzero().flatten()
        assert len(empty), f"row {row} has no empty slot: the caller sends only conversations that have one"
        picks.append(int(empty[0]))
    return torch.tensor(picks, dtype=torch.long, device=has_target.device)
