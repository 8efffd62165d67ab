"""Covariates (surrounding information) from an NWB file's behaviour and trials, for models trained with them.

:func:`~spikeinterface_neuronid.nwb.read_nwb_covariates` turns a file's behavioural time series
(``processing["behavior"]``) and trials table into covariates on a regular time grid, the surrounding
information of models trained with covariates (NeurPIR with ``num_covariates > 0``); :func:`file_covariates`
gives those of a file for a model, as ``neuronid annotate`` and ``neuronid label`` pass them.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .io import _import_pynwb, _nwb_io

__all__ = ["read_nwb_covariates", "NWBCovariates", "file_covariates"]


#: Name of the trials-indicator covariate channel (1 inside a trial, 0 outside).
TRIALS_SOURCE = "trials"
#: Name of padding channels (zeros) when a file offers fewer covariates than the model takes.
PADDING_CHANNEL = "zeros"


@dataclass
class NWBCovariates:
    """Covariates read from an NWB file, on a regular time grid (see :func:`read_nwb_covariates`).

    Attributes
    ----------
    values : np.ndarray
        float32, ``(n_samples, k)``; sample ``i`` covers ``[t_start + i / rate_hz, t_start + (i + 1) / rate_hz)``
        in the file's time base. Pass it with ``rate_hz`` as ``compute("neuron_embedding", covariates=values,
        covariate_rate_hz=rate_hz)``.
    rate_hz : float
        Sampling rate of the grid.
    t_start : float
        Time (s, NWB session time) of the grid's first sample; the segment start of the analyzer.
    channels : list of str
        Name of each column: ``behavior/<interface>/<series>[j]`` (column ``j`` of a TimeSeries), ``trials``
        (the trials indicator), or ``zeros`` (padding).
    available : list of str
        Every source the file offers, in the order they are chosen (series paths and ``trials``).
    notes : list of str
        What was chosen, dropped or padded (also emitted as warnings).
    """

    values: np.ndarray
    rate_hz: float
    t_start: float
    channels: list[str]
    available: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def num_covariates(self) -> int:
        """Number of channels ``k``."""
        return int(self.values.shape[1])

    @property
    def is_padding_only(self) -> bool:
        """True when no channel comes from the file (all are zeros padding)."""
        return all(c == PADDING_CHANNEL for c in self.channels)


def _behavior_series(nwbfile) -> dict:
    """``{"behavior/<iface>[/<series>]": TimeSeries}`` of the behaviour processing module, sorted by path."""
    from pynwb import TimeSeries
    from pynwb.misc import IntervalSeries

    module = None
    for name, mod in nwbfile.processing.items():
        if name.lower() in ("behavior", "behaviour"):
            module = mod
            break
    found = {}
    if module is None:
        return found
    for iname in sorted(module.data_interfaces):
        iface = module.data_interfaces[iname]
        if isinstance(iface, TimeSeries):
            found[f"behavior/{iname}"] = iface
            continue
        for child in sorted(getattr(iface, "children", []) or [], key=lambda c: c.name):
            if isinstance(child, TimeSeries):
                found[f"behavior/{iname}/{child.name}"] = child
    return {k: v for k, v in found.items() if not isinstance(v, IntervalSeries)}  # on/off events, not a signal


def _series_samples(ts) -> tuple[np.ndarray, np.ndarray] | None:
    """``(times, values (n, c))`` of a TimeSeries in seconds and data units, or None when not a numeric 1-D/2-D."""
    values = np.asarray(ts.data[:])
    if values.ndim not in (1, 2) or values.shape[0] == 0 or not np.issubdtype(values.dtype, np.number):
        return None
    values = values.reshape(values.shape[0], -1).astype(np.float64)
    conversion = getattr(ts, "conversion", 1.0)
    offset = getattr(ts, "offset", 0.0)
    values = values * (1.0 if conversion is None else float(conversion)) + (0.0 if offset is None else float(offset))
    if ts.timestamps is not None:
        times = np.asarray(ts.timestamps[:], dtype=np.float64)
    else:
        times = float(ts.starting_time or 0.0) + np.arange(values.shape[0]) / float(ts.rate)
    if times.shape[0] != values.shape[0]:
        n = min(times.shape[0], values.shape[0])
        times, values = times[:n], values[:n]
    order = np.argsort(times, kind="stable")
    return times[order], values[order]


def _resample(times: np.ndarray, values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Mean of the (finite) samples in each ``[edges[i], edges[i + 1])``; linear interpolation for empty bins.

    Bins before the first or after the last finite sample hold the nearest value (``np.interp``).
    """
    n_bins = edges.shape[0] - 1
    out = np.zeros((n_bins, values.shape[1]), dtype=np.float64)
    idx = np.searchsorted(times, edges - 1e-9, side="left")  # a sample on an edge (up to rounding) starts a bin
    centres = (edges[:-1] + edges[1:]) / 2
    for c in range(values.shape[1]):
        col = values[:, c]
        finite = np.isfinite(col)
        if not finite.any():
            continue  # left at zero
        csum = np.concatenate([[0.0], np.cumsum(np.where(finite, col, 0.0))])
        ccount = np.concatenate([[0], np.cumsum(finite)])
        counts = ccount[idx[1:]] - ccount[idx[:-1]]
        full = counts > 0
        out[full, c] = (csum[idx[1:]][full] - csum[idx[:-1]][full]) / counts[full]
        if not np.all(full):
            out[~full, c] = np.interp(centres[~full], times[finite], col[finite])
    return out


def _trials_indicator(nwbfile, edges: np.ndarray) -> np.ndarray | None:
    """Fraction of each bin covered by a trial (1 inside, 0 outside), or None without a usable trials table."""
    trials = getattr(nwbfile, "trials", None)
    if trials is None or len(trials.id) == 0 or not {"start_time", "stop_time"} <= set(trials.colnames):
        return None
    start = np.asarray(trials["start_time"].data[:], dtype=np.float64)
    stop = np.asarray(trials["stop_time"].data[:], dtype=np.float64)
    ok = np.isfinite(start) & np.isfinite(stop) & (stop > start)
    lo, hi = edges[:-1], edges[1:]
    covered = np.zeros(lo.shape[0], dtype=np.float64)
    for a, b in zip(start[ok], stop[ok]):
        first, last = np.searchsorted(hi, a, side="right"), np.searchsorted(lo, b, side="left")
        if last > first:
            sl = slice(first, last)
            covered[sl] += np.clip(np.minimum(hi[sl], b) - np.maximum(lo[sl], a), 0.0, None)
    return np.clip(covered / (hi - lo), 0.0, 1.0)


def read_nwb_covariates(
    nwb,
    num_covariates: int | None,
    *,
    duration: float,
    t_start: float = 0.0,
    rate_hz: float = 50.0,
    sources: Sequence[str] | None = None,
    standardize: bool = True,
) -> NWBCovariates:
    """Covariates (surrounding information) of an NWB file on a regular grid, for a model trained with them.

    Candidate channels, in this order:

    1. every numeric 1-D or 2-D ``TimeSeries`` (``SpatialSeries`` included) of the processing module
       ``"behavior"``, directly in it or inside a container such as ``Position`` or ``BehavioralTimeSeries``,
       sorted by path ``behavior/<interface>[/<series>]``; a 2-D series gives one channel per column;
    2. ``trials``: a stimulus/task indicator from the trials table's ``start_time`` / ``stop_time`` (the
       fraction of each grid sample inside a trial: 1 during trials, 0 between them).

    Each channel is resampled onto the grid (the mean of the series' samples within each grid sample; linear
    interpolation where a grid sample holds none; the first / last value before / after the series). The grid
    spans ``[t_start, t_start + duration)`` at ``rate_hz``.

    Parameters
    ----------
    nwb : str | Path | pynwb.NWBFile
        An NWB file (HDF5 or Zarr; opened read-only) or an already read ``NWBFile``.
    num_covariates : int | None
        The number of channels the model takes (``bundle.config.num_covariates``). When the file offers more,
        the first ones (in the order above, or of ``sources``) are kept; when it offers fewer, zero channels are
        appended. Both cases warn. None: every available channel, no padding.
    duration : float
        Length of the grid in seconds (the analyzer's segment duration).
    t_start : float, default: 0.0
        NWB session time (s) of the grid's first sample: the time that is 0 for the analyzer's spike trains.
    rate_hz : float, default: 50.0
        Grid rate; 50 Hz is one sample per 20 ms bin of the shipped models.
    sources : sequence of str | None, default: None
        Sources to use, in this order, by path as listed in :attr:`NWBCovariates.available` (e.g.
        ``["behavior/Position/position", "trials"]``). None: all, in the order above.
    standardize : bool, default: True
        Z-score each channel over the grid (a constant channel becomes 0). Behavioural signals come in
        arbitrary units (cm, degrees, pixels); the trials indicator is standardised too.

    Returns
    -------
    NWBCovariates
        ``values`` (float32, ``(ceil(duration * rate_hz), k)``), ``rate_hz``, ``t_start``, channel names,
        the available sources and notes.

    Raises
    ------
    ValueError
        A bad ``duration``, ``rate_hz`` or ``num_covariates``, or a name in ``sources`` that the file does not
        offer (the error lists the available ones).

    Warns
    -----
    UserWarning
        When channels are dropped or zero channels padded (including a file with no behaviour and no trials).
    """
    if not (np.isfinite(duration) and duration > 0):
        raise ValueError(f"duration must be a positive number of seconds, got {duration!r}")
    if not (np.isfinite(rate_hz) and rate_hz > 0):
        raise ValueError(f"rate_hz must be a positive number of Hz, got {rate_hz!r}")
    if num_covariates is not None and (isinstance(num_covariates, bool) or int(num_covariates) < 1):
        raise ValueError(f"num_covariates must be a positive integer or None, got {num_covariates!r}")
    kwargs = dict(duration=duration, t_start=t_start, rate_hz=rate_hz, sources=sources, standardize=standardize)
    if isinstance(nwb, (str, os.PathLike)):
        _import_pynwb()
        with _nwb_io(nwb, "r", load_namespaces=True) as io:
            out = _nwbfile_covariates(io.read(), num_covariates, **kwargs)
        out.notes = [f"{nwb}: {note}" for note in out.notes]
    else:
        out = _nwbfile_covariates(nwb, num_covariates, **kwargs)
    for note in out.notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    return out


def _nwbfile_covariates(nwb, num_covariates, *, duration, t_start, rate_hz, sources, standardize) -> NWBCovariates:
    n = int(np.ceil(duration * rate_hz - 1e-6))
    edges = t_start + np.arange(n + 1, dtype=np.float64) / rate_hz
    series = _behavior_series(nwb)
    trials = _trials_indicator(nwb, edges)
    available = list(series) + ([TRIALS_SOURCE] if trials is not None else [])
    if sources is None:
        chosen = available
    else:
        sources = [sources] if isinstance(sources, str) else list(sources)
        unknown = [s for s in sources if s not in available]
        if unknown:
            raise ValueError(
                f"covariate source(s) {unknown} not in the NWB file; available: {available or 'none'} "
                "(numeric TimeSeries of processing['behavior'] and 'trials')"
            )
        chosen = sources
    columns, names, notes = [], [], []
    for name in chosen:
        if name == TRIALS_SOURCE:
            columns.append(trials[:, None])
            names.append(TRIALS_SOURCE)
            continue
        samples = _series_samples(series[name])
        if samples is None:
            notes.append(f"skipped {name}: not a numeric 1-D or 2-D time series")
            continue
        times, values = samples
        columns.append(_resample(times, values, edges))
        names.extend([f"{name}[{j}]" for j in range(values.shape[1])])
    values = np.concatenate(columns, axis=1) if columns else np.zeros((n, 0))
    if num_covariates is not None:
        k = int(num_covariates)
        if values.shape[1] > k:
            notes.append(
                f"the file offers {values.shape[1]} covariate channels ({', '.join(names)}) but the model takes {k}: "
                f"using {', '.join(names[:k])} and dropping the rest (choose with sources=)"
            )
            values, names = values[:, :k], names[:k]
        elif values.shape[1] < k:
            what = (
                f"only {values.shape[1]} covariate channel(s) ({', '.join(names)})"
                if names
                else "no behavioural time series (processing['behavior']) and no trials table"
            )
            notes.append(
                f"the file offers {what} but the model was trained with {k} covariates: "
                f"{k - values.shape[1]} channel(s) of zeros are appended"
            )
            values = np.concatenate([values, np.zeros((n, k - values.shape[1]))], axis=1)
            names = names + [PADDING_CHANNEL] * (k - len(names))
    if standardize and values.shape[1]:
        real = np.array([c != PADDING_CHANNEL for c in names])
        mean, std = values.mean(axis=0), values.std(axis=0)
        scale = np.where(std > 0, std, 1.0)
        values = np.where(real, (values - mean) / scale, values)
        values[:, real & (std == 0)] = 0.0
    return NWBCovariates(
        values=values.astype(np.float32),
        rate_hz=float(rate_hz),
        t_start=float(t_start),
        channels=names,
        available=available,
        notes=notes,
    )


def file_covariates(source, model, covariates, *, t_start: float, duration: float):
    """The covariates of an NWB file for a model, or None when the model is to be given none.

    Parameters
    ----------
    source : str | Path
        The NWB file.
    model : str | Path
        The model (``"default"`` or a model file); its ``config.num_covariates`` is the number of channels.
    covariates : "auto" | sequence of str | None
        ``"auto"``: the file's channels, in the order of :func:`~spikeinterface_neuronid.nwb.read_nwb_covariates`
        (None for a model without covariates). A sequence: those sources, by path. None: none.
    t_start : float
        NWB session time (s) of the analyzer's first frame.
    duration : float
        Seconds spanned by the analyzer.

    Returns
    -------
    NWBCovariates | None
        On the model's bins (``1 / config.bin_s`` Hz); None when no covariates are to be given, or when the file
        offers none (the embedding then warns that zeros are used).

    Raises
    ------
    ValueError
        ``covariates`` is another string, or names sources for a model that takes no covariates; from
        :func:`~spikeinterface_neuronid.nwb.read_nwb_covariates`, a source the file does not offer.

    Warns
    -----
    UserWarning
        Those of :func:`~spikeinterface_neuronid.nwb.read_nwb_covariates` (channels dropped or padded), except
        when the file offers no channel at all.
    """
    from ..models import resolve_model

    bundle = resolve_model(str(model))
    k = int(getattr(bundle.config, "num_covariates", 0) or 0)
    if covariates is None or (isinstance(covariates, str) and covariates == "auto" and k == 0):
        return None
    if isinstance(covariates, str) and covariates != "auto":
        raise ValueError(f"covariates must be 'auto', a list of source names or None, got {covariates!r}")
    if k == 0:
        raise ValueError(
            f"covariate sources {list(covariates)} were given but the model '{bundle.name}' takes no covariates"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cov = read_nwb_covariates(
            source,
            k,
            duration=duration,
            t_start=t_start,
            rate_hz=1.0 / float(bundle.config.bin_s),
            sources=None if isinstance(covariates, str) else list(covariates),
        )
    if cov.is_padding_only:  # nothing in the file: the compute warns that zeros are used
        return None
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return cov
