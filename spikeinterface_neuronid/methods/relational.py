"""Relational population context: unit-pair statistics as edges of a permutation-equivariant transformer.

Softmax attention over unit tokens returns a normalised mixture of the other units' values; it cannot read
out *how strongly and at which lag a unit co-fluctuates with the others* unless that is in the input. Here it
is: every ordered pair of units ``(i, j)`` of a sample has an edge vector (the lagged correlations of their
spike counts, :mod:`spikeinterface_neuronid.spike_stats`), encoded once by a small MLP, and used

* as **pooled messages**: the masked mean and max over partners ``j`` of the encoded edges of ``i`` (a
  DeepSets summary of "how and how much I co-vary with the rest"), added to unit ``i``'s token;
* as **attention biases and values** in every relational block: head ``h`` attends with logits
  ``q_i . k_j / sqrt(d) + w_h . e_ij`` and returns ``sum_j a_ij (v_j + W e_ij)``, so what a unit gathers
  depends on its relation to each partner.

No unit identity or order enters, so the blocks are permutation-equivariant across units; padded units
(``unit_mask`` False) are never attended to and have no edges. Cost: ``O(U^2 (E + D))`` per sample of ``U``
units; the inference engine bounds ``U`` by ``max_context_units``.

This module must not import SpikeInterface.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["EdgeEncoder", "EdgePooling", "RelationalBlock"]


class EdgeEncoder(nn.Module):
    """``Linear(num_inputs, 2 edge_dim) -> GELU -> Linear(2 edge_dim, edge_dim)`` applied to every edge."""

    def __init__(self, num_inputs: int, edge_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(num_inputs, 2 * edge_dim), nn.GELU(), nn.Linear(2 * edge_dim, edge_dim))

    def forward(self, edges: Tensor) -> Tensor:
        return self.net(edges)


def _pair_mask(unit_mask: Tensor) -> Tensor:
    """``(B, U, U)`` True where both units are real and different."""
    both = unit_mask[:, :, None] & unit_mask[:, None, :]
    eye = torch.eye(unit_mask.shape[1], dtype=torch.bool, device=unit_mask.device)
    return both & ~eye


class EdgePooling(nn.Module):
    """Masked mean, top-``k`` mean and max over partners of each unit's encoded edges, projected to the token.

    The three summaries are a learned version of "how strongly, on average and with my closest partners,
    do I co-vary with the rest": the top-``k`` mean is robust where the max follows the noisiest partner. A
    unit without partners (alone in its sample) gets zeros before the projection, so its token only moves by
    the projection's bias, which training sees too (small views).
    """

    def __init__(self, edge_dim: int, dim: int, top_k: int = 8):
        super().__init__()
        self.top_k = int(top_k)
        self.proj = nn.Linear(3 * edge_dim, dim)

    def forward(self, edges: Tensor, unit_mask: Tensor) -> Tensor:
        pairs = _pair_mask(unit_mask)[..., None]
        count = pairs.sum(dim=2).clamp(min=1)
        mean = (edges * pairs).sum(dim=2) / count
        masked = edges.masked_fill(~pairs, float("-inf"))
        k = max(1, min(self.top_k, edges.shape[2]))
        top = masked.topk(k, dim=2).values  # (B, U, k, E)
        valid = torch.isfinite(top)
        top_mean = torch.where(valid, top, torch.zeros_like(top)).sum(dim=2) / valid.sum(dim=2).clamp(min=1)
        mx = top[:, :, 0]
        mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
        return self.proj(torch.cat((mean, top_mean, mx), dim=-1))


class EdgeAttention(nn.Module):
    """Pre-LN multi-head attention across the units of a sample with edge biases and edge values.

    The edge value of head ``h`` is linear in the encoded edge, ``W_h e_ij + c_h``, so its attention-weighted
    sum is computed as ``W_h (sum_j a_hij e_ij) + c_h``: one batched matrix product over the edges instead
    of a ``(units, units, dim)`` tensor per layer.
    """

    def __init__(self, dim: int, num_heads: int, edge_dim: int | None):
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.edge_bias = nn.Linear(edge_dim, num_heads) if edge_dim else None
        if edge_dim:
            head_dim = dim // num_heads
            self.edge_value = nn.Parameter(torch.randn(num_heads, edge_dim, head_dim) / math.sqrt(edge_dim))
            self.edge_value_bias = nn.Parameter(torch.zeros(num_heads, head_dim))
        else:
            self.register_parameter("edge_value", None)
            self.register_parameter("edge_value_bias", None)

    def forward(self, x: Tensor, unit_mask: Tensor, edges: Tensor | None) -> Tensor:
        batch, units, dim = x.shape
        heads = self.num_heads
        q, k, v = self.qkv(self.norm(x)).view(batch, units, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        logits = q @ k.transpose(-1, -2) / math.sqrt(dim // heads)  # (B, H, U, U)
        if edges is not None and self.edge_bias is not None:
            logits = logits + self.edge_bias(edges).permute(0, 3, 1, 2)
        keys = unit_mask | ~unit_mask.any(dim=1, keepdim=True)  # a sample without units attends to its padding
        logits = logits.masked_fill(~keys[:, None, None, :], float("-inf"))
        attn = logits.softmax(dim=-1)
        out = attn @ v  # (B, H, U, dh)
        if edges is not None and self.edge_value is not None:
            # pooled[b, i, h] = sum_j attn[b, h, i, j] edges[b, i, j]   (one bmm over the B * U rows i)
            rows = attn.permute(0, 2, 1, 3).reshape(batch * units, heads, units)
            pooled = torch.bmm(rows, edges.reshape(batch * units, units, -1)).view(batch, units, heads, -1)
            value = torch.einsum("buhe,hed->bhud", pooled, self.edge_value) + self.edge_value_bias[None, :, None]
            out = out + value
        return self.out(out.transpose(1, 2).reshape(batch, units, dim))


class RelationalBlock(nn.Module):
    """Edge attention + GEGLU feed-forward, each a residual branch with dropout (pre-LN)."""

    def __init__(self, dim: int, num_heads: int, edge_dim: int | None, ff_mult: int, dropout: float):
        super().__init__()
        self.attn = EdgeAttention(dim, num_heads, edge_dim)
        self.norm = nn.LayerNorm(dim)
        self.inner = nn.Linear(dim, 2 * ff_mult * dim)
        self.ff_out = nn.Linear(ff_mult * dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, unit_mask: Tensor, edges: Tensor | None) -> Tensor:
        x = x + self.drop(self.attn(x, unit_mask, edges))
        value, gate = self.inner(self.norm(x)).chunk(2, dim=-1)
        return x + self.drop(self.ff_out(self.drop(F.gelu(gate) * value)))
