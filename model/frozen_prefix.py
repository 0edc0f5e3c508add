"""Slot hidden states of a FROZEN backbone with the prompt run once, without autograd.

Why: with a causal backbone, the hidden states at a slot's query positions depend on the tokens before the
slot only through those tokens' keys and values, and with frozen weights those keys and values are
constants: nothing before the first ``<|image_gen_start|>`` depends on a trainable parameter. A plain
forward still builds the autograd graph over every prompt position, so the backward (and, with gradient
checkpointing, the recomputation) runs through all of them although only the query positions need it.

Here the step splits each batch at P = the earliest first slot start over its rows:
  1. the prefix [0, P) runs through the decoder layers under ``torch.no_grad``, recording every layer's
     keys/values (after RoPE);
  2. the span [P, E), E = one past the last query position of any row, runs with autograd through the
     backbone's own forward (so gradient checkpointing, module hooks and ZeRO-3 work as usual), attending
     to the recorded prefix keys/values through a read-only cache;
  3. tokens after E are never run: causality means they cannot change a query's hidden state.
The mask is the full forward's (causal, hidden tokens of CFG dropout and padding excluded) cut to the
rows of [P, E), so the function computed is the same; test_model_step_equivalence checks loss and
gradients against a plain full forward.
"""
from __future__ import annotations

import inspect

import torch

SUPPORTED_ATTENTION = ("sdpa", "eager")


class PrefixKV:
    """A duck-typed transformers cache: records each layer's prefix keys/values, then serves them read-only.

    Read-only is what lets HF's gradient checkpointing keep it (a replayed layer reads the same states);
    transformers drops writing caches under checkpointing.
    """

    def __init__(self) -> None:
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}
        self.recording = True
        self.length = 0

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        if self.recording:
            self.keys[layer_idx], self.values[layer_idx] = key, value
            self.length = key.shape[-2]
            return key, value
        if layer_idx not in self.keys:
            if self.length:  # a layer skipped the recording: never attend without the prompt, silently
                raise RuntimeError(f"prefix keys/values of layer {layer_idx} were not recorded")
            return key, value  # an empty prefix
        return (torch.cat([self.keys[layer_idx].to(key.dtype), key], dim=-2),
                torch.cat([self.values[layer_idx].to(value.dtype), value], dim=-2))

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length


def split_points(input_ids: torch.Tensor, start_id: int, pad_id: int) -> tuple[int, int]:
    """(P, E): the earliest first slot start over the rows, and one past the last query position."""
    starts, pads = input_ids == start_id, input_ids == pad_id
    rows = starts.any(dim=1)
    length = input_ids.shape[1]
    if not bool(rows.any()):  # no slot at all: a one-token span keeps the step's module order
        return length - 1, length
    first = starts.float().argmax(dim=1)
    last = length - 1 - pads.flip(1).float().argmax(dim=1)
    return int(first[rows].min()), int(last[rows].max()) + 1


def attention_mask_4d(visible: torch.Tensor, offset: int, query_len: int, dtype: torch.dtype,
                      implementation: str) -> torch.Tensor:
    """(batch, 1, query_len, keys) mask for queries at positions [offset, offset + query_len) over keys
    [0, keys): causal, hidden keys excluded; each query always sees itself, so rows of hidden tokens
    (never read) stay finite instead of NaN, which would leak into visible rows through 0 * NaN."""
    keys = visible.shape[1]
    k = torch.arange(keys, device=visible.device)
    q = torch.arange(query_len, device=visible.device) + offset
    causal = k[None, :] <= q[:, None]
    allowed = (causal[None] & visible.bool()[:, None, :]) | (k[None, :] == q[:, None])[None]
    allowed = allowed[:, None]
    if implementation == "eager":  # eager attention adds the mask to the scores
        return torch.zeros(allowed.shape, dtype=dtype, device=visible.device).masked_fill(
            ~allowed, torch.finfo(dtype).min)
    return allowed


def usable(backbone, recompute: bool) -> bool:
    """Whether this backbone can take the split forward (else the model runs the plain one)."""
    text = backbone.config.text_config
    if text._attn_implementation not in SUPPORTED_ATTENTION:
        return False
    if any(kind != "full_attention" for kind in getattr(text, "layer_types", None) or ["full_attention"]):
        return False
    layer = backbone.model.language_model.layers[0]
    # Older transformers drop every cache under checkpointing; there the split would silently lose the prefix.
    return not recompute or hasattr(type(layer), "_can_checkpoint_with_cache")


def _cache_kwarg(layer) -> str:
    # transformers renamed past_key_values to cache (5.2x); pass whichever this version takes.
    return "cache" if "cache" in inspect.signature(type(layer).forward).parameters else "past_key_values"


def slot_span_hidden(backbone, embeds: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor,
                     prefix: int, end: int, keep_order: bool) -> torch.Tensor:
    """Final hidden states (batch, end - prefix, width) of positions [prefix, end); see the module docstring.

    ``keep_order``: run the prefix pass even when the prefix is empty (on one dummy token), so every rank
    under ZeRO-3 runs the decoder layers the same number of times in every step.
    """
    lm = backbone.model.language_model
    implementation = backbone.config.text_config._attn_implementation
    kv = PrefixKV()
    name = _cache_kwarg(lm.layers[0])
    visible = attention_mask.bool()
    layers = list(lm.layers)
    try:
        # Our cache never writes twice (see PrefixKV), so transformers may keep it under checkpointing, in
        # both passes: some versions check the flag even without autograd.
        for layer in layers:
            layer._can_checkpoint_with_cache = True
        with torch.no_grad():
            if prefix > 0:
                hidden, pos, seen = embeds[:, :prefix].detach(), positions[..., :prefix], visible[:, :prefix]
            elif keep_order:  # discarded: the recorder is replaced below
                hidden, pos, seen = torch.zeros_like(embeds[:, :1]), positions[..., :1], visible[:, :1]
            else:
                hidden = None
            if hidden is not None:
                mask = attention_mask_4d(seen, 0, hidden.shape[1], hidden.dtype, implementation)
                rope = lm.rotary_emb(hidden, pos)
                for layer in layers:
                    hidden = layer(hidden, attention_mask=mask, position_embeddings=rope, use_cache=False,
                                   **{name: kv})
            if prefix == 0:
                kv = PrefixKV()
        kv.recording = False
        span = embeds[:, prefix:end]
        mask = attention_mask_4d(visible[:, :end], prefix, end - prefix, span.dtype, implementation)
        out = lm(inputs_embeds=span, attention_mask={"full_attention": mask},
                 position_ids=positions[..., prefix:end], use_cache=False, **{name: kv})
    finally:
        for layer in layers:  # back to the class default: transformers' own caches write
            layer.__dict__.pop("_can_checkpoint_with_cache", None)
    return out.last_hidden_state
