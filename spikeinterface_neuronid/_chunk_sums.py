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
    lo_t, hi_t = t0 - reach * res, t1 + reach * res
    distinct, row_of = np.unique(np.asarray(units, dtype=np.int64), return_inverse=True)
    pieces, piece_times = [], []
    for t in all_times:
        lo, hi = np.searchsorted(t, (lo_t, hi_t), "left")
        b = bin_index(t[lo:hi], res) - b0
        keep = (b >= 0) & (b < nb)
        pieces.append(b[keep])
        piece_times.append(t[lo:hi][keep])
    hist = np.bincount(np.concatenate(pieces), minlength=nb) if pieces else np.zeros(nb, dtype=np.int64)
    cum = np.concatenate([[0], np.cumsum(hist)])
    own = [pieces[u] for u in distinct]
    own_time = [piece_times[u] for u in distinct]
    own_unit = [np.full(pieces[u].size, k, dtype=np.int64) for k, u in enumerate(distinct)]
    lags_lo = edges[:-1].astype(np.int64)
    lags_hi = edges[1:].astype(np.int64)
    num = lags_lo.size
    if not own:
        return
    bins = np.concatenate(own)  # sorted within each unit
    unit = np.concatenate(own_unit)
    times = np.concatenate(own_time)
    in_chunk = (times >= t0) & (times < t1)
    # all spikes of the population in the lag bins of each spike of the chunk:
    # post: bins b + a .. b + z - 1 ; pre: bins b - z + 1 .. b - a
    b, u_in = bins[in_chunk], unit[in_chunk]
    pre = np.zeros((distinct.size, num))
    post = np.zeros((distinct.size, num))
    for k, (a, z) in enumerate(zip(lags_lo, lags_hi)):
        post[:, k] = np.bincount(u_in, weights=cum[b + z] - cum[b + a], minlength=distinct.size)
        pre[:, k] = np.bincount(u_in, weights=cum[b - a + 1] - cum[b - z + 1], minlength=distinct.size)
    # minus the unit's own spikes there: pairs of its spikes (i, j > i) at bin distance d in some lag bin count
    # in the post lags of i and the pre lags of j
    lag_bin = np.full(int(lags_hi.max()) if num else 0, -1, dtype=np.int64)
    for k, (a, z) in enumerate(zip(lags_lo, lags_hi)):
        lag_bin[a:z] = k
    own_post, own_pre = [], []
    alive = np.arange(bins.size)
    shift = 1
    while alive.size:
        alive = alive[alive + shift < bins.size]
        j = alive + shift
        d = bins[j] - bins[alive]
        near = (unit[j] == unit[alive]) & (d < lag_bin.size)
        alive, j, d = alive[near], j[near], d[near]
        k = lag_bin[d]
        counted = k >= 0
        own_post.append((unit[alive] * num + k)[counted & in_chunk[alive]])
        own_pre.append((unit[j] * num + k)[counted & in_chunk[j]])
        shift += 1
    size = distinct.size * num
    post -= np.bincount(np.concatenate(own_post), minlength=size).reshape(distinct.size, num)
    pre -= np.bincount(np.concatenate(own_pre), minlength=size).reshape(distinct.size, num)
    out[:, col["pop"]] = np.concatenate([pre[:, ::-1], post], axis=1)[row_of]


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
    # Segments of m bins of a (one per row) against the m + 2 lag bins of b around them; the correlation at the
    # lags |l| <= lag is circular correlation of length size = m + 2 lag without wrap-around. The short real
    # DFTs are matrix products (faster than FFT calls on short rows), the cross-spectrum summed over segments
    # is one complex matrix product per frequency, and only the 2 lag + 1 wanted lags are transformed back.
    size = m + 2 * lag
    dft_a, dft_b, inverse = _dft_matrices(m, lag)
    fa = (a.reshape(n * nseg, m) @ dft_a).view(np.complex64).reshape(n, nseg, -1)  # (n, nseg, F)
    head = bext[:, : nseg * m].reshape(n * nseg, m)
    fb = head @ dft_b[:m]
    if lag:  # the 2 lag bins after each segment's first m
        tail = np.lib.stride_tricks.sliding_window_view(bext[:, m:], 2 * lag, axis=1)[:, ::m]
        fb += tail.reshape(n * nseg, 2 * lag) @ dft_b[m:size]
    fb = fb.view(np.complex64).reshape(n, nseg, -1)
    fa = np.ascontiguousarray(np.conj(fa).transpose(2, 0, 1))  # (F, n, nseg)
    fb = np.ascontiguousarray(fb.transpose(2, 1, 0))  # (F, nseg, n)
    num_freqs = fa.shape[0]
    inverse = inverse.reshape(inverse.shape[0], 2 * num_freqs)
    for first in range(0, n, _PAIR_ROWS):  # blocks of rows i: temporaries of a few MB
        rows = slice(first, min(first + _PAIR_ROWS, n))
        # cross-spectrum summed over segments, one complex matrix product per frequency: (F, rows, n)
        spec_ij = fa[:, rows] @ fb
        # r[l] = sum_p a_i(p) b_j(p + l) at the wanted lags: a real linear map of the spectrum's real and
        # imaginary parts
        parts = spec_ij.view(np.float32).reshape(num_freqs, -1, 2).transpose(0, 2, 1).reshape(2 * num_freqs, -1)
        out_pairs[rows] = (inverse @ parts).T.reshape(spec_ij.shape[1], n, -1)
    remove_coincidences(times, t0, t1, k0, nbins, spec, out_pairs)


_DFT_CACHE: dict = {}

#: Rows (units) per block of the cross-spectrum in :func:`pair_sums`.
_PAIR_ROWS = 32


def _dft_matrices(m: int, lag: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Real DFT matrices of :func:`pair_sums` for segments of ``m`` bins and ``lag`` lag bins (cached).

    Returns
    -------
    dft_a : np.ndarray
        float32 ``(m, 2 F)``: a segment's ``m`` bins (at positions ``lag .. lag + m - 1`` of the length
        ``size = m + 2 lag`` circle) to its ``F = size // 2 + 1`` DFT coefficients, real and imaginary
        parts interleaved (so the product viewed as complex64 is the DFT).
    dft_b : np.ndarray
        float32 ``(size, 2 F)``: the same for the ``size`` bins around the segment (positions ``0 .. size - 1``).
    inverse : np.ndarray
        float32 ``(2 lag + 1, F, 2)``: weights of the real and imaginary parts of a cross-spectrum giving
        its inverse DFT at the lags ``-lag .. lag``.
    """
    key = (m, lag)
    if key not in _DFT_CACHE:
        size = m + 2 * lag
        freqs = np.arange(size // 2 + 1)
        angle = -2.0 * np.pi * np.outer(np.arange(size), freqs) / size  # (size, F), float64
        dft = np.stack([np.cos(angle), np.sin(angle)], axis=2).reshape(size, -1)
        # Hermitian symmetry: the frequencies strictly between 0 and size / 2 count twice
        weight = np.where((freqs == 0) | (2 * freqs == size), 1.0, 2.0) / size
        theta = 2.0 * np.pi * np.outer(np.arange(-lag, lag + 1), freqs) / size  # (L, F)
        inverse = np.stack([weight * np.cos(theta), -weight * np.sin(theta)], axis=2)
        _DFT_CACHE[key] = (
            np.ascontiguousarray(dft[lag : lag + m], dtype=np.float32),
            np.ascontiguousarray(dft, dtype=np.float32),
            np.ascontiguousarray(inverse, dtype=np.float32),
        )
    return _DFT_CACHE[key]


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
    # spikes at most w apart are at most reach bins apart: only the lags -reach .. reach are corrected (a small
    # histogram instead of one over all the lags of all pairs)
    reach = min(lag, int(np.floor(w / b)) + 1)
    width = 2 * reach + 1
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
        ok = np.abs(d) <= reach
        for src, dst, dl in ((p, q, d), (q, p, -d)):
            sel = ok & in_chunk[src]
            flat.append((u_all[src[sel]] * len(times) + u_all[dst[sel]]) * width + dl[sel] + reach)
        shift += 1
    if flat:
        n = len(times)
        found = np.bincount(np.concatenate(flat), minlength=n * n * width).reshape(n, n, width)
        out_pairs[:, :, lag - reach : lag + reach + 1] -= found.astype(np.float32)
