# -*- coding: utf-8 -*-
"""Source of truth for the ndx-neuron-embedding spec.

Run ``python src/spec/create_extension_spec.py`` (from the ``ndx-neuron-embedding`` folder) after every change;
it regenerates ``spec/ndx-neuron-embedding.namespace.yaml`` and ``spec/ndx-neuron-embedding.extensions.yaml``.
Never hand-edit the YAML files.
"""
import os.path

from pynwb.spec import NWBAttributeSpec, NWBDatasetSpec, NWBGroupSpec, NWBNamespaceBuilder, NWBRefSpec, export_spec

MODEL_REF_DOC = (
    "Object reference to the NeuronEmbeddingModel (a LabMetaData group in /general) that produced the values "
    "of this column. Required, so that every column stored with this type carries its provenance."
)


def main():
    ns_builder = NWBNamespaceBuilder(
        name="ndx-neuron-embedding",
        version="0.2.0",
        doc=(
            "Per-unit embeddings and predicted labels (with class probabilities) computed from spike-sorted "
            "units, stored as typed columns of the Units table, plus a provenance record of the model used."
        ),
        author=["spikeinterface-neuronid developers"],
        contact=["spikeinterface-neuronid@users.noreply.github.com"],
    )
    ns_builder.include_namespace("core")

    model = NWBGroupSpec(
        neurodata_type_def="NeuronEmbeddingModel",
        neurodata_type_inc="LabMetaData",
        doc=(
            "Provenance of the model that computed per-unit embeddings and/or predicted labels. Stored in "
            "/general/<name> (add it with NWBFile.add_lab_meta_data). Columns of type NeuronEmbedding, "
            "PredictedLabel and ClassProbabilities refer to it through their 'model' attribute. Several models "
            "may coexist in one file under different names."
        ),
        attributes=[
            NWBAttributeSpec(
                name="description", dtype="text", doc="Free-text description of the model and how it was applied."
            ),
            NWBAttributeSpec(name="model_name", dtype="text", doc="Name of the model, e.g. 'neuronid-celltype'."),
            NWBAttributeSpec(name="model_version", dtype="text", doc="Version string of the model weights."),
            NWBAttributeSpec(
                name="model_checksum",
                dtype="text",
                doc="Hex digest of the model weights file, computed with checksum_algorithm.",
            ),
            NWBAttributeSpec(
                name="checksum_algorithm",
                dtype="text",
                doc="Hash algorithm used for model_checksum (hashlib name).",
                required=False,
                default_value="sha256",
            ),
            NWBAttributeSpec(
                name="method",
                dtype="text",
                doc=(
                    "Short description of the method used to compute the embedding/labels "
                    "(e.g. 'contrastive autoencoder on waveforms + ACG, logistic-regression head')."
                ),
                required=False,
            ),
            NWBAttributeSpec(
                name="training_data_description",
                dtype="text",
                doc="Description of the data the model was trained on (datasets, species, brain regions, labels).",
            ),
            NWBAttributeSpec(
                name="embedding_dim",
                dtype="int32",
                doc="Dimensionality of the embedding produced by the model (number of columns of NeuronEmbedding).",
                required=False,
            ),
            NWBAttributeSpec(
                name="model_url", dtype="text", doc="URL where the model can be obtained.", required=False
            ),
            NWBAttributeSpec(
                name="inference_software",
                dtype="text",
                doc="Software and version used to run the model, e.g. 'spikeinterface-neuronid 0.3.0'.",
                required=False,
            ),
            NWBAttributeSpec(
                name="inference_date",
                dtype="isodatetime",
                doc="Date and time at which inference was run (ISO 8601).",
                required=False,
            ),
        ],
    )

    def model_ref():
        return NWBAttributeSpec(
            name="model", dtype=NWBRefSpec(target_type="NeuronEmbeddingModel", reftype="object"), doc=MODEL_REF_DOC
        )

    embedding = NWBDatasetSpec(
        neurodata_type_def="NeuronEmbedding",
        neurodata_type_inc="VectorData",
        doc=(
            "Column of a DynamicTable (typically Units) holding one fixed-length embedding vector per row. "
            "Row i is the embedding of row i of the table."
        ),
        dtype="float32",
        dims=["num_rows", "embedding_dim"],
        shape=[None, None],
        attributes=[model_ref()],
    )

    predicted_label = NWBDatasetSpec(
        neurodata_type_def="PredictedLabel",
        neurodata_type_inc="VectorData",
        doc=(
            "Column of a DynamicTable (typically Units) holding one predicted class label per row: one of the "
            "model's classes, or unknown_label where the model abstains or has no prediction for the row."
        ),
        dtype="text",
        dims=["num_rows"],
        shape=[None],
        attributes=[
            model_ref(),
            NWBAttributeSpec(
                name="class_labels",
                dtype="text",
                dims=["num_classes"],
                shape=[None],
                doc=(
                    "All values the column holds: the classes the model can predict, in the model's output order, "
                    "followed by unknown_label if any row has it. Every value is one of these."
                ),
                required=False,
            ),
            NWBAttributeSpec(
                name="unknown_label",
                dtype="text",
                doc=(
                    "Label written where the model abstains (e.g. low confidence) or has no prediction (the row's "
                    "probabilities are all NaN). It is not one of the model's classes. Optional: absent when no "
                    "abstention label is declared, and in files written by version 0.1.0."
                ),
                required=False,
            ),
            NWBAttributeSpec(
                name="probabilities",
                dtype=NWBRefSpec(target_type="ClassProbabilities", reftype="object"),
                doc=(
                    "Object reference to the ClassProbabilities column (in the same table) holding the class "
                    "probabilities this label was derived from. Optional; absent in files written by version 0.1.0, "
                    "where the column was found by the name '<label column>_probabilities'."
                ),
                required=False,
            ),
        ],
    )

    class_probabilities = NWBDatasetSpec(
        neurodata_type_def="ClassProbabilities",
        neurodata_type_inc="VectorData",
        doc=(
            "Column of a DynamicTable (typically Units) holding predicted class probabilities. "
            "Element [i, j] is the probability that row i belongs to class class_labels[j]; each row sums to 1, "
            "or is all NaN where the model has no prediction for the row (e.g. a unit without an embedding)."
        ),
        dtype="float32",
        dims=["num_rows", "num_classes"],
        shape=[None, None],
        attributes=[
            model_ref(),
            NWBAttributeSpec(
                name="class_labels",
                dtype="text",
                dims=["num_classes"],
                shape=[None],
                doc="Class names giving the order of the second dimension of the data.",
            ),
        ],
    )

    new_data_types = [model, embedding, predicted_label, class_probabilities]

    output_dir = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "spec"))
    export_spec(ns_builder, new_data_types, output_dir)
    print(f"Spec files written to {output_dir}")


if __name__ == "__main__":
    main()
