"""spikeinterface-neuronid: which kind of neuron each spike-sorted unit is, from population activity.

Importing this package registers the ``"neuron_embedding"`` SpikeInterface analyzer extension::

    import spikeinterface_neuronid
    emb = sorting_analyzer.compute("neuron_embedding").get_data()

torch is imported only when a model is used, so saved analyzers can be inspected without it.
"""

from __future__ import annotations

import importlib

from .extension import ComputeNeuronEmbedding, compute_neuron_embedding

__version__ = "0.1.0"

_LAZY = {
    "ModelBundle": "bundle",
    "pretrain": "training",
    "fine_tune": "training",
    "embed_populations": "inference",
    "default_model_path": "models",
    "SpikeTrainSet": "data",
    "WindowSpec": "data",
    "simulate_session": "simulation",
    "simulate_sorting": "simulation",
    "simulate_dataset": "simulation",
    "fit_head": "calibration",
    "LinearHead": "heads",
    "neuronid_label_units": "labeling",
}

__all__ = ["ComputeNeuronEmbedding", "compute_neuron_embedding", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
