"""Covariates (surrounding information) for NeurPIR models: the extension's covariates, NWB behaviour -> grid,
and `neuronid annotate` passing a file's behaviour to a model trained with covariates."""

import warnings
from datetime import datetime, timezone

import numpy as np
import pytest
import spikeinterface.core as si
from conftest import make_analyzer

import spikeinterface_neuronid  # noqa: F401  (registers the extension)
from spikeinterface_neuronid.inference import MissingCovariatesWarning
from spikeinterface_neuronid.models import default_model_path

DURATION = 12.0


def _zero_warnings(record):
    return [w for w in record if issubclass(w.category, MissingCovariatesWarning)]


# ----------------------------------------------------------------------------------------------------------
# the extension's covariates / covariate_rate_hz


def test_extension_covariates_change_neurpir_output_and_persist(tmp_path):
    analyzer = make_analyzer(num_units=5, duration=DURATION, format="binary_folder", folder=tmp_path / "a")
    rate = 100.0
    cov = np.random.default_rng(0).normal(size=(int(DURATION * rate), 2))
    expected = r"expects 2 covariates \(stimulus/behaviour\); none given, zeros used\. Pass covariates="
    with pytest.warns(MissingCovariatesWarning, match=expected) as record:
        bare = analyzer.compute("neuron_embedding", method="neurpir", progress_bar=False).get_data()
    assert len(_zero_warnings(record)) == 1
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        zeros = analyzer.compute(
            "neuron_embedding", method="neurpir", covariates=np.zeros_like(cov), covariate_rate_hz=rate
        ).get_data()
    assert not _zero_warnings(record)  # given covariates (even zeros): no warning
    np.testing.assert_allclose(zeros, bare, rtol=1e-5, atol=1e-6)

    np.save(tmp_path / "cov.npy", cov)
    ext = analyzer.compute(
        "neuron_embedding", method="neurpir", covariates=str(tmp_path / "cov.npy"), covariate_rate_hz=rate
    )
    emb = ext.get_data()
    assert not np.allclose(emb, bare, atol=1e-4)  # the covariates change the embedding
    summary = ext.params["covariates"]
    assert summary["num_covariates"] == 2 and summary["num_samples"] == [cov.shape[0]]
    assert summary["source"] == str(tmp_path / "cov.npy") and ext.params["covariate_rate_hz"] == rate
    # the array lives in the data (not the params): reload, select and merge reuse it
    reloaded = si.load_sorting_analyzer(tmp_path / "a").get_extension("neuron_embedding")
    np.testing.assert_array_equal(reloaded.get_data(), emb)
    np.testing.assert_array_equal(reloaded.data["covariates_segment_0"], cov.astype(np.float32))
    sub = analyzer.select_units(analyzer.unit_ids[:3]).get_extension("neuron_embedding")
    np.testing.assert_array_equal(sub.get_data(), emb[:3])
    assert sub.data["covariates_segment_0"].shape == cov.shape
    merged = analyzer.merge_units([list(analyzer.unit_ids[:2])], format="memory").get_extension("neuron_embedding")
    # NeurPIR encodes units independently: the untouched units keep their rows only if the covariates were reused
    np.testing.assert_allclose(merged.get_data()[:3], emb[2:], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(covariate_rate_hz=100.0), ValueError, "together"),
        (dict(covariates=np.zeros((1200, 1)), covariate_rate_hz=100.0), ValueError, "takes 2 covariates"),
        (dict(covariates=np.zeros((100, 2)), covariate_rate_hz=100.0), ValueError, "cover the duration"),
        (dict(covariates=np.zeros(1200), covariate_rate_hz=100.0), ValueError, "2-D"),
        (dict(covariates=np.full((1200, 2), np.nan), covariate_rate_hz=100.0), ValueError, "NaN"),
        (dict(covariates="missing.npy", covariate_rate_hz=100.0), FileNotFoundError, "not found"),
        (dict(covariates=np.zeros((1200, 2)), covariate_rate_hz=-1.0), ValueError, "positive"),
    ],
)
def test_extension_covariates_are_checked(kwargs, error, match):
    analyzer = make_analyzer(num_units=3, duration=DURATION)
    with pytest.raises(error, match=match):
        analyzer.compute("neuron_embedding", method="neurpir", **kwargs)


def test_covariates_for_a_model_without_them_are_an_error_before_the_old_result_is_deleted(tmp_path):
    analyzer = make_analyzer(num_units=3, duration=DURATION, format="binary_folder", folder=tmp_path / "a")
    with pytest.warns(MissingCovariatesWarning, match="none given, zeros used"):
        emb = analyzer.compute("neuron_embedding", method="neurpir").get_data()
    with pytest.raises(ValueError, match="takes none"):
        analyzer.compute("neuron_embedding", covariates=np.zeros((1200, 2)), covariate_rate_hz=100.0)
    np.testing.assert_array_equal(analyzer.get_extension("neuron_embedding").get_data(), emb)


# ----------------------------------------------------------------------------------------------------------
# NWB behaviour / trials -> covariates on a regular grid


def _nwbfile(num_units=6, behaviour=True, position=True, trials=True, seed=0):
    pytest.importorskip("pynwb")
    from pynwb import NWBFile, TimeSeries
    from pynwb.behavior import Position
    from pynwb.file import Subject

    rng = np.random.default_rng(seed)
    nwbfile = NWBFile(
        session_description="covariates test session",
        identifier="cov-test",
        session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc),
        session_id="ses-0",
        experimenter=["Doe, Jane"],
        institution="Test University",
        experiment_description="test",
        keywords=["test"],
    )
    nwbfile.subject = Subject(subject_id="m1", species="Mus musculus", sex="F", age="P60D", description="test mouse")
    for _ in range(num_units):
        rate = rng.uniform(3, 20)
        nwbfile.add_unit(spike_times=np.sort(rng.uniform(0.001, DURATION - 0.001, rng.poisson(rate * DURATION))))
    nwbfile.units.resolution = 1 / 30000
    module = nwbfile.create_processing_module("behavior", "behaviour of the test animal")
    if behaviour:  # a ramp v(t) = t at 1 kHz from t = 0: bin means are known exactly
        module.add(TimeSeries(name="speed", data=np.arange(int(DURATION * 1000)) / 1000.0, rate=1000.0, unit="m/s"))
    if position:  # 2-D SpatialSeries on irregular timestamps, inside a Position container
        t = np.sort(rng.uniform(0, DURATION, 400))
        pos = Position(name="Position")
        pos.create_spatial_series(
            name="position", data=np.c_[np.sin(t), np.cos(t)], timestamps=t, reference_frame="arena centre", unit="m"
        )
        module.add(pos)
    if trials:
        for start in (1.0, 5.0, 9.0):
            nwbfile.add_trial(start_time=start, stop_time=start + 2.01)
    return nwbfile


def test_nwb_behaviour_gives_covariates_on_the_model_grid():
    pytest.importorskip("pynwb")
    from spikeinterface_neuronid.nwb import read_nwb_covariates

    nwbfile = _nwbfile()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 4 channels asked, 4 offered: no warning
        cov = read_nwb_covariates(nwbfile, 4, duration=DURATION, rate_hz=50.0, standardize=False)
    assert cov.available == ["behavior/Position/position", "behavior/speed", "trials"]
    assert cov.channels == [
        "behavior/Position/position[0]",
        "behavior/Position/position[1]",
        "behavior/speed[0]",
        "trials",
    ]
    assert cov.values.shape == (600, 4) and cov.values.dtype == np.float32 and cov.rate_hz == 50.0
    # grid sample i covers [i / 50, (i + 1) / 50): the mean of the 1 kHz ramp's 20 samples in it
    i = np.arange(600)
    np.testing.assert_allclose(cov.values[:, 2], i / 50 + 9.5 / 1000, atol=1e-5)
    trial = cov.values[:, 3]
    assert trial[50:150].min() == 1 and trial[:50].max() == 0 and trial[151:250].max() == 0
    np.testing.assert_allclose(trial[150], 0.5, atol=1e-6)  # [3.00, 3.02) half inside the trial ending at 3.01
    # a later segment start shifts the grid
    shifted = read_nwb_covariates(nwbfile, 4, duration=2.0, t_start=4.0, standardize=False)
    np.testing.assert_allclose(shifted.values[:, 2], 4.0 + np.arange(100) / 50 + 9.5 / 1000, atol=1e-5)
    # standardised by default: zero mean, unit variance per channel
    z = read_nwb_covariates(nwbfile, 4, duration=DURATION).values
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-4)


def test_nwb_covariates_pick_pad_and_choose_sources_explicitly(tmp_path):
    pytest.importorskip("pynwb")
    from pynwb import NWBHDF5IO

    from spikeinterface_neuronid.nwb import read_nwb_covariates

    nwbfile = _nwbfile()
    with pytest.warns(UserWarning, match="offers 4 covariate channels .* takes 2: using behavior/Position"):
        picked = read_nwb_covariates(nwbfile, 2, duration=DURATION)
    assert picked.channels == ["behavior/Position/position[0]", "behavior/Position/position[1]"]
    chosen = read_nwb_covariates(nwbfile, 2, duration=DURATION, sources=["behavior/speed", "trials"])
    assert chosen.channels == ["behavior/speed[0]", "trials"]
    with pytest.raises(ValueError, match=r"not in the NWB file; available: \['behavior/Position/position'"):
        read_nwb_covariates(nwbfile, 2, duration=DURATION, sources=["behavior/running"])

    path = tmp_path / "only_speed.nwb"
    with NWBHDF5IO(path, "w") as io:
        io.write(_nwbfile(position=False, trials=False))
    with pytest.warns(UserWarning, match=r"only_speed.nwb: .*only 1 covariate channel.* 1 channel\(s\) of zeros"):
        padded = read_nwb_covariates(path, 2, duration=DURATION)
    assert padded.channels == ["behavior/speed[0]", "zeros"] and not padded.is_padding_only
    assert np.all(padded.values[:, 1] == 0) and padded.values.shape == (600, 2)
    with pytest.warns(UserWarning, match="no behavioural time series"):
        empty = read_nwb_covariates(_nwbfile(behaviour=False, position=False, trials=False), 2, duration=DURATION)
    assert empty.is_padding_only and empty.available == []


def test_annotate_gives_a_neurpir_model_the_files_behaviour(tmp_path):
    pytest.importorskip("pynwb")
    pytest.importorskip("ndx_neuron_embedding")
    from pynwb import NWBHDF5IO

    from spikeinterface_neuronid.nwb.annotate import annotate_nwb_file
    from spikeinterface_neuronid.nwb import read_embedding_arrays

    source = tmp_path / "sub-m1_ses-0.nwb"
    with NWBHDF5IO(source, "w") as io:
        io.write(_nwbfile(position=False))  # speed + trials: the 2 channels the shipped NeurPIR model takes
    model = str(default_model_path("neurpir"))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        annotate_nwb_file(source, tmp_path / "with.nwb", model=model)
    assert not _zero_warnings(record) and not [w for w in record if "covariate channel" in str(w.message)]
    with_cov = read_embedding_arrays(tmp_path / "with.nwb")
    assert "2 covariate channel(s) at 50.0 Hz from sub-m1_ses-0.nwb: behavior/speed[0], trials" in (
        with_cov["model"]["method"]
    )
    with pytest.warns(MissingCovariatesWarning, match="none given, zeros used"):
        annotate_nwb_file(source, tmp_path / "without.nwb", model=model, covariates=None)
    without = read_embedding_arrays(tmp_path / "without.nwb")
    assert "covariate" not in without["model"]["method"]
    assert not np.allclose(with_cov["embedding"], without["embedding"], atol=1e-4)
