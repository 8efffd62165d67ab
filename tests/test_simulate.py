"""Tests of the Izhikevich population simulator (small populations and durations: the file runs in ~30 s)."""

from __future__ import annotations

import numpy as np
import pytest

from spikeinterface_neuronid.simulation import (
    CELL_TYPES,
    PRESETS,
    STIMULUS_RATE_HZ,
    SimulatedSession,
    simulate_dataset,
    simulate_session,
    simulate_sorting,
    simulate_templates,
)

SMALL = dict(num_neurons=60, duration_s=10.0)

# every neuron gets the same input: no recurrence, no structured drives, no jitter, no animal variation
EQUAL_INPUT = dict(
    num_neurons=100,
    duration_s=20.0,
    num_regions=1,
    jitter=0.0,
    bias_mean=15.0,
    bias_sd=0.0,
    noise_sd=(2.0, 2.0),
    w_exc=0.0,
    w_inh=0.0,
    slow_sd=0.0,
    osc_sd=0.0,
    global_sd=0.0,
    stim_sd=0.0,
    recorded_fraction=1.0,
    animal_variability=0.0,
    warmup_s=0.0,
)


def _same_session(s1: SimulatedSession, s2: SimulatedSession) -> bool:
    return (
        s1.session_id == s2.session_id
        and s1.num_units == s2.num_units
        and all(np.array_equal(a, b) for a, b in zip(s1.spike_times, s2.spike_times))
        and np.array_equal(s1.cell_type, s2.cell_type)
        and np.array_equal(s1.brain_region, s2.brain_region)
        and np.array_equal(s1.stimulus, s2.stimulus)
    )


def _isis(session: SimulatedSession, cell_type: str) -> list[np.ndarray]:
    return [np.diff(t) for t, c in zip(session.spike_times, session.cell_type) if c == cell_type and len(t) > 3]


def _population_coupling(session: SimulatedSession, bin_s: float = 0.02) -> np.ndarray:
    """Each unit's zero-lag correlation with the summed activity of all other units (20 ms bins)."""
    n_bins = int(session.duration / bin_s)
    counts = np.stack(
        [np.bincount(np.minimum((t / bin_s).astype(int), n_bins - 1), minlength=n_bins) for t in session.spike_times]
    ).astype(np.float64)
    others = counts.sum(0)[None, :] - counts
    x = counts - counts.mean(1, keepdims=True)
    y = others - others.mean(1, keepdims=True)
    return (x * y).sum(1) / np.sqrt((x**2).sum(1) * (y**2).sum(1) + 1e-12)


# ---------------------------------------------------------------------------------------------------------------------
# determinism and seeds


def test_same_arguments_give_identical_output():
    s1 = simulate_session("hard", animal=2, session=1, **SMALL)
    s2 = simulate_session("hard", animal=2, session=1, **SMALL)
    assert _same_session(s1, s2)
    assert sum(len(t) for t in s1.spike_times) > 100


def test_session_animal_and_seed_change_the_output():
    base = simulate_session("easy", animal=0, session=0, **SMALL)
    other_session = simulate_session("easy", animal=0, session=1, **SMALL)
    other_animal = simulate_session("easy", animal=1, session=0, **SMALL)
    other_seed = simulate_session("easy", animal=0, session=0, seed=7, **SMALL)
    for other in (other_session, other_animal, other_seed):
        assert not all(np.array_equal(a, b) for a, b in zip(base.spike_times, other.spike_times))
    # sessions of one animal share its statistics; another animal draws its own
    assert base.params["animal"] == other_session.params["animal"]
    assert base.params["animal"] != other_animal.params["animal"]
    assert not np.array_equal(base.stimulus, other_session.stimulus)
    assert base.session_id == "animal0_session0" and other_session.session_id == "animal0_session1"
    assert other_animal.animal_id == "animal1"


def test_animal_statistics_do_not_depend_on_session_size():
    small = simulate_session("varied", animal=3, session=0, num_neurons=30, duration_s=2.0)
    large = simulate_session("varied", animal=3, session=4, num_neurons=80, duration_s=3.0)
    assert small.params["animal"] == large.params["animal"]
    lo, hi = PRESETS["varied"]["jitter"]
    assert lo <= small.params["animal"]["jitter"] <= hi


def test_dataset_equals_individual_sessions():
    sessions = simulate_dataset("hard", animals=(0, 3), sessions_per_animal=2, progress_bar=False, **SMALL)
    assert [s.session_id for s in sessions] == [
        "animal0_session0",
        "animal0_session1",
        "animal3_session0",
        "animal3_session1",
    ]
    assert _same_session(sessions[3], simulate_session("hard", animal=3, session=1, **SMALL))
    assert _same_session(sessions[0], simulate_session("hard", animal=0, session=0, **SMALL))


def test_serial_and_threaded_drive_give_identical_output():
    from spikeinterface_neuronid.simulation import network as sim

    trains = []
    for threaded in (False, True):
        net = sim._make_network("varied", 1, 0, 40, 3.0, None, {})
        trains.append(sim._simulate_networks([net], threaded=threaded)[0])
    assert all(np.array_equal(a, b) for a, b in zip(*trains))


# ---------------------------------------------------------------------------------------------------------------------
# output structure


def test_session_fields_and_labels():
    s = simulate_session("easy", animal=1, session=2, num_neurons=75, duration_s=6.0, recorded_fraction=1.0)
    assert s.duration == pytest.approx(6.0)
    assert s.num_units == 75 == len(s.cell_type) == len(s.brain_region) == len(s.neuron_index)
    assert set(s.cell_type) <= set(CELL_TYPES)
    assert set(s.brain_region) == {"region0", "region1", "region2"}
    for region in ("region0", "region1", "region2"):  # every region holds all five types
        assert set(s.cell_type[s.brain_region == region]) == set(CELL_TYPES)
    for t in s.spike_times:
        assert t.dtype == np.float64 and np.all(np.diff(t) >= 0)
        assert t.size == 0 or (t[0] >= 0 and t[-1] < s.duration)
    assert s.stimulus_rate_hz == STIMULUS_RATE_HZ
    assert s.stimulus.shape == (int(round(6.0 * STIMULUS_RATE_HZ)), 2)
    assert np.all(np.isfinite(s.stimulus)) and s.stimulus.std() > 0
    assert np.all(s.merged_with == -1)
    assert len(np.unique(s.neuron_index)) == s.num_units


def test_recorded_fraction_and_min_spikes():
    s = simulate_session("easy", num_neurons=100, duration_s=5.0)
    assert s.num_units == round(PRESETS["easy"]["recorded_fraction"] * 100)
    # only neurons with at least min_spikes spikes are returned
    s = simulate_session("varied", num_neurons=100, duration_s=5.0, drop_fraction=0.0, min_spikes=10)
    assert min(len(t) for t in s.spike_times) >= 10


def test_to_sorting_round_trip():
    s = simulate_session("hard", animal=1, session=0, **SMALL)
    fs = 30000.0
    sorting = s.to_sorting(sampling_frequency=fs)
    assert sorting.get_num_units() == s.num_units
    assert list(sorting.unit_ids) == [str(i) for i in range(s.num_units)]
    assert sorting.get_sampling_frequency() == fs
    for key in ("cell_type", "brain_region", "animal_id", "session_id"):
        assert key in sorting.get_property_keys()
        assert len(sorting.get_property(key)) == s.num_units
    assert np.array_equal(sorting.get_property("cell_type"), s.cell_type)
    assert np.array_equal(sorting.get_property("brain_region"), s.brain_region)
    assert set(sorting.get_property("session_id")) == {s.session_id}
    for i, unit_id in enumerate(sorting.unit_ids):
        samples = sorting.get_unit_spike_train(unit_id, segment_index=0)
        assert samples.size == s.spike_times[i].size
        assert np.all(np.abs(samples / fs - s.spike_times[i]) <= 1.0 / fs)


def test_simulate_sorting_with_recording():
    recording, sorting = simulate_sorting(
        "easy", animal=0, session=0, with_recording=True, num_channels=8, num_neurons=40, duration_s=3.0
    )
    assert recording.get_num_channels() == 8
    assert recording.get_total_duration() == pytest.approx(3.0)
    assert recording.get_sampling_frequency() == sorting.get_sampling_frequency() == 30000.0
    assert recording.get_probe() is not None
    assert sorting.get_num_units() == 32
    assert "cell_type" in sorting.get_property_keys()
    traces = recording.get_traces(start_frame=0, end_frame=3000)
    assert traces.shape == (3000, 8) and np.all(np.isfinite(traces))
    # the sorting alone matches simulate_session
    alone = simulate_sorting("easy", animal=0, session=0, num_neurons=40, duration_s=3.0)
    assert np.array_equal(alone.get_unit_spike_train("5", 0), sorting.get_unit_spike_train("5", 0))


# ---------------------------------------------------------------------------------------------------------------------
# firing types (Izhikevich 2003)


@pytest.fixture(scope="module")
def equal_input_session() -> SimulatedSession:
    return simulate_session("easy", **EQUAL_INPUT)


def test_fs_fires_fastest_at_equal_input(equal_input_session):
    s = equal_input_session
    rates = s.firing_rates()
    median = {t: np.median(rates[s.cell_type == t]) for t in CELL_TYPES}
    assert all(median["FS"] > 1.2 * median[t] for t in CELL_TYPES if t != "FS"), median
    assert median["RS"] < median["IB"] < median["CH"], median


def test_rs_is_regular_and_adapting_bursters_burst(equal_input_session):
    s = equal_input_session
    cv = {t: np.median([i.std() / i.mean() for i in _isis(s, t)]) for t in CELL_TYPES}
    burst = {t: np.median([np.mean(i < 0.010) for i in _isis(s, t)]) for t in CELL_TYPES}
    # spike-frequency adaptation from rest: steady ISIs much longer than the first one
    adaptation = {t: np.median([np.median(i[len(i) // 2 :]) / i[0] for i in _isis(s, t)]) for t in CELL_TYPES}
    assert cv["RS"] < 0.2 and cv["CH"] > 0.5 and cv["IB"] > 0.3, cv
    assert burst["RS"] < 0.02 and burst["CH"] > 0.5 and burst["IB"] > 0.2, burst
    assert adaptation["RS"] > 3.0 and adaptation["RS"] > 2.0 * adaptation["FS"], adaptation


def test_bursting_in_the_easy_network():
    s = simulate_session("easy", num_neurons=150, duration_s=20.0)
    burst = {t: np.mean([np.mean(i < 0.010) for i in _isis(s, t)]) for t in ("RS", "IB", "CH")}
    assert burst["CH"] > 0.3 and burst["IB"] > 0.08 and burst["RS"] < 0.02, burst
    assert burst["IB"] > 5 * burst["RS"] and burst["CH"] > 10 * burst["RS"]


def test_hard_rates_overlap_across_types():
    s = simulate_session("hard", num_neurons=200, duration_s=20.0)
    rates = s.firing_rates()
    median = np.array([np.median(rates[s.cell_type == t]) for t in CELL_TYPES])
    assert median.max() / median.min() < 2.5, dict(zip(CELL_TYPES, median))
    easy = simulate_session("easy", num_neurons=200, duration_s=20.0)
    er = easy.firing_rates()
    assert np.median(er[easy.cell_type == "CH"]) > 2 * np.median(er[easy.cell_type == "RS"])


def test_varied_rates_span_a_wide_range():
    s = simulate_session("varied", num_neurons=200, duration_s=30.0)
    rates = s.firing_rates()
    assert np.percentile(rates, 10) < 1.5 and np.percentile(rates, 90) > 20.0, np.percentile(rates, [10, 90])
    assert np.any(s.merged_with >= 0)
    assert s.num_units < PRESETS["varied"]["recorded_fraction"] * 200


# ---------------------------------------------------------------------------------------------------------------------
# regions: the zero-lag population-coupling shortcut works on easy and fails on hard


@pytest.mark.parametrize("preset", ["easy", "hard"])
def test_population_coupling_feature(preset):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    sessions = simulate_dataset(preset, animals=(0, 1, 2), num_neurons=120, duration_s=60.0, progress_bar=False)
    x = np.concatenate([_population_coupling(s) for s in sessions])[:, None]
    y = np.concatenate([s.brain_region for s in sessions])
    pred = cross_val_predict(LogisticRegression(), x, y, cv=StratifiedKFold(5, shuffle=True, random_state=0))
    score = balanced_accuracy_score(y, pred)
    # measured with seeds 0-3: easy 0.75-0.89, hard 0.33-0.41 (chance 0.33)
    if preset == "easy":
        assert score > 0.70, score
    else:
        assert score < 0.55, score


# ---------------------------------------------------------------------------------------------------------------------
# realism knobs


def test_merge_fraction_unions_two_neurons():
    common = dict(num_neurons=60, duration_s=8.0, recorded_fraction=1.0, min_spikes=0)
    plain = simulate_session("easy", **common)
    merged = simulate_session("easy", merge_fraction=0.2, **common)
    assert merged.num_units == plain.num_units == 60
    is_merged = merged.merged_with >= 0
    assert is_merged.sum() == round(0.2 * 60)
    by_neuron = {int(i): t for i, t in zip(plain.neuron_index, plain.spike_times)}
    types = {int(i): c for i, c in zip(plain.neuron_index, plain.cell_type)}
    for j in np.flatnonzero(is_merged):
        dominant, other = int(merged.neuron_index[j]), int(merged.merged_with[j])
        union = np.sort(np.concatenate([by_neuron[dominant], by_neuron[other]]))
        assert np.array_equal(merged.spike_times[j], union)
        assert len(by_neuron[dominant]) >= len(by_neuron[other])
        assert merged.cell_type[j] == types[dominant]
    for j in np.flatnonzero(~is_merged):
        assert np.array_equal(merged.spike_times[j], by_neuron[int(merged.neuron_index[j])])


def test_drop_fraction_removes_low_rate_units():
    common = dict(num_neurons=150, duration_s=8.0)
    full = simulate_session("hard", **common)
    dropped = simulate_session("hard", drop_fraction=0.3, **common)
    assert dropped.num_units == full.num_units - round(0.3 * full.num_units)
    assert set(dropped.neuron_index) < set(full.neuron_index)
    kept = np.isin(full.neuron_index, dropped.neuron_index)
    rates = full.firing_rates()
    assert np.median(rates[~kept]) < np.median(rates[kept])


def test_drift_changes_rates_slowly():
    common = dict(num_neurons=60, duration_s=120.0, drift_period_s=20.0, num_regions=1, stim_sd=0.0)

    def block_rate_cv(s):
        edges = np.arange(0.0, s.duration + 1e-9, 10.0)
        counts = np.array([np.histogram(t, edges)[0] for t in s.spike_times], dtype=float)
        ok = counts.mean(1) > 20
        return np.median(counts[ok].std(1) / counts[ok].mean(1))

    steady = block_rate_cv(simulate_session("easy", drift=0.0, **common))
    drifting = block_rate_cv(simulate_session("easy", drift=0.5, **common))
    assert drifting > 2 * steady, (steady, drifting)


# ---------------------------------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(preset="nope"), "easy, hard, varied"),
        (dict(num_neurons=14), "5 \\* num_regions"),
        (dict(num_neurons=9, num_regions=2), "= 10 neurons"),
        (dict(duration_s=0.0), "duration_s"),
        (dict(duration_s=-3.0), "duration_s"),
        (dict(bogus_key=1), "valid keys: .*drift"),
        (dict(animal=-1), "animal"),
        (dict(recorded_fraction=0.0), "recorded_fraction"),
        (dict(merge_fraction=1.0), "merge_fraction"),
        (dict(region_mode="diagonal"), "region_mode"),
        (dict(type_proportions=(1, 1, 1)), "type_proportions"),
        (dict(bias_mean={"RS": 1.0}), "bias_mean"),
    ],
)
def test_bad_input_raises(kwargs, message):
    kwargs = dict(kwargs)
    preset = kwargs.pop("preset", "easy")
    with pytest.raises(ValueError, match=message):
        simulate_session(preset, **kwargs)


def test_bad_input_in_sorting_and_dataset():
    with pytest.raises(ValueError, match="sampling_frequency"):
        simulate_session("easy", num_neurons=20, duration_s=0.5).to_sorting(sampling_frequency=0)
    with pytest.raises(ValueError, match="num_channels"):
        simulate_sorting("easy", with_recording=True, num_channels=1, num_neurons=20, duration_s=0.5)
    with pytest.raises(ValueError, match="sessions_per_animal"):
        simulate_dataset("easy", sessions_per_animal=0, num_neurons=20, duration_s=0.5)
    with pytest.raises(ValueError, match="valid presets"):
        simulate_dataset("medium")


def test_stimulus_array_is_the_drive_the_neurons_receive():
    """Units follow the exposed stimulus at its own timing, not a shifted copy (checks the alignment)."""
    quiet = dict(slow_sd=0.0, osc_sd=0.0, global_sd=0.0, w_exc=0.0, w_inh=0.0, stim_sd=3.0, num_regions=1)
    s = simulate_session("easy", num_neurons=40, duration_s=60.0, **quiet)
    step = int(round(s.stimulus_rate_hz * 0.05))  # 50 ms bins
    stim = s.stimulus[: (len(s.stimulus) // step) * step].reshape(-1, step, 2).mean(1)
    edges = np.arange(stim.shape[0] + 1) * 0.05
    counts = np.array([np.histogram(t, edges)[0] for t in s.spike_times], dtype=float)

    def best_abs_corr(shift: int) -> float:
        x = np.roll(stim, shift, axis=0)
        c = [abs(np.corrcoef(u, x[:, ch])[0, 1]) for u in counts if u.std() > 0 for ch in range(2)]
        return float(np.median(c))

    aligned = best_abs_corr(0)
    assert aligned > 0.2
    assert aligned > 1.5 * best_abs_corr(2) and aligned > 3 * best_abs_corr(40)
    # a longer session starts with the same stimulus
    longer = simulate_session("easy", num_neurons=40, duration_s=70.0, **quiet)
    assert np.array_equal(longer.stimulus[: len(s.stimulus)], s.stimulus)


# ---------------------------------------------------------------------------------------------------------------------
# waveforms (simulate_templates and the recording of simulate_sorting)


@pytest.fixture(scope="module")
def waveform_sessions() -> list[SimulatedSession]:
    return simulate_dataset("easy", animals=(0, 1), num_neurons=40, duration_s=20.0, progress_bar=False)


def _trough_to_peak_ms(templates: np.ndarray, sampling_frequency: float = 30000.0) -> np.ndarray:
    trough = templates.argmin(axis=1)
    peak = np.array([t + w[t:].argmax() for t, w in zip(trough, templates)])
    return (peak - trough) * 1000.0 / sampling_frequency


def test_simulate_templates_shape_and_determinism(waveform_sessions):
    s = waveform_sessions[0]
    w = simulate_templates(s)
    assert w.shape == (s.num_units, 90) and w.dtype == np.float32 and np.all(np.isfinite(w))
    assert np.all(np.abs(w.argmin(axis=1) - 30) <= 1)  # trough at 1 ms (the spike time), negative
    assert np.all(simulate_templates(s, noise_level=0.0).argmin(axis=1) == 30)
    assert np.all(w.min(axis=1) < -20)
    assert np.array_equal(w, simulate_templates(s))
    assert not np.array_equal(w, simulate_templates(s, seed=1))
    assert not np.array_equal(w[:5], simulate_templates(waveform_sessions[1])[:5])
    assert simulate_templates(s, num_samples=60, sampling_frequency=20000.0).shape == (s.num_units, 60)
    # noise-free shapes differ from the noisy ones by the residual of averaging min(N, 500) spikes only
    clean = simulate_templates(s, noise_level=0.0)
    counts = np.minimum([len(t) for t in s.spike_times], 500)
    residual_sd = (w - clean).std(axis=1)
    assert np.all(residual_sd < 4 * 5.0 / np.sqrt(counts))


def test_simulate_templates_width_depends_on_excitatory_vs_inhibitory(waveform_sessions):
    widths = np.concatenate([_trough_to_peak_ms(simulate_templates(s)) for s in waveform_sessions])
    types = np.concatenate([s.cell_type for s in waveform_sessions])
    fs, exc = widths[types == "FS"], widths[np.isin(types, ["RS", "IB", "CH"])]
    lts = widths[types == "LTS"]
    assert fs.mean() < 0.4 < exc.mean() and 0.5 < exc.mean() < 0.9
    assert fs.mean() < lts.mean() < exc.mean()
    assert np.isin(types, ["FS", "LTS"])[widths <= 0.425].mean() > 0.7  # CellExplorer's narrow rule works ...
    assert (exc <= 0.425).mean() < 0.2  # ... with overlap


def test_simulate_templates_do_not_depend_on_region():
    # the same network recorded with different region labels (num_regions changes the wiring, so compare the
    # parameter draws instead): a unit's noise-free waveform depends only on session, neuron and cell type
    s = simulate_session("easy", num_neurons=40, duration_s=5.0)
    relabelled = SimulatedSession(
        spike_times=s.spike_times,
        duration=s.duration,
        cell_type=s.cell_type,
        brain_region=np.array(["regionX"] * s.num_units),
        animal_id=s.animal_id,
        session_id=s.session_id,
        stimulus=s.stimulus,
        stimulus_rate_hz=s.stimulus_rate_hz,
        neuron_index=s.neuron_index,
        merged_with=s.merged_with,
        params=s.params,
    )
    assert np.array_equal(simulate_templates(s), simulate_templates(relabelled))
    # and a neuron keeps its waveform when fewer units are recorded
    fewer = simulate_session("easy", num_neurons=40, duration_s=5.0, recorded_fraction=0.5)
    full = {int(i): w for i, w in zip(s.neuron_index, simulate_templates(s, noise_level=0.0))}
    for i, w in zip(fewer.neuron_index, simulate_templates(fewer, noise_level=0.0)):
        if int(i) in full:
            assert np.array_equal(w, full[int(i)])


def test_simulate_templates_bad_input(waveform_sessions):
    s = waveform_sessions[0]
    with pytest.raises(ValueError, match="num_samples"):
        simulate_templates(s, num_samples=0)
    with pytest.raises(ValueError, match="noise_level"):
        simulate_templates(s, noise_level=-1.0)
    with pytest.raises(ValueError, match="sampling_frequency"):
        simulate_templates(s, sampling_frequency=0.0)


def test_recording_templates_match_simulate_templates():
    import spikeinterface.core as sc

    kwargs = dict(num_neurons=20, duration_s=6.0)
    recording, sorting = simulate_sorting("easy", animal=0, session=0, with_recording=True, num_channels=8, **kwargs)
    sim = simulate_session("easy", animal=0, session=0, **kwargs)
    expected = simulate_templates(sim, noise_level=0.0)
    unit_ids = sorting.unit_ids[:6]
    analyzer = sc.create_sorting_analyzer(sorting.select_units(unit_ids), recording, sparse=False)
    analyzer.compute(["random_spikes", "templates"], verbose=False)  # 1 ms before, 2 ms after: 90 samples
    templates = analyzer.get_extension("templates").get_data()
    assert templates.shape == (6, 90, 8)
    channel = np.abs(templates).max(axis=1).argmax(axis=1)
    peak = templates[np.arange(6), :, channel]
    for i in range(6):
        assert np.corrcoef(peak[i], expected[i])[0, 1] > 0.95
        assert 0.8 < peak[i].min() / expected[i].min() < 1.25
