"""The ``neuron_embedding`` SpikeInterface analyzer extension: a thin adapter from a sorting to the model."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
from spikeinterface.core.core_tools import slice_rows
from spikeinterface.core.job_tools import fix_job_kwargs
from spikeinterface.core.sortinganalyzer import AnalyzerExtension, register_result_extension

from .corpus import analyzer_to_spike_train_sets
from .heads import CLASSES_SUFFIX, head_outputs

__all__ = ["ComputeNeuronEmbedding", "compute_neuron_embedding"]

class ComputeNeuronEmbedding(AnalyzerExtension):
    """Compute one embedding per unit that encodes the neuron's identity (cell type, brain region).

    The embedding is learned self-supervised from the **population** activity around each unit
    (NuCLR): spikes are binned at the model's resolution (20 ms), every segment is tiled with
    non-overlapping windows (10 s), a permutation-equivariant spatiotemporal transformer attends over
    all units active in each window, and a unit's embedding is the mean of its vectors over the
    windows where it fired at least once.

    Parameters
    ----------
    model : str, default: "default"
        ``"default"`` for the pretrained model shipped with the package, or the path of a model file
        (``.safetensors``) written by ``spikeinterface_neuronid.pretrain`` / ``fine_tune``.
    batch_size : int, default: 16
        Number of windows per forward pass.
    max_context_units : int | None, default: None
        Largest number of units attended over together. Windows with more active units are split into
        random groups of about this size (bounded attention cost for large probes). None uses the
        model's own value.
    seed : int, default: 0
        Seed of the random grouping of units, used only when a window exceeds ``max_context_units``.
    device : str, default: "cpu"
        Torch device, e.g. ``"cuda"``.
    **job_kwargs
        SpikeInterface job kwargs: ``n_jobs`` sets the number of torch CPU threads during the compute,
        ``progress_bar`` shows a progress bar over windows. Others are accepted and ignored.

    Returns
    -------
    embedding : np.ndarray
        float32 array ``(num_units, dim)``, rows in ``sorting_analyzer.unit_ids`` order. Units that
        never fire in a full window (e.g. silent units) get a row of NaN and ``embedded == False``.

    Notes
    -----
    Data keys: ``embedding``, ``num_windows`` (windows averaged per unit) and ``embedded`` (bool).

    If the model has task heads (:func:`~spikeinterface_neuronid.heads.fit_head`,
    :meth:`~spikeinterface_neuronid.bundle.ModelBundle.add_head`), each task adds ``<task>_label`` (fixed-width
    unicode, ``"unknown"`` where the head abstains or the unit has no embedding), ``<task>_probabilities``
    (float32, units x classes, calibrated; NaN rows for units without an embedding), ``<task>_confidence``
    (float32, the largest calibrated probability) and ``<task>_classes`` (the class order of the probability
    columns). :func:`~spikeinterface_neuronid.labeling.neuronid_label_units` gathers them in a DataFrame.

    ``select_units`` / ``remove_units`` slice rows: the kept units keep the embedding computed with
    the full population as context. ``merge_units`` and ``split_units`` change the population itself,
    so every row is recomputed on the new analyzer (a unit's embedding depends on all the others);
    the cost equals one compute.

    The model file's SHA-256 is stored in the params (``model_sha256``) for provenance.
    """

    extension_name = "neuron_embedding"
    depend_on = []
    need_recording = False
    use_nodepipeline = False
    need_job_kwargs = True
    _resolved_params = ("model_name", "model_sha256", "method")

    @classmethod
    def get_required_dependencies(cls, **params):
        # The only hook that runs before SpikeInterface wipes a previous result: reject typos here.
        # SpikeInterface also calls it with the stored params, which add the resolved model's provenance.
        allowed = set(inspect.signature(cls._set_params).parameters) - {"self"}
        allowed_stored = allowed | set(cls._resolved_params)
        unknown = sorted(set(params) - allowed_stored)
        if unknown:
            raise TypeError(
                f"compute('neuron_embedding') got unknown parameter(s) {unknown}; valid parameters are {sorted(allowed)}"
            )
        return list(cls.depend_on)

    def _set_params(
        self,
        model: str = "default",
        batch_size: int = 16,
        max_context_units: int | None = None,
        seed: int = 0,
        device: str = "cpu",
    ):
        from .inference import resolve_model

        if not isinstance(model, (str, Path)):
            raise TypeError(
                "model must be 'default' or the path of a model file; save a ModelBundle with bundle.save(path) first"
            )
        model = str(model)
        bundle = resolve_model(model)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return dict(
            model=model,
            model_name=bundle.name,
            model_sha256=bundle.sha256,
            method=bundle.method,
            batch_size=int(batch_size),
            max_context_units=None if max_context_units is None else int(max_context_units),
            seed=int(seed),
            device=str(device),
        )

    def _compute(self, sorting_analyzer, verbose=False, **job_kwargs) -> dict:
        from .inference import embed_populations, resolve_model

        job_kwargs = fix_job_kwargs(job_kwargs)
        bundle = resolve_model(self.params["model"])
        if bundle.sha256 != self.params["model_sha256"]:
            raise ValueError(
                f"the model file {self.params['model']} changed since these params were set "
                f"(sha256 {bundle.sha256[:12]}… != {self.params['model_sha256'][:12]}…); recompute the extension"
            )
        segments = analyzer_to_spike_train_sets(sorting_analyzer)
        n_jobs = job_kwargs.get("n_jobs", 1)
        result = embed_populations(
            bundle,
            segments,
            batch_size=self.params["batch_size"],
            max_context_units=self.params["max_context_units"],
            seed=self.params["seed"],
            device=self.params["device"],
            num_threads=n_jobs if isinstance(n_jobs, int) and n_jobs > 0 else None,
            progress_bar=bool(job_kwargs.get("progress_bar", False)),
        )
        data = dict(embedding=result.embedding, num_windows=result.num_windows, embedded=result.embedded)
        for head in bundle.heads.values():
            data.update(head_outputs(head, result.embedding))
        return data

    def _run(self, verbose=False, **job_kwargs):
        self.data.update(self._compute(self.sorting_analyzer, verbose=verbose, **job_kwargs))

    def _select_units_extension_data(self, unit_ids):
        indices = self.sorting_analyzer.sorting.ids_to_indices(unit_ids)
        return {
            key: np.asarray(value) if key.endswith(CLASSES_SUFFIX) else slice_rows(np.asarray(value), indices)
            for key, value in self.data.items()
        }

    def _merge_extension_data(
        self, merge_unit_groups, new_unit_ids, new_sorting_analyzer, keep_mask=None, verbose=False, **job_kwargs
    ):
        return self._compute(new_sorting_analyzer, verbose=verbose, **job_kwargs)

    def _split_extension_data(self, split_units, new_unit_ids, new_sorting_analyzer, verbose=False, **job_kwargs):
        return self._compute(new_sorting_analyzer, verbose=verbose, **job_kwargs)

    def _get_data(self, outputs: str = "numpy"):
        embedding = np.asarray(self.data["embedding"])
        if outputs == "numpy":
            return embedding
        if outputs == "pandas":
            import pandas as pd

            columns = [f"dim_{i}" for i in range(embedding.shape[1])]
            return pd.DataFrame(embedding, index=self.sorting_analyzer.unit_ids, columns=columns)
        raise ValueError(f"outputs must be 'numpy' or 'pandas', got {outputs!r}")


register_result_extension(ComputeNeuronEmbedding)
compute_neuron_embedding = ComputeNeuronEmbedding.function_factory()
