"""The per-chunk sums behind :func:`~spikeinterface_neuronid.spike_stats.chunk_statistics` (pure numpy).

Each kernel fills the sums of one chunk ``[t0, t1)`` for a set of units: the single-unit sums (spike and ISI
counts, CV2, ISI histogram, autocorrelogram; :func:`single_unit_sums`), the spike-triggered counts of the
rest of the population (:func:`spike_triggered_sums`) and the lagged cross-products of the 20 ms counts of
every unit pair, without the spike pairs closer than ``coincidence_s`` (:func:`pair_sums`). The column layout
of the single-unit sums is :func:`columns`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .spike_stats import StatsSpec

__all__ = ["bin_index", "columns", "single_unit_sums", "spike_triggered_sums", "pair_sums", "remove_coincidences"]

#: Tolerance of bin assignment: a spike exactly on a bin edge (up to float rounding) goes to the later bin.
_EDGE_EPS = 1e-9


def bin_index(times: np.ndarray, bin_s: float) -> np.ndarray:
    """Bin of each spike time for bins of ``bin_s`` seconds from 0 (edges belong to the later bin).

    ``np.floor(t / bin_s)`` puts a spike at exactly ``k * bin_s`` into bin ``k - 1`` when the division rounds
    down (``0.06 / 0.02 = 2.9999999999999996``); a relative tolerance of 1e-9 of a bin fixes that.

    Parameters
    ----------
    times : np.ndarray
        Spike times in seconds.
    bin_s : float
        Bin width in seconds.

    Returns
    -------
    np.ndarray
        int64 bin indices.
    """
    return np.floor(np.asarray(times, dtype=np.float64) / bin_s + _EDGE_EPS).astype(np.int64)


def columns(spec: StatsSpec) -> dict[str, object]:
    """Columns of :attr:`ChunkStatistics.unit_sums <spikeinterface_neuronid.spike_stats.ChunkStatistics>`.

    Parameters
    ----------
    spec : StatsSpec
        The statistics settings.

    Returns
    -------
    dict
        Column index (or slice) of each sum by name, and ``"width"``, the number of columns.
    """
    k_isi = spec.isi_bins + 1
    k_acg = len(spec.acg_edges_ms) - 1
    k_pop = 2 * (len(spec.pop_edges_ms) - 1)
    start = 6
    return dict(
        spikes=0,
        isi_n=1,
        isi_sum=2,
        isi_sq=3,
        cv2_n=4,
        cv2_sum=5,
        isi_hist=slice(start, start + k_isi),
        acg=slice(start + k_isi, start + k_isi + k_acg),
        pop=slice(start + k_isi + k_acg, start + k_isi + k_acg + k_pop),
        width=start + k_isi + k_acg + k_pop,
    )


def single_unit_sums(times, t0, t1, spec, isi_edges, out, col) -> None:
    """Spike, ISI, CV2, ISI-histogram and autocorrelogram sums of each unit in ``[t0, t1)``.

    Parameters
    ----------
    times : list of np.ndarray
        Sorted spike times of each unit (rows of ``out``).
    t0, t1 : float
        The chunk.
    spec : StatsSpec
        The statistics settings.
    isi_edges : np.ndarray
        Edges of the ISI histogram, in seconds.
    out : np.ndarray
        ``(units, columns)`` sums of the chunk, filled in place.
    col : dict
        :func:`columns` of ``spec``.
    """
    acg_edges = np.asarray(spec.acg_edges_ms) / 1000.0
    for row, t in enumerate(times):
        lo, hi = np.searchsorted(t, (t0, t1), "left")
        if hi <= lo:
            continue
        out[row, col["spikes"]] = hi - lo
        # ISIs whose second spike lies in the chunk (the first may lie in the previous chunk): additive
        first = max(lo, 1)
        if hi > first:
            isi = t[first:hi] - t[first - 1 : hi - 1]
            out[row, col["isi_n"]] = isi.size
            out[row, col["isi_sum"]] = isi.sum()
            out[row, col["isi_sq"]] = np.square(isi).sum()
            out[row, col["isi_hist"]] = np.histogram(isi, bins=isi_edges)[0]
            first2 = max(lo, 2)
            if hi > first2:
                a = t[first2 - 1 : hi - 1] - t[first2 - 2 : hi - 2]
                b = t[first2:hi] - t[first2 - 1 : hi - 1]
                s = a + b
                terms = np.divide(2.0 * np.abs(b - a), s, out=np.zeros_like(s), where=s > 0)
                out[row, col["cv2_n"]] = terms.size
                out[row, col["cv2_sum"]] = terms.sum()
        # autocorrelogram: pairs whose earlier spike lies in the chunk, lags in [acg_edges[0], acg_edges[-1])
        start_idx = np.arange(lo, hi)
        stop_idx = np.searchsorted(t, t[lo:hi] + acg_edges[-1], "left")
        acg = np.zeros(acg_edges.size - 1)
        shift = 1
        while True:
            alive = start_idx + shift < stop_idx
            if not alive.any():
                break
            idx = start_idx[alive]
            lag = t[idx + shift] - t[idx]
            acg += np.histogram(lag, bins=acg_edges)[0]
            shift += 1
        out[row, col["acg"]] = acg


def spike_triggered_sums(all_times, units, t0, t1, spec, out, col) -> None:
    """Counts of the other units' spikes at 1 ms lag bins before / after each spike in ``[t0, t1)``.

    Parameters
    ----------
    all_times : list of np.ndarray
        Sorted spike times of every unit of the segment (the population).
    units : np.ndarray
        The units whose sums are filled (rows of ``out``).
    t0, t1 : float
        The chunk.
    spec : StatsSpec
        The statistics settings.
    out : np.ndarray
        ``(units, columns)`` sums of the chunk, filled in place.
    col : dict
        :func:`columns` of ``spec``.
    """
    res = 0.001
    edges = np.asarray(spec.pop_edges_ms, dtype=np.float64)
    reach = int(np.ceil(edges[-1])) + 1
    b0 = int(np.floor(t0 / res + _EDGE_EPS)) - reach
    nb = int(np.ceil(t1 / res)) + reach - b0 + 1
    hist = np.zeros(nb, dtype=np.int64)
    own_bins: dict[int, np.ndarray] = {}
    lo_t, hi_t = t0 - reach * res, t1 + reach * res
    wanted = set(int(u) for u in units)
    for u, t in enumerate(all_times):
        lo, hi = np.searchsorted(t, (lo_t, hi_t), "left")
        b = bin_index(t[lo:hi], res) - b0
        b = b[(b >= 0) & (b < nb)]
        hist += np.bincount(b, minlength=nb)
        if u in wanted:
            own_bins[u] = b
    cum = np.concatenate([[0], np.cumsum(hist)])
    lags_lo = edges[:-1].astype(np.int64)
    lags_hi = edges[1:].astype(np.int64)
    for row, u in enumerate(units):
        t = all_times[u]
        lo, hi = np.searchsorted(t, (t0, t1), "left")
        if hi <= lo:
            continue
        b = bin_index(t[lo:hi], res) - b0
        own = own_bins[int(u)]
        own_hist = np.bincount(own, minlength=nb)
        own_cum = np.concatenate([[0], np.cumsum(own_hist)])
        pre, post = [], []
        for a, z in zip(lags_lo, lags_hi):
            # post: bins b + a .. b + z - 1 ; pre: bins b - z + 1 .. b - a
            post.append(((cum[b + z] - cum[b + a]) - (own_cum[b + z] - own_cum[b + a])).sum())
            pre.append(((cum[b - a + 1] - cum[b - z + 1]) - (own_cum[b - a + 1] - own_cum[b - z + 1])).sum())
        out[row, col["pop"]] = np.concatenate([pre[::-1], post])


def pair_sums(times, t0, t1, spec, out_pairs, out_counts) -> None:
    """Lagged cross-products of the 20 ms counts of the chunk, minus spike pairs closer than coincidence_s.

    Parameters
    ----------
    times : list of np.ndarray
        Sorted spike times of each unit.
    t0, t1 : float
        The chunk (on the ``pair_bin_s`` grid).
    spec : StatsSpec
        The statistics settings.
    out_pairs : np.ndarray
        float32 ``(units, units, num_lags)``, filled in place.
    out_counts : np.ndarray
        ``(units, 3)``: number of bins, sum and sum of squares of each unit's counts, filled in place.
    """
    b = spec.pair_bin_s
    lag = spec.max_lag_bins
    m = spec.segment_bins
    n = len(times)
    k0 = int(round(t0 / b))
    k1 = int(round(t1 / b))
    nbins = k1 - k0
    if nbins <= 0 or n == 0:
        return
    nseg = -(-nbins // m)
    # a: the chunk's bins (zero past its end); b_ext: lag bins before and after too (real data)
    ext0, ext_len = k0 - lag, nseg * m + 2 * lag
    pieces, rows = [], []
    for i, t in enumerate(times):
        lo, hi = np.searchsorted(t, (ext0 * b - 1e-12, (ext0 + ext_len) * b), "left")
        pieces.append(bin_index(t[lo:hi], b) - ext0)
        rows.append(np.full(hi - lo, i, dtype=np.int64))
    idx = np.concatenate(pieces)
    row = np.concatenate(rows)
    ok = (idx >= 0) & (idx < ext_len)
    bext = np.bincount(row[ok] * ext_len + idx[ok], minlength=n * ext_len).reshape(n, ext_len).astype(np.float32)
    a = np.zeros((n, nseg * m), dtype=np.float32)
    a[:, :nbins] = bext[:, lag : lag + nbins]
    out_counts[:, 0] = nbins
    out_counts[:, 1] = a.sum(axis=1)
    out_counts[:, 2] = np.square(a).sum(axis=1)
    size = 2 * m  # >= m + 2 lag
    a_pad = np.zeros((n, nseg, size), dtype=np.float32)
    a_pad[:, :, lag : lag + m] = a.reshape(n, nseg, m)
    b_idx = np.arange(nseg)[:, None] * m + np.arange(m + 2 * lag)[None, :]
    b_pad = np.zeros((n, nseg, size), dtype=np.float32)
    b_pad[:, :, : m + 2 * lag] = bext[:, b_idx]
    fa = np.fft.rfft(a_pad, axis=2).astype(np.complex64)  # (n, nseg, F)
    fb = np.fft.rfft(b_pad, axis=2).astype(np.complex64)
    # cross-spectrum summed over segments, one complex matrix product per frequency
    spec_ij = np.ascontiguousarray(np.conj(fa).transpose(2, 0, 1)) @ np.ascontiguousarray(fb.transpose(2, 1, 0))
    r = np.fft.irfft(spec_ij, n=size, axis=0)  # (size, n, n): r[l] = sum_p a_i(p) b_j(p + l)
    lags = np.arange(-lag, lag + 1) % size
    out_pairs[...] = np.moveaxis(r[lags], 0, 2)
    remove_coincidences(times, t0, t1, k0, nbins, spec, out_pairs)


def remove_coincidences(times, t0, t1, k0, nbins, spec, out_pairs) -> None:
    """Subtract the spike pairs of two different units at most ``coincidence_s`` apart from the lag sums.

    Parameters
    ----------
    times : list of np.ndarray
        Sorted spike times of each unit.
    t0, t1 : float
        The chunk.
    k0 : int
        Index of the chunk's first ``pair_bin_s`` bin.
    nbins : int
        Bins of the chunk.
    spec : StatsSpec
        The statistics settings.
    out_pairs : np.ndarray
        float32 ``(units, units, num_lags)`` lag sums, corrected in place.
    """
    w = spec.coincidence_s
    if w <= 0:
        return
    b = spec.pair_bin_s
    lag = spec.max_lag_bins
    chunk_t, chunk_u = [], []
    for i, t in enumerate(times):
        lo, hi = np.searchsorted(t, (t0 - w, t1 + w), "left")
        chunk_t.append(t[lo:hi])
        chunk_u.append(np.full(hi - lo, i, dtype=np.int64))
    if not chunk_t:
        return
    t_all = np.concatenate(chunk_t)
    u_all = np.concatenate(chunk_u)
    order = np.argsort(t_all, kind="stable")
    t_all, u_all = t_all[order], u_all[order]
    bins = bin_index(t_all, b) - k0
    in_chunk = (bins >= 0) & (bins < nbins)
    flat = []
    num_lags = 2 * lag + 1
    # spike p's partners are p + 1, p + 2, ... while within w; once t[p + shift] - t[p] > w, no later
    # shift can be close again (times are sorted), so only the still-close spikes are carried on
    active = np.arange(t_all.size - 1)
    shift = 1
    while active.size:
        q = active + shift
        close = t_all[q] - t_all[active] <= w + 1e-12
        p, q = active[close], q[close]
        active = p[p + shift + 1 < t_all.size]
        other = u_all[p] != u_all[q]
        p, q = p[other], q[other]
        d = bins[q] - bins[p]
        ok = np.abs(d) <= lag
        for src, dst, dl in ((p, q, d), (q, p, -d)):
            sel = ok & in_chunk[src]
            flat.append((u_all[src[sel]] * len(times) + u_all[dst[sel]]) * num_lags + dl[sel] + lag)
        shift += 1
    if flat:
        found = np.bincount(np.concatenate(flat), minlength=out_pairs.size).reshape(out_pairs.shape)
        out_pairs -= found.astype(np.float32)
