"""The hyper-parameters of NuCLR (:class:`NuCLRConfig`): architecture, span-context inputs and loss.

Imported, and documented, as :class:`spikeinterface_neuronid.methods.nuclr.NuCLRConfig`. Needs neither torch
nor SpikeInterface.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from . import MethodConfig

__all__ = ["NuCLRConfig"]

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
