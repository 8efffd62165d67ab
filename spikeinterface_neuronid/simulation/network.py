"""The Izhikevich network of one session, the vectorised simulation loop and the public simulate functions.

Each session is one recurrent network of Izhikevich (2003) neurons of five firing types, split into brain
regions that differ in their population dynamics (see :mod:`.drive`), simulated with a vectorised numpy loop
(dt = 1 ms, two 0.5 ms half-steps for v)::

    v' = 0.04 v^2 + 5 v + 140 - u + I        u' = a (b v - u)        if v >= 30 mV: v <- c, u <- u + d

Types (canonical a, b, c, d, then a per-neuron multiplicative jitter): RS (0.02, 0.2, -65, 8),
IB (0.02, 0.2, -55, 4), CH (0.02, 0.2, -50, 2) are excitatory; FS (0.1, 0.2, -65, 2) and
LTS (0.02, 0.25, -65, 2) are inhibitory. A neuron whose v reaches 30 mV during the two half-steps spikes and is
reset at the end of the step; its recovery update uses the 30 mV peak, not the overshoot of the quadratic term
(the original code's overshoot makes ISIs irregular even without noise). The state is float32.

Randomness: animal-level statistics (drive and noise gains, coupling strength and fan-out, jitter level,
rhythm frequency, lag spread, type proportions) come from a generator seeded by ``(seed, preset, animal)``
only; the network instance, neuron parameters, noise, stimulus sequence and the set of recorded neurons
from ``(seed, preset, animal, session)``. Same arguments give bit-identical output on the same platform and
numpy version, also when sessions are simulated together by :func:`simulate_dataset`.

Speed: one Python step per simulated millisecond, a dozen in-place ufunc calls on the state vectors plus an
``np.add.at`` over the out-going synapses of the neurons that spiked; for large populations the drive of
the next 1 s chunk is built in a worker thread meanwhile. ``benchmarks/bench_simulate.py`` times 2,000
neurons x 600 s (about 50 s on 2 cores, ``benchmarks/results/simulate.json``); 250 neurons x 8 min take
about 15-20 s. :func:`simulate_dataset` simulates several sessions in one loop, which amortises the
per-step overhead.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np

from .drive import _Drives
from .presets import (
    _CHUNK,
    _COARSE,
    _DT_S,
    _EXCITATORY,
    _IZHIKEVICH_ABCD,
    _MAX_BATCH_NEURONS,
    _V_PEAK,
    CELL_TYPES,
    STIMULUS_RATE_HZ,
    _animal_draws,
    _check_index,
    _preset_code,
    _resolve_params,
)
from .session import SimulatedSession

# ---------------------------------------------------------------------------------------------------------------------
# one network (session)


class _Network(_Drives):
    """All per-session arrays: neuron parameters, synapses, drive generators and labels."""

    def __init__(self, preset: str, animal: int, session: int, seed: int, params: dict):
        self.preset, self.animal, self.session, self.seed, self.params = preset, animal, session, seed, params
        self.animal_draws = A = _animal_draws(params, preset, animal, seed)
        rng = self._stream(11)
        n = self.n = params["num_neurons"]
        R = params["num_regions"]
        self.warmup_steps = _COARSE * int(round(params["warmup_s"] / (_COARSE * _DT_S)))
        self.record_steps = int(round(params["duration_s"] / _DT_S))
        self.total_steps = self.warmup_steps + self.record_steps

        # regions and types ------------------------------------------------------------------------------------
        sizes = np.full(R, n // R)
        sizes[: n % R] += 1
        self.region = np.repeat(np.arange(R), sizes)
        self.region_start = np.concatenate([[0], np.cumsum(sizes)])
        types = []
        for r in range(R):
            extra = rng.multinomial(sizes[r] - 5, A["type_proportions"])
            t = np.concatenate([np.arange(5), np.repeat(np.arange(5), extra)])
            types.append(rng.permutation(t))
        self.type = np.concatenate(types)
        exc = _EXCITATORY[self.type]

        # Izhikevich parameters with multiplicative jitter ----------------------------------------------------
        jit = A["jitter"] * np.clip(rng.standard_normal((n, 4)), -2.5, 2.5)
        abcd = _IZHIKEVICH_ABCD[self.type] * (1.0 + jit)
        self.a, self.b, self.c, self.d = (abcd[:, k].copy() for k in range(4))

        # tonic input and noise -------------------------------------------------------------------------------
        bm = params["bias_mean"]
        mean = np.array([bm[t] for t in CELL_TYPES])[self.type] if isinstance(bm, dict) else np.full(n, bm)
        self.bias = mean + A["bias_shift"] + params["bias_sd"] * np.clip(rng.standard_normal(n), -3.0, 1.5)
        noise = np.where(exc, params["noise_sd"][0], params["noise_sd"][1]) * A["noise_gain"]
        self.noise_sd = noise * np.exp(0.2 * rng.standard_normal(n))

        # synapses: fixed fan-out, targets mostly in the own region (global indices added at batching) --------
        K = int(round(params["fanout"] * A["fanout_gain"]))
        self.fanout = K
        if K > 0:
            start = self.region_start[self.region][:, None]
            size = sizes[self.region][:, None]
            own = start + (np.arange(n)[:, None] - start + 1 + rng.integers(0, np.maximum(size - 1, 1), (n, K))) % size
            other = rng.integers(0, n, (n, K))
            cross = rng.random((n, K)) < params["cross_region_fraction"]
            targets = np.where(cross & (R > 1), other, own)
            mag = np.where(exc, params["w_exc"] * A["w_exc_gain"], -params["w_inh"] * A["w_inh_gain"])
            self.weights = mag[:, None] * 2.0 * rng.random((n, K))
            self.targets = targets.astype(np.int64)
        else:
            self.targets = np.zeros((n, 0), dtype=np.int64)
            self.weights = np.zeros((n, 0))

        # region structure ---------------------------------------------------------------------------------------
        self._build_drives(params, A, rng, sizes)

        # initial state -----------------------------------------------------------------------------------------
        self.v0 = -65.0 + 5.0 * rng.standard_normal(n)
        self.u0 = self.b * self.v0

        self.noise_rng = self._stream(12)  # drives, chunk by chunk
        self.post_rng = self._stream(13)  # spike-time jitter, recorded / dropped / merged units
        self._prepare_chunks()

    def _stream(self, key: int) -> np.random.Generator:
        """An independent random stream of this session."""
        return np.random.default_rng([self.seed, _preset_code(self.preset), self.animal, self.session, key])

    # outputs -----------------------------------------------------------------------------------------------------

    def make_session(self, neuron_steps: list[np.ndarray]) -> SimulatedSession:
        """Turn per-neuron spike steps (recording-relative) into a SimulatedSession."""
        p, rng = self.params, self.post_rng
        n, R = self.n, p["num_regions"]
        duration = self.record_steps * _DT_S
        times = [(s + rng.random(s.size)) * _DT_S for s in neuron_steps]
        counts = np.array([t.size for t in times], dtype=np.float64)
        group = self.region * 5 + self.type

        # which neurons are recorded: a random subset of the neurons with enough spikes, keeping every
        # region x type group that has such a neuron
        n_rec = max(min(n, int(round(p["recorded_fraction"] * n))), 1)
        priority = rng.permutation(n)
        priority = priority[counts[priority] >= p["min_spikes"]]
        first = np.zeros(n, dtype=bool)
        seen: set[int] = set()
        for i in priority:
            if group[i] not in seen:
                seen.add(int(group[i]))
                first[i] = True
        order = np.concatenate([priority[first[priority]], priority[~first[priority]]])
        recorded = np.sort(order[: max(n_rec, int(first.sum()))])

        # missed units: biased towards low rates, never the last of its group
        n_drop = int(round(p["drop_fraction"] * recorded.size))
        if n_drop:
            w = 1.0 / (counts[recorded] / duration + 1.0)
            keys = rng.random(recorded.size) ** (1.0 / w)  # weighted sampling without replacement
            left = {g: c for g, c in zip(*np.unique(group[recorded], return_counts=True))}
            dropped = set()
            for j in np.argsort(-keys):
                if len(dropped) == n_drop:
                    break
                g = group[recorded[j]]
                if left[g] > 1:
                    left[g] -= 1
                    dropped.add(j)
            recorded = recorded[np.setdiff1d(np.arange(recorded.size), np.array(sorted(dropped), dtype=np.int64))]

        # merges: union with a neuron of the same region (unrecorded ones first)
        merged_with = np.full(recorded.size, -1, dtype=np.int64)
        dominant = recorded.copy()
        n_merge = int(round(p["merge_fraction"] * recorded.size))
        unit_times = [times[i] for i in recorded]
        if n_merge:
            is_rec = np.zeros(n, dtype=bool)
            is_rec[recorded] = True
            used = set(recorded.tolist())
            for j in rng.choice(recorded.size, n_merge, replace=False):
                i = recorded[j]
                same = np.flatnonzero(self.region == self.region[i])
                cand = [k for k in rng.permutation(same) if k not in used and not is_rec[k]]
                if not cand:
                    cand = [k for k in rng.permutation(same) if k != i]
                if not cand:
                    continue
                k = int(cand[0])
                used.add(k)
                unit_times[j] = np.sort(np.concatenate([times[i], times[k]]))
                merged_with[j] = k
                if counts[k] > counts[i]:
                    dominant[j], merged_with[j] = k, i

        # shuffle the unit order so it carries no label information
        perm = rng.permutation(recorded.size)
        dominant, merged_with = dominant[perm], merged_with[perm]
        unit_times = [unit_times[j] for j in perm]
        c0 = self.recorded_coarse_start
        n_stim = int(math.ceil(self.record_steps / _COARSE))
        animal_id = f"animal{self.animal}"
        A = self.animal_draws
        info = {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()}
        info["preset"] = self.preset
        info["seed"] = self.seed
        info["animal"] = {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else float(v)) for k, v in A.items()}
        info["region_kind"] = self.region_kind.tolist()
        info["region_zero_lag_fraction"] = np.asarray(self.region_zero_lag, dtype=float).tolist()
        info["fanout"] = self.fanout
        return SimulatedSession(
            spike_times=unit_times,
            duration=duration,
            cell_type=np.array(CELL_TYPES)[self.type[dominant]].astype(str),
            brain_region=np.array([f"region{r}" for r in range(R)])[self.region[dominant]].astype(str),
            animal_id=animal_id,
            session_id=f"{animal_id}_session{self.session}",
            stimulus=self.stimulus_full[c0 : c0 + n_stim].copy(),
            stimulus_rate_hz=STIMULUS_RATE_HZ,
            neuron_index=dominant,
            merged_with=merged_with,
            params=info,
        )


# ---------------------------------------------------------------------------------------------------------------------
# the loop


def _simulate_networks(networks: list[_Network], progress=None, threaded: bool | None = None) -> list[list[np.ndarray]]:
    """Simulate independent networks of equal length together; returns per network, per neuron spike steps.

    The networks share one state vector; their synapses never cross, so every neuron's arithmetic (including
    the order of the recurrent sums) is the same as when its network is simulated alone. With ``threaded``, the
    drive of chunk k + 1 is built in a worker thread while chunk k is simulated (same numbers, in order); by
    default only from 1,024 neurons on, below that the GIL hand-overs cost more than the overlap saves.
    """
    total_steps = networks[0].total_steps
    assert all(net.total_steps == total_steps for net in networks)
    sizes = [net.n for net in networks]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    N = int(offsets[-1])
    cat = np.concatenate
    # Scaled variables: w = 0.02 v and q = 0.01 u turn each half-step into w <- w (w + 3.5) + D - q with
    # D = 0.01 I + 1.4 (three ufunc calls instead of four); the peak is w = 0.6, the reset w = 0.02 c.
    # The recovery update of a neuron that fired uses the peak (v = 30 mV); it is applied after the reset as
    # one jump: q += 0.5 a b (0.6 - 0.02 c) + 0.01 d.
    f32 = np.float32
    a = cat([net.a for net in networks])
    b = cat([net.b for net in networks])
    c = cat([net.c for net in networks])
    d = cat([net.d for net in networks])
    w_reset = (0.02 * c).astype(f32)
    one_minus_a = (1.0 - a).astype(f32)
    k_ab = (0.5 * a * b).astype(f32)
    q_jump = (0.5 * a * b * (0.02 * _V_PEAK - 0.02 * c) + 0.01 * d).astype(f32)
    w_peak = f32(0.02 * _V_PEAK)
    K = max(net.targets.shape[1] for net in networks)
    targets = np.zeros((N, K), dtype=np.intp)
    weights = np.zeros((N, K), dtype=f32)  # float32 like J: np.add.at with mixed types is 50x slower
    for net, o in zip(networks, offsets[:-1]):
        k = net.targets.shape[1]
        targets[o : o + net.n, :k] = net.targets + o
        targets[o : o + net.n, k:] = o  # padding: zero weight onto the network's first neuron
        weights[o : o + net.n, :k] = 0.01 * net.weights
    # float32 state: the per-step cost is dominated by call overhead, float32 trims the rest
    w = (0.02 * cat([net.v0 for net in networks])).astype(f32)
    q = (0.01 * cat([net.u0 for net in networks])).astype(f32)
    J = np.empty(N, dtype=f32)
    tmp = np.empty(N, dtype=f32)
    fired = np.empty(N, dtype=bool)
    chunk_idx: list[np.ndarray] = []
    chunk_steps: list[np.ndarray] = []
    pending = None  # (targets, weights) of the synapses of the previous step's spikes
    # local names: attribute lookups cost as much as small ufuncs here
    multiply, add, subtract, greater_equal = np.multiply, np.add, np.subtract, np.greater_equal
    fired_nonzero, add_at = fired.nonzero, np.add.at
    # The drive of the next chunk is built in a worker thread while this chunk is simulated: its large numpy
    # calls release the GIL, so a second core takes most of that cost. Double-buffered, so results are the same.
    buffers = [np.empty((_CHUNK, N), dtype=f32), np.empty((_CHUNK, N), dtype=f32)]
    starts = list(range(0, total_steps, _CHUNK))

    def build(i: int) -> np.ndarray:
        step0 = starts[i]
        length = min(_CHUNK, total_steps - step0)
        out = buffers[i % 2][:length]
        for net, o in zip(networks, offsets[:-1]):
            net.drive_chunk(step0, length, out[:, o : o + net.n])
        return out

    if threaded is None:
        threaded = N >= 1024
    executor = ThreadPoolExecutor(max_workers=1) if threaded else None
    future = executor.submit(build, 0) if executor else None
    try:
        for i, step0 in enumerate(starts):
            if executor:
                D = future.result()
                if i + 1 < len(starts):
                    future = executor.submit(build, i + 1)
            else:
                D = build(i)
            length = D.shape[0]
            idx_list: list[np.ndarray] = []
            step_list: list[int] = []
            for t in range(length):
                subtract(D[t], q, out=J)  # J = 0.02 (0.5 I + 70 - 0.5 u)
                if pending is not None:  # recurrent input from the previous step's spikes
                    add_at(J, pending[0], pending[1])
                add(w, 3.5, out=tmp)  # half-step 1
                multiply(tmp, w, out=tmp)
                add(tmp, J, out=w)
                add(w, 3.5, out=tmp)  # half-step 2
                multiply(tmp, w, out=tmp)
                add(tmp, J, out=w)
                greater_equal(w, w_peak, out=fired)
                idx = fired_nonzero()[0]
                if idx.size:
                    w[idx] = w_reset[idx]
                multiply(q, one_minus_a, out=q)  # u <- u + a (b v - u)
                multiply(w, k_ab, out=tmp)
                add(q, tmp, out=q)
                if idx.size:
                    q[idx] += q_jump[idx]
                    pending = (targets[idx].ravel(), weights[idx].ravel())
                    idx_list.append(idx)
                    step_list.append(t)
                else:
                    pending = None
            if idx_list:
                counts = np.fromiter((i.size for i in idx_list), dtype=np.int64, count=len(idx_list))
                chunk_idx.append(cat(idx_list).astype(np.int32))
                # int32 steps: 2**31 ms is 24 days
                chunk_steps.append(np.repeat(np.asarray(step_list, dtype=np.int32) + np.int32(step0), counts))
            if progress is not None:
                progress.update(length * _DT_S)
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
    if chunk_idx:
        neuron = cat(chunk_idx)
        steps = cat(chunk_steps)
    else:
        neuron = np.zeros(0, dtype=np.int32)
        steps = np.zeros(0, dtype=np.int32)
    order = np.argsort(neuron, kind="stable")  # stable: keeps time order within a neuron
    neuron, steps = neuron[order], steps[order]
    bounds = np.searchsorted(neuron, np.arange(N + 1))
    out = []
    for net, o in zip(networks, offsets[:-1]):
        trains = []
        for i in range(o, o + net.n):
            s = steps[bounds[i] : bounds[i + 1]] - net.warmup_steps
            trains.append(s[s >= 0])
        out.append(trains)
    return out


def _progress(enabled: bool, total: float, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=round(total, 3), desc=desc, unit="sim s", unit_scale=False)

# ---------------------------------------------------------------------------------------------------------------------
# public API


def simulate_session(
    preset: str = "easy",
    animal: int = 0,
    session: int = 0,
    num_neurons: int | None = None,
    duration_s: float | None = None,
    seed: int | None = None,
    progress_bar: bool = False,
    **overrides,
) -> SimulatedSession:
    """Simulate one recording session of an Izhikevich population.

    Parameters
    ----------
    preset : str, default: "easy"
        ``"easy"`` (canonical types, 3-5 % jitter, regions differ by zero-lag shared drive, 250 neurons x 8 min),
        ``"hard"`` (10-20 % jitter, rate-matched types, regions differ by lagged / oscillatory structure,
        250 neurons x 4 min) or ``"varied"`` (8-12 % jitter, wide rate range, drift, merged and missed units,
        mixed region structure, 250 neurons x 8 min). See :data:`PRESETS`.
    animal : int, default: 0
        Animal seed (>= 0): animal-level statistics depend only on it (and on ``seed`` and the preset).
    session : int, default: 0
        Session seed (>= 0): network instance, noise, stimulus and recorded neurons.
    num_neurons : int or None, default: None
        Neurons simulated; None uses the preset's ``num_neurons``. About
        ``recorded_fraction * num_neurons * (1 - drop_fraction)`` units are returned.
    duration_s : float or None, default: None
        Recorded duration in seconds; None uses the preset's ``duration_s``.
    seed : int or None, default: None
        Base seed mixed into every random stream; None means 0.
    progress_bar : bool, default: False
        Show a tqdm progress bar over simulated seconds.
    **overrides
        Any other key of :data:`PRESETS` (e.g. ``drift=0.5``, ``merge_fraction=0.1``, ``num_regions=2``).

    Returns
    -------
    SimulatedSession
        Spike trains of the recorded units with their cell type, region, animal and session labels and the
        stimulus.

    Raises
    ------
    ValueError
        For an unknown preset or override key (the message lists the valid ones), ``num_neurons`` below
        ``5 * num_regions``, a non-positive duration, or an out-of-range parameter.
    """
    net = _make_network(preset, animal, session, num_neurons, duration_s, seed, overrides)
    bar = _progress(progress_bar, net.total_steps * _DT_S, f"simulate {preset} animal{net.animal} session{net.session}")
    try:
        (trains,) = _simulate_networks([net], bar)
    finally:
        if bar is not None:
            bar.close()
    return net.make_session(trains)


def _make_network(preset, animal, session, num_neurons, duration_s, seed, overrides) -> _Network:
    params = _resolve_params(preset, num_neurons, duration_s, overrides)
    animal = _check_index(animal, "animal")
    session = _check_index(session, "session")
    seed = 0 if seed is None else _check_index(seed, "seed")
    return _Network(preset, animal, session, seed, params)

def simulate_dataset(
    preset: str = "easy",
    animals: Sequence[int] = (0, 1, 2),
    sessions_per_animal: int = 1,
    progress_bar: bool = True,
    **kwargs,
) -> list[SimulatedSession]:
    """Simulate several animals with several sessions each.

    Sessions are simulated together in one loop (up to 4,096 neurons at a time), which is several times
    faster than one by one for small populations; the output is identical to calling
    :func:`simulate_session` for each ``(animal, session)``.

    Parameters
    ----------
    preset : str, default: "easy"
        Preset name, see :func:`simulate_session`.
    animals : sequence of int, default: (0, 1, 2)
        Animal seeds.
    sessions_per_animal : int, default: 1
        Sessions ``0 .. sessions_per_animal - 1`` are simulated for every animal.
    progress_bar : bool, default: True
        Show a tqdm progress bar.
    **kwargs
        Passed to :func:`simulate_session` (``num_neurons``, ``duration_s``, ``seed`` and preset overrides).

    Returns
    -------
    list of SimulatedSession
        Ordered by animal, then session.
    """
    sessions_per_animal = _check_index(sessions_per_animal, "sessions_per_animal")
    if sessions_per_animal < 1:
        raise ValueError("sessions_per_animal must be >= 1")
    animals = [_check_index(a, "animal") for a in animals]
    if not animals:
        raise ValueError("animals must name at least one animal")
    if "session" in kwargs or "animal" in kwargs:
        raise ValueError("give animals and sessions_per_animal, not animal / session")
    num_neurons = kwargs.pop("num_neurons", None)
    duration_s = kwargs.pop("duration_s", None)
    seed = kwargs.pop("seed", None)
    kwargs.pop("progress_bar", None)
    networks = [
        _make_network(preset, a, s, num_neurons, duration_s, seed, kwargs)
        for a in animals
        for s in range(sessions_per_animal)
    ]
    batches: list[list[_Network]] = []
    for net in networks:
        if batches and sum(x.n for x in batches[-1]) + net.n <= _MAX_BATCH_NEURONS:
            batches[-1].append(net)
        else:
            batches.append([net])
    total = sum(batch[0].total_steps for batch in batches) * _DT_S
    bar = _progress(progress_bar, total, f"simulate {preset} x{len(networks)} sessions")
    out: list[SimulatedSession] = []
    try:
        for batch in batches:
            trains = _simulate_networks(batch, bar)
            out.extend(net.make_session(t) for net, t in zip(batch, trains))
    finally:
        if bar is not None:
            bar.close()
    return out
