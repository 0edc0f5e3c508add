"""UniGenProcessor: conversations -> the tensors UniGenModel.forward takes (also the data collate function).

Qwen's tokenizer and image processor do the real work; this class renders the chat template, expands
each ``<|image_pad|>`` per the image grid and each ``<|image_gen_pad|>`` to ``num_queries`` tokens,
pads on the left and collects the generation targets of every slot.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from unigen.model import chat_template as tpl
from unigen.model.chat_template import IMAGE, STRUCTURE, TEXT, where
from unigen.model.images import load_image, to_pixels

PROCESSOR_FILE = "unigen_processor.json"
# transformers' own processor files: AutoProcessor reads processor_config.json; the class it names by
# auto_map ships beside it (unigen.model.processing_unigen, copied), the plain class is Qwen's.
HF_PROCESSOR_CONFIG = "processor_config.json"
HF_PROCESSOR_MODULE = "processing_unigen.py"
_SETTINGS = ("num_queries", "image_size", "max_length", "system_prompt", "image_gen_start_token_id",
             "image_gen_pad_token_id", "image_gen_end_token_id", "image_latent_conditioning")


class UniGenBatch(dict):
    """A dict of tensors (or None) with ``.to(device)``, as returned by UniGenProcessor."""

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> UniGenBatch:
        """Move tensors to ``device``; floating tensors are also cast to ``dtype`` when given."""
        out = UniGenBatch()
        for key, value in self.items():
            if isinstance(value, torch.Tensor):
                value = value.to(device=device, dtype=dtype if dtype and value.is_floating_point() else None)
            out[key] = value
        return out


@dataclass
class _Encoded:
    """One conversation's tokens before padding."""

    ids: list[int]
    content: list[int]
    slots: list[dict]


def image_processor_class():
    """Qwen2-VL's image processor, the PIL backend when this transformers has it (no torchvision)."""
    try:
        from transformers import Qwen2VLImageProcessorPil as cls
    except ImportError:  # older transformers: the numpy implementation
        from transformers import Qwen2VLImageProcessor as cls
    return cls


class UniGenProcessor:
    """Chat template + tokenizer + image processor for UniGen conversations.

    Call it on a list of conversations; see ``__call__`` for the returned keys.
    """

    def __init__(self, tokenizer: Any, image_processor: Any, *, num_queries: int, image_size: int,
                 max_length: int, system_prompt: str, image_gen_start_token_id: int,
                 image_gen_pad_token_id: int, image_gen_end_token_id: int,
                 image_latent_conditioning: bool = False) -> None:
        self.tokenizer, self.image_processor = tokenizer, image_processor
        self.num_queries, self.image_size, self.max_length = num_queries, image_size, max_length
        self.system_prompt = system_prompt
        self.image_gen_start_token_id = image_gen_start_token_id
        self.image_gen_pad_token_id = image_gen_pad_token_id
        self.image_gen_end_token_id = image_gen_end_token_id
        # Also return every input image at image_size for the DiT's source latents (UniGenConfig).
        self.image_latent_conditioning = image_latent_conditioning
        _ensure_slot_tokens(tokenizer, (image_gen_start_token_id, image_gen_pad_token_id, image_gen_end_token_id))
        names = (tpl.IM_START, tpl.IM_END, tpl.VISION_START, tpl.IMAGE_PAD, tpl.VISION_END) + tpl.SLOT_TOKENS
        self.token_ids = {name: _token_id(tokenizer, name) for name in names}
        self.merge_size = int(getattr(image_processor, "merge_size", 2))

    # ---- construction / persistence -----------------------------------------------------------
    @classmethod
    def from_config(cls, config: Any) -> UniGenProcessor:
        """Tokenizer and image processor for a UniGenConfig (its tokenizer/backbone source, else tiny)."""
        from transformers import AutoTokenizer

        from unigen.model.hub import resolve_source
        from unigen.model.tiny_tokenizer import ASSET_DIR

        source = resolve_source(config.tokenizer_source or config.backbone_source)
        # The pinned revision of the same source: an offline job finds only that snapshot in its cache.
        revision = config.tokenizer_revision if config.tokenizer_source else config.backbone_revision
        pinned = {"revision": revision} if source and revision else {}
        tokenizer = AutoTokenizer.from_pretrained(source or ASSET_DIR, **pinned)
        vision = config.backbone_config.get("vision_config", {})
        sizes = {"min_pixels": config.input_min_pixels, "max_pixels": config.input_max_pixels}
        if source:
            image_processor = image_processor_class().from_pretrained(source, **pinned, **sizes)
        else:
            image_processor = image_processor_class()(
                patch_size=vision.get("patch_size", 14), temporal_patch_size=vision.get("temporal_patch_size", 2),
                merge_size=vision.get("spatial_merge_size", 2), **sizes)
        return cls(tokenizer, image_processor, **{k: getattr(config, k) for k in _SETTINGS})

    def save_pretrained(self, directory: str | os.PathLike, tokenizer_only: bool = False) -> None:
        """Tokenizer files (with unigen's chat template), preprocessor_config.json, unigen_processor.json
        and transformers' processor files (processor_config.json + processing_unigen.py) into
        ``directory``: ``UniGenProcessor.from_pretrained`` and ``AutoProcessor.from_pretrained`` both read
        it, and the tokenizer's or processor's ``apply_chat_template`` gives ``self.apply_chat_template``'s
        text. ``tokenizer_only``: just the tokenizer files (an export's ``tokenizer/``)."""
        import shutil

        os.makedirs(directory, exist_ok=True)
        self.tokenizer.chat_template = tpl.jinja_template(self.system_prompt)
        self.tokenizer.save_pretrained(directory)
        if tokenizer_only:
            return
        self.image_processor.save_pretrained(directory)
        with open(os.path.join(directory, PROCESSOR_FILE), "w", encoding="utf-8") as fh:
            json.dump({k: getattr(self, k) for k in _SETTINGS}, fh, indent=2, sort_keys=True)
        with open(os.path.join(directory, HF_PROCESSOR_CONFIG), "w", encoding="utf-8") as fh:
            json.dump({"processor_class": "Qwen2_5_VLProcessor",
                       "auto_map": {"AutoProcessor": "processing_unigen.UniGenQwenProcessor"}}, fh, indent=2)
        module = os.path.join(os.path.dirname(os.path.abspath(__file__)), HF_PROCESSOR_MODULE)
        shutil.copyfile(module, os.path.join(directory, HF_PROCESSOR_MODULE))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> UniGenProcessor:
        """Load what save_pretrained wrote (an export's root reads its ``processor/``)."""
        from transformers import AutoTokenizer

        if not os.path.exists(os.path.join(directory, PROCESSOR_FILE)) and os.path.exists(
                os.path.join(directory, "processor", PROCESSOR_FILE)):
            directory = os.path.join(directory, "processor")
        path = os.path.join(directory, PROCESSOR_FILE)
        if not os.path.exists(path):
            raise ValueError(f"{os.fspath(directory)}: no {PROCESSOR_FILE}; not a folder written by "
                             "UniGenProcessor.save_pretrained")
        with open(path, encoding="utf-8") as fh:
            settings = json.load(fh)
        tokenizer = AutoTokenizer.from_pretrained(directory)
        return cls(tokenizer, image_processor_class().from_pretrained(directory), **settings)

    # ---- template --------------------------------------------------------------------------------
    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        """Qwen2.5-VL's template with images and image_gen slots as single pad tokens."""
        return tpl.render(messages, self.system_prompt, add_generation_prompt)

    # ---- batch ------------------------------------------------------------------------------------
    def __call__(self, conversations: list[list[dict]], add_generation_prompt: bool = False) -> UniGenBatch:
        """Tokenize and collate a batch of conversations (a single conversation is also accepted).

        Returns input_ids, attention_mask (left padded), pixel_values, image_grid_thw,
        mm_token_type_ids (1 at image tokens: 3-D RoPE needs it), content_type_ids (0 template/slots,
        1 text items, 2 input images: what CFG dropout hides), gen_pixel_values (targets in [-1, 1] of
        the slots that carry an image, or None), gen_latents (precomputed latents when every target
        slot carries them, else None), gen_slot_batch_index and gen_slot_has_target (one entry per
        slot, in order of appearance). With image_latent_conditioning also source_pixel_values (every input
        image at image_size in [-1, 1], or None) and gen_slot_source_index (per slot, the index into them of
        the last input image before the slot in its conversation, -1 when there is none).
        """
        if conversations and isinstance(conversations[0], dict):
            conversations = [conversations]
        if not conversations:
            raise ValueError("no conversations: pass a list of conversations (each a list of messages)")
        per_conversation, grids, pixel_values, sources = self._input_images(conversations)
        tokens = [int(n) for n in grids.prod(-1) // self.merge_size ** 2] if grids is not None else []
        encoded, first = [], 0
        for c, conversation in enumerate(conversations):
            count = per_conversation[c]
            encoded.append(self._encode(c, conversation, tokens[first:first + count], add_generation_prompt))
            for slot in encoded[-1].slots:  # the conversation's image number -> the batch's
                slot["source"] += first if slot["source"] >= 0 else 0
            first += count
        batch = self._pad(encoded)
        batch["pixel_values"] = pixel_values
        batch["image_grid_thw"] = grids
        batch.update(self._targets(encoded))
        if self.image_latent_conditioning:
            batch["source_pixel_values"] = sources
            batch["gen_slot_source_index"] = torch.tensor([s["source"] for e in encoded for s in e.slots],
                                                          dtype=torch.long)
        return batch

    def _input_images(self, conversations: list) -> tuple[list[int], torch.Tensor | None, torch.Tensor | None,
                                                           torch.Tensor | None]:
        images, per_conversation = [], []
        for c, conversation in enumerate(conversations):
            per_conversation.append(len(images))
            tpl.check_conversation(conversation, c)
            for m, message in enumerate(conversation):
                for i, item in enumerate(tpl.content_items(message)):
                    if item["type"] == "image":
                        if "image" not in item:
                            raise ValueError(f"{where(c, m, i)}: an image item needs 'image' (PIL, path or URL)")
                        images.append(load_image(item["image"], where(c, m, i)))
            per_conversation[-1] = len(images) - per_conversation[-1]
        if not images:
            return per_conversation, None, None, None
        out = self.image_processor(images=images, return_tensors="pt")
        sources = (torch.stack([to_pixels(image, self.image_size) for image in images])
                   if self.image_latent_conditioning else None)
        return per_conversation, out["image_grid_thw"].long(), out["pixel_values"], sources

    def _encode(self, c: int, conversation: list, image_tokens: list[int], gen_prompt: bool) -> _Encoded:
        ids, content, sources, slots = [], [], [], []
        run: list[tuple[str, int, tuple]] = []
        images = iter(image_tokens)
        last_image = -1  # the conversation's latest input image: the source of the slots that follow it
        for seg in tpl.iter_segments(conversation, self.system_prompt, gen_prompt, c):
            source = (seg.message, seg.item)
            if seg.kind == "text":
                run.extend((ch, seg.content, source) for ch in seg.value)
                continue
            self._tokenize_run(run, ids, content, sources)
            if seg.kind == "special":
                new_ids, new_content = [self.token_ids[seg.value]], [STRUCTURE]
            elif seg.kind == "image":
                n = next(images)
                last_image += 1
                new_ids = ([self.token_ids[tpl.VISION_START]] + [self.token_ids[tpl.IMAGE_PAD]] * n
                           + [self.token_ids[tpl.VISION_END]])
                new_content = [IMAGE] * (n + 2)
            else:
                slots.append({**self._slot(seg.value, where(c, *source)), "source": last_image})
                new_ids = ([self.image_gen_start_token_id] + [self.image_gen_pad_token_id] * self.num_queries
                           + [self.image_gen_end_token_id])
                new_content = [STRUCTURE] * (self.num_queries + 2)
            ids += new_ids
            content += new_content
            sources += [source] * len(new_ids)
        self._tokenize_run(run, ids, content, sources)
        if len(ids) > self.max_length:
            message, item = sources[self.max_length]
            raise ValueError(f"{where(c, message, item)}: the conversation is {len(ids)} tokens after expanding "
                             f"images and slots, over max_length={self.max_length} (the limit falls here); "
                             "shorten it, use fewer or smaller images, or raise max_length. Nothing is truncated.")
        return _Encoded(ids, content, slots)

    def _tokenize_run(self, run: list[tuple[str, int, tuple]], ids: list[int], content: list[int],
                      sources: list[tuple]) -> None:
        # Adjacent template and item text is tokenized as one string, as Qwen's processor does, with
        # special-token parsing off so user text can never inject a control token.
        if not run:
            return
        text = "".join(ch for ch, _, _ in run)
        enc = self.tokenizer(text, add_special_tokens=False, split_special_tokens=True,
                             return_offsets_mapping=True)
        for token, (start, end) in zip(enc["input_ids"], enc["offset_mapping"]):
            span = run[start:max(end, start + 1)]
            ids.append(token)
            content.append(TEXT if any(kind == TEXT for _, kind, _ in span) else STRUCTURE)
            sources.append(span[0][2])
        run.clear()

    def _slot(self, item: dict, at: str) -> dict:
        slot = {"target": None, "latents": None}
        if item.get("image") is not None:
            slot["target"] = to_pixels(load_image(item["image"], at, "image_gen target"), self.image_size)
        if item.get("latents") is not None:
            latents = torch.as_tensor(np.asarray(item["latents"], dtype=np.float32))
            if latents.ndim != 3:
                raise ValueError(f"{at}: image_gen latents must be (channels, height, width), got shape "
                                 f"{tuple(latents.shape)}")
            slot["latents"] = latents
        slot["where"] = at
        return slot

    def _pad(self, encoded: list[_Encoded]) -> UniGenBatch:
        length = max(len(e.ids) for e in encoded)
        pad_id = self.tokenizer.pad_token_id
        pad_id = self.token_ids[tpl.IM_END] if pad_id is None else pad_id
        input_ids = torch.full((len(encoded), length), pad_id, dtype=torch.long)
        attention = torch.zeros((len(encoded), length), dtype=torch.long)
        content = torch.zeros((len(encoded), length), dtype=torch.long)
        for row, e in enumerate(encoded):
            n = len(e.ids)
            input_ids[row, length - n:] = torch.tensor(e.ids)
            attention[row, length - n:] = 1
            content[row, length - n:] = torch.tensor(e.content)
        mm_types = (input_ids == self.token_ids[tpl.IMAGE_PAD]).long() * attention
        return UniGenBatch(input_ids=input_ids, attention_mask=attention, mm_token_type_ids=mm_types,
                           content_type_ids=content)

    def _targets(self, encoded: list[_Encoded]) -> dict[str, Any]:
        slots = [(row, s) for row, e in enumerate(encoded) for s in e.slots]
        has_target = [s["target"] is not None or s["latents"] is not None for _, s in slots]
        targets = [s for (_, s), has in zip(slots, has_target) if has]
        with_latents = [s for s in targets if s["latents"] is not None]
        if with_latents and len(with_latents) != len(targets):
            missing = next(s for s in targets if s["latents"] is None)
            raise ValueError(f"{missing['where']}: this batch mixes image_gen targets with and without "
                             "precomputed 'latents'; give latents for every target slot or for none")
        pixels = latents = None
        if with_latents:
            shape = with_latents[0]["latents"].shape
            for s in with_latents:
                if s["latents"].shape != shape:
                    raise ValueError(f"{s['where']}: latents shape {tuple(s['latents'].shape)} differs from "
                                     f"{tuple(shape)} of the batch's first slot; encode all targets at one size")
            latents = torch.stack([s["latents"] for s in with_latents])
        elif targets:
            pixels = torch.stack([s["target"] for s in targets])
        return {
            "gen_pixel_values": pixels,
            "gen_latents": latents,
            "gen_slot_batch_index": torch.tensor([row for row, _ in slots], dtype=torch.long),
            "gen_slot_has_target": torch.tensor(has_target, dtype=torch.bool),
        }

    # ---- text ------------------------------------------------------------------------------------------
    def decode(self, token_ids: Any, skip_special_tokens: bool = True) -> str:
        """Token ids -> text."""
        return self.tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens)


def _token_id(tokenizer: Any, token: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == tokenizer.unk_token_id and token != tokenizer.unk_token:
        raise ValueError(f"the tokenizer has no {token!r} token: it is not a Qwen2.5-VL tokenizer")
    return int(token_id)


def _ensure_slot_tokens(tokenizer: Any, expected: tuple[int, int, int]) -> None:
    """Add the three slot tokens (special, never split) and check their ids match the model config."""
    from transformers import AddedToken

    vocab = tokenizer.get_vocab()
    missing = [t for t in tpl.SLOT_TOKENS if t not in vocab]
    if missing:
        tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True)
    got = tuple(tokenizer.convert_tokens_to_ids(list(tpl.SLOT_TOKENS)))
    if got != tuple(expected):
        raise ValueError(f"slot token ids {dict(zip(tpl.SLOT_TOKENS, got))} from the tokenizer differ from the "
                         f"config's {dict(zip(tpl.SLOT_TOKENS, expected))}; set image_gen_*_token_id in the "
                         "config to the tokenizer's ids")
