"""Classifier-free-guidance dropout: one function of the conversation, for training and inference alike.

Mechanism: every token carries a content type from the processor (``content_type_ids``: 0 template and
slot tokens, 1 the text of text items, 2 input images incl. their vision start/end tokens). A drop mode
per conversation hides a class of tokens by zeroing them in the attention mask; M-RoPE positions are then
computed over the visible tokens only (unigen.model.positions), so the slots condition on exactly what the
conversation written without those items would give. Hiding never changes which modules run, so ranks
under ZeRO-3 stay in step.

- Training: ``sample_drop_modes`` draws one mode per conversation from torch's global RNG on the model's
  device with probabilities cfg_drop_text / cfg_drop_image / cfg_drop_both.
- Inference: UniGenPipeline builds its unconditional branches with the same ``condition_mask`` and a fixed
  mode: DROP_BOTH for the unconditional branch, DROP_TEXT for the image-only branch of image guidance.
"""
from __future__ import annotations

import torch

from unigen.model.chat_template import IMAGE, TEXT

KEEP, DROP_TEXT, DROP_IMAGE, DROP_BOTH = 0, 1, 2, 3


def sample_drop_modes(batch: int, p_text: float, p_image: float, p_both: float,
                      device: torch.device) -> torch.Tensor:
    """One mode per conversation; always consumes ``batch`` uniforms so the RNG stream is config-stable."""
    u = torch.rand(batch, device=device)
    modes = torch.full((batch,), KEEP, dtype=torch.long, device=device)
    modes[u < p_both + p_text + p_image] = DROP_IMAGE
    modes[u < p_both + p_text] = DROP_TEXT
    modes[u < p_both] = DROP_BOTH
    return modes


def condition_mask(attention_mask: torch.Tensor, content_type_ids: torch.Tensor | None,
                   modes: torch.Tensor | None) -> torch.Tensor:
    """The attention mask with the text and/or input-image tokens of each conversation hidden per mode."""
    if modes is None or content_type_ids is None:
        return attention_mask
    modes = modes.to(attention_mask.device).view(-1, 1)
    hide_text = (modes == DROP_TEXT) | (modes == DROP_BOTH)
    hide_image = (modes == DROP_IMAGE) | (modes == DROP_BOTH)
    hidden = ((content_type_ids == TEXT) & hide_text) | ((content_type_ids == IMAGE) & hide_image)
    return attention_mask * (~hidden).to(attention_mask.dtype)
