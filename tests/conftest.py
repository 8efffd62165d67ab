"""Shared test helpers: small generated analyzers."""

from dataclasses import replace

import numpy as np
import pytest
import spikeinterface.core as si
import torch

from spikeinterface_neuronid.benchmark import QUICK
from spikeinterface_neuronid.bundle import ModelBundle
from spikeinterface_neuronid.methods.nuclr import NuCLRConfig, build_encoder

FS = 10_000.0


def make_analyzer(num_units=10, duration=32.0, seed=0, format="memory", folder=None, silent_units=0, max_rate=20.0):
    """A small analyzer of Poisson units; ``silent_units`` first units have no spike."""
    rng = np.random.default_rng(seed)
    rates = rng.uniform(2.0, max_rate, num_units)
    sorting = si.generate_sorting(
        num_units=num_units, durations=[duration], firing_rates=rates, sampling_frequency=FS, seed=seed
    )
    if silent_units:
        trains = {uid: sorting.get_unit_spike_train(uid) for uid in sorting.unit_ids}
        for uid in list(trains)[:silent_units]:
            trains[uid] = np.array([], dtype=np.int64)
        sorting = si.NumpySorting.from_unit_dict([trains], sampling_frequency=FS)
    recording = si.generate_recording(num_channels=4, durations=[duration], sampling_frequency=FS, seed=seed)
    return si.create_sorting_analyzer(sorting, recording, format=format, folder=folder, sparse=False)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A tiny random-weight span model saved to a file (the extension, input and recompute tests)."""
    torch.manual_seed(0)
    config = NuCLRConfig.cpu(dim=16, num_heads=2, projector_dim=16)
    bundle = ModelBundle.from_modules("nuclr", config, build_encoder(config), name="test-random")
    return str(bundle.save(tmp_path_factory.mktemp("model") / "tiny.safetensors"))


#: Benchmark settings small enough for a test run: one preset, 3 animals x 30 neurons x 40 s.
TINY_BENCHMARK = replace(
    QUICK,
    presets=("easy",),
    num_animals=3,
    num_neurons=30,
    duration_s=40.0,
    transductive_seeds=(0, 1),
    label_fractions=(0.5, 1.0),
    bootstrap_resamples=100,
    num_threads=1,
)
