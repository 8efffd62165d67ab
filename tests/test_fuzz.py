"""Generated inputs (Hypothesis): 1,200 sortings and parameter sets (issue 11, "Done when").

Every input either embeds or fails with a ValueError / TypeError whose message names what to fix, and a failed
recompute leaves the previous result. Examples are derandomised so that CI runs the same 1,200 cases each time.
"""

import warnings

import numpy as np
import pytest
import spikeinterface.core as si
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spikeinterface_neuronid  # noqa: F401  (registers the extension)
from spikeinterface_neuronid.bundle import ModelBundle
from spikeinterface_neuronid.corpus import sorting_to_spike_train_sets
from spikeinterface_neuronid.inference import embed_populations
from spikeinterface_neuronid.methods.nuclr import NuCLRConfig, build_encoder

from conftest import make_analyzer

SETTINGS = dict(
    deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
DIM = 8


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    config = NuCLRConfig.cpu(dim=DIM, num_heads=2, projector_dim=8, edge_dim=4)
    bundle = ModelBundle.from_modules("nuclr", config, build_encoder(config), name="fuzz")
    return str(bundle.save(tmp_path_factory.mktemp("model") / "fuzz.safetensors"))


@st.composite
def sortings(draw):
    fs = draw(st.sampled_from([0.5, 10.0, 999.0, 1000.0, 5000.0, 30000.0]))
    duration = draw(st.floats(0.5, 40.0))
    n_samples = max(1, int(duration * fs))
    trains = {}
    for unit in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["silent", "sparse", "poisson", "burst", "duplicates", "edges"]))
        rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        if kind == "silent":
            samples = np.array([], dtype=np.int64)
        elif kind == "sparse":
            samples = rng.integers(0, n_samples, size=draw(st.integers(1, 4)))
        elif kind == "poisson":
            samples = rng.integers(0, n_samples, size=int(rng.uniform(0.1, 50.0) * duration))
        elif kind == "burst":
            starts = rng.integers(0, n_samples, size=max(1, int(duration)))
            samples = (starts[:, None] + np.arange(5)[None, :] * max(1, int(0.004 * fs))).ravel()
        elif kind == "duplicates":
            base = rng.integers(0, n_samples, size=int(10 * duration) + 1)
            samples = np.concatenate([base, base[: len(base) // 3]])
        else:  # exactly on 20 ms bin edges
            samples = (np.arange(0, duration, 0.02) * fs).astype(np.int64)
        trains[f"u{unit}"] = np.sort(np.clip(samples, 0, n_samples - 1)).astype(np.int64)
    return fs, n_samples, trains


@settings(max_examples=600, **SETTINGS)
@given(case=sortings())
def test_generated_sortings_embed_or_fail_clearly(model_path, case):
    fs, n_samples, trains = case
    sorting = si.NumpySorting.from_unit_dict([trains], sampling_frequency=fs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # coarse grids, duplicates and empty populations warn by design
        try:
            segments = sorting_to_spike_train_sets(sorting, [n_samples])
            result = embed_populations(model_path, segments)
        except (ValueError, TypeError) as err:
            message = str(err)
            assert len(message) > 20, message
            assert any(
                word in message for word in ("sampling_frequency", "units", "unit", "window", "segment", "s)")
            ), message
            return
    assert result.embedding.shape == (len(trains), 2 * DIM)  # [population context, single unit]
    assert np.all(np.isfinite(result.embedding[result.embedded]))
    assert np.all(np.isnan(result.embedding[~result.embedded]))


def _ints():
    return st.one_of(
        st.integers(-3, 40),
        st.floats(-2.0, 40.0),
        st.just(float("nan")),
        st.none(),
        st.booleans(),
        st.text(max_size=3),
        st.just([4]),
    )


@st.composite
def parameter_sets(draw, model_path, bad_files):
    params = {}
    for name in ("batch_size", "seed", "max_context_units", "fine_tune_seed"):
        if draw(st.booleans()):
            params[name] = draw(_ints())
    if draw(st.booleans()):
        params["fine_tune_steps"] = draw(st.sampled_from([0, -1, 1.5, "2", None, True]))
    if draw(st.booleans()):
        params["device"] = draw(st.sampled_from(["cpu", "cuda", "gpu", "cuda:3", "mps", "", "CPU", 0, None]))
    if draw(st.booleans()):
        params["method"] = draw(st.sampled_from([None, "nuclr", "neurpir", "x", 3]))
    params["model"] = draw(st.sampled_from([model_path] * 4 + list(bad_files) + [3, None]))
    if draw(st.integers(0, 9)) == 0:
        params["covariates"] = draw(st.sampled_from([np.zeros((10, 2)), np.zeros(5), "x.npy"]))
        params["covariate_rate_hz"] = draw(st.sampled_from([None, 10.0, -1.0, "10"]))
    if draw(st.integers(0, 9)) == 0:
        params[draw(st.sampled_from(["batchsize", "n_units", "sed"]))] = 1
    return params


class _Previous:
    """The analyzer's last successful result, to check that a failed recompute kept it."""

    def __init__(self, analyzer):
        ext = analyzer.get_extension("neuron_embedding")
        self.embedding = ext.get_data().copy()
        self.params = dict(ext.params)


@pytest.fixture(scope="module")
def analyzer_and_files(model_path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    truncated = folder / "truncated.safetensors"
    data = open(model_path, "rb").read()
    truncated.write_bytes(data[: len(data) // 3])
    not_a_model = folder / "notes.safetensors"
    not_a_model.write_text("hello")
    analyzer = make_analyzer(num_units=5, duration=24.0)
    analyzer.compute("neuron_embedding", model=model_path, progress_bar=False)
    bad = [str(folder / "missing.safetensors"), str(truncated), str(not_a_model), str(folder)]
    return analyzer, bad


def test_generated_parameter_sets_fail_clearly_and_keep_the_previous_result(model_path, analyzer_and_files):
    analyzer, bad_files = analyzer_and_files
    previous = _Previous(analyzer)
    counts = dict(ok=0, failed=0)

    @settings(max_examples=600, **SETTINGS)
    @given(params=parameter_sets(model_path, bad_files))
    def check(params):
        nonlocal previous
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                analyzer.compute("neuron_embedding", progress_bar=False, **params)
            except (ValueError, TypeError) as err:
                counts["failed"] += 1
                message = str(err)
                named = [k for k in params if k in message] + [w for w in ("model", "file", "covariate") if w in message]
                assert named, f"{params} -> {message}"
                ext = analyzer.get_extension("neuron_embedding")
                assert ext is not None
                np.testing.assert_array_equal(ext.get_data(), previous.embedding)
                assert ext.params == previous.params
                return
        counts["ok"] += 1
        previous = _Previous(analyzer)

    check()
    assert counts["ok"] >= 5 and counts["failed"] >= 300, counts
