"""Mock factories for ndx-neuron-embedding types, in the style of ``pynwb.testing.mock`` / ndx-pose."""
from typing import Optional, Sequence

import numpy as np
from pynwb import NWBFile
from pynwb.misc import Units
from pynwb.testing.mock.ecephys import mock_Units
from pynwb.testing.mock.utils import name_generator

from .. import NeuronEmbeddingModel
from ..helpers import add_neuron_embedding, add_predicted_labels

__all__ = ["mock_NeuronEmbeddingModel", "mock_Units_with_neuron_embedding"]

MOCK_CLASS_LABELS = ("pyramidal", "pv", "sst", "vip")


def mock_NeuronEmbeddingModel(
    *,
    name: Optional[str] = None,
    description: str = "Mock neuron embedding model used for testing.",
    model_name: str = "mock-neuronid",
    model_version: str = "0.0.1",
    model_checksum: str = "0" * 64,
    checksum_algorithm: str = "sha256",
    method: Optional[str] = "Random projection of mock spike features (testing only).",
    training_data_description: str = "No training data; weights are random (testing only).",
    embedding_dim: Optional[int] = 8,
    model_url: Optional[str] = None,
    inference_software: Optional[str] = None,
    inference_date=None,
    nwbfile: Optional[NWBFile] = None,
) -> NeuronEmbeddingModel:
    """Create a NeuronEmbeddingModel; if ``nwbfile`` is given, add it with ``add_lab_meta_data``."""
    model = NeuronEmbeddingModel(
        name=name or name_generator("neuron_embedding_model"),
        description=description,
        model_name=model_name,
        model_version=model_version,
        model_checksum=model_checksum,
        checksum_algorithm=checksum_algorithm,
        method=method,
        training_data_description=training_data_description,
        embedding_dim=embedding_dim,
        model_url=model_url,
        inference_software=inference_software,
        inference_date=inference_date,
    )
    if nwbfile is not None:
        nwbfile.add_lab_meta_data(model)
    return model


def mock_Units_with_neuron_embedding(
    *,
    units: Optional[Units] = None,
    num_units: int = 10,
    model: Optional[NeuronEmbeddingModel] = None,
    embedding_dim: Optional[int] = None,
    task: str = "cell_type",
    class_labels: Sequence[str] = MOCK_CLASS_LABELS,
    num_without_embedding: int = 0,
    unknown_label: Optional[str] = None,
    threshold: float = 0.0,
    seed: int = 0,
    nwbfile: Optional[NWBFile] = None,
) -> Units:
    """Add mock ``embedding``, ``<task>``, ``<task>_probabilities`` and ``<task>_confidence`` columns to a Units table.

    If ``units`` is None, ``nwbfile.units`` is used if present, else a ``pynwb.testing.mock.ecephys.mock_Units``
    with ``num_units`` rows is created (and set on ``nwbfile`` if given). If ``model`` is None, a
    :func:`mock_NeuronEmbeddingModel` is created (added to ``nwbfile`` if given). Values are random but
    deterministic given ``seed``; probabilities rows sum to 1 and labels are their argmax.

    The last ``num_without_embedding`` units have no embedding (NaN embedding and probabilities rows); they, and
    the units whose largest probability is below ``threshold``, are labelled ``unknown_label`` (required when
    either is used).
    """
    if units is None:
        if nwbfile is not None and nwbfile.units is not None:
            units = nwbfile.units
        else:
            units = mock_Units(num_units=num_units, seed=seed, nwbfile=nwbfile)
    if model is None:
        model = mock_NeuronEmbeddingModel(embedding_dim=embedding_dim or 8, nwbfile=nwbfile)
    dim = embedding_dim or (int(model.embedding_dim) if model.embedding_dim is not None else 8)
    n = len(units.id)
    if not 0 <= num_without_embedding <= n:
        raise ValueError(f"num_without_embedding must be in [0, {n}], got {num_without_embedding}")
    rng = np.random.default_rng(seed)
    embedding = rng.standard_normal((n, dim)).astype(np.float32)
    logits = rng.standard_normal((n, len(class_labels)))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = None
    if num_without_embedding or threshold > 0:
        missing = np.arange(n) >= n - num_without_embedding
        embedding[missing] = np.nan
        probs[missing] = np.nan
        labels = [
            unknown_label if m or p.max() < threshold else class_labels[int(p.argmax())]
            for m, p in zip(missing, probs)
        ]
    add_neuron_embedding(units, embedding, model)
    add_predicted_labels(units, task, labels, probs, class_labels, model, unknown_label=unknown_label)
    return units
