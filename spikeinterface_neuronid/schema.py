"""The names the package writes and reads: extension data keys, sorting properties and NWB Units columns.

Every module that stores or looks up one of these names takes it from here, so a name is spelled once.
"""

from __future__ import annotations

__all__ = [
    "EXTENSION_NAME",
    "UNKNOWN",
    "EMBEDDING_KEY",
    "NUM_WINDOWS_KEY",
    "EMBEDDED_KEY",
    "PROVENANCE_KEY",
    "COVARIATES_PREFIX",
    "PER_UNIT_KEYS",
    "covariates_key",
    "label_property",
    "probability_property",
    "label_column",
    "probabilities_column",
    "confidence_column",
]

#: Name of the SpikeInterface analyzer extension (``sorting_analyzer.compute(EXTENSION_NAME)``).
EXTENSION_NAME = "neuron_embedding"

#: Label answered where a head abstains (low confidence, out of distribution) or a unit has no embedding.
UNKNOWN = "unknown"

#: Extension data: ``(num_units, dim)`` float32 embeddings, NaN rows for units without one.
EMBEDDING_KEY = "embedding"
#: Extension data: number of windows averaged into each unit's embedding.
NUM_WINDOWS_KEY = "num_windows"
#: Extension data: bool, whether each unit has an embedding.
EMBEDDED_KEY = "embedded"
#: Extension data: a JSON dict describing how the embedding was made beyond the params
#: (``fine_tuned_sha256``: checksum of the fine-tuned model, or None without fine-tuning).
PROVENANCE_KEY = "provenance"
#: Extension data key prefix of the covariates of a compute, one float32 ``(n_samples, k)`` array per segment.
COVARIATES_PREFIX = "covariates_segment_"

#: Extension data entries with one row per unit (sliced by ``select_units``).
PER_UNIT_KEYS = (EMBEDDING_KEY, NUM_WINDOWS_KEY, EMBEDDED_KEY)


def covariates_key(segment_index: int) -> str:
    """Extension data key of the covariates of segment ``segment_index``."""
    return f"{COVARIATES_PREFIX}{segment_index}"


def label_property(task: str) -> str:
    """Sorting property (and labeller column) with the predicted label of ``task``."""
    return f"{task}_label"


def probability_property(task: str) -> str:
    """Sorting property (and labeller column) with the largest calibrated probability of ``task``."""
    return f"{task}_probability"


def label_column(task: str) -> str:
    """NWB Units column (``PredictedLabel``) with the predicted label of ``task``."""
    return task


def probabilities_column(task: str) -> str:
    """NWB Units column (``ClassProbabilities``) with the calibrated class probabilities of ``task``."""
    return f"{task}_probabilities"


def confidence_column(task: str) -> str:
    """NWB Units column with the largest calibrated probability of ``task``."""
    return f"{task}_confidence"
