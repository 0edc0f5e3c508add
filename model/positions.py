"""Qwen2.5-VL's 3-D (M-RoPE) position ids, computed over the tokens a conversation actually shows.

Same rule as transformers' ``Qwen2_5_VLModel.get_rope_index`` for images (text tokens count up by one on
all three axes; an image's tokens take (t, h, w) grid positions offset by the running position, which
then advances by max(h, w) / merge), with one difference that matters here: tokens hidden by the
attention mask (left padding AND the text or images that classifier-free-guidance dropout hides) get no
position, so a conversation with items hidden is positioned exactly like the conversation written without
them. Computing positions here also keeps them identical across transformers versions.
"""
from __future__ import annotations

import torch


def rope_positions(attention_mask: torch.Tensor, mm_token_type_ids: torch.Tensor | None,
                   image_grid_thw: torch.Tensor | None, spatial_merge_size: int) -> torch.Tensor:
    """(3, batch, length) long positions; hidden tokens get 0 (never attended to)."""
    batch, length = attention_mask.shape
    device = attention_mask.device
    positions = torch.zeros(3, batch, length, dtype=torch.long, device=device)
    visible = attention_mask.bool().cpu()
    types = (mm_token_type_ids.cpu() if mm_token_type_ids is not None
             else torch.zeros(batch, length, dtype=torch.long))
    grids = iter(image_grid_thw.tolist()) if image_grid_thw is not None else iter(())
    for row in range(batch):
        pieces, where = [], []
        current = 0
        for kind, start, end in _runs(types[row]):
            shown = visible[row, start:end]
            if kind == 0:
                count = int(shown.sum())
                pieces.append(torch.arange(count).expand(3, count) + current)
                where.append(torch.nonzero(shown).flatten() + start)
                current += count
                continue
            t, h, w = next(grids)
            if not shown.any():  # an image hidden by CFG dropout (or padding): consumes its grid only
                continue
            if not shown.all():
                raise ValueError("an image's tokens are partly masked; mask whole images or none")
            h, w = h // spatial_merge_size, w // spatial_merge_size
            grid = torch.stack(torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij"))
            pieces.append(grid.reshape(3, -1) + current)
            where.append(torch.arange(start, end))
            current += max(h, w)
        if pieces:
            positions[:, row, torch.cat(where).to(device)] = torch.cat(pieces, dim=1).to(device)
    return positions


def _runs(types: torch.Tensor) -> list[tuple[int, int, int]]:
    """(type, start, end) of each run of equal modality type."""
    values = types.tolist()
    runs, start = [], 0
    for index in range(1, len(values) + 1):
        if index == len(values) or values[index] != values[start]:
            runs.append((values[start], start, index))
            start = index
    return runs
