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

Here: the encoder, the projector and the loss; the building blocks of the encoder are in
:mod:`~spikeinterface_neuronid.methods.nuclr_layers` and :mod:`~spikeinterface_neuronid.methods.relational`.

This module must not import SpikeInterface.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import ViewBatch, check_encoder_input
from ._nuclr_config import NuCLRConfig
from .nuclr_layers import (
    RotaryTime,
    SpatioTemporalBlock,
    TemporalBlock,
    TwoPathProjector,
    UnitLayout,
    mlp_projector,
    read_in_mlp,
)
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

#: The config class of this method (the name every method module exposes).
Config = NuCLRConfig


# ----------------------------------------------------------------------------------------------------------
# Encoder
# ----------------------------------------------------------------------------------------------------------


#: Sequences per step of the temporal blocks at inference (intermediate activations of a few MB, kept in cache).
_INFERENCE_ROWS = 1024


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
                self.waveform_read_in = read_in_mlp(self.num_waveform_inputs, dim)
                self.waveform_missing = nn.Parameter(torch.zeros(dim))
            stats = config.num_unit_inputs - (self.num_waveform_inputs + 1 if config.waveform_channel else 0)
            self.num_stats_inputs = stats
            self.unit_read_in = read_in_mlp(stats, dim)
            if config.single_unit_path:
                # the single-unit tower reads the unit's own statistics (the population columns, log number of
                # units and spike-triggered population rate, come after them) and its own waveform encoder
                from ..spike_stats import num_unit_features

                self.num_own_inputs = num_unit_features(config.stats_spec, relational=False) - 1
                self.single_read_in = read_in_mlp(self.num_own_inputs, dim)
                if config.waveform_channel:
                    self.single_waveform_read_in = read_in_mlp(self.num_waveform_inputs, dim)
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
        layout = UnitLayout(unit_mask, num_tokens)
        x = counts.reshape(batch * width, num_tokens, cfg.token_bins).index_select(0, layout.index).float()
        if cfg.input_transform == "log1p":
            x = torch.log1p(x)
        rotary = self.rotary(num_tokens, x.device)
        if len(self.spatiotemporal_blocks) == 0 and not torch.is_grad_enabled():
            # each (unit, window) sequence is independent of the others: small groups of sequences keep the
            # intermediate activations in cache (faster, same result up to float rounding)
            x = torch.cat([self._temporal(part, rotary, layout) for part in x.split(_INFERENCE_ROWS)])
        else:
            x = self._temporal(x, rotary, layout)
            for block in self.spatiotemporal_blocks:
                x = block(x, rotary, layout)
        out = x.mean(dim=1)
        return out.new_zeros(batch * width, cfg.dim).index_copy(0, layout.index, out).view(batch, width, cfg.dim)

    def _temporal(self, x: Tensor, rotary: tuple[Tensor, Tensor], layout: UnitLayout) -> Tensor:
        """Read-in and temporal blocks of packed sequences ``(rows, tokens, token_bins)`` -> ``(rows, tokens, dim)``."""
        x = self.read_in(x)
        for block in self.temporal_blocks:
            x = block(x, rotary, layout)
        return x

    def forward(
        self, counts: Tensor, unit_mask: Tensor, unit_inputs: Tensor | None = None, edges: Tensor | None = None
    ) -> Tensor:
        cfg = self.config
        batch, width, bins = check_encoder_input(counts, unit_mask)
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


def grow_init_state(
    init_config: NuCLRConfig, config: NuCLRConfig, encoder_state: dict, projector_state: dict | None
) -> tuple[dict, dict | None]:
    """Weights of a model without the single-unit path, named for the same model with it.

    The encoder's names are unchanged (the tower adds modules); the projector becomes the ``context`` half of
    a :class:`~spikeinterface_neuronid.methods.nuclr_layers.TwoPathProjector`. Used by
    ``pretrain(init=..., freeze_init=True)`` to train a single-unit tower onto a trained population-context
    model."""
    if config.single_unit_path and not init_config.single_unit_path and projector_state is not None:
        projector_state = {f"context.{name}": value for name, value in projector_state.items()}
    return encoder_state, projector_state


def build_projector(config: NuCLRConfig) -> nn.Module:
    """Training projector: ``LayerNorm -> Linear -> ReLU -> Linear`` (``embedding_dim -> projector_dim ->
    projector_dim``); with the single-unit path a
    :class:`~spikeinterface_neuronid.methods.nuclr_layers.TwoPathProjector`."""
    if config.single_unit_path:
        return TwoPathProjector(config)
    return mlp_projector(config.dim, config.projector_dim)


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
