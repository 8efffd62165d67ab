"""The inference-speed paths against slow, obvious references: pair sums, spike-triggered sums, window binning,
rotary attention with folded weights and the chunked temporal encoder."""

import numpy as np
import pytest
import torch

from spikeinterface_neuronid import _chunk_sums
from spikeinterface_neuronid._chunk_sums import bin_index, columns
from spikeinterface_neuronid.data import SpikeTrainSet
from spikeinterface_neuronid.methods import nuclr
from spikeinterface_neuronid.methods.nuclr import NuCLRConfig, build_encoder
from spikeinterface_neuronid.methods.nuclr_layers import Attention, RotaryTime
from spikeinterface_neuronid.spike_stats import StatsSpec


def _trains(seed: int, rates, duration: float) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for rate in rates:
        t = np.sort(rng.uniform(0, duration, rng.poisson(rate * duration)))
        if rate > 20:  # bursts: spikes 1-3 ms apart, so a unit's own spikes fall in its spike-triggered lag bins
            t = np.sort(np.concatenate([t, t[::4] + rng.uniform(0.001, 0.003, t[::4].size)]))
        out.append(t[t < duration])
    return out


@pytest.mark.parametrize("t0, t1", [(0.0, 7.0), (2.0, 5.3)])
def test_pair_sums_equal_the_direct_lagged_products(t0, t1):
    duration = 8.0
    times = _trains(0, [3.0, 12.0, 40.0, 0.0, 25.0], duration)
    spec = StatsSpec(coincidence_s=0.0, segment_bins=32, max_lag_bins=9)
    n, lag, b = len(times), spec.max_lag_bins, spec.pair_bin_s
    pairs = np.zeros((n, n, 2 * lag + 1), dtype=np.float32)
    counts = np.zeros((n, 3))
    _chunk_sums.pair_sums(times, t0, t1, spec, pairs, counts)
    k0, k1 = int(round(t0 / b)), int(round(t1 / b))
    total = int(np.ceil(duration / b)) + 2 * lag + 2
    hist = np.zeros((n, total))
    for i, t in enumerate(times):
        np.add.at(hist[i], bin_index(t, b) + lag, 1)  # global bin k at index k + lag
    a = hist[:, k0 + lag : k1 + lag]
    expected = np.zeros_like(pairs, dtype=np.float64)
    for shift in range(-lag, lag + 1):
        later = hist[:, k0 + lag + shift : k1 + lag + shift]
        expected[:, :, shift + lag] = a @ later.T  # sum_p a_i(p) b_j(p + shift)
    np.testing.assert_allclose(pairs, expected, rtol=1e-5, atol=2e-2)
    np.testing.assert_array_equal(counts[:, 1], a.sum(axis=1))
    np.testing.assert_array_equal(counts[:, 2], np.square(a).sum(axis=1))


def test_spike_triggered_sums_equal_a_loop_over_spikes():
    duration, t0, t1 = 6.0, 1.0, 4.5
    times = _trains(1, [30.0, 5.0, 60.0, 0.0, 15.0], duration)
    spec = StatsSpec()
    col = columns(spec)
    units = np.array([2, 0, 4, 3, 2])  # any order, repeats, a unit without spikes
    out = np.zeros((units.size, col["width"]))
    _chunk_sums.spike_triggered_sums(times, units, t0, t1, spec, out, col)
    edges = np.asarray(spec.pop_edges_ms, dtype=np.int64)
    bins = [bin_index(t, 0.001) for t in times]
    for row, u in enumerate(units):
        pre, post = np.zeros(edges.size - 1), np.zeros(edges.size - 1)
        for s, bs in zip(times[u], bins[u]):
            if not t0 <= s < t1:
                continue
            for v in range(len(times)):
                if v == u:
                    continue
                d = bins[v] - bs
                for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
                    post[k] += np.count_nonzero((d >= lo) & (d < hi))
                    pre[k] += np.count_nonzero((-d >= lo) & (-d < hi))
        np.testing.assert_array_equal(out[row, col["pop"]], np.concatenate([pre[::-1], post]))
    assert out[:, col["pop"]].sum() > 1000


def test_bin_windows_equals_one_bin_call_per_window():
    duration = 10.0
    times = _trains(2, [20.0, 0.0, 4.0, 45.0], duration)
    times[2] = np.concatenate([[0.0, 0.02, 0.04, 1.0 - 1e-12], times[2][times[2] > 1.0]])  # spikes on bin edges
    trains = SpikeTrainSet(times, duration)
    starts = np.array([0.0, 1.0, 1.5, 7.3, 9.9])  # overlapping windows and one running past the end
    for units in (None, np.array([3, 1, 0])):
        expected = np.concatenate([trains.bin(s, 50, 0.02, units) for s in starts], axis=1)
        np.testing.assert_array_equal(trains.bin_windows(starts, 50, 0.02, units), expected)
    assert trains.bin_windows(starts, 50, 0.02, np.array([1])).sum() == 0


def test_rotary_attention_with_folded_weights_equals_the_autograd_path():
    torch.manual_seed(0)
    attention = Attention(dim=24, num_heads=3).eval()
    rotary = RotaryTime(rotate_dim=6, min_period=2.0, max_period=40.0)(11, torch.device("cpu"))
    x = torch.randn(7, 11, 24)
    with torch.no_grad():
        fast = attention(x, rotary)
    slow = attention(x, rotary)  # grad enabled: the element-wise rotations
    assert slow.requires_grad
    torch.testing.assert_close(fast, slow.detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("spatiotemporal_layers", [0, 1])
def test_chunked_inference_encoder_equals_the_training_path(monkeypatch, spatiotemporal_layers):
    config = NuCLRConfig.window(
        dim=16, num_heads=2, temporal_layers=2, spatiotemporal_layers=spatiotemporal_layers, token_bins=5,
        window_tokens=6,
    )
    torch.manual_seed(0)
    encoder = build_encoder(config).eval()
    g = torch.Generator().manual_seed(1)
    counts = torch.poisson(torch.rand(2, 9, 30, generator=g) * 2, generator=g)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    monkeypatch.setattr(nuclr, "_INFERENCE_ROWS", 4)  # several chunks of sequences
    with torch.no_grad():
        fast = encoder(counts, mask)
    slow = encoder(counts, mask)
    torch.testing.assert_close(fast, slow.detach(), rtol=1e-4, atol=1e-5)
