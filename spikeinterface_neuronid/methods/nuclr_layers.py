"""Building blocks of the NuCLR encoder (:mod:`spikeinterface_neuronid.methods.nuclr`), in pure torch.

Rotary time encoding (:class:`RotaryTime`), pre-LN attention over the tokens of a unit or across the units
of a sample (:class:`Attention`, with :class:`UnitLayout` mapping between the two layouts), the GEGLU
feed-forward (:class:`FeedForward`), the temporal and spatiotemporal blocks built from them, the read-in MLP
of the span encoder's per-unit inputs (:func:`read_in_mlp`) and the training projectors (:func:`mlp_projector`,
:class:`TwoPathProjector`). The relational blocks are in :mod:`~spikeinterface_neuronid.methods.relational`.

The attribute names of these modules are the names of their weights in model files: do not rename them.

This module must not import SpikeInterface.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._nuclr_config import NuCLRConfig

__all__ = [
    "RotaryTime",
    "UnitLayout",
    "Attention",
    "FeedForward",
    "TemporalBlock",
    "SpatioTemporalBlock",
    "read_in_mlp",
    "mlp_projector",
    "TwoPathProjector",
]


class RotaryTime(nn.Module):
    """Rotary encoding of the token index on the first ``rotate_dim`` dimensions of each head.

    Frequencies are ``2 pi / period`` with ``rotate_dim / 2`` periods log-spaced from ``min_period`` to
    ``max_period`` tokens (NuCLR: 1 to 8 x the training window length). Dimension pairs ``(2k, 2k + 1)``
    are rotated by ``position * omega_k``.
    """

    def __init__(self, rotate_dim: int, min_period: float, max_period: float):
        super().__init__()
        num = rotate_dim // 2
        if num:
            exponents = torch.linspace(0.0, 1.0, num, dtype=torch.float64)
            periods = torch.exp(math.log(min_period) + exponents * (math.log(max_period) - math.log(min_period)))
            omega = (2 * math.pi / periods).to(torch.float32)
        else:
            omega = torch.zeros(0)
        # derived from the config, so not part of the state dict / model file
        self.register_buffer("omega", omega, persistent=False)

    def forward(self, num_tokens: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """``cos`` and ``sin`` of the rotation angles, each of shape ``(num_tokens, rotate_dim / 2)``."""
        angles = torch.arange(num_tokens, device=device, dtype=torch.float32)[:, None] * self.omega.to(device)
        return angles.cos(), angles.sin()


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the leading ``2 * cos.shape[-1]`` dims of ``x`` (..., tokens, head_dim) in pairs."""
    num = cos.shape[-1]
    if num == 0:
        return x
    rot, rest = x[..., : 2 * num], x[..., 2 * num :]
    a, b = rot[..., 0::2], rot[..., 1::2]
    rot = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)
    return torch.cat((rot, rest), dim=-1)


def _rotations(cos: Tensor, sin: Tensor, head_dim: int) -> Tensor:
    """The rotations of :func:`_rotate` as matrices: ``(tokens, head_dim, head_dim)``, ``R[l] @ h`` rotates ``h``."""
    tokens, num = cos.shape
    rot = torch.eye(head_dim, dtype=cos.dtype, device=cos.device).repeat(tokens, 1, 1)
    even = torch.arange(num, device=cos.device) * 2
    rot[:, even, even] = cos
    rot[:, even, even + 1] = -sin
    rot[:, even + 1, even] = sin
    rot[:, even + 1, even + 1] = cos
    return rot


class UnitLayout:
    """Maps between the packed real units ``(N, L, C)`` and the padded per-token layout ``(B * L, U, C)``.

    Parameters
    ----------
    unit_mask : torch.Tensor
        bool ``(B, U)``, False for padding; the ``N`` real units are packed in its row-major order.
    num_tokens : int
        Tokens ``L`` per unit.
    """

    def __init__(self, unit_mask: Tensor, num_tokens: int):
        batch, width = unit_mask.shape
        self.batch, self.width, self.num_tokens = batch, width, num_tokens
        self.index = unit_mask.reshape(-1).nonzero().squeeze(1)
        # keys a query may attend to; a sample without real units attends to its padding (output unused),
        # so no softmax row is empty
        keys = unit_mask | ~unit_mask.any(dim=1, keepdim=True)
        self.attn_mask = keys.repeat_interleave(num_tokens, dim=0)[:, None, None, :]

    def to_spatial(self, packed: Tensor) -> Tensor:
        channels = packed.shape[-1]
        full = packed.new_zeros(self.batch * self.width, self.num_tokens, channels).index_copy(0, self.index, packed)
        full = full.view(self.batch, self.width, self.num_tokens, channels).transpose(1, 2)
        return full.reshape(self.batch * self.num_tokens, self.width, channels)

    def from_spatial(self, full: Tensor) -> Tensor:
        channels = full.shape[-1]
        full = full.view(self.batch, self.num_tokens, self.width, channels).transpose(1, 2)
        full = full.reshape(self.batch * self.width, self.num_tokens, channels)
        return full.index_select(0, self.index)


class Attention(nn.Module):
    """Pre-LN multi-head self-attention (no attention dropout).

    Temporal mode (``layout=None``): over the tokens of each unit, with rotary encoding of q, k and v and
    the output counter-rotated by the query position. Spatial mode: over the units of each sample at each
    token, with the layout's padding mask and no positional information.
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor] | None = None, layout: UnitLayout | None = None):
        if rotary is not None and layout is None and not torch.is_grad_enabled():
            return self._rotary_inference(x, rotary)
        qkv = self.qkv(self.norm(x))
        mask = None
        if layout is not None:
            qkv = layout.to_spatial(qkv)
            mask = layout.attn_mask
        rows, length, _ = qkv.shape
        q, k, v = qkv.view(rows, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        if rotary is not None:
            cos, sin = rotary
            q, k, v = _rotate(q, cos, sin), _rotate(k, cos, sin), _rotate(v, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        if rotary is not None:
            out = _rotate(out, cos, -sin)
        out = out.transpose(1, 2).reshape(rows, length, -1)
        if layout is not None:
            out = layout.from_spatial(out)
        return self.out(out)

    def _rotary_inference(self, x: Tensor, rotary: tuple[Tensor, Tensor]) -> Tensor:
        """Temporal attention with the rotations folded into per-token projection weights (no autograd).

        Rotating q, k and v by ``R[l]`` after the ``qkv`` projection is a projection by ``R[l] W`` at token ``l``,
        and counter-rotating the attention output before ``out`` is a projection by ``W_out R[l]^T``: one
        batched matrix product over tokens each instead of the element-wise rotations. Equal to the autograd
        path of :meth:`forward` up to float rounding.
        """
        rows, length, dim = x.shape
        heads = self.num_heads
        head_dim = dim // heads
        rot = _rotations(*rotary, head_dim)  # (L, hd, hd)
        w = self.qkv.weight.view(3 * heads, head_dim, dim)
        w_in = torch.einsum("lij,hjd->ldhi", rot, w).reshape(length, dim, 3 * dim)  # (L, dim in, 3 dim out)
        b_in = torch.einsum("lij,hj->lhi", rot, self.qkv.bias.view(3 * heads, head_dim)).reshape(length, 1, 3 * dim)
        qkv = torch.baddbmm(b_in, self.norm(x).transpose(0, 1), w_in)  # (L, rows, 3 dim)
        q, k, v = qkv.view(length, rows, 3, heads, head_dim).permute(2, 1, 3, 0, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)  # (rows, heads, L, hd)
        w_out = torch.einsum("ohi,lji->lhjo", self.out.weight.view(dim, heads, head_dim), rot).reshape(length, dim, dim)
        out = torch.baddbmm(self.out.bias, out.permute(2, 0, 1, 3).reshape(length, rows, dim), w_out)
        return out.transpose(0, 1)


class FeedForward(nn.Module):
    """Pre-LN GEGLU: ``Linear(dim, 2 mult dim)`` -> GELU(gate) * value -> dropout -> ``Linear(mult dim, dim)``."""

    def __init__(self, dim: int, mult: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.inner = nn.Linear(dim, 2 * mult * dim)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(mult * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.inner(self.norm(x)).chunk(2, dim=-1)
        return self.out(self.drop(F.gelu(gate) * value))


class TemporalBlock(nn.Module):
    """Temporal attention + FFN, each a residual branch with dropout."""

    def __init__(self, config: NuCLRConfig):
        super().__init__()
        self.attn = Attention(config.dim, config.num_heads)
        self.ff = FeedForward(config.dim, config.ff_mult, config.dropout)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor], layout: UnitLayout) -> Tensor:
        x = x + self.drop(self.attn(x, rotary=rotary))
        return x + self.drop(self.ff(x))


class SpatioTemporalBlock(nn.Module):
    """Spatial attention across units + FFN, then temporal attention + FFN."""

    def __init__(self, config: NuCLRConfig):
        super().__init__()
        self.spatial = Attention(config.dim, config.num_heads)
        self.spatial_ff = FeedForward(config.dim, config.ff_mult, config.dropout)
        self.temporal = TemporalBlock(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor], layout: UnitLayout) -> Tensor:
        x = x + self.drop(self.spatial(x, layout=layout))
        x = x + self.drop(self.spatial_ff(x))
        return self.temporal(x, rotary, layout)


def read_in_mlp(width: int, dim: int) -> nn.Sequential:
    """``Linear(width, 2 dim) -> GELU -> Linear(2 dim, dim)``: the span encoder's read-in of per-unit inputs.

    Parameters
    ----------
    width : int
        Input features.
    dim : int
        Output width.

    Returns
    -------
    torch.nn.Sequential
    """
    return nn.Sequential(nn.Linear(width, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))


def mlp_projector(width: int, projector_dim: int) -> nn.Sequential:
    """``LayerNorm -> Linear -> ReLU -> Linear`` (``width -> projector_dim -> projector_dim``).

    Parameters
    ----------
    width : int
        Input width (the embedding, or one half of it).
    projector_dim : int
        Hidden and output width.

    Returns
    -------
    torch.nn.Sequential
    """
    return nn.Sequential(
        nn.LayerNorm(width), nn.Linear(width, projector_dim), nn.ReLU(), nn.Linear(projector_dim, projector_dim)
    )


class TwoPathProjector(nn.Module):
    """Projector of a single-unit-path encoder: ``context`` projects the population-context half of the
    embedding, ``single`` the single-unit half; the outputs are concatenated (``(..., 2 * projector_dim)``).

    Each half has its own contrastive loss (see ``benchmarks/results/single_unit_path_trial.txt`` for the
    designs that shared the window encoder's training between the halves, and lost brain-region accuracy)."""

    def __init__(self, config: NuCLRConfig):
        super().__init__()
        self.dim = config.dim
        self.context = mlp_projector(config.dim, config.projector_dim)
        self.single = mlp_projector(config.dim, config.projector_dim)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat((self.context(x[..., : self.dim]), self.single(x[..., self.dim :])), dim=-1)
