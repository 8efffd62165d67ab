"""Writes ndx_neuron_embedding_0.1.0.nwb with the 0.1.0 spec: the layouts the 0.1.0 helper and spikeinterface-neuronid
(hand-made columns: "unknown" appended to the label column's class_labels, NaN probabilities rows) wrote.

Usage (from the repository root; do not import ndx_neuron_embedding in this process)::

    mkdir -p /tmp/ndx010/spec
    for f in namespace extensions; do git show <0.1.0 commit>:ndx-neuron-embedding/spec/ndx-neuron-embedding.$f.yaml \
        > /tmp/ndx010/spec/ndx-neuron-embedding.$f.yaml; done
    python ndx-neuron-embedding/src/pynwb/tests/data/make_fixture_0_1_0.py /tmp/ndx010/spec OUT.nwb
"""
import sys
from datetime import datetime, timezone

import numpy as np
from pynwb import NWBHDF5IO, NWBFile, get_class, load_namespaces
from pynwb.file import Subject

load_namespaces(f"{sys.argv[1]}/ndx-neuron-embedding.namespace.yaml")
NS = "ndx-neuron-embedding"
Model, Emb, Lab, Prob = (get_class(n, NS) for n in
                         ("NeuronEmbeddingModel", "NeuronEmbedding", "PredictedLabel", "ClassProbabilities"))
nwbfile = NWBFile(session_description="ndx-neuron-embedding 0.1.0 fixture", identifier="ndx-neuron-embedding-0.1.0",
                  session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc), session_id="ses-1",
                  experimenter=["Doe, Jane"], institution="Test University", lab="Test Lab",
                  experiment_description="Fixture written with ndx-neuron-embedding 0.1.0.", keywords=["test"])
nwbfile.subject = Subject(subject_id="m1", species="Mus musculus", sex="F", age="P60D", description="Synthetic.")
for i in range(4):
    nwbfile.add_unit(spike_times=np.arange(1, 6) * 0.5 + 0.1 * i)
nwbfile.units.resolution = 1 / 30000
model = Model(name="neuron_embedding_model", description="0.1.0 fixture model", model_name="neuronid-test",
              model_version="0.1.0", model_checksum="ab" * 32, training_data_description="none", embedding_dim=3)
nwbfile.add_lab_meta_data(model)
emb = np.array([[0.5, -1.0, 2.0], [np.nan] * 3, [1.0, 0.0, 0.25], [-0.5, 0.5, 1.5]], dtype=np.float32)
units = nwbfile.units
units.add_column(name="embedding", description="emb", data=emb, col_cls=Emb, model=model)
# "cell_type": the 0.1.0 helper's layout (all rows predicted, labels in class_labels, <task>_probabilities)
p1 = np.array([[0.7, 0.3], [0.2, 0.8], [0.5, 0.5], [0.9, 0.1]], dtype=np.float32)
units.add_column(name="cell_type", description="labels", data=["pv", "sst", "pv", "pv"], col_cls=Lab, model=model,
                 class_labels=["pv", "sst"])
units.add_column(name="cell_type_probabilities", description="probs", data=p1, col_cls=Prob, model=model,
                 class_labels=["pv", "sst"])
units.add_column(name="cell_type_confidence", description="conf", data=p1.max(axis=1))
# "region": the main package's hand-made layout (NaN row, "unknown" appended to the label column's class_labels)
p2 = np.array([[0.6, 0.3, 0.1], [np.nan] * 3, [0.4, 0.35, 0.25], [0.1, 0.2, 0.7]], dtype=np.float32)
units.add_column(name="region", description="labels", data=["ca1", "unknown", "unknown", "th"], col_cls=Lab,
                 model=model, class_labels=["ca1", "dg", "th", "unknown"])
units.add_column(name="region_probabilities", description="probs", data=p2, col_cls=Prob, model=model,
                 class_labels=["ca1", "dg", "th"])
units.add_column(name="region_confidence", description="conf", data=np.array([0.6, np.nan, 0.4, 0.7], np.float32))
with NWBHDF5IO(sys.argv[2], "w") as io:
    io.write(nwbfile)
