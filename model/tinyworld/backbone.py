"""Pretraining the tiny world's Qwen2.5-VL: a tokenizer of the world's language, then training on the
conversations of ``unigen.model.tinyworld.language`` with the processor unigen itself uses, so the model
reads exactly the token layout it will see under unigen (chat template, image pads, image_gen slots,
3-D positions computed by ``unigen.model.positions`` as unigen computes them).

The forward is unigen's: token embeddings, the vision tower's features scattered into the image pads, and
in every image_gen slot random vectors where unigen puts its learned queries and slot boundaries (fresh
ones each batch, drawn as unigen initialises its own). Two losses, one cross-entropy:
- next-token prediction everywhere a next token is text or template (the user's text too, so the states
  after a request hold it, and each turn's <|im_end|>, so ``chat()`` stops after its answer); never the
  image pads or slot tokens, whose inputs are not tokens;
- at the k-th query position of a slot, the k-th token of the description of the picture to draw
  (language.py says why).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from unigen.model.presets import (TINY_SHAPES_BACKBONE, TINY_SHAPES_SLOT_TOKEN_IDS, TINY_SHAPES_VOCAB_BPE,
                                  preset_fields)
from unigen.model.tinyworld import language


@dataclass
class BackboneSettings:
    steps: int = 4000
    batch_size: int = 32
    lr: float = 2e-3
    warmup: int = 100
    seed: int = 0
    eval_questions: int = 400


def build_tokenizer():
    """The world's 512-token BPE with Qwen's specials and the slot tokens (ids as the preset says)."""
    from unigen.model.tiny_tokenizer import qwen_style_tokenizer

    return qwen_style_tokenizer(language.corpus(), TINY_SHAPES_VOCAB_BPE)


def build_processor(tokenizer):
    """unigen's processor over this tokenizer and Qwen2-VL's image processor at the preset's sizes."""
    from unigen.model.processor import UniGenProcessor, image_processor_class

    fields = preset_fields("tiny-shapes")
    vision = TINY_SHAPES_BACKBONE["vision_config"]
    images = image_processor_class()(patch_size=vision["patch_size"], temporal_patch_size=vision["temporal_patch_size"],
                                     merge_size=vision["spatial_merge_size"], min_pixels=fields["input_min_pixels"],
                                     max_pixels=fields["input_max_pixels"])
    start, pad, end = TINY_SHAPES_SLOT_TOKEN_IDS
    return UniGenProcessor(tokenizer, images, num_queries=fields["num_queries"], image_size=fields["image_size"],
                           max_length=fields["max_length"], system_prompt="You are a helpful assistant.",
                           image_gen_start_token_id=start, image_gen_pad_token_id=pad, image_gen_end_token_id=end)


def build_model():
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration._from_config(Qwen2_5_VLConfig(**TINY_SHAPES_BACKBONE),
                                                           dtype=torch.float32, attn_implementation="sdpa")


def training_batch(processor, samples: list) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """(processor tensors, next-token targets, slot targets): samples are (conversation, description of the
    picture to draw or None). targets[b, p] is the token the state at p must predict next, -100 where none
    is; slot_targets[b] is, for a conversation with a description, the distribution every query position
    of its slot must predict (the description's tokens, each by its count), else zeros."""
    batch = processor([conversation for conversation, _ in samples])
    ids, visible = batch["input_ids"], batch["attention_mask"].bool()
    targets = torch.full_like(ids, -100)
    targets[:, :-1] = ids[:, 1:]
    not_tokens = torch.isin(ids, _non_token_ids(processor)) | ~visible
    targets[:, :-1][not_tokens[:, 1:]] = -100
    vocab = len(processor.tokenizer)
    slot_targets = torch.zeros(len(samples), vocab)
    for row, (_, description) in enumerate(samples):
        words = language.content_words(description) if description else []
        if words:
            tokens = processor.tokenizer(" " + " ".join(words), add_special_tokens=False)["input_ids"]
            slot_targets[row] = torch.bincount(torch.tensor(tokens), minlength=vocab).float() / len(tokens)
    return batch, targets, slot_targets


def loss(out: torch.Tensor, batch: dict, targets: torch.Tensor, slot_targets: torch.Tensor, processor) -> torch.Tensor:
    """Next-token cross-entropy + the slot positions' cross-entropy against their description's tokens."""
    next_token = torch.nn.functional.cross_entropy(out.flatten(0, 1), targets.flatten(), ignore_index=-100)
    slots = (batch["input_ids"] == processor.token_ids["<|image_gen_pad|>"]) & (slot_targets.sum(-1) > 0)[:, None]
    if not slots.any():
        return next_token
    log_probs = torch.log_softmax(out[slots].float(), dim=-1)[:, :slot_targets.shape[1]]
    rows = slots.nonzero()[:, 0]
    return next_token - (slot_targets[rows] * log_probs).sum(-1).mean()


def _non_token_ids(processor) -> torch.Tensor:
    names = ("<|image_pad|>", "<|image_gen_start|>", "<|image_gen_pad|>", "<|image_gen_end|>")
    return torch.tensor([processor.token_ids[n] for n in names])


def logits(model, processor, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
    """The backbone's logits with unigen's inputs: image features in the image pads and, in the slots,
    random vectors where unigen's learned queries and boundaries go (``generator``: none at all = the slot
    tokens' own rows, as a plain Qwen forward would have)."""
    from unigen.model.modeling import _image_tensor
    from unigen.model.positions import rope_positions

    ids = batch["input_ids"]
    embeds = model.get_input_embeddings()(ids)
    if batch.get("pixel_values") is not None:
        features = _image_tensor(model.model.get_image_features(batch["pixel_values"], batch["image_grid_thw"]))
        embeds = embeds.masked_scatter((ids == model.config.image_token_id).unsqueeze(-1), features.to(embeds.dtype))
    if generator is not None:
        embeds = _random_slots(embeds, ids, processor, generator)
    merge = model.config.vision_config.spatial_merge_size
    positions = rope_positions(batch["attention_mask"], batch.get("mm_token_type_ids"), batch.get("image_grid_thw"),
                               merge)
    hidden = model.model(inputs_embeds=embeds, attention_mask=batch["attention_mask"], position_ids=positions,
                         use_cache=False).last_hidden_state
    return model.lm_head(hidden)


def _random_slots(embeds: torch.Tensor, ids: torch.Tensor, processor, generator: torch.Generator) -> torch.Tensor:
    """Each slot's start, queries and end replaced by one random set per batch (std 0.02: unigen's init)."""
    width = embeds.shape[-1]
    queries = torch.randn(processor.num_queries, width, generator=generator) * 0.02
    bounds = torch.randn(2, width, generator=generator) * 0.02
    for name, values in (("<|image_gen_pad|>", queries), ("<|image_gen_start|>", bounds[:1]),
                         ("<|image_gen_end|>", bounds[1:])):
        mask = ids == processor.token_ids[name]
        if mask.any():
            reps = int(mask.sum()) // values.shape[0]
            embeds = embeds.masked_scatter(mask.unsqueeze(-1), values.repeat(reps, 1).to(embeds.dtype))
    return embeds


def pretrain(settings: BackboneSettings, log=print):
    """(model, processor): the pretrained backbone (eval mode) and its processor."""
    torch.manual_seed(settings.seed)
    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer)
    model = build_model().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.01, betas=(0.9, 0.98))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, settings))
    rng = np.random.default_rng(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    start, recent = time.perf_counter(), []
    for step in range(1, settings.steps + 1):
        batch, targets, slot_targets = training_batch(processor, [language.sample_conversation(rng)
                                                                  for _ in range(settings.batch_size)])
        value = loss(logits(model, processor, batch, generator), batch, targets, slot_targets, processor)
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        recent.append(float(value))
        if step % 100 == 0 or step == settings.steps:
            log(f"backbone step {step}/{settings.steps}: loss {np.mean(recent):.4f} "
                f"({time.perf_counter() - start:.0f} s)")
            recent = []
    return model.eval(), processor


def _lr_factor(step: int, settings: BackboneSettings) -> float:
    if step < settings.warmup:
        return (step + 1) / settings.warmup
    progress = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def question_accuracy(model, processor, settings: BackboneSettings) -> float:
    """Exact-match accuracy of greedy answers to held-out questions (other scenes than training's)."""
    from unigen.model.evaluation.understanding import heldout_questions

    cases = heldout_questions(settings.eval_questions)
    right = 0
    for k in range(0, len(cases), 50):
        chunk = cases[k:k + 50]
        answers = greedy_answers(model, processor, [c.conversation for c in chunk])
        right += sum(a.strip() == c.answer for a, c in zip(answers, chunk))
    return right / len(cases)


@torch.no_grad()
def slot_recall(model, processor, settings: BackboneSettings, count: int = 200) -> float:
    """How much of a description the slot reads: the share of its distinct words found among the top
    predictions of its query positions (as many as the description has distinct words), on held-out
    requests and edits with fresh random slot vectors."""
    rng = np.random.default_rng([settings.seed, 99])
    samples = [language.conversation(("slot_request", "slot_edit")[k % 2], rng) for k in range(count)]
    found = wanted = 0
    for k in range(0, count, 50):
        batch, _, slot_targets = training_batch(processor, samples[k:k + 50])
        out = logits(model, processor, batch, torch.Generator().manual_seed(k))
        slots = batch["input_ids"] == processor.token_ids["<|image_gen_pad|>"]
        for row in range(out.shape[0]):
            words = set(torch.nonzero(slot_targets[row]).flatten().tolist())
            mean = torch.softmax(out[row][slots[row]], dim=-1).mean(0)
            top = set(mean.topk(len(words)).indices.tolist())
            found += len(words & top)
            wanted += len(words)
    return found / max(1, wanted)


@torch.no_grad()
def greedy_answers(model, processor, conversations: list, max_new_tokens: int = 24) -> list[str]:
    batch = processor(conversations, add_generation_prompt=True)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw",
                                    "mm_token_type_ids") if batch.get(k) is not None}
    end = processor.token_ids["<|im_end|>"]
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=end,
                         pad_token_id=processor.tokenizer.pad_token_id)
    return [processor.tokenizer.decode(row[batch["input_ids"].shape[1]:], skip_special_tokens=True) for row in out]


def save(model, processor, folder) -> None:
    """The hub layout of a Qwen2.5-VL checkpoint: config.json + model.safetensors (float16: half the bytes,
    the build's checks run on the saved weights), tokenizer files and preprocessor_config.json."""
    model.to(torch.float16).save_pretrained(folder)
    model.to(torch.float32)
    processor.tokenizer.save_pretrained(folder)
    processor.image_processor.save_pretrained(folder)
