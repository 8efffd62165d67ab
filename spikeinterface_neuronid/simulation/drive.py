"""The input current of the simulated neurons: random signals, region structure, stimulus and drift.

Input current of neuron ``i`` (all terms but the white noise are sampled on a 5 ms grid and held; the white
noise is a fresh standard normal per neuron and 1 ms step, quantised to 65,536 levels)::

    I_i(t) = bias_i + drift_i(t) + noise_sd_i * white_i(t)             private
           + slow_i(t) + osc_i(t)                                     region structure (see below)
           + global_i * G(t) + stimulus(t) @ tuning_i                 zero-lag, the same in every region
           + sum over presynaptic spikes of the previous step         sparse recurrent E (+) / I (-) weights

``slow`` is band-limited noise (difference of two low-pass filters, ``slow_tau_ms``), ``osc`` a
constant-amplitude rhythm (``osc_freq_hz``) with a diffusing phase. Every neuron receives both with the same
variance and spectrum; regions differ only in *how they are shared* (``region_mode``):

- ``"shared"`` (preset ``easy``): a fraction of the slow drive is common to the region at zero lag; the
  fraction falls linearly from region to region (``shared_fraction``), so region can be read from each unit's
  correlation with the summed population.
- ``"lagged"`` (preset ``hard``): region kinds cycle through ``wave`` (one slow drive delivered with
  neuron-specific lags uniform in ``[0, lag_max_ms]``: a travelling wave / sequence), ``oscillation`` (one
  rhythm, each neuron at its own phase; phases stratified so the region's summed drive cancels) and
  ``private`` (independent drives). No region has extra zero-lag shared drive, and the zero-lag global drive
  and stimulus act alike in all regions, so the population-coupling shortcut fails. Repeated kinds (more than
  three regions) change parameters: later ``wave`` regions have shorter lag spreads, later ``oscillation``
  regions faster rhythms and later ``private`` regions slower band-limited drive.
- ``"mixed"`` (preset ``varied``): as ``"lagged"``, plus a zero-lag shared fraction drawn per animal and
  region from the ``shared_fraction`` range, so population coupling varies between animals.

The recurrent term is added by the loop in :mod:`.network`; everything else is built here, chunk by chunk.
"""

from __future__ import annotations

import math
import statistics
from typing import Sequence

import numpy as np

from .presets import _COARSE, _DT_S, _NUM_STIM_CHANNELS, _REGION_KINDS, STIMULUS_RATE_HZ

# random signals

_NORMAL_LUT: np.ndarray | None = None


def _normal_lut() -> np.ndarray:
    """65,536 standard normal quantiles: white noise as a table lookup of random uint16 (4x faster than randn)."""
    global _NORMAL_LUT
    if _NORMAL_LUT is None:
        nd = statistics.NormalDist()
        lut = np.array([nd.inv_cdf((k + 0.5) / 65536.0) for k in range(65536)], dtype=np.float64)
        _NORMAL_LUT = (lut / lut.std()).astype(np.float32)
    return _NORMAL_LUT


def _fast_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape))
    return _normal_lut()[np.frombuffer(rng.bytes(2 * n), dtype=np.uint16).reshape(shape)]


def _lowpass_coefficients(tau_steps: float) -> tuple[float, float]:
    """x[k+1] = alpha x[k] + beta e[k] with unit stationary variance for unit-variance e."""
    alpha = math.exp(-1.0 / tau_steps)
    return alpha, math.sqrt(1.0 - alpha * alpha)


def _bandpass_norm(a1: float, b1: float, a2: float, b2: float) -> float:
    """Stationary sd of x1 - x2 for two low-pass filters (unit-variance each) driven by the same noise."""
    cov = b1 * b2 / (1.0 - a1 * a2)
    return math.sqrt(max(2.0 - 2.0 * cov, 1e-12))


def _filter_fft(white: np.ndarray, alphas: Sequence[float], betas: Sequence[float], signs: Sequence[float]):
    """Circular version of a sum of first-order recursions, applied along axis 0 (exact stationary spectrum)."""
    n = white.shape[0]
    spec = np.fft.rfft(white, axis=0)
    z = np.exp(-2j * np.pi * np.fft.rfftfreq(n))
    h = sum(s * b * z / (1.0 - a * z) for a, b, s in zip(alphas, betas, signs))
    if spec.ndim > 1:
        h = h.reshape((-1,) + (1,) * (spec.ndim - 1))
    return np.fft.irfft(spec * h, n=n, axis=0)


_IIR_BLOCK = 40  # rows per vectorised block of the first-order recursions (alpha ** -40 stays finite)


def _iir_tables(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tables for :func:`_iir_block`: alpha ** (j + 1) and beta * alpha ** -(j + 1), j < _IIR_BLOCK."""
    j = np.arange(1, _IIR_BLOCK + 1)[:, None]
    return alpha[None, :] ** j, beta[None, :] * alpha[None, :] ** (-j)


def _iir_block(x0: np.ndarray, e: np.ndarray, tables: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """x[j] = alpha x[j-1] + beta e[j] for the rows of ``e`` (<= _IIR_BLOCK), x[-1] = x0, as four array calls.

    x[j] = alpha^(j+1) * (x0 + cumsum_i<=j beta alpha^-(i+1) e[i]); the tables hold both powers.
    """
    up, down = tables
    b = e.shape[0]
    y = np.multiply(e, down[:b], dtype=np.float64)
    np.cumsum(y, axis=0, out=y)
    y += x0
    y *= up[:b]
    return y


def _stimulus_sequence(rngs: Sequence[np.random.Generator], n: int, block_s: tuple[float, float]) -> np.ndarray:
    """Blocks of off / DC / sinusoid, one channel per generator, sampled on the coarse grid; unit-ish amplitude."""
    out = np.zeros((n, len(rngs)))
    rate = STIMULUS_RATE_HZ
    for ch, rng in enumerate(rngs):
        k = 0
        while k < n:
            length = max(1, int(round(rng.uniform(*block_s) * rate)))
            kind = rng.integers(3)
            level = rng.uniform(-1.5, 1.5)
            amp = rng.uniform(0.5, 1.5)
            freq = math.exp(rng.uniform(math.log(0.5), math.log(4.0)))
            phase = rng.uniform(0.0, 2.0 * math.pi)
            stop = min(n, k + length)
            if kind == 1:
                out[k:stop, ch] = level
            elif kind == 2:
                t = np.arange(stop - k) / rate
                out[k:stop, ch] = amp * math.sqrt(2.0) * np.sin(2.0 * np.pi * freq * t + phase)
            k = stop
    return out


# ---------------------------------------------------------------------------------------------------------------------
# the drive of one network (session)


class _Drives:
    """The drive part of a session's network: region structure, shared signals, stimulus and per-chunk input.

    Mixed into :class:`~spikeinterface_neuronid.simulation.network._Network`, which sets ``n``,
    ``total_steps``, ``warmup_steps``, ``region``, ``region_start`` and ``_stream`` before calling
    :meth:`_build_drives` and :meth:`_prepare_chunks`.
    """

    def _build_drives(self, params: dict, A: dict, rng: np.random.Generator, sizes: np.ndarray) -> None:
        n, R = self.n, params["num_regions"]
        mode = params["region_mode"]
        n_coarse = -(-self.total_steps // _COARSE)
        self.n_coarse = n_coarse
        self.recorded_coarse_start = self.warmup_steps // _COARSE

        kind = np.array([_REGION_KINDS[r % 3] for r in range(R)])
        repeat = np.array([r // 3 for r in range(R)])
        if mode == "shared":
            lo, hi = params["shared_fraction"]
            zero_lag = np.linspace(lo, hi, R) if R > 1 else np.array([lo])
            kind = np.array(["private"] * R)
            repeat = np.zeros(R, dtype=int)
        elif mode == "lagged":
            zero_lag = np.zeros(R)
        else:
            zero_lag = A["mixed_shared_fraction"]
        self.region_kind = kind
        self.region_zero_lag = zero_lag

        # slow band-limited drive: coefficients per neuron (private) and per region (shared)
        fast, slow = params["slow_tau_ms"]
        tau_scale = A["slow_tau_gain"]
        ms_per_coarse = _COARSE * _DT_S * 1000.0
        region_tau_slow = np.array(
            [slow * tau_scale * (2.0 ** repeat[r] if kind[r] == "private" else 1.0) for r in range(R)]
        )
        tau_fast = fast * tau_scale / ms_per_coarse
        self.slow_coef = []  # per region: (a1, b1, a2, b2, norm)
        for r in range(R):
            a1, b1 = _lowpass_coefficients(tau_fast)
            a2, b2 = _lowpass_coefficients(region_tau_slow[r] / ms_per_coarse)
            self.slow_coef.append((a1, b1, a2, b2, _bandpass_norm(a1, b1, a2, b2)))
        coef = np.array(self.slow_coef)[self.region]
        self.pa1, self.pb1, self.pa2, self.pb2, self.pnorm = (coef[:, k].copy() for k in range(5))

        # lags (wave regions), zero-lag and private weights of the slow drive (squares sum to 1)
        lag_max = A["lag_max_ms"]
        # wave neurons get the region's drive with their own lag and a sign, half of them inverted (push-pull),
        # so the region's summed drive cancels and the sequence leaves no zero-lag population signal
        lag = np.zeros(n)
        is_wave = np.zeros(n, dtype=bool)
        sign = np.ones(n)
        for r in range(R):
            sl = slice(self.region_start[r], self.region_start[r + 1])
            if kind[r] == "wave":
                lag[sl] = rng.uniform(0.0, lag_max / (1.0 + repeat[r]), sizes[r])
                is_wave[sl] = True
                sign[sl] = rng.permutation(np.arange(sizes[r]) % 2 * 2.0 - 1.0)
        zl = np.asarray(zero_lag, dtype=np.float64)[self.region]
        self.w0 = np.sqrt(zl)
        self.w_lag = np.where(is_wave, np.sqrt(1.0 - zl), 0.0) * sign
        self.w_priv = np.sqrt(np.clip(1.0 - self.w_lag**2 - self.w0**2, 0.0, 1.0))
        self.lag_coarse = np.round(lag / ms_per_coarse).astype(np.int64)
        self.max_lag = int(self.lag_coarse.max(initial=0))

        amp_slow = params["slow_sd"] * A["slow_gain"]
        amp_osc = params["osc_sd"] * A["osc_gain"]
        self.amp_slow = amp_slow * np.exp(0.3 * rng.standard_normal(n) - 0.045)
        self.amp_osc = amp_osc * np.exp(0.3 * rng.standard_normal(n) - 0.045)

        # oscillation: shared-phase regions use the region's phase process + a stratified per-neuron phase
        dt_c = _COARSE * _DT_S
        freq = A["osc_freq_hz"] * np.array(
            [1.0 + 0.4 * repeat[r] if kind[r] == "oscillation" else 1.0 for r in range(R)]
        )
        self.omega = (2.0 * np.pi * dt_c * freq)[self.region] * np.exp(0.05 * rng.standard_normal(n))
        self.phase_step_sd = params["osc_phase_diffusion"] * math.sqrt(dt_c)
        self.osc_shared = np.zeros(n, dtype=bool)
        self.phase = np.zeros(n)
        for r in range(R):
            sl = slice(self.region_start[r], self.region_start[r + 1])
            m = sizes[r]
            if kind[r] == "oscillation":
                self.osc_shared[sl] = True
                self.phase[sl] = 2.0 * np.pi * (rng.permutation(m) + rng.random(m)) / m
        self.omega_shared = 2.0 * np.pi * dt_c * freq  # per region

        # zero-lag components common to all regions
        self.global_gain = params["global_sd"] * A["global_gain"] * rng.uniform(0.0, 2.0, n)
        self.tuning = params["stim_sd"] * A["stim_gain"] * rng.standard_normal((_NUM_STIM_CHANNELS, n))

        # private state carried across chunks
        cov = self.pb1 * self.pb2 / (1.0 - self.pa1 * self.pa2)
        self.x1 = rng.standard_normal(n)
        self.x2 = cov * self.x1 + np.sqrt(np.maximum(1.0 - cov**2, 0.0)) * rng.standard_normal(n)
        self.theta = rng.uniform(0.0, 2.0 * np.pi, n)

        # shared signals for the whole session on the coarse grid (own streams: the neuron parameters above do
        # not depend on the duration, and a longer session's stimulus starts with a shorter one's) -------------
        signal_rng = self._stream(14)
        lag_pad = self.max_lag
        white = signal_rng.standard_normal((n_coarse + lag_pad, 2 * R + 1))
        z_lag = np.zeros((R, n_coarse + lag_pad))
        z0 = np.zeros((R, n_coarse))
        for r in range(R):
            a1, b1, a2, b2, norm = self.slow_coef[r]
            z_lag[r] = _filter_fft(white[:, r], (a1, a2), (b1, b2), (1.0, -1.0)) / norm
            z0[r] = _filter_fft(white[lag_pad:, R + r], (a1, a2), (b1, b2), (1.0, -1.0)) / norm
        ag, bg = _lowpass_coefficients(params["global_tau_s"] / dt_c)
        g = _filter_fft(white[lag_pad:, 2 * R], (ag,), (bg,), (1.0,))
        self.global_signal = g / max(g.std(), 1e-12)
        self.z_lag, self.z0, self.lag_pad = z_lag, z0, lag_pad
        steps = self.phase_step_sd * signal_rng.standard_normal((n_coarse, R)) + self.omega_shared[None, :]
        self.theta_shared = (signal_rng.uniform(0, 2 * np.pi, R)[None, :] + np.cumsum(steps, axis=0)).T.copy()
        stim_rngs = [self._stream(100 + ch) for ch in range(_NUM_STIM_CHANNELS)]
        self.stimulus_full = _stimulus_sequence(stim_rngs, n_coarse, params["stim_block_s"])

        # drift: knots of a slow bias offset per neuron
        self.drift_amp = 4.0 * params["drift"]
        if self.drift_amp > 0:
            drift_rng = self._stream(16)
            period = params["drift_period_s"] / _DT_S
            n_knots = int(math.ceil(self.total_steps / period)) + 2
            self.drift_period_steps = period
            self.drift_offset = drift_rng.uniform(0.0, period, n)
            self.drift_knots = drift_rng.standard_normal((n_knots, n))

    def _prepare_chunks(self) -> None:
        """float32 copies of everything the per-chunk drive needs (float32 halves the cost of the big arrays)."""
        f32 = np.float32
        self.iir1 = _iir_tables(self.pa1, self.pb1)
        self.iir2 = _iir_tables(self.pa2, self.pb2)
        self.theta = self.theta.astype(f32)
        self.c_priv = (self.w_priv * self.amp_slow / self.pnorm).astype(f32)
        self.c_lag = (self.w_lag * self.amp_slow).astype(f32)
        self.c_zero = (self.w0 * self.amp_slow).astype(f32)
        self.c_osc = (math.sqrt(2.0) * self.amp_osc).astype(f32)
        self.c_omega = self.omega.astype(f32)
        self.c_global = self.global_gain.astype(f32)
        self.c_tuning = self.tuning.astype(f32)
        self.c_noise = (0.01 * self.noise_sd).astype(f32)
        self.z_lag = self.z_lag.astype(f32)
        self.z0 = self.z0.astype(f32)
        self.global_signal32 = self.global_signal.astype(f32)
        self.stimulus32 = self.stimulus_full.astype(f32)
        self.theta_shared = (self.theta_shared % (2.0 * np.pi)).astype(f32)
        self.phase32 = self.phase.astype(f32)
        self.region_slices = [
            slice(self.region_start[r], self.region_start[r + 1]) for r in range(len(self.region_kind))
        ]
        self.wave_cols = np.flatnonzero(self.w_lag != 0)
        self.wave_offset = (self.lag_pad - self.lag_coarse[self.wave_cols]).astype(np.int64)
        self.wave_region = self.region[self.wave_cols]
        self.osc_regions = [r for r in range(len(self.region_kind)) if self.osc_shared[self.region_slices[r]].any()]

    def drive_chunk(self, step0: int, length: int, out: np.ndarray) -> None:
        """Fill ``out`` (length x n, float32) with 0.01 * I_ext + 1.4 for steps [step0, step0 + length)."""
        n = self.n
        k0 = step0 // _COARSE
        nc = -(-length // _COARSE)
        rows = slice(k0, k0 + nc)
        rng = self.noise_rng
        # private band-limited drive: two first-order recursions on the same noise, carried across chunks
        white = _fast_normal(rng, (nc, n))
        coarse = np.empty((nc, n), dtype=np.float32)
        for k in range(0, nc, _IIR_BLOCK):
            e = white[k : k + _IIR_BLOCK]
            b = e.shape[0]
            x1 = _iir_block(self.x1, e, self.iir1)
            x2 = _iir_block(self.x2, e, self.iir2)
            np.subtract(x1, x2, out=coarse[k : k + b])
            self.x1, self.x2 = x1[-1].copy(), x2[-1].copy()
        coarse *= self.c_priv
        # lagged (wave regions) and zero-lag shared slow drive
        if self.wave_cols.size:
            cols = np.arange(k0, k0 + nc)[:, None] + self.wave_offset[None, :]
            coarse[:, self.wave_cols] += self.z_lag[self.wave_region[None, :], cols] * self.c_lag[self.wave_cols]
        for r, sl in enumerate(self.region_slices):
            if self.region_zero_lag[r] > 0:
                coarse[:, sl] += np.multiply.outer(self.z0[r, rows], self.c_zero[sl])
        # oscillation: own diffusing phase, or the region's shared phase + a fixed per-neuron offset
        theta = _fast_normal(rng, (nc, n))
        theta *= np.float32(self.phase_step_sd)
        theta += self.c_omega
        np.cumsum(theta, axis=0, out=theta)
        theta += self.theta
        self.theta = np.mod(theta[-1], np.float32(2.0 * np.pi))
        for r in self.osc_regions:
            sl = self.region_slices[r]
            np.add.outer(self.theta_shared[r, rows], self.phase32[sl], out=theta[:, sl])
        np.cos(theta, out=theta)
        theta *= self.c_osc
        coarse += theta
        # zero-lag, the same statistics in every region: global state and stimulus
        coarse += np.multiply.outer(self.global_signal32[rows], self.c_global)
        coarse += self.stimulus32[rows] @ self.c_tuning
        # tonic bias (+ drift), then 0.5 * I + 70
        bias = self.bias
        if self.drift_amp > 0:
            pos = (step0 + 0.5 * length + self.drift_offset) / self.drift_period_steps
            i0 = np.floor(pos).astype(np.int64)
            w = pos - i0
            cols = np.arange(n)
            d = (1.0 - w) * self.drift_knots[i0, cols] + w * self.drift_knots[i0 + 1, cols]
            bias = bias + self.drift_amp * d
        coarse += bias.astype(np.float32)
        coarse *= np.float32(0.01)  # the loop's scaled units: D = 0.01 I + 1.4
        coarse += np.float32(1.4)
        # fine white noise, one value per neuron and 1 ms step, plus the held coarse drive
        idx = np.frombuffer(rng.bytes(2 * length * n), dtype=np.uint16).reshape(length, n)
        if out.flags.c_contiguous:
            np.take(_normal_lut(), idx, out=out)
        else:  # a column block of a batch
            out[...] = _normal_lut()[idx]
        out *= self.c_noise
        for j in range(_COARSE):  # hold each coarse sample for _COARSE steps, in place (out may be a view)
            view = out[j::_COARSE]
            view += coarse[: view.shape[0]]
