"""NWB extension for per-unit embeddings and predicted labels (``ndx-neuron-embedding``).

Types (all generated from the spec with ``pynwb.get_class``):

- :class:`NeuronEmbeddingModel` -- ``LabMetaData`` provenance record of the model (add with
  ``nwbfile.add_lab_meta_data``).
- :class:`NeuronEmbedding` -- float32 ``VectorData`` column, shape (num_rows, embedding_dim).
- :class:`PredictedLabel` -- text ``VectorData`` column, shape (num_rows,), optional ``class_labels``,
  ``unknown_label`` (abstention label) and ``probabilities`` (reference to its :class:`ClassProbabilities`).
- :class:`ClassProbabilities` -- float32 ``VectorData`` column, shape (num_rows, num_classes), required ordered
  ``class_labels``; all-NaN rows where the model has no prediction.

Every column has a required ``model`` attribute (object reference to a :class:`NeuronEmbeddingModel`).
Use :func:`add_neuron_embedding` and :func:`add_predicted_labels` to add validated columns to a Units table, and
:func:`get_class_probabilities` to find a label column's probabilities (also in files written by version 0.1.0).
"""
from importlib.resources import files
from pathlib import Path

from pynwb import get_class, load_namespaces

__version__ = "0.2.0"

_NAMESPACE_NAME = "ndx-neuron-embedding"
_NAMESPACE_FILE = f"{_NAMESPACE_NAME}.namespace.yaml"


def _find_namespace_path() -> str:
    # Installed wheel: the spec directory is shipped inside the package as ndx_neuron_embedding/spec.
    installed = files(__name__) / "spec" / _NAMESPACE_FILE
    if installed.is_file():
        return str(installed)
    # Editable install / source checkout: <repo>/ndx-neuron-embedding/spec.
    source = Path(__file__).resolve().parents[3] / "spec" / _NAMESPACE_FILE
    if source.is_file():
        return str(source)
    raise FileNotFoundError(f"Could not find {_NAMESPACE_FILE} (looked in {installed} and {source}).")


load_namespaces(_find_namespace_path())

NeuronEmbeddingModel = get_class("NeuronEmbeddingModel", _NAMESPACE_NAME)
NeuronEmbedding = get_class("NeuronEmbedding", _NAMESPACE_NAME)
PredictedLabel = get_class("PredictedLabel", _NAMESPACE_NAME)
ClassProbabilities = get_class("ClassProbabilities", _NAMESPACE_NAME)

from .helpers import add_neuron_embedding, add_predicted_labels, get_class_probabilities  # noqa: E402

__all__ = [
    "NeuronEmbeddingModel",
    "NeuronEmbedding",
    "PredictedLabel",
    "ClassProbabilities",
    "add_neuron_embedding",
    "add_predicted_labels",
    "get_class_probabilities",
    "__version__",
]

del get_class, load_namespaces
