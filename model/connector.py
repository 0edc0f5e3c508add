"""The connector: backbone hidden states at a slot's query positions -> Sana caption embeddings.

A bidirectional transformer encoder at the backbone width (every query of a slot sees every other, as
in MetaQuery), then Linear -> GELU -> Linear -> RMSNorm to the decoder's caption width. No positional
encoding: the queries are distinct learned vectors and arrive carrying the backbone's RoPE context, so
the encoder can tell them apart.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class ConnectorLayer(nn.Module):
    """Pre-norm self-attention (QK-normed, bidirectional) + SwiGLU MLP, both residual."""

    def __init__(self, width: int, head_dim: int, mlp_ratio: float, eps: float = 1e-6) -> None:
        super().__init__()
        self.heads, self.head_dim = width // head_dim, head_dim
        ffn = int(mlp_ratio * width)
        self.attn_norm = nn.RMSNorm(width, eps=eps)
        self.qkv = nn.Linear(width, 3 * width, bias=True)
        self.q_norm = nn.RMSNorm(head_dim, eps=eps)
        self.k_norm = nn.RMSNorm(head_dim, eps=eps)
        self.out = nn.Linear(width, width, bias=False)
        self.mlp_norm = nn.RMSNorm(width, eps=eps)
        self.gate_up = nn.Linear(width, 2 * ffn, bias=False)
        self.down = nn.Linear(ffn, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(batch, length, 3, self.heads, self.head_dim).unbind(2)
        q, k = self.q_norm(q), self.k_norm(k)
        attn = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        x = x + self.out(attn.transpose(1, 2).reshape(batch, length, width))
        gate, up = self.gate_up(self.mlp_norm(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up)


class Connector(nn.Module):
    """(slots, num_queries, backbone width) -> (slots, num_queries, caption width)."""

    def __init__(self, width: int, caption_width: int, layers: int, head_dim: int, mlp_ratio: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(ConnectorLayer(width, head_dim, mlp_ratio) for _ in range(layers))
        self.norm = nn.RMSNorm(width, eps=1e-6)
        self.proj_in = nn.Linear(width, caption_width)
        self.act = nn.GELU(approximate="tanh")
        self.proj_out = nn.Linear(caption_width, caption_width)
        self.out_norm = nn.RMSNorm(caption_width, eps=1e-6)
        self.gradient_checkpointing = False

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                hidden = checkpoint(layer, hidden, use_reentrant=False)
            else:
                hidden = layer(hidden)
        return self.out_norm(self.proj_out(self.act(self.proj_in(self.norm(hidden)))))
