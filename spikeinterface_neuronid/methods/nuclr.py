"""NuCLR: neuron identity from population context (Arora et al., NeurIPS 2025), in pure torch.

Spike counts in 20 ms bins are cut into 1 s tokens (50 bins each) and read in by one linear layer per
token. Temporal blocks attend over the tokens of one unit (rotary time encoding on half of each head's
dimensions, values rotated too); spatiotemporal blocks first attend across **all units of the same
sample** at each token (no unit positional encoding, so the encoder is permutation-equivariant and takes
any number of units) and then over time again. A unit's vector is the mean over its tokens.

Training draws two windows of the same population (:func:`~spikeinterface_neuronid.data.sample_view_pair`);
the same unit in both windows is the positive pair and the other units of that sample, in both windows,
are the negatives (:func:`contrastive_loss`).

Differences from the reference code (``nerdslab/nuclr``):

* Units of a batch are padded to the widest sample and masked, instead of xformers' block-diagonal
  masks; padded units never influence real ones and fully padded samples give zeros, not NaN.
* Within-view similarities are divided by the temperature like the cross-view ones (the reference code
  leaves them unscaled; ``scale_within_view=False`` in :func:`contrastive_loss` reproduces it).
* fp32 ``torch.nn.functional.scaled_dot_product_attention`` replaces bf16 FlashAttention.

**Span context** (``context="span"``, the default since model format 3): a sample is a *span* of the
recording (30 s to minutes) rather than one 10 s window. Its units' temporal tokens come from a few 10 s
windows inside the span (all of them at inference) and are averaged per unit; then two channels computed from
spike times over the whole span (:mod:`spikeinterface_neuronid.spike_stats`) join:

* the **fine-timescale channel** (``fine_channel``): 1 ms single-unit statistics (rate, CV, CV2, log-ISI
  histogram, 1-50 ms autocorrelogram) through an MLP into each unit's token;
* the **relational channel** (``relational``): lagged correlations of every unit pair (edges of
  :mod:`~spikeinterface_neuronid.methods.relational`: pooled messages, attention biases and values of the
  ``relational_layers`` blocks across units) and each unit's spike-triggered population rate at 2-20 ms.

``context="window"`` is the published NuCLR (10 s windows, spatial attention at every token); model files
written before span context existed load as such.

This module must not import SpikeInterface.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import MethodConfig, ViewBatch
from .relational import EdgeEncoder, EdgePooling, RelationalBlock

__all__ = [
    "NAME",
    "NuCLRConfig",
    "Config",
    "NuCLREncoder",
    "build_encoder",
    "build_projector",
    "grow_init_state",
    "contrastive_loss",
    "loss",
]

NAME = "nuclr"

_INPUT_TRANSFORMS = ("counts", "log1p")
_CONTEXTS = ("span", "window")
#: Values of the span-context fields that reproduce a model saved before they existed (``context="window"``).
_LEGACY_WINDOW_FIELDS = dict(
    context="window",
    fine_channel=False,
    relational=False,
    waveform_channel=False,
    relational_layers=0,
    single_unit_path=False,
)


@dataclass(frozen=True)
class NuCLRConfig(MethodConfig):
    """Hyper-parameters of a NuCLR encoder and its training loss.

    The defaults are the CPU-sized preset (:meth:`cpu`); :meth:`paper` is the published model.

    Parameters
    ----------
    bin_s : float, default: 0.02
        Bin width in seconds.
    token_bins : int, default: 50
        Bins per token (the read-in layer maps ``token_bins`` counts to ``dim``).
    window_tokens : int, default: 10
        Tokens per training window; also sets the longest rotary period (``8 * window_tokens`` tokens).
        The encoder accepts any whole number of tokens at inference.
    dim : int, default: 64
        Width of the token representations and of the output embedding.
    num_heads : int, default: 4
        Attention heads; ``dim / num_heads`` must be an even integer.
    temporal_layers : int, default: 1
        Temporal-only blocks (attention over the tokens of one unit, then FFN).
    spatiotemporal_layers : int, default: 1
        Spatiotemporal blocks (attention across units at each token + FFN, then temporal attention + FFN).
    ff_mult : int, default: 2
        GEGLU feed-forward expansion factor.
    dropout : float, default: 0.2
        Dropout on every residual branch and inside the feed-forward layers (training only).
    rope_ratio : float, default: 0.5
        Fraction of each head's dimensions rotated by the rotary time encoding.
    projector_dim : int, default: 64
        Width of the training projector's hidden and output layers.
    temperature : float, default: 0.2
        Contrastive temperature.
    input_transform : str, default: "counts"
        ``"counts"``: raw spike counts, as the paper; ``"log1p"``: ``log(1 + counts)``.
    max_context_units : int, default: 512
        Largest number of units attended over together at inference; larger populations are split into
        random groups by the inference engine (this also bounds the relational channel's pair statistics).
    context : str, default: "span"
        ``"span"``: samples are spans of the recording with the fine-timescale and relational channels;
        ``"window"``: NuCLR as published (10 s windows, spatial attention at every token).
    fine_channel : bool, default: True
        (span) Feed the 1 ms single-unit statistics of the span to each unit's token.
    relational : bool, default: True
        (span) Feed the lagged pair correlations (edges) and the spike-triggered population rate.
    waveform_channel : bool, default: True
        (span) Feed each unit's peak-channel waveform when the recording has one
        (:attr:`SpikeTrainSet.waveforms <spikeinterface_neuronid.data.SpikeTrainSet>`, e.g. from a
        ``templates`` extension); a learned "no waveform" vector otherwise.
    relational_layers : int, default: 2
        (span) Blocks of attention across the units of the span (with edge biases and values when
        ``relational``); 0 with ``spatiotemporal_layers=0`` means no population context at all.
    edge_dim : int, default: 16
        (span) Width of the encoded edges.
    max_lag_bins : int, default: 15
        (span) Largest lag of the pair correlations, in bins (15 x 20 ms = 300 ms).
    coincidence_s : float, default: 0.001
        (span) Spike pairs of two units at most this far apart are left out of the relational statistics.
    chunk_s : float, default: 30.0
        (span) Statistics are summed per chunk of this length; training spans are whole numbers of chunks.
    max_span_s : float, default: 300.0
        (span) Longest span: training spans are 1 chunk to this long; inference splits a longer segment into
        equal spans of at most this length and averages the unit embeddings over them.
    windows_per_view : int, default: 2
        (span) 10 s windows per training view whose counts feed the temporal blocks (inference: all windows
        of the span).
    min_span_spikes : int, default: 3
        (span) A unit takes part in a span (and gets an embedding from it) with at least this many spikes.
    single_unit_path : bool, default: False
        (span) Add a single-unit tower and return ``[population-context vector, single-unit vector]``
        (``embedding_dim = 2 * dim``). The tower sums the unit's window features (detached: its loss does
        not train the window encoder) and its own encoders of the unit's 1 ms statistics and waveform; it sees
        none of the population inputs (number of units, spike-triggered population rate, edges). Training
        gives each half its own contrastive loss (the single-unit one weighted by ``single_path_weight``).
        Whatever the number of units recorded together, half of the embedding is what the unit alone gives,
        so a small population cannot dilute it (:meth:`cpu` sets it; needs ``spatiotemporal_layers=0``).
    single_path_weight : float, default: 1.0
        (span, ``single_unit_path``) Weight of the single-unit half's contrastive loss.
    """

    label = "NuCLR"

    bin_s: float = 0.02
    token_bins: int = 50
    window_tokens: int = 10
    dim: int = 64
    num_heads: int = 4
    temporal_layers: int = 1
    spatiotemporal_layers: int = 1
    ff_mult: int = 2
    dropout: float = 0.2
    rope_ratio: float = 0.5
    projector_dim: int = 64
    temperature: float = 0.2
    input_transform: str = "counts"
    max_context_units: int = 512
    context: str = "span"
    fine_channel: bool = True
    relational: bool = True
    waveform_channel: bool = True
    relational_layers: int = 2
    edge_dim: int = 16
    max_lag_bins: int = 15
    coincidence_s: float = 0.001
    chunk_s: float = 30.0
    max_span_s: float = 300.0
    windows_per_view: int = 2
    min_span_spikes: int = 3
    single_unit_path: bool = False
    single_path_weight: float = 1.0

    def __post_init__(self):
        positive_ints = ("token_bins", "window_tokens", "dim", "num_heads", "ff_mult", "projector_dim")
        for name in positive_ints + ("temporal_layers", "spatiotemporal_layers", "max_context_units"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"NuCLRConfig.{name} must be an integer, got {value!r}")
        for name in positive_ints + ("max_context_units",):
            if getattr(self, name) < 1:
                raise ValueError(f"NuCLRConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("temporal_layers", "spatiotemporal_layers"):
            if getattr(self, name) < 0:
                raise ValueError(f"NuCLRConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not (isinstance(self.bin_s, (int, float)) and math.isfinite(self.bin_s) and self.bin_s > 0):
            raise ValueError(f"NuCLRConfig.bin_s must be a positive number of seconds, got {self.bin_s!r}")
        if self.dim % self.num_heads or (self.dim // self.num_heads) % 2:
            raise ValueError(
                f"NuCLRConfig.dim ({self.dim}) must be num_heads ({self.num_heads}) times an even head size"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"NuCLRConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if not 0.0 <= self.rope_ratio <= 1.0:
            raise ValueError(f"NuCLRConfig.rope_ratio must be in [0, 1], got {self.rope_ratio!r}")
        if not self.temperature > 0:
            raise ValueError(f"NuCLRConfig.temperature must be > 0, got {self.temperature!r}")
        if self.input_transform not in _INPUT_TRANSFORMS:
            raise ValueError(
                f"NuCLRConfig.input_transform must be one of {_INPUT_TRANSFORMS}, got {self.input_transform!r}"
            )
        self._check_span_fields()

    def _check_span_fields(self) -> None:
        if self.context not in _CONTEXTS:
            raise ValueError(f"NuCLRConfig.context must be one of {_CONTEXTS}, got {self.context!r}")
        for name in ("fine_channel", "relational", "waveform_channel", "single_unit_path"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"NuCLRConfig.{name} must be True or False, got {getattr(self, name)!r}")
        for name, low in (
            ("relational_layers", 0),
            ("edge_dim", 1),
            ("max_lag_bins", 0),
            ("windows_per_view", 1),
            ("min_span_spikes", 1),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"NuCLRConfig.{name} must be an integer >= {low}, got {value!r}")
        if self.context == "window":
            on = [k for k, v in _LEGACY_WINDOW_FIELDS.items() if k != "context" and getattr(self, k) != v]
            if on:
                raise ValueError(f"NuCLRConfig.{', '.join(on)} need context='span' (got context='window')")
            return
        for name in ("coincidence_s", "chunk_s", "max_span_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"NuCLRConfig.{name} must be a non-negative number of seconds, got {value!r}")
        if self.max_span_s < self.chunk_s or self.chunk_s < self.window_tokens * self.token_bins * self.bin_s:
            raise ValueError(
                f"NuCLRConfig needs window length ({self.window_tokens * self.token_bins * self.bin_s:g} s) <= "
                f"chunk_s ({self.chunk_s:g}) <= max_span_s ({self.max_span_s:g})"
            )
        if self.single_unit_path and self.spatiotemporal_layers:
            raise ValueError(
                "NuCLRConfig.single_unit_path needs spatiotemporal_layers=0 (the windows of the single-unit path "
                f"must not attend across units), got spatiotemporal_layers={self.spatiotemporal_layers}"
            )
        weight = self.single_path_weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"NuCLRConfig.single_path_weight must be a number >= 0, got {weight!r}")
        self.stats_spec  # validates the statistics settings

    @property
    def embedding_dim(self) -> int:
        """Width of the unit embeddings: ``2 * dim`` with the single-unit path, else ``dim``."""
        return 2 * self.dim if self.single_unit_path else self.dim

    @property
    def context_dim(self) -> int:
        """``dim``: with the single-unit path, the population-context half comes first."""
        return self.dim

    @property
    def stats_spec(self):
        """The :class:`~spikeinterface_neuronid.spike_stats.StatsSpec` of the span channels."""
        from ..spike_stats import StatsSpec

        return StatsSpec(
            chunk_s=float(self.chunk_s),
            pair_bin_s=float(self.bin_s),
            max_lag_bins=int(self.max_lag_bins),
            coincidence_s=float(self.coincidence_s),
        )

    @property
    def num_unit_inputs(self) -> int:
        """Width of the per-unit statistics vector of a span sample (0 for window context)."""
        if self.context != "span":
            return 0
        from ..data import WAVEFORM_GRID_MS
        from ..spike_stats import num_unit_features

        waveform = WAVEFORM_GRID_MS.size + 1 if self.waveform_channel else 0
        return num_unit_features(self.stats_spec, self.relational) + waveform

    @property
    def num_edge_inputs(self) -> int:
        """Width of the per-pair statistics vector of a span sample (0 without the relational channel)."""
        if self.context != "span" or not self.relational:
            return 0
        from ..spike_stats import num_edge_features

        return num_edge_features(self.stats_spec)

    @classmethod
    def from_dict(cls, values: dict) -> "NuCLRConfig":
        """As :meth:`MethodConfig.from_dict`; a dict without ``"context"`` (a model saved before span context
        existed) is read as the window-context model it describes."""
        if isinstance(values, dict) and "context" not in values:
            values = {**_LEGACY_WINDOW_FIELDS, **values}
        return super().from_dict(values)

    @classmethod
    def cpu(cls, **overrides: Any) -> "NuCLRConfig":
        """Span context for a 2-core CPU: dim 64, 4 heads, 1 temporal block, 2 relational blocks, ff_mult 2,
        with the single-unit path (128-dimensional embeddings)."""
        values = dict(spatiotemporal_layers=0, single_unit_path=True)
        values.update(overrides)
        return cls(**values)

    @classmethod
    def window(cls, **overrides: Any) -> "NuCLRConfig":
        """NuCLR-tiny as published (window context): dim 64, 4 heads, 1 temporal + 1 spatiotemporal block."""
        values = dict(_LEGACY_WINDOW_FIELDS)
        values.update(overrides)
        return cls(**values)

    @classmethod
    def paper(cls, **overrides: Any) -> "NuCLRConfig":
        """The published ephys model: window context, dim 256, 4 heads, 2 temporal + 2 spatiotemporal blocks."""
        values = dict(_LEGACY_WINDOW_FIELDS)
        values.update(dim=256, num_heads=4, temporal_layers=2, spatiotemporal_layers=2, ff_mult=4, projector_dim=256)
        values.update(overrides)
        return cls(**values)


#: The config class of this method (the name every method module exposes).
Config = NuCLRConfig


# ----------------------------------------------------------------------------------------------------------
# Encoder
# ----------------------------------------------------------------------------------------------------------


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


class _Layout:
    """Maps between the packed real units ``(N, L, C)`` and the padded per-token layout ``(B * L, U, C)``."""

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

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor] | None = None, layout: _Layout | None = None):
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

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor], layout: _Layout) -> Tensor:
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

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor], layout: _Layout) -> Tensor:
        x = x + self.drop(self.spatial(x, layout=layout))
        x = x + self.drop(self.spatial_ff(x))
        return self.temporal(x, rotary, layout)


def _read_in_mlp(width: int, dim: int) -> nn.Sequential:
    """``Linear(width, 2 dim) -> GELU -> Linear(2 dim, dim)``: the span encoder's read-in of per-unit inputs."""
    return nn.Sequential(nn.Linear(width, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))


class NuCLREncoder(nn.Module):
    """Permutation-equivariant population encoder: one vector per unit.

    Parameters
    ----------
    config : NuCLRConfig
        Architecture.

    Notes
    -----
    ``forward(counts, unit_mask, unit_inputs=None, edges=None)``:

    * ``counts``: float32 ``(batch, units, bins)``; window context: one window of any whole number of
      tokens; span context: ``k`` windows of ``window_tokens`` tokens back to back (``bins = k *
      window_bins``), each encoded on its own and averaged per unit.
    * ``unit_mask``: bool ``(batch, units)``, False = padding.
    * span context only: ``unit_inputs`` float32 ``(batch, units, config.num_unit_inputs)``
      (:func:`~spikeinterface_neuronid.span_views.span_unit_inputs`: span statistics, then with
      ``waveform_channel`` the resampled waveform and a 0/1 "has a waveform" flag) and, with
      ``relational``, ``edges`` float32 ``(batch, units, units, config.num_edge_inputs)``
      (:meth:`~spikeinterface_neuronid.spike_stats.ChunkStatistics.inputs`).

    Returns ``(batch, units, config.embedding_dim)``; rows of padded units are zero. The temporal blocks run on
    the real units only; padding is materialised just for attention across units, where it is masked out. With
    ``single_unit_path`` the last ``dim`` columns are the single-unit tower's context-free vector (window
    features, 1 ms statistics, waveform) and the first ``dim`` the population-context vector.
    """

    def __init__(self, config: NuCLRConfig):
        super().__init__()
        self.config = config
        head_dim = config.dim // config.num_heads
        rotate_dim = 2 * (int(head_dim * config.rope_ratio) // 2)
        self.rotary = RotaryTime(rotate_dim, min_period=1.0, max_period=8.0 * config.window_tokens)
        self.read_in = nn.Linear(config.token_bins, config.dim)
        self.temporal_blocks = nn.ModuleList(TemporalBlock(config) for _ in range(config.temporal_layers))
        self.spatiotemporal_blocks = nn.ModuleList(
            SpatioTemporalBlock(config) for _ in range(config.spatiotemporal_layers)
        )
        if config.context == "span":
            dim = config.dim
            self.num_waveform_inputs = 0
            if config.waveform_channel:
                from ..data import WAVEFORM_GRID_MS

                self.num_waveform_inputs = WAVEFORM_GRID_MS.size
                self.waveform_read_in = _read_in_mlp(self.num_waveform_inputs, dim)
                self.waveform_missing = nn.Parameter(torch.zeros(dim))
            stats = config.num_unit_inputs - (self.num_waveform_inputs + 1 if config.waveform_channel else 0)
            self.num_stats_inputs = stats
            self.unit_read_in = _read_in_mlp(stats, dim)
            if config.single_unit_path:
                # the single-unit tower reads the unit's own statistics (the population columns, log number of
                # units and spike-triggered population rate, come after them) and its own waveform encoder
                from ..spike_stats import num_unit_features

                self.num_own_inputs = num_unit_features(config.stats_spec, relational=False) - 1
                self.single_read_in = _read_in_mlp(self.num_own_inputs, dim)
                if config.waveform_channel:
                    self.single_waveform_read_in = _read_in_mlp(self.num_waveform_inputs, dim)
                    self.single_waveform_missing = nn.Parameter(torch.zeros(dim))
            edge_dim = config.edge_dim if config.relational else None
            if config.relational:
                self.edge_encoder = EdgeEncoder(config.num_edge_inputs, config.edge_dim)
                self.edge_pooling = EdgePooling(config.edge_dim, dim)
            self.relational_blocks = nn.ModuleList(
                RelationalBlock(dim, config.num_heads, edge_dim, config.ff_mult, config.dropout)
                for _ in range(config.relational_layers)
            )

    def _windows(self, counts: Tensor, unit_mask: Tensor) -> Tensor:
        """NuCLR over windows: ``(batch, units, tokens * token_bins)`` -> ``(batch, units, dim)``."""
        cfg = self.config
        batch, width, bins = counts.shape
        num_tokens = bins // cfg.token_bins
        layout = _Layout(unit_mask, num_tokens)
        x = counts.reshape(batch * width, num_tokens, cfg.token_bins).index_select(0, layout.index).float()
        if cfg.input_transform == "log1p":
            x = torch.log1p(x)
        x = self.read_in(x)
        rotary = self.rotary(num_tokens, x.device)
        for block in self.temporal_blocks:
            x = block(x, rotary, layout)
        for block in self.spatiotemporal_blocks:
            x = block(x, rotary, layout)
        out = x.mean(dim=1)
        return out.new_zeros(batch * width, cfg.dim).index_copy(0, layout.index, out).view(batch, width, cfg.dim)

    def forward(
        self, counts: Tensor, unit_mask: Tensor, unit_inputs: Tensor | None = None, edges: Tensor | None = None
    ) -> Tensor:
        cfg = self.config
        if counts.dim() != 3:
            raise ValueError(f"counts must have shape (batch, units, bins), got {tuple(counts.shape)}")
        batch, width, bins = counts.shape
        if unit_mask.shape != (batch, width) or unit_mask.dtype != torch.bool:
            raise ValueError(
                f"unit_mask must be a bool tensor of shape {(batch, width)}, got {unit_mask.dtype} "
                f"{tuple(unit_mask.shape)}"
            )
        if cfg.context == "window":
            if bins < cfg.token_bins or bins % cfg.token_bins:
                raise ValueError(
                    f"the window has {bins} bins; the model needs a whole number (>= 1) of {cfg.token_bins}-bin tokens"
                )
            return self._windows(counts, unit_mask)
        window_bins = cfg.window_tokens * cfg.token_bins
        if bins < window_bins or bins % window_bins:
            raise ValueError(f"span samples need a whole number (>= 1) of {window_bins}-bin windows, got {bins} bins")
        if unit_inputs is None or unit_inputs.shape != (batch, width, cfg.num_unit_inputs):
            got = None if unit_inputs is None else tuple(unit_inputs.shape)
            raise ValueError(f"unit_inputs must have shape {(batch, width, cfg.num_unit_inputs)}, got {got}")
        lags = cfg.num_edge_inputs
        if cfg.relational and (edges is None or edges.shape != (batch, width, width, lags)):
            got = None if edges is None else tuple(edges.shape)
            raise ValueError(f"edges must have shape {(batch, width, width, lags)}, got {got}")
        k = bins // window_bins
        per_window = counts.reshape(batch, width, k, window_bins).transpose(1, 2).reshape(batch * k, width, window_bins)
        windows = self._windows(per_window, unit_mask.repeat_interleave(k, dim=0)).view(batch, k, width, cfg.dim)
        windows = windows.mean(1)
        unit_inputs = unit_inputs.float()
        x = windows + self.unit_read_in(unit_inputs[..., : self.num_stats_inputs])
        if cfg.waveform_channel:
            wave = unit_inputs[..., self.num_stats_inputs : self.num_stats_inputs + self.num_waveform_inputs]
            present = unit_inputs[..., -1:] > 0.5
            x = x + torch.where(present, self.waveform_read_in(wave), self.waveform_missing)
        encoded = None
        if cfg.relational:
            encoded = self.edge_encoder(edges.float())
            x = x + self.edge_pooling(encoded, unit_mask)
        for block in self.relational_blocks:
            x = block(x, unit_mask, encoded)
        if cfg.single_unit_path:
            # detached: the single-unit loss must not reshape the window encoder the context tower relies on
            single = windows.detach() + self.single_read_in(unit_inputs[..., : self.num_own_inputs])
            if cfg.waveform_channel:
                single = single + torch.where(present, self.single_waveform_read_in(wave), self.single_waveform_missing)
            x = torch.cat((x, single), dim=-1)
        return x * unit_mask[..., None]


def build_encoder(config: NuCLRConfig) -> NuCLREncoder:
    """A freshly initialised :class:`NuCLREncoder` (uses torch's global RNG)."""
    return NuCLREncoder(config)


def _mlp_projector(width: int, projector_dim: int) -> nn.Sequential:
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
        self.context = _mlp_projector(config.dim, config.projector_dim)
        self.single = _mlp_projector(config.dim, config.projector_dim)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat((self.context(x[..., : self.dim]), self.single(x[..., self.dim :])), dim=-1)


def grow_init_state(
    init_config: NuCLRConfig, config: NuCLRConfig, encoder_state: dict, projector_state: dict | None
) -> tuple[dict, dict | None]:
    """Weights of a model without the single-unit path, named for the same model with it.

    The encoder's names are unchanged (the tower adds modules); the projector becomes the ``context`` half of
    a :class:`TwoPathProjector`. Used by ``pretrain(init=..., freeze_init=True)`` to train a single-unit tower
    onto a trained population-context model."""
    if config.single_unit_path and not init_config.single_unit_path and projector_state is not None:
        projector_state = {f"context.{name}": value for name, value in projector_state.items()}
    return encoder_state, projector_state


def build_projector(config: NuCLRConfig) -> nn.Module:
    """Training projector: ``LayerNorm -> Linear -> ReLU -> Linear`` (``embedding_dim -> projector_dim ->
    projector_dim``); with the single-unit path a :class:`TwoPathProjector`."""
    if config.single_unit_path:
        return TwoPathProjector(config)
    return _mlp_projector(config.dim, config.projector_dim)


# ----------------------------------------------------------------------------------------------------------
# Loss
# ----------------------------------------------------------------------------------------------------------


def contrastive_loss(
    z1: Tensor,
    mask1: Tensor,
    units1: Tensor,
    z2: Tensor,
    mask2: Tensor,
    units2: Tensor,
    temperature: float = 0.2,
    scale_within_view: bool = True,
) -> Tensor:
    """NuCLR's sample-wise decoupled contrastive loss.

    For each sample ``b`` with ``n1`` / ``n2`` real units and matched pairs ``M_b`` (units with the same
    source index in both views), projections are L2-normalised and

    * alignment ``A_b`` = mean over ``(i, j)`` in ``M_b`` of ``(1 - cos(z1_i, z2_j)) / tau``;
    * uniformity: for a matched ``i``, ``l1_i = logsumexp({z1_i.z2_k / tau, k != j} U {z1_i.z1_k / tau,
      k != i}) - log(n1 + n2)``, i.e. its negatives are the other units of the **same sample** in both
      views and its positive is left out of the denominator (decoupled); ``l2_j`` likewise for view 2;
      ``U_b`` = mean over ``M_b`` of ``(l1_i + l2_j) / 2``;
    * total = sum over samples of ``|M_b| / sum |M|`` x ``(A_b + U_b)``, i.e. the mean over all matched
      pairs of the batch.

    Parameters
    ----------
    z1, z2 : torch.Tensor
        Projections, shape ``(batch, units1, d)`` / ``(batch, units2, d)`` (normalised here).
    mask1, mask2 : torch.Tensor
        bool, False for padding.
    units1, units2 : torch.Tensor
        int64 source index of each unit (any value for padding).
    temperature : float, default: 0.2
        tau.
    scale_within_view : bool, default: True
        Divide the within-view similarities ``z1.z1`` / ``z2.z2`` by tau too (the clean version). The
        reference code does not (False reproduces it).

    Returns
    -------
    torch.Tensor
        Scalar loss. A unit whose sample has no other unit has no negatives and contributes only its
        alignment term; a batch without matched pairs gives a zero loss (still attached to the graph).
    """
    z1 = F.normalize(z1, dim=-1)
    z2 = F.normalize(z2, dim=-1)
    mask1, mask2 = mask1.bool(), mask2.bool()
    match = (units1[:, :, None] == units2[:, None, :]) & mask1[:, :, None] & mask2[:, None, :]
    pairs = match.nonzero()
    if pairs.shape[0] == 0:
        return (z1.sum() + z2.sum()) * 0.0
    tau = float(temperature)
    within = tau if scale_within_view else 1.0
    neg_inf = float("-inf")
    s12 = z1 @ z2.transpose(1, 2) / tau
    s11 = z1 @ z1.transpose(1, 2) / within
    s22 = z2 @ z2.transpose(1, 2) / within

    both = mask1[:, :, None] & mask2[:, None, :]
    s12_neg = s12.masked_fill(match | ~both, neg_inf)
    eye1 = torch.eye(z1.shape[1], dtype=torch.bool, device=z1.device)
    eye2 = torch.eye(z2.shape[1], dtype=torch.bool, device=z2.device)
    s11_neg = s11.masked_fill(eye1 | ~mask1[:, None, :], neg_inf)
    s22_neg = s22.masked_fill(eye2 | ~mask2[:, None, :], neg_inf)
    log_n = torch.log((mask1.sum(1) + mask2.sum(1)).to(z1.dtype))[:, None]

    def uniformity(rows: Tensor) -> Tensor:
        has_negative = torch.isfinite(rows).any(dim=-1)
        # rows without any negative: constant logits, so no NaN gradient; the term is zeroed below
        lse = torch.logsumexp(rows.masked_fill(~has_negative[..., None], 0.0), dim=-1)
        return torch.where(has_negative, lse - log_n, torch.zeros_like(lse))

    l1 = uniformity(torch.cat((s12_neg, s11_neg), dim=2))
    l2 = uniformity(torch.cat((s12_neg.transpose(1, 2), s22_neg), dim=2))
    b, i, j = pairs.unbind(1)
    alignment = 1.0 / tau - s12[b, i, j]
    return (alignment + 0.5 * (l1[b, i] + l2[b, j])).mean()


def _pad_units(x: Tensor, width: int, value) -> Tensor:
    extra = width - x.shape[1]
    if extra == 0:
        return x
    pad = [0, 0] * (x.dim() - 2) + [0, extra]
    return F.pad(x, pad, value=value)


def _pad_edges(x: Tensor, width: int) -> Tensor:
    extra = width - x.shape[1]
    return x if extra == 0 else F.pad(x, [0, 0, 0, extra, 0, extra])


def loss(encoder: nn.Module, projector: nn.Module, batch: ViewBatch, config: NuCLRConfig) -> Tensor:
    """Training loss of one batch: both views through the encoder in one pass, projector, contrastive loss."""
    width = max(batch.counts1.shape[1], batch.counts2.shape[1])
    counts = torch.cat((_pad_units(batch.counts1, width, 0.0), _pad_units(batch.counts2, width, 0.0)))
    mask = torch.cat((_pad_units(batch.mask1, width, False), _pad_units(batch.mask2, width, False)))
    extra = {}
    if config.context == "span":
        if batch.unit_inputs1 is None or batch.unit_inputs2 is None:
            raise ValueError(
                "a span-context NuCLR model needs span view pairs (unit_inputs); see data.sample_span_pair"
            )
        extra["unit_inputs"] = torch.cat(
            (_pad_units(batch.unit_inputs1, width, 0.0), _pad_units(batch.unit_inputs2, width, 0.0))
        )
        if config.relational:
            extra["edges"] = torch.cat((_pad_edges(batch.edges1, width), _pad_edges(batch.edges2, width)))
    z = projector(encoder(counts, mask, **extra))
    size = batch.batch_size
    units1, units2 = _pad_units(batch.units1, width, -1), _pad_units(batch.units2, width, -1)

    def view_loss(z: Tensor) -> Tensor:
        return contrastive_loss(
            z[:size], mask[:size], units1, z[size:], mask[size:], units2, temperature=config.temperature
        )

    if not config.single_unit_path:
        return view_loss(z)
    context, single = z.split(config.projector_dim, dim=-1)
    return view_loss(context) + config.single_path_weight * view_loss(single)
