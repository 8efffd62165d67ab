"""A failed, interrupted or killed recompute of neuron_embedding leaves the previous result (issue 11 items 1, 7)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import spikeinterface.core as si
import torch

import spikeinterface_neuronid  # noqa: F401  (registers the extension)
from spikeinterface_neuronid import extension as extension_module
from spikeinterface_neuronid import recompute

from conftest import make_analyzer

FORMATS = ["memory", "binary_folder", "zarr"]


def _computed(tmp_path, format, model_path):
    folder = None if format == "memory" else tmp_path / ("a.zarr" if format == "zarr" else "a")
    analyzer = make_analyzer(num_units=6, duration=24.0, format=format, folder=folder)
    ext = analyzer.compute("neuron_embedding", model=model_path, progress_bar=False)
    return analyzer, folder, ext.get_data().copy(), dict(ext.params)


def _assert_previous_result(analyzer, folder, embedding, params):
    ext = analyzer.get_extension("neuron_embedding")
    assert ext is not None, "the previous result was dropped from memory"
    np.testing.assert_array_equal(ext.get_data(), embedding)
    assert ext.params == params
    if folder is not None:
        loaded = si.load_sorting_analyzer(folder)
        ext = loaded.get_extension("neuron_embedding")
        assert ext is not None, "the previous result was deleted on disk"
        np.testing.assert_array_equal(ext.get_data(), embedding)
        assert ext.params == params
        if Path(folder, "extensions").is_dir():
            assert not Path(folder, recompute.STAGING_NAME).exists()


def _truncated(model_path, tmp_path):
    data = Path(model_path).read_bytes()
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(data[: len(data) // 2])
    return str(path)


BAD = [
    (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
    (dict(batch_size=-1), ValueError, "batch_size must be >= 1"),
    (dict(batch_size=None), TypeError, "batch_size must be an integer"),
    (dict(batch_size=2.5), TypeError, "batch_size must be an integer"),
    (dict(seed=None), TypeError, "seed must be an integer"),
    (dict(seed=-1), ValueError, "seed must be >= 0"),
    (dict(seed="x"), TypeError, "seed must be an integer"),
    (dict(max_context_units=0), ValueError, "max_context_units must be >= 1"),
    (dict(max_context_units=3.5), TypeError, "max_context_units must be an integer or None"),
    (dict(device="gpu"), ValueError, "device must be a torch device name.*did you mean 'cuda'"),
    (dict(device="tpu:0"), ValueError, "device must be"),
    (dict(device=0), TypeError, "device must be a torch device name"),
    (dict(model="/nonexistent/typo.safetensors"), FileNotFoundError, "model file not found"),
    (dict(fine_tune_steps=-2), ValueError, "fine_tune_steps must be >= 0"),
    (dict(fine_tune_steps=1.5), TypeError, "fine_tune_steps must be an integer"),
]


@pytest.mark.parametrize("format", FORMATS)
def test_bad_parameters_keep_the_previous_result(tmp_path, model_path, format):
    analyzer, folder, embedding, params = _computed(tmp_path, format, model_path)
    cases = list(BAD)
    cases.append((dict(model=_truncated(model_path, tmp_path)), ValueError, "truncated"))
    if not torch.cuda.is_available():
        cases.append((dict(device="cuda"), ValueError, "no CUDA device here.*use device='cpu'"))
    for overrides, error, message in cases:
        kwargs = {"model": model_path, "progress_bar": False, **overrides}
        with pytest.raises(error, match=message):
            analyzer.compute("neuron_embedding", **kwargs)
        _assert_previous_result(analyzer, folder, embedding, params)


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, RuntimeError])
def test_interrupted_recompute_keeps_the_previous_result(tmp_path, model_path, format, interrupt, monkeypatch):
    analyzer, folder, embedding, params = _computed(tmp_path, format, model_path)
    import spikeinterface_neuronid.inference as inference

    def stop(*args, **kwargs):
        raise interrupt("stopped during the compute")

    monkeypatch.setattr(inference, "embed_populations", stop)
    with pytest.raises(interrupt, match="stopped during the compute"):
        analyzer.compute("neuron_embedding", model=model_path, seed=3, progress_bar=False)
    _assert_previous_result(analyzer, folder, embedding, params)


@pytest.mark.parametrize("format", ["binary_folder", "zarr"])
def test_interrupt_while_writing_keeps_the_previous_result(tmp_path, model_path, format, monkeypatch):
    analyzer, folder, embedding, params = _computed(tmp_path, format, model_path)
    cls = extension_module.ComputeNeuronEmbedding
    original = cls._save_data

    def half_written(self):
        original(self)  # the new data is in the staging location ...
        raise KeyboardInterrupt  # ... when Ctrl-C arrives, before the swap

    monkeypatch.setattr(cls, "_save_data", half_written)
    with pytest.raises(KeyboardInterrupt):
        analyzer.compute("neuron_embedding", model=model_path, seed=3, progress_bar=False)
    monkeypatch.setattr(cls, "_save_data", original)
    _assert_previous_result(analyzer, folder, embedding, params)


@pytest.mark.parametrize("format", ["binary_folder", "zarr"])
def test_successful_recompute_replaces_the_result(tmp_path, model_path, format):
    analyzer, folder, embedding, params = _computed(tmp_path, format, model_path)
    ext = analyzer.compute("neuron_embedding", model=model_path, max_context_units=2, progress_bar=False)
    assert ext.params["max_context_units"] == 2
    loaded = si.load_sorting_analyzer(folder).get_extension("neuron_embedding")
    assert loaded.params["max_context_units"] == 2
    np.testing.assert_array_equal(loaded.get_data(), ext.get_data())
    assert not np.array_equal(loaded.get_data(), embedding)  # grouped context: a different result
    if format == "binary_folder":
        assert not (folder / recompute.STAGING_NAME).exists()
        assert sorted(p.name for p in (folder / "extensions").iterdir()) == ["neuron_embedding"]
    else:
        import zarr

        root = zarr.open(str(folder), mode="r")
        assert recompute._ZARR_STAGING not in root and list(root["extensions"].keys()) == ["neuron_embedding"]


def test_killed_recompute_keeps_the_previous_result(tmp_path, model_path):
    """SIGKILL in the middle of a recompute of a saved analyzer: the previous result is still there."""
    analyzer, folder, embedding, params = _computed(tmp_path, "binary_folder", model_path)
    marker = tmp_path / "computing"
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        import spikeinterface.core as si
        import spikeinterface_neuronid
        import spikeinterface_neuronid.inference as inference

        def slow(*args, **kwargs):
            Path({str(marker)!r}).write_text("x")
            time.sleep(60)

        inference.embed_populations = slow
        analyzer = si.load_sorting_analyzer({str(folder)!r})
        analyzer.compute("neuron_embedding", model={model_path!r}, seed=5, progress_bar=False)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, "the recompute ended before it started computing"
            assert time.monotonic() < deadline
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    loaded = si.load_sorting_analyzer(folder).get_extension("neuron_embedding")
    np.testing.assert_array_equal(loaded.get_data(), embedding)
    assert json.loads((folder / "extensions" / "neuron_embedding" / "params.json").read_text())["seed"] == 0
