"""Out-of-distribution check of the ``firing_type`` head: abstention on unseen animals and on unlike populations.

    python benchmarks/bench_ood.py                              # about 6 min on 1 thread
    python benchmarks/bench_ood.py --model /tmp/model.safetensors

The shipped head was fitted on simulated Izhikevich populations (``tools/release/fit_default_head.py``); real
units are never Izhikevich neurons. A head with an out-of-distribution check
(:func:`~spikeinterface_neuronid.calibration.fit_head`, ``ood_quantile``) answers ``"unknown"`` for units whose
embedding is far from the embeddings it was trained on. This benchmark measures how often the head abstains:

1. **In distribution**: the evaluation animals 1000-1003 of the ``easy``, ``varied`` and ``hard`` presets
   (animals the head never saw, as in ``fit_default_head.py``), one session each.
2. **Out of distribution**, ``--seeds`` populations of ``--num-units`` units per family, each embedded as one
   population (durations alternate between 480 s and 240 s, as the ``easy`` / ``varied`` and ``hard``
   sessions):

   - ``poisson``: independent Poisson units from SpikeInterface's ``generate_sorting`` (4 ms refractory
     period), rates log-uniform in 0.1-50 Hz (the units of ``generate_ground_truth_recording``);
   - ``gamma``: gamma-renewal units (1.5 ms dead time), shape parameters 0.3 and 0.5 (bursty, ISI CV > 1),
     2, 5 and 10 (regular), rates log-uniform in 0.5-40 Hz;
   - ``lif``: leaky integrate-and-fire neurons (dt 1 ms) driven by a mean input plus private
     Ornstein-Uhlenbeck noise (3-10 ms) mixed with a slower one (50 ms) shared by the population, membrane
     time constants 8-30 ms, refractory periods 1-5 ms;
   - ``adex``: adaptive exponential integrate-and-fire neurons (Brette & Gerstner 2005; dt 0.5 ms, spike at
     0 mV) with the tonic, adapting, initial-burst, bursting and irregular parameter sets of Naud et al.
     (2008), driven the same way.

   The simulators of the last three families live in this script, not in the package.
3. **Mixed** (reported, no target): ``--mixed-units`` Poisson (or gamma) units added to every
   in-distribution session and embedded with its Izhikevich units, as foreign units recorded among familiar
   ones.

For every set it reports the abstention rate (fraction of embedded units labelled ``"unknown"``, as stored by
the extension, :func:`~spikeinterface_neuronid.heads.head_outputs`), the out-of-distribution rate (units
flagged by the distance check, whatever their confidence) and the low-confidence rate, each with a 95 %
bootstrap interval over sessions (populations / animals), and the labels the head gives without abstention.
Units without an embedding (fewer than ``min_span_spikes`` spikes) are counted separately. Targets: at most
5 % out-of-distribution flags in distribution, at least 80 % abstention out of distribution.

Writes ``benchmarks/results/ood.json`` and ``benchmarks/results/ood.md`` (atomically). Same arguments, same
numbers.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import platform
import sys
import time
import zlib
from pathlib import Path

import numpy as np

from spikeinterface_neuronid.simulation import EVALUATION_ANIMALS

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "spikeinterface_neuronid" / "default_model" / "neuronid-default.safetensors"
RESULTS = ROOT / "benchmarks" / "results" / "ood.json"
TASK = "firing_type"
EVAL_PRESETS = ("easy", "varied", "hard")
EVAL_ANIMALS = EVALUATION_ANIMALS  # the shipped models' evaluation animals, as in tools/release/fit_default_head.py
DURATIONS_S = (480.0, 240.0)
FAMILIES = ("poisson", "gamma", "lif", "adex")
GAMMA_SHAPES = (0.3, 0.5, 2.0, 5.0, 10.0)
ADEX_PATTERNS = ("tonic", "adapting", "initial_burst", "bursting", "irregular")
COMMAND = "python benchmarks/bench_ood.py"

# Naud, Marcille, Clopath & Gerstner (2008), Table 1: C (pF), gL (nS), EL (mV), VT (mV), DeltaT (mV), a (nS),
# tau_w (ms), b (pA), Vr (mV) and the step current (pA) that evokes the pattern
_ADEX = {
    "tonic": (200.0, 10.0, -70.0, -50.0, 2.0, 2.0, 30.0, 0.0, -58.0, 500.0),
    "adapting": (200.0, 12.0, -70.0, -50.0, 2.0, 2.0, 300.0, 60.0, -58.0, 500.0),
    "initial_burst": (130.0, 18.0, -58.0, -50.0, 2.0, 4.0, 150.0, 120.0, -50.0, 400.0),
    "bursting": (200.0, 10.0, -58.0, -50.0, 2.0, 2.0, 120.0, 100.0, -46.0, 210.0),
    "irregular": (100.0, 12.0, -60.0, -50.0, 2.0, -11.0, 130.0, 30.0, -48.0, 160.0),
}


def _rng(*key) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(str(k).encode()) for k in key])


def _duration(seed: int) -> float:
    return DURATIONS_S[seed % len(DURATIONS_S)]


# -- populations ------------------------------------------------------------------------------------------------


def poisson_population(num_units: int, duration: float, seed: int) -> tuple[list[np.ndarray], list[str]]:
    """Independent Poisson units of SpikeInterface's ``generate_sorting``, rates log-uniform in 0.1-50 Hz."""
    from spikeinterface.core import generate_sorting

    rates = np.exp(_rng("poisson-rates", seed).uniform(np.log(0.1), np.log(50.0), num_units))
    sorting = generate_sorting(
        num_units=num_units, sampling_frequency=30000.0, durations=[duration], firing_rates=rates, seed=seed
    )
    trains = [np.asarray(sorting.get_unit_spike_train_in_seconds(u), dtype=np.float64) for u in sorting.unit_ids]
    return trains, ["poisson"] * num_units


def gamma_population(num_units: int, duration: float, seed: int) -> tuple[list[np.ndarray], list[str]]:
    """Gamma-renewal units (1.5 ms dead time), shapes cycling through :data:`GAMMA_SHAPES`."""
    rng = _rng("gamma", seed)
    dead = 0.0015
    trains, kinds = [], []
    for i in range(num_units):
        shape = GAMMA_SHAPES[i % len(GAMMA_SHAPES)]
        rate = float(np.exp(rng.uniform(np.log(0.5), np.log(40.0))))
        mean_isi = max(1.0 / rate - dead, 1e-4)
        n = int(duration * rate * 1.5 + 50)
        t = np.cumsum(dead + rng.gamma(shape, mean_isi / shape, size=n))
        while t[-1] < duration:
            t = np.concatenate([t, t[-1] + np.cumsum(dead + rng.gamma(shape, mean_isi / shape, size=n))])
        t = t - rng.uniform(0.0, t[0])  # random phase: the first spike is not at a fixed offset
        trains.append(t[(t >= 0.0) & (t < duration)])
        kinds.append(f"shape {shape:g}")
    return trains, kinds


_NOISE_TAUS_MS = (3.0, 5.0, 10.0)  # correlation times of the private noise
_SHARED_TAU_MS = 50.0  # correlation time of the noise shared by a population
_DT_MS = {"lif": 1.0, "adex": 0.5}


def _unit_parameters(model: str, num_units: int, seed: int) -> dict[str, np.ndarray]:
    """Per-unit parameters of one LIF or AdEx population (drawn from a generator seeded by the population)."""
    rng = _rng(model, "parameters", seed)
    out = dict(
        shared_weight=rng.uniform(0.0, 0.6, num_units),  # fraction of the noise variance shared by the population
        noise_tau=rng.choice(np.asarray(_NOISE_TAUS_MS), num_units),
    )
    if model == "lif":  # voltages relative to rest; threshold 20 mV
        out.update(
            tau_m=rng.uniform(8.0, 30.0, num_units),  # ms
            refractory=rng.uniform(1.0, 5.0, num_units),  # ms
            v_reset=rng.uniform(0.0, 15.0, num_units),  # mV
            drive=rng.uniform(12.0, 25.0, num_units),  # mV, mean input: sub- and supra-threshold
            noise=rng.uniform(3.0, 9.0, num_units),  # mV, sd of the noisy input
        )
        out["v0"] = out["v_reset"] + rng.uniform(0.0, 5.0, num_units)
        out["kind"] = np.array(["lif"] * num_units)
        return out
    kinds = np.array([ADEX_PATTERNS[i % len(ADEX_PATTERNS)] for i in range(num_units)])
    C, gL, EL, VT, dT, a_w, tau_w, b_w, Vr, I_step = np.array([_ADEX[k] for k in kinds]).T
    jitter = np.exp(rng.normal(0.0, 0.05, (4, num_units)))  # capacitance, leak, adaptation time and jump
    rheobase = gL * (VT - EL)  # pA, roughly
    out.update(
        C=C * jitter[0],
        gL=gL * jitter[1],
        EL=EL,
        VT=VT,
        dT=dT,
        a_w=a_w,
        tau_w=tau_w * jitter[2],
        b_w=b_w * jitter[3],
        Vr=Vr,
        drive=rheobase + (I_step - rheobase) * rng.uniform(0.0, 0.8, num_units),  # pA
        noise=np.maximum(I_step - rheobase, 50.0) * rng.uniform(0.3, 0.8, num_units),  # pA, sd
        v0=EL.copy(),
        kind=kinds,
    )
    return out


def _noisy_input(p: dict, rngs: list, num_units: int, length: int, dt: float, state: dict) -> np.ndarray:
    """``drive + noise * (private + shared OU noise)`` for the next ``length`` steps, ``(length, units)``."""
    from scipy.signal import lfilter

    white = np.concatenate([r.standard_normal((length, num_units)) for r in rngs], axis=1)
    white_shared = np.stack([r.standard_normal(length) for r in rngs], axis=1)
    private = np.empty_like(white)
    for tau in _NOISE_TAUS_MS:  # exact AR(1) updates of unit-variance Ornstein-Uhlenbeck processes
        cols = np.flatnonzero(p["noise_tau"] == tau)
        if len(cols):
            a = np.exp(-dt / tau)
            private[:, cols], state[tau] = lfilter(
                [np.sqrt(1 - a * a)], [1.0, -a], white[:, cols], axis=0, zi=state.get(tau, np.zeros((1, len(cols))))
            )
    a = np.exp(-dt / _SHARED_TAU_MS)
    shared, state["shared"] = lfilter(
        [np.sqrt(1 - a * a)], [1.0, -a], white_shared, axis=0, zi=state.get("shared", np.zeros((1, len(rngs))))
    )
    shared = np.repeat(shared, num_units, axis=1)
    mixed = np.sqrt(1.0 - p["shared_weight"]) * private + np.sqrt(p["shared_weight"]) * shared
    return p["drive"] + p["noise"] * mixed


def _integrate(model: str, num_units: int, durations: list[float], seeds: list[int]) -> list[tuple[list, list]]:
    """Simulate several LIF (dt 1 ms) or AdEx (dt 0.5 ms) populations together, Euler steps.

    Each population has its own parameters and noise generators (seeded by ``(model, seed)``), so its spikes
    do not depend on which populations are simulated with it. The noise starts at zero and the first second
    is discarded.
    """
    dt = _DT_MS[model]
    chunk = int(round(1000.0 / dt))  # steps of pre-computed input (1 s)
    pars = [_unit_parameters(model, num_units, s) for s in seeds]
    p = {k: np.concatenate([q[k] for q in pars]) for k in pars[0]}
    n = len(p["kind"])
    rngs = [_rng(model, "noise", s) for s in seeds]
    state: dict = {}
    steps = int(round(max(durations) * 1000.0 / dt))
    v = p["v0"].copy()
    w = np.zeros(n)
    since = np.full(n, 1e9)  # ms since the last spike
    spikes: list[list[int]] = [[] for _ in range(n)]
    if model == "lif":
        leak = 1.0 - np.exp(-dt / p["tau_m"])  # exact relaxation towards the input over one step
        refractory, v_reset = p["refractory"], p["v_reset"]
    else:
        inv_c, gL, EL, VT, dT = dt / p["C"], p["gL"], p["EL"], p["VT"], p["dT"]
        gl_dt, inv_dT = gL * dT, 1.0 / dT
        a_w, inv_tw, b_w, Vr = p["a_w"], dt / p["tau_w"], p["b_w"], p["Vr"]
    for first in range(-chunk, steps, chunk):
        current = _noisy_input(p, rngs, num_units, min(chunk, steps - first), dt, state)
        for k in range(current.shape[0]):
            if model == "lif":
                v += (current[k] - v) * leak * (since >= refractory)
                fired = v >= 20.0
            else:
                spike_term = gl_dt * np.exp(np.minimum((v - VT) * inv_dT, 20.0))
                dv = (gL * (EL - v) + spike_term - w + current[k]) * inv_c
                w += (a_w * (v - EL) - w) * inv_tw
                v += dv
                fired = v >= 0.0
            since += dt
            if fired.any():
                idx = np.flatnonzero(fired)
                if model == "lif":
                    v[idx] = v_reset[idx]
                else:
                    v[idx] = Vr[idx]
                    w[idx] += b_w[idx]
                since[idx] = 0.0
                if first + k >= 0:
                    for i in idx:
                        spikes[i].append(first + k)
    out = []
    for j, (duration, q) in enumerate(zip(durations, pars)):
        trains = [np.asarray(spikes[j * num_units + i], dtype=np.float64) * (dt / 1000.0) for i in range(num_units)]
        out.append(([t[t < duration] for t in trains], [str(k) for k in q["kind"]]))
    return out


POPULATIONS = dict(poisson=poisson_population, gamma=gamma_population)
"""The families that :func:`simulate_family` draws one population at a time (also used for mixed sessions)."""


def simulate_family(family: str, num_units: int, seeds: list[int]) -> list[dict]:
    """The populations of one out-of-distribution family: ``spike_times``, ``kinds`` (per unit), ``duration``."""
    durations = [_duration(s) for s in seeds]
    if family in ("lif", "adex"):
        made = _integrate(family, num_units, durations, seeds)
    elif family == "poisson":
        made = [poisson_population(num_units, d, s) for d, s in zip(durations, seeds)]
    elif family == "gamma":
        made = [gamma_population(num_units, d, s) for d, s in zip(durations, seeds)]
    else:
        raise ValueError(f"unknown family {family!r}; families: {', '.join(FAMILIES)}")
    return [dict(spike_times=t, kinds=k, duration=d, seed=s) for (t, k), d, s in zip(made, durations, seeds)]


# -- measurement ------------------------------------------------------------------------------------------------


def embed(bundle, spike_times: list[np.ndarray], duration: float) -> np.ndarray:
    """Embeddings ``(units, dim)`` of one population (NaN rows for units without one), as fit_default_head."""
    from spikeinterface_neuronid.data import SpikeTrainSet
    from spikeinterface_neuronid.inference import embed_populations

    return embed_populations(bundle, [SpikeTrainSet(spike_times, duration)]).embedding


def session_counts(head, embedding: np.ndarray, kinds: list[str]) -> dict:
    """Per-session counts: units, embedded, unknown, out-of-distribution, low-confidence, labels; also per kind."""
    from spikeinterface_neuronid.labeling import predict_task
    from spikeinterface_neuronid.schema import UNKNOWN

    out = predict_task(head, embedding)
    labels = out.labels.astype(str)
    conf = out.confidence.astype(np.float64)
    embedded = np.all(np.isfinite(embedding), axis=1)
    ood = head.is_ood(embedding)
    # sensitivity: the units flagged if the threshold were the 0.99 quantile of the held-out scores instead
    q99 = head.provenance.get("fit", {}).get("ood", {}).get("held_out_score_quantiles", {}).get("0.99")
    score = head.ood_score(embedding) if head.has_ood else np.full(len(embedding), np.nan)
    ood_q99 = np.isfinite(score) & (score > q99) if q99 is not None else np.zeros(len(embedding), dtype=bool)
    low = embedded & ~(conf >= head.threshold)
    best = np.full(len(labels), "", dtype=object)
    proba = out.probabilities.astype(np.float64)
    best[embedded] = np.asarray(head.classes)[np.argmax(proba[embedded], axis=1)]
    kinds = np.asarray(kinds, dtype=str)

    def counts(mask: np.ndarray) -> dict:
        e = mask & embedded
        return dict(
            units=int(mask.sum()),
            embedded=int(e.sum()),
            unknown=int((e & (labels == UNKNOWN)).sum()),
            ood=int((e & ood).sum()),
            ood_q99=int((e & ood_q99).sum()),
            low_confidence=int((e & low).sum()),
            labels={c: int((e & (labels == c)).sum()) for c in [*head.classes, UNKNOWN]},
            most_probable={c: int((e & (best == c)).sum()) for c in head.classes},
        )

    everything = counts(np.ones(len(labels), dtype=bool))
    everything["kinds"] = {k: counts(kinds == k) for k in dict.fromkeys(kinds.tolist())}
    return everything


RATES = (
    ("unknown", "abstention_rate"),
    ("ood", "ood_rate"),
    ("low_confidence", "low_confidence_rate"),
    ("ood_q99", "ood_rate_at_held_out_q99"),
)


def rate_summary(sessions: list[dict], *, num_bootstrap: int, seed: int) -> dict:
    """Pooled rates over the embedded units of ``sessions`` with 95 % percentile-bootstrap intervals over sessions."""
    rng = np.random.default_rng(seed)
    n = np.array([s["embedded"] for s in sessions], dtype=np.float64)
    out: dict = dict(
        sessions=len(sessions),
        units=int(sum(s["units"] for s in sessions)),
        embedded=int(n.sum()),
    )
    picks = rng.integers(0, len(sessions), size=(num_bootstrap, len(sessions)))
    for key, name in RATES:
        k = np.array([s[key] for s in sessions], dtype=np.float64)
        total = n.sum()
        out[name] = round(float(k.sum() / total), 4) if total else None
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = k[picks].sum(axis=1) / n[picks].sum(axis=1)
        boot = boot[np.isfinite(boot)]
        out[f"{name}_ci95"] = [round(float(q), 4) for q in np.quantile(boot, [0.025, 0.975])] if len(boot) else None
    for key in ("labels", "most_probable"):
        merged: dict[str, int] = {}
        for s in sessions:
            for c, v in s[key].items():
                merged[c] = merged.get(c, 0) + v
        out[key] = merged
    return out


def summarise(sessions: list[dict], *, num_bootstrap: int, seed: int) -> dict:
    """:func:`rate_summary` of the sessions and of each kind of unit in them."""
    out = rate_summary(sessions, num_bootstrap=num_bootstrap, seed=seed)
    kinds = list(dict.fromkeys(k for s in sessions for k in s["kinds"]))
    if len(kinds) > 1:
        out["kinds"] = {
            k: rate_summary(
                [s["kinds"][k] for s in sessions if k in s["kinds"]], num_bootstrap=num_bootstrap, seed=seed
            )
            for k in kinds
        }
    return out


def _line(name: str, r: dict, sensitivity: bool) -> str:
    def fmt(key):
        v, ci = r[key], r[f"{key}_ci95"]
        return "n/a" if v is None else f"{100 * v:5.1f} % [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"

    line = (
        f"| {name} | {r['sessions']} | {r['embedded']} | {fmt('abstention_rate')} | {fmt('ood_rate')} | "
        f"{fmt('low_confidence_rate')} |"
    )
    return line + (f" {fmt('ood_rate_at_held_out_q99')} |" if sensitivity else "")


def markdown(result: dict) -> str:
    """The tables of ``ood.md``."""
    lines = [
        f"# Out-of-distribution check of the `{result['task']}` head",
        "",
        f"Produced by `{result['command']}` (model sha256 `{result['model_sha256'][:12]}…`, "
        f"{result['seconds']:.0f} s). Rates over embedded units, 95 % bootstrap intervals over sessions. "
        "Abstention: labelled `unknown` (out of distribution or low confidence); the last column flags units "
        "with the threshold at the 0.99 quantile of the held-out scores instead of the head's (sensitivity).",
        "",
    ]
    for title, key in (("With the out-of-distribution check", "with_ood_check"), ("Without it", "without_ood_check")):
        if key not in result:
            continue
        sens = key == "with_ood_check"
        lines += [
            f"## {title}",
            "",
            "| set | sessions | units | abstention (unknown) | out of distribution | low confidence |"
            + (" out of distribution at q = 0.99 |" if sens else ""),
            "|---|---|---|---|---|---|" + ("---|" if sens else ""),
        ]
        block = result[key]
        lines.append(_line("in distribution (all)", block["in_distribution"], sens))
        for preset, r in block["in_distribution"]["presets"].items():
            lines.append(_line(f"in distribution: {preset}", r, sens))
        for family, r in block["out_of_distribution"].items():
            lines.append(_line(family, r, sens))
            for kind, rk in r.get("kinds", {}).items():
                lines.append(_line(f"{family}: {kind}", rk, sens))
        for family, r in block.get("mixed", {}).items():
            lines.append(_line(f"mixed {family} (all units)", r, sens))
            for kind, rk in r.get("kinds", {}).items():
                lines.append(_line(f"mixed {family}: {kind}", rk, sens))
        lines.append("")
    return "\n".join(lines)


def _drop_keys(obj, keys: tuple[str, ...]):
    """``obj`` (nested dicts) without the entries named ``keys``."""
    if isinstance(obj, dict):
        return {k: _drop_keys(v, keys) for k, v in obj.items() if k not in keys}
    return obj


def run(args) -> dict:
    """Simulate, embed and evaluate; returns the JSON document."""
    import torch

    from spikeinterface_neuronid.bundle import ModelBundle
    from spikeinterface_neuronid.simulation import simulate_dataset

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    bundle = ModelBundle.load(args.model)
    if TASK not in bundle.heads:
        raise ValueError(f"{args.model} has no {TASK!r} head; fit one with python -m tools.release.fit_default_head")
    head = bundle.heads[TASK]
    heads = dict(with_ood_check=head) if head.has_ood else {}
    heads["without_ood_check"] = head.without_ood()
    saved: dict[str, np.ndarray] = {}

    def measure(name: str, spike_times, duration, kinds) -> dict[str, dict]:
        emb = embed(bundle, spike_times, duration)
        if args.save_embeddings:
            saved[f"{name}/embedding"] = emb
            saved[f"{name}/kinds"] = np.asarray(kinds, dtype=str)
        return {variant: session_counts(h, emb, kinds) for variant, h in heads.items()}

    id_sessions: dict[str, list] = {}
    all_sims = []
    for preset in EVAL_PRESETS:
        t = time.perf_counter()
        sims = simulate_dataset(preset, animals=EVAL_ANIMALS, sessions_per_animal=1, progress_bar=False)
        id_sessions[preset] = [
            measure(f"{preset}-{s.animal_id}", s.spike_times, s.duration, list(map(str, s.cell_type))) for s in sims
        ]
        all_sims += [(preset, s) for s in sims]
        print(f"in distribution {preset}: {len(sims)} sessions in {time.perf_counter() - t:.0f} s", flush=True)
    mixed_sessions: dict[str, list] = {}
    for family in args.mixed:
        t = time.perf_counter()
        mixed_sessions[family] = []
        for i, (preset, sim) in enumerate(all_sims):
            foreign, kinds = POPULATIONS[family](args.mixed_units, sim.duration, args.seed + 1000 + i)
            mixed_sessions[family].append(
                measure(
                    f"mixed-{family}-{preset}-{sim.animal_id}",
                    list(sim.spike_times) + foreign,
                    sim.duration,
                    ["izhikevich"] * sim.num_units + [f"{family} {k}" if family != k else k for k in kinds],
                )
            )
        print(f"mixed {family}: {len(all_sims)} sessions in {time.perf_counter() - t:.0f} s", flush=True)
    seeds = list(range(args.seed, args.seed + args.seeds))
    ood_sessions: dict[str, list] = {}
    for family in args.families:
        t = time.perf_counter()
        pops = simulate_family(family, args.num_units, seeds)
        ood_sessions[family] = [
            measure(f"{family}-{p['seed']}", p["spike_times"], p["duration"], p["kinds"]) for p in pops
        ]
        print(f"{family}: {len(pops)} populations in {time.perf_counter() - t:.0f} s", flush=True)

    result: dict = dict(
        benchmark=f"out-of-distribution check of the {TASK} head",
        command=COMMAND + ("" if args.model == str(DEFAULT_MODEL) else " --model <model file>"),
        date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S%z"),
        model=Path(args.model).name,
        model_sha256=bundle.sha256,
        task=TASK,
        classes=list(head.classes),
        threshold=head.threshold,
        ood=dict(head.provenance.get("fit", {}).get("ood", {})) if head.has_ood else None,
        in_distribution_data=dict(presets=list(EVAL_PRESETS), animals=list(EVAL_ANIMALS), sessions_per_animal=1),
        out_of_distribution_data=dict(
            families=list(args.families),
            seeds=seeds,
            units_per_population=args.num_units,
            durations_s=[_duration(s) for s in seeds],
            gamma_shapes=list(GAMMA_SHAPES),
            adex_patterns=list(ADEX_PATTERNS),
        ),
        mixed_data=dict(
            families=list(args.mixed),
            foreign_units_per_session=args.mixed_units,
            sessions="every in-distribution session, its Izhikevich units plus foreign units recorded with them",
        ),
        targets=dict(in_distribution_ood_rate_max=0.05, out_of_distribution_abstention_rate_min=0.80),
        num_bootstrap=args.bootstrap,
        python_version=platform.python_version(),
        platform=platform.platform(),
        torch_threads=args.threads,
    )
    for variant in heads:
        sessions = {p: [s[variant] for s in v] for p, v in id_sessions.items()}
        pooled = [s for v in sessions.values() for s in v]
        block = dict(
            in_distribution=dict(
                **summarise(pooled, num_bootstrap=args.bootstrap, seed=args.seed),
                presets={p: summarise(v, num_bootstrap=args.bootstrap, seed=args.seed) for p, v in sessions.items()},
            ),
            out_of_distribution={
                f: summarise([s[variant] for s in v], num_bootstrap=args.bootstrap, seed=args.seed)
                for f, v in ood_sessions.items()
            },
            mixed={
                f: summarise([s[variant] for s in v], num_bootstrap=args.bootstrap, seed=args.seed)
                for f, v in mixed_sessions.items()
            },
        )
        if variant == "without_ood_check":  # no scores: the sensitivity rates mean nothing there
            block = _drop_keys(block, ("ood_rate_at_held_out_q99", "ood_rate_at_held_out_q99_ci95"))
        result[variant] = block
    if "with_ood_check" in result:
        block = result["with_ood_check"]
        result["meets_targets"] = dict(
            in_distribution=bool(block["in_distribution"]["ood_rate"] <= 0.05),
            out_of_distribution={
                f: bool(r["abstention_rate"] >= 0.80) for f, r in block["out_of_distribution"].items()
            },
        )
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if args.save_embeddings:
        np.savez_compressed(args.save_embeddings, **saved)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="model file with a firing_type head")
    parser.add_argument("--seeds", type=int, default=6, help="populations per out-of-distribution family")
    parser.add_argument(
        "--seed", type=int, default=100, help="first population seed (also seeds the bootstrap); 0-5 chose the design"
    )
    parser.add_argument("--num-units", type=int, default=60, help="units per out-of-distribution population")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument(
        "--mixed",
        nargs="*",
        default=list(POPULATIONS),
        choices=list(POPULATIONS),
        help="families whose units are also added to every in-distribution session (none: skip)",
    )
    parser.add_argument("--mixed-units", type=int, default=20, help="foreign units added to each session")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the intervals")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", default=str(RESULTS), help="JSON result file (a .md table is written next to it)")
    parser.add_argument("--save-embeddings", default=None, help="also save every embedding to this .npz file")
    args = parser.parse_args(argv)
    if args.seeds < 2 or args.num_units < 2:
        parser.error("--seeds and --num-units must be at least 2")

    from spikeinterface_neuronid._io import atomic_path, write_json

    result = run(args)
    out = Path(args.out)
    write_json(out, result)
    with atomic_path(out.with_suffix(".md")) as tmp:
        Path(tmp).write_text(markdown(result) + "\n")
    print(markdown(result))
    print(f"wrote {out} and {out.with_suffix('.md')} in {result['seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
