"""NeurPIR: neuron intrinsic representation from single-neuron dynamics (Wu et al., ICLR 2025), in pure torch.

A reconstruction of the paper-level method (see ``shared/notes/methods.md`` §2; the paper's code is not
public and several details are unknown, marked [U] there):

* **Single-neuron encoder** (:class:`NeurPIREncoder`): each unit's binned spike counts go through a
  CEBRA-``offset10``-like 1-D temporal CNN (conv ``k=2`` -> ``channels``, three residual ``k=3`` GELU
  blocks, conv ``k=3`` -> ``dim``; valid convolutions, receptive field 10 bins), then **adaptive average
  pooling** over time gives one time-invariant vector per unit. Units are encoded independently (no
  attention across units), so ``forward(counts, unit_mask)`` has the shape contract of every method and the
  inference engine needs no change; ``max_context_units`` only exists for interface compatibility.
* **Surrounding information** (optional): with ``num_covariates = k > 0`` the encoder takes covariates
  aligned to the bins, ``covariates`` of shape ``(batch, bins, k)`` (e.g. the simulator's stimulus resampled
  to the bin width), as ``k`` extra input channels shared by every unit of a sample. Training gets them
  from the populations' :class:`~spikeinterface_neuronid.data.SpikeTrainSet` covariates (binned per window,
  carried by the :class:`ViewBatch`), and :func:`~spikeinterface_neuronid.inference.embed_populations` passes
  the segment's covariates to such a model. Calls without covariates (e.g. a sorting analyzer, which has
  no covariates) feed **zeros** in those channels.
* **Loss**: positives are the same unit in the two views of a pair (``units1`` / ``units2`` matching, as
  NuCLR); the projector (``dim -> 4 dim -> 4 dim -> 4 dim``, VICReg's MLP) output of the matched pairs goes
  into VICReg (:func:`vicreg_loss`, weights 25 / 25 / 1, gamma 1). Other neurons only act through the
  variance and covariance terms, which are computed over all matched pairs of the batch.
* **Segment-length augmentation** (:func:`crop_segments`): in :func:`loss`, view 1 and view 2 are cropped
  to independent random lengths, uniform in ``[min_segment_bins, max_segment_bins]`` (capped at the window
  length), drawn once per view per batch, at independent uniformly random positions per pair inside the
  view's window. The draws use torch's global RNG, which :func:`~spikeinterface_neuronid.training.pretrain`
  seeds, so training stays reproducible. Adaptive pooling makes the embedding independent of the length.

This module must not import SpikeInterface.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import MethodConfig, ViewBatch, check_encoder_input

__all__ = [
    "NAME",
    "NeurPIRConfig",
    "Config",
    "NeurPIREncoder",
    "build_encoder",
    "build_projector",
    "vicreg_terms",
    "vicreg_loss",
    "crop_segments",
    "matched_pairs",
    "loss",
]

NAME = "neurpir"

_INPUT_TRANSFORMS = ("counts", "log1p")

#: Receptive field of the temporal CNN in bins (conv k=2, 3 x conv k=3, conv k=3, all valid).
RECEPTIVE_FIELD_BINS = 10


@dataclass(frozen=True)
class NeurPIRConfig(MethodConfig):
    """Hyper-parameters of a NeurPIR encoder and its VICReg training loss.

    The defaults are the CPU-sized preset (:meth:`cpu`); :meth:`paper` is a larger reconstruction (the paper's
    sizes are not published).

    Parameters
    ----------
    bin_s : float, default: 0.02
        Bin width in seconds.
    token_bins : int, default: 50
        Bins per token. The encoder has no tokens; with ``window_tokens`` it only sets the window length
        (``token_bins * window_tokens`` bins) used by training and inference.
    window_tokens : int, default: 10
        Tokens per window (10 s windows at the defaults).
    dim : int, default: 32
        Output embedding width.
    channels : int, default: 32
        Hidden channels of the temporal CNN.
    num_residual_blocks : int, default: 3
        Residual ``k=3`` GELU blocks.
    projector_mult : int, default: 4
        The projector's hidden and output width is ``projector_mult * dim``.
    inv_weight, var_weight, cov_weight : float, default: 25, 25, 1
        VICReg weights (lambda, mu, nu).
    gamma : float, default: 1.0
        VICReg target standard deviation.
    eps : float, default: 1e-4
        VICReg variance epsilon.
    min_segment_bins, max_segment_bins : int, default: 100, 500
        Range of the random segment lengths (2-10 s at 20 ms bins); ``min_segment_bins`` must be at least
        the receptive field (10 bins). Lengths above the window are capped at the window length.
    num_covariates : int, default: 0
        Number of covariate channels aligned to the bins (surrounding information); 0 disables them.
    input_transform : str, default: "counts"
        ``"counts"``: raw spike counts per bin; ``"log1p"``: ``log(1 + counts)``.
    max_context_units : int, default: 512
        Units per forward pass at inference (interface compatibility; units are encoded independently, so
        it does not change the result).
    """

    label = "NeurPIR"

    bin_s: float = 0.02
    token_bins: int = 50
    window_tokens: int = 10
    dim: int = 32
    channels: int = 32
    num_residual_blocks: int = 3
    projector_mult: int = 4
    inv_weight: float = 25.0
    var_weight: float = 25.0
    cov_weight: float = 1.0
    gamma: float = 1.0
    eps: float = 1e-4
    min_segment_bins: int = 100
    max_segment_bins: int = 500
    num_covariates: int = 0
    input_transform: str = "counts"
    max_context_units: int = 512

    def __post_init__(self):
        positive = ("token_bins", "window_tokens", "dim", "channels", "projector_mult", "min_segment_bins")
        positive += ("max_segment_bins", "max_context_units")
        for name in positive + ("num_residual_blocks", "num_covariates"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"NeurPIRConfig.{name} must be an integer, got {value!r}")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"NeurPIRConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_residual_blocks", "num_covariates"):
            if getattr(self, name) < 0:
                raise ValueError(f"NeurPIRConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not (isinstance(self.bin_s, (int, float)) and math.isfinite(self.bin_s) and self.bin_s > 0):
            raise ValueError(f"NeurPIRConfig.bin_s must be a positive number of seconds, got {self.bin_s!r}")
        for name in ("inv_weight", "var_weight", "cov_weight"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"NeurPIRConfig.{name} must be a finite number >= 0, got {value!r}")
        for name in ("gamma", "eps"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"NeurPIRConfig.{name} must be a finite number > 0, got {value!r}")
        if self.min_segment_bins < RECEPTIVE_FIELD_BINS:
            raise ValueError(
                f"NeurPIRConfig.min_segment_bins must be >= {RECEPTIVE_FIELD_BINS} (the encoder's receptive "
                f"field), got {self.min_segment_bins}"
            )
        if self.max_segment_bins < self.min_segment_bins:
            raise ValueError(
                f"NeurPIRConfig.max_segment_bins ({self.max_segment_bins}) must be >= min_segment_bins "
                f"({self.min_segment_bins})"
            )
        if self.token_bins * self.window_tokens < self.min_segment_bins:
            raise ValueError(
                f"the window ({self.token_bins * self.window_tokens} bins) is shorter than min_segment_bins "
                f"({self.min_segment_bins})"
            )
        if self.input_transform not in _INPUT_TRANSFORMS:
            raise ValueError(
                f"NeurPIRConfig.input_transform must be one of {_INPUT_TRANSFORMS}, got {self.input_transform!r}"
            )

    @classmethod
    def cpu(cls, **overrides: Any) -> "NeurPIRConfig":
        """CPU-sized model: 32 channels, dim 32, projector 128."""
        return cls(**overrides)

    @classmethod
    def paper(cls, **overrides: Any) -> "NeurPIRConfig":
        """Larger reconstruction (sizes not published): 32 channels (CEBRA-like), dim 128, projector 512."""
        values = dict(dim=128, channels=32)
        values.update(overrides)
        return cls(**values)

    @property
    def projector_dim(self) -> int:
        return self.projector_mult * self.dim


#: The config class of this method (the name every method module exposes).
Config = NeurPIRConfig


# ----------------------------------------------------------------------------------------------------------
# Encoder
# ----------------------------------------------------------------------------------------------------------


class _ResidualBlock(nn.Module):
    """``x[..., 1:-1] + GELU(conv_k3(x))`` (valid convolution, the input cropped to match, as CEBRA's _Skip)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel_size=3)

    def forward(self, x: Tensor) -> Tensor:
        return x[..., 1:-1] + F.gelu(self.conv(x))


class NeurPIREncoder(nn.Module):
    """Single-neuron temporal CNN + adaptive average pooling: one vector per unit, units independent.

    ``forward(counts, unit_mask, covariates=None)`` takes ``counts`` (float32, ``(batch, units, bins)`` with
    ``bins >= 10``), ``unit_mask`` (bool, ``(batch, units)``, False = padding) and, when
    ``config.num_covariates > 0``, optional ``covariates`` of shape ``(batch, bins, num_covariates)``
    (None = zeros). It returns ``(batch, units, dim)``; rows of padded units are zero.
    """

    def __init__(self, config: NeurPIRConfig):
        super().__init__()
        self.config = config
        c = config.channels
        self.read_in = nn.Conv1d(1 + config.num_covariates, c, kernel_size=2)
        self.blocks = nn.ModuleList(_ResidualBlock(c) for _ in range(config.num_residual_blocks))
        self.read_out = nn.Conv1d(c, config.dim, kernel_size=3)
        self.pool = nn.AdaptiveAvgPool1d(1)

    @property
    def receptive_field(self) -> int:
        return 2 + 2 * len(self.blocks) + 2

    def encode_series(self, x: Tensor) -> Tensor:
        """``(n, 1 + num_covariates, bins)`` input channels -> ``(n, dim)`` pooled embedding."""
        h = F.gelu(self.read_in(x))
        for block in self.blocks:
            h = block(h)
        return self.pool(self.read_out(h)).squeeze(-1)

    def forward(self, counts: Tensor, unit_mask: Tensor, covariates: Tensor | None = None) -> Tensor:
        cfg = self.config
        batch, width, bins = check_encoder_input(counts, unit_mask)
        if bins < self.receptive_field:
            raise ValueError(f"the window has {bins} bins; the model needs at least {self.receptive_field}")
        if covariates is not None:
            if cfg.num_covariates == 0:
                raise ValueError("this model takes no covariates (num_covariates = 0)")
            if covariates.shape != (batch, bins, cfg.num_covariates):
                raise ValueError(
                    f"covariates must have shape {(batch, bins, cfg.num_covariates)}, got {tuple(covariates.shape)}"
                )
        index = unit_mask.reshape(-1).nonzero().squeeze(1)
        x = counts.reshape(batch * width, 1, bins).index_select(0, index).float()
        if cfg.input_transform == "log1p":
            x = torch.log1p(x)
        if cfg.num_covariates:
            if covariates is None:
                cov = x.new_zeros(index.shape[0], cfg.num_covariates, bins)
            else:
                sample = torch.div(index, width, rounding_mode="floor")
                cov = covariates.float().transpose(1, 2).index_select(0, sample)
            x = torch.cat((x, cov), dim=1)
        out = self.encode_series(x)
        return out.new_zeros(batch * width, cfg.dim).index_copy(0, index, out).view(batch, width, cfg.dim)


def build_encoder(config: NeurPIRConfig) -> NeurPIREncoder:
    """A freshly initialised :class:`NeurPIREncoder` (uses torch's global RNG)."""
    return NeurPIREncoder(config)


def build_projector(config: NeurPIRConfig) -> nn.Module:
    """VICReg's expander: ``dim -> 4 dim -> 4 dim -> 4 dim`` (Linear-BatchNorm-ReLU twice, then Linear)."""
    d, p = config.dim, config.projector_dim
    return nn.Sequential(
        nn.Linear(d, p),
        nn.BatchNorm1d(p),
        nn.ReLU(),
        nn.Linear(p, p),
        nn.BatchNorm1d(p),
        nn.ReLU(),
        nn.Linear(p, p),
    )


# ----------------------------------------------------------------------------------------------------------
# Loss
# ----------------------------------------------------------------------------------------------------------


def _off_diagonal(m: Tensor) -> Tensor:
    n = m.shape[0]
    return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def vicreg_terms(z1: Tensor, z2: Tensor, gamma: float = 1.0, eps: float = 1e-4) -> dict[str, Tensor]:
    """The three unweighted VICReg terms of paired embeddings ``z1``, ``z2`` of shape ``(n, d)``.

    * ``inv``: mean squared error between ``z1`` and ``z2``;
    * ``var``: per branch, the mean over dimensions of ``relu(gamma - sqrt(Var + eps))``; the two branches
      are averaged (so constant embeddings give ``gamma - sqrt(eps)``);
    * ``cov``: per branch, the sum of squared off-diagonal covariance entries divided by ``d``; the two
      branches are summed.

    Variances and covariances are unbiased (``n - 1``); ``n >= 2`` is required.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"z1 and z2 must have the same shape (n, d), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n, d = z1.shape
    if n < 2:
        raise ValueError(f"VICReg needs at least 2 pairs, got {n}")
    inv = F.mse_loss(z1, z2)
    var = z1.new_zeros(())
    cov = z1.new_zeros(())
    for z in (z1, z2):
        z = z - z.mean(dim=0)
        std = torch.sqrt(z.var(dim=0) + eps)
        var = var + F.relu(gamma - std).mean() / 2
        c = (z.T @ z) / (n - 1)
        cov = cov + _off_diagonal(c).pow(2).sum() / d
    return dict(inv=inv, var=var, cov=cov)


def vicreg_loss(
    z1: Tensor,
    z2: Tensor,
    inv: float = 25.0,
    var: float = 25.0,
    cov: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
) -> Tensor:
    """VICReg (Bardes et al. 2022): ``inv * invariance + var * variance + cov * covariance``.

    The terms are those of :func:`vicreg_terms`; the defaults are the standard weights 25 / 25 / 1, gamma 1.
    """
    terms = vicreg_terms(z1, z2, gamma=gamma, eps=eps)
    return inv * terms["inv"] + var * terms["var"] + cov * terms["cov"]


def matched_pairs(batch: ViewBatch) -> Tensor:
    """``(n, 3)`` int64 rows ``(sample, index in view 1, index in view 2)`` of the units present in both views."""
    match = (batch.units1[:, :, None] == batch.units2[:, None, :]) & batch.mask1[:, :, None] & batch.mask2[:, None, :]
    return match.nonzero()


def crop_segments(
    series: Tensor, length: int, generator: torch.Generator | None = None, covariates: Tensor | None = None
) -> Tensor | tuple[Tensor, Tensor]:
    """Crop each row of ``series`` (``(n, bins)``) to ``length`` bins at an independent uniform random start.

    With ``covariates`` (``(n, bins, k)``, row ``i`` aligned with ``series[i]``), they are cropped with the
    same segments and ``(series_crop, covariates_crop)`` is returned (the random draws are the same).
    """
    n, bins = series.shape
    length = int(length)
    if not 1 <= length <= bins:
        raise ValueError(f"segment length must be in [1, {bins}], got {length}")
    starts = torch.randint(0, bins - length + 1, (n,), generator=generator)
    index = (starts[:, None] + torch.arange(length)[None, :]).to(series.device)
    cropped = series.gather(1, index)
    if covariates is None:
        return cropped
    if covariates.dim() != 3 or covariates.shape[:2] != (n, bins):
        raise ValueError(f"covariates must have shape ({n}, {bins}, k), got {tuple(covariates.shape)}")
    k = covariates.shape[2]
    return cropped, covariates.gather(1, index[:, :, None].expand(n, length, k))


def draw_segment_length(config: NeurPIRConfig, bins: int, generator: torch.Generator | None = None) -> int:
    """A random segment length, uniform in ``[min_segment_bins, min(max_segment_bins, bins)]``."""
    hi = min(config.max_segment_bins, bins)
    lo = min(config.min_segment_bins, hi)
    return int(torch.randint(lo, hi + 1, (1,), generator=generator))


def loss(
    encoder: nn.Module,
    projector: nn.Module,
    batch: ViewBatch,
    config: NeurPIRConfig,
    generator: torch.Generator | None = None,
) -> Tensor:
    """VICReg loss of the matched units of one batch, with segment-length augmentation.

    For every unit present in both views (same source index), view 1's and view 2's counts are cropped to
    two independent random lengths (one per view, :func:`draw_segment_length`) at independent random
    positions (:func:`crop_segments`), encoded on their own, projected and compared with :func:`vicreg_loss`.
    With ``config.num_covariates > 0`` the batch's covariates of each view (``covariates1`` / ``covariates2``,
    cropped with the same segment as the counts) fill the covariate channels; a batch without covariates
    gets zeros there (and a model without covariate channels ignores a batch's covariates). ``generator`` (default:
    torch's global RNG, seeded by ``pretrain``) drives the crops. Fewer than 2 matched pairs give a zero loss
    attached to the graph.
    """
    pairs = matched_pairs(batch)
    if pairs.shape[0] < 2:
        params = [p for p in list(encoder.parameters()) + list(projector.parameters())]
        return sum(p.sum() for p in params) * 0.0
    b, i, j = pairs.unbind(1)
    series1 = batch.counts1[b, i]
    series2 = batch.counts2[b, j]
    len1 = draw_segment_length(config, series1.shape[1], generator)
    len2 = draw_segment_length(config, series2.shape[1], generator)
    use_cov = config.num_covariates > 0 and batch.covariates1 is not None and batch.covariates2 is not None
    if use_cov:
        x1, c1 = crop_segments(series1, len1, generator, covariates=batch.covariates1[b])
        x2, c2 = crop_segments(series2, len2, generator, covariates=batch.covariates2[b])
        # one sample per pair: each pair has its own covariate segment
        ones = torch.ones(x1.shape[0], 1, dtype=torch.bool, device=x1.device)
        h1 = encoder(x1[:, None], ones, c1)[:, 0]
        h2 = encoder(x2[:, None], ones, c2)[:, 0]
    else:
        x1 = crop_segments(series1, len1, generator)
        x2 = crop_segments(series2, len2, generator)
        ones = torch.ones(1, x1.shape[0], dtype=torch.bool, device=x1.device)
        h1 = encoder(x1[None], ones)[0]
        h2 = encoder(x2[None], ones)[0]
    z = projector(torch.cat((h1, h2)))
    n = h1.shape[0]
    return vicreg_loss(
        z[:n],
        z[n:],
        inv=config.inv_weight,
        var=config.var_weight,
        cov=config.cov_weight,
        gamma=config.gamma,
        eps=config.eps,
    )
