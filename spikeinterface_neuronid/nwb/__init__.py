"""NWB files: the ``neuron_embedding`` extension into and out of the Units table, and covariates from a file.

:func:`write_embeddings_to_nwb` adds the embeddings, the predictions of every task head and one model record to
the Units table of an NWB file, with the ``ndx-neuron-embedding`` extension (see
``ndx-neuron-embedding/README.md``); :func:`write_analyzer_to_nwb` writes a whole new file from an analyzer;
:func:`read_embedding_arrays` and :func:`read_embeddings_from_nwb` read them back (with ``pynwb`` alone);
:func:`read_nwb_covariates` gives a file's behaviour and trials as covariates. Every function reads and writes
HDF5 files (``.nwb``) and Zarr stores (``.nwb.zarr``, see :func:`is_zarr_path`).

The modules, by stage (each imports only the ones above it):

- :mod:`~spikeinterface_neuronid.nwb.io`: backends, opening files, atomic output, recovery after a killed write;
- :mod:`~spikeinterface_neuronid.nwb.metadata`: names of our additions, the model record, DANDI metadata checks;
- :mod:`~spikeinterface_neuronid.nwb.write`, :mod:`~spikeinterface_neuronid.nwb.new_file`: writing;
- :mod:`~spikeinterface_neuronid.nwb.read`: reading back;
- :mod:`~spikeinterface_neuronid.nwb.covariates`: covariate input;
- :mod:`~spikeinterface_neuronid.nwb.inputs`: a file's Units table as an analyzer;
- :mod:`~spikeinterface_neuronid.nwb.annotate` (``neuronid annotate``) and
  :mod:`~spikeinterface_neuronid.nwb.demo_file` (the demo's file).
"""

from __future__ import annotations

from .covariates import PADDING_CHANNEL, TRIALS_SOURCE, NWBCovariates, read_nwb_covariates  # noqa: F401
from .io import is_zarr_path
from .metadata import EMBEDDING_COLUMN, MODEL_RECORD_NAME, NAMESPACE  # noqa: F401
from .new_file import write_analyzer_to_nwb
from .read import read_embedding_arrays, read_embeddings_from_nwb
from .write import UNKNOWN_LABEL, write_embeddings_to_nwb  # noqa: F401

__all__ = [
    "write_embeddings_to_nwb",
    "write_analyzer_to_nwb",
    "read_embeddings_from_nwb",
    "read_embedding_arrays",
    "read_nwb_covariates",
    "NWBCovariates",
    "is_zarr_path",
]
