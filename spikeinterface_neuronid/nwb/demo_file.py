"""The demo's NWB file: the units of a simulated animal, without embeddings, for ``neuronid annotate``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .new_file import write_analyzer_to_nwb

__all__ = ["write_demo_nwb"]


def write_demo_nwb(sorting_analyzer, path: str | Path, animal: int, preset: str) -> Path | None:
    """The demo's NWB file of a simulated animal, without embeddings, for ``neuronid annotate`` to annotate.

    Units (spike times) plus the simulator's ground-truth ``cell_type`` as a ``true_cell_type`` column, written
    with :func:`~spikeinterface_neuronid.nwb.write_analyzer_to_nwb`. The subject fields DANDI requires are
    placeholders (the animal is simulated), as the Subject's description says.

    Returns
    -------
    Path | None
        The file, or None (with a printed note) when the ``nwb`` extra (pynwb, neuroconv) is not installed.
    """
    try:
        import neuroconv  # noqa: F401
        import pynwb  # noqa: F401
    except ImportError:
        print(
            "note: no NWB file written (pip install -e ./ndx-neuron-embedding -e '.[nwb]' for the "
            "`neuronid annotate` example)"
        )
        return None
    sorting = sorting_analyzer.sorting
    gt = sorting.select_units(sorting.unit_ids)  # a view with its own properties
    gt.set_property("true_cell_type", np.asarray(sorting.get_property("cell_type")).astype(str))
    metadata = {
        "NWBFile": {
            "session_description": f"Simulated session 0 of animal {animal} ('{preset}' preset of "
            "spikeinterface_neuronid.simulation, Izhikevich network), written by `neuronid demo`.",
            "session_start_time": "2024-01-01T12:00:00+00:00",
            "session_id": "ses-0",
            "experiment_description": "Simulated spike trains for the spikeinterface-neuronid demo.",
            "keywords": ["simulation", "spike sorting", "cell type"],
        },
        "Subject": {
            "subject_id": str(animal),
            "species": "Mus musculus",
            "sex": "U",
            "age": "P90D",
            "description": f"Simulated animal (seed {animal}), not a real mouse: species, sex and age are "
            "placeholders so that the file passes DANDI's checks.",
        },
    }
    skip = [k for k in gt.get_property_keys() if k != "true_cell_type"]
    # through a view of the analyzer, so that its recorded duration goes into obs_intervals (annotate then tiles
    # the same time windows as the demo did)
    return write_analyzer_to_nwb(
        _AnalyzerView(sorting_analyzer, gt),
        path,
        metadata,
        embeddings=False,
        overwrite=True,
        skip_properties=skip,
        property_descriptions={
            "true_cell_type": "Ground-truth cell type of the simulated neuron (RS, IB, CH, FS, LTS)."
        },
    )


class _AnalyzerView:
    """An analyzer with another sorting (same units): for writing selected properties with its duration."""

    def __init__(self, analyzer, sorting):
        self._analyzer, self.sorting = analyzer, sorting
        self.sampling_frequency = analyzer.sampling_frequency
        self.unit_ids = analyzer.unit_ids

    def get_extension(self, name):
        return self._analyzer.get_extension(name)

    def get_num_samples(self, segment_index=0):
        return self._analyzer.get_num_samples(segment_index)
