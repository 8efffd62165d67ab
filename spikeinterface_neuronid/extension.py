"""The ``neuron_embedding`` SpikeInterface analyzer extension: a thin adapter from a sorting to the model."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
from spikeinterface.core.core_tools import slice_rows
from spikeinterface.core.job_tools import fix_job_kwargs
from spikeinterface.core.sortinganalyzer import AnalyzerExtension, register_result_extension

from .corpus import analyzer_to_spike_train_sets
from .data import check_covariates
from .recompute import StagedRecomputeMixin
from .schema import (
    COVARIATES_PREFIX,
    EMBEDDED_KEY,
    EMBEDDING_KEY,
    EXTENSION_NAME,
    NUM_WINDOWS_KEY,
    PER_UNIT_KEYS,
    PROVENANCE_KEY,
    covariates_key,
)

__all__ = ["ComputeNeuronEmbedding", "compute_neuron_embedding"]


def _covariate_arrays(covariates, covariate_rate_hz, durations: list[float]) -> list[np.ndarray] | None:
    """``covariates`` (array, ``.npy`` path, or a list of them, one per segment) as float32 2-D arrays; None if none.

    Each array is checked once, by :func:`~spikeinterface_neuronid.data.check_covariates`, against the rate and
    the duration of its segment (``durations``); the model's number of covariates is checked by the caller.
    """
    if covariates is None and covariate_rate_hz is None:
        return None
    if covariates is None or covariate_rate_hz is None:
        check_covariates(covariates, covariate_rate_hz)  # raises: give them together
    items = list(covariates) if isinstance(covariates, (list, tuple)) else [covariates]
    if not items:
        raise ValueError("covariates is an empty list; give one array per segment, or None")
    if len(items) != len(durations):
        raise ValueError(
            f"{len(items)} covariate array(s) for {len(durations)} segment(s); pass a list with one array per segment"
        )
    arrays = []
    for i, (item, duration) in enumerate(zip(items, durations)):
        where = "covariates" if len(items) == 1 else f"covariates[{i}]"
        if isinstance(item, (str, Path)):
            path = Path(item).expanduser()
            if path.suffix != ".npy":
                raise ValueError(f"{where}: a covariate file must be a .npy file (np.save), got {path}")
            if not path.is_file():
                raise FileNotFoundError(f"{where}: covariate file not found: {path}")
            item = np.load(path, allow_pickle=False)
        elif isinstance(item, dict):  # the summary stored in the params: not an input
            raise TypeError(
                f"{where} is a stored covariate summary, not the covariates; pass the array (or .npy path) itself"
            )
        values, _ = check_covariates(item, covariate_rate_hz, duration, name=where)
        arrays.append(np.ascontiguousarray(values, dtype=np.float32))
    return arrays


def _covariate_summary(bundle, arrays: list[np.ndarray]) -> dict:
    """Check the covariates' channel count against the model; return the summary the params keep."""
    import hashlib

    k = int(getattr(bundle.config, "num_covariates", 0) or 0)
    if k == 0:
        raise ValueError(
            f"covariates were given but the model '{bundle.name}' ({bundle.method}) takes none "
            "(num_covariates = 0); drop covariates= or use a model trained with covariates"
        )
    digest = hashlib.sha256()
    for i, values in enumerate(arrays):
        if values.shape[1] != k:
            raise ValueError(
                f"the model '{bundle.name}' takes {k} covariates but the covariates of segment {i} have "
                f"{values.shape[1]} channel(s) (shape {values.shape})"
            )
        digest.update(np.ascontiguousarray(values).tobytes())
    return dict(num_covariates=k, num_samples=[int(a.shape[0]) for a in arrays], sha256=digest.hexdigest())


def _check_int(name: str, value, minimum: int, *, allow_none: bool = False, hint: str = "") -> int | None:
    """``value`` as an int >= ``minimum``; a TypeError/ValueError naming ``name`` otherwise (no truncation)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        kind = "an integer or None" if allow_none else "an integer"
        raise TypeError(f"{name} must be {kind} >= {minimum}, got {value!r} ({type(value).__name__}){hint}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}{hint}")
    return int(value)


def _check_device(device) -> str:
    """A torch device string that exists on this machine ("cpu", "cuda", "cuda:1", "mps")."""
    import torch

    if not isinstance(device, str):
        raise TypeError(f"device must be a torch device name such as 'cpu' or 'cuda', got {device!r}")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        hint = " (did you mean 'cuda'?)" if device.lower() in ("gpu", "nvidia") else ""
        raise ValueError(
            f"device must be a torch device name such as 'cpu', 'cuda', 'cuda:0' or 'mps', got {device!r}{hint}"
        ) from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} but torch has no CUDA device here (torch {torch.__version__}, "
                f"{'a CPU-only build' if torch.version.cuda is None else 'no GPU visible'}); use device='cpu'"
            )
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} but only {torch.cuda.device_count()} CUDA device(s) are visible "
                f"(indices 0-{torch.cuda.device_count() - 1})"
            )
    elif parsed.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"device={device!r} but the MPS backend is not available here; use device='cpu'")
    elif parsed.type != "cpu":
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:<index>' or 'mps', got {device!r}")
    return str(device)


def _check_scalar_params(params: dict) -> dict:
    """The integer and device parameters of a compute, validated and normalised (every error names its parameter)."""
    out = {}
    out["batch_size"] = _check_int("batch_size", params.get("batch_size", 16), 1)
    out["max_context_units"] = _check_int(
        "max_context_units",
        params.get("max_context_units"),
        1,
        allow_none=True,
        hint=" (None uses the model's own value)",
    )
    out["seed"] = _check_int("seed", params.get("seed", 0), 0)
    out["fine_tune_steps"] = _check_int(
        "fine_tune_steps", params.get("fine_tune_steps", 0), 0, hint=" (0 disables fine-tuning)"
    )
    out["fine_tune_seed"] = _check_int("fine_tune_seed", params.get("fine_tune_seed", 0), 0)
    out["device"] = _check_device(params.get("device", "cpu"))
    return out


class ComputeNeuronEmbedding(StagedRecomputeMixin, AnalyzerExtension):
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
    method : str | None, default: None
        With ``model="default"``: which shipped model, ``"nuclr"`` (the default, also for None) or
        ``"neurpir"`` (single-neuron NeurPIR encoder, trained with 2 stimulus covariates: pass them with
        ``covariates``, else zeros are used, with a warning). With a model path: the method the file must have
        (None: any); a mismatch is an error raised before any previous result is touched.
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
    fine_tune_steps : int, default: 0
        Transductive use: when > 0, the encoder is first fine-tuned self-supervised for this many steps on
        this analyzer's own spike trains (:func:`~spikeinterface_neuronid.training.fine_tune_transductive`;
        no label is used), then the units are embedded with the fine-tuned encoder. The model's task heads
        are kept unchanged. 0 (the default) embeds with the model as it is.
    fine_tune_seed : int, default: 0
        Seed of the fine-tuning (sampling and dropout); on CPU the same seed, data and ``n_jobs`` give the
        same weights and embeddings.
    covariates : np.ndarray | str | Path | list | None, default: None
        Surrounding information (stimulus, behaviour) for a model trained with covariates
        (``config.num_covariates = k > 0``, e.g. the shipped NeurPIR model, k = 2): a float array
        ``(n_samples, k)`` sampled at ``covariate_rate_hz`` from the segment start (sample ``i`` covers
        ``[i, i + 1) / covariate_rate_hz`` s) and covering the whole segment, or the path of a ``.npy`` file
        holding one; a list of those, one per segment, for a multi-segment analyzer. The arrays are stored
        with the extension's data (keys ``covariates_segment_<i>``, float32), not in the params, so a saved
        analyzer is self-contained and merge / split reuse them. None: a model with covariates gets zeros
        (with a ``UserWarning``). Given to a model without covariates, or with another ``k``, it is an error.
        :func:`~spikeinterface_neuronid.nwb.read_nwb_covariates` builds such an array from an NWB file's
        behavioural time series and trials table.
    covariate_rate_hz : float | None, default: None
        Sampling rate of ``covariates`` in Hz; required with them.
    **job_kwargs
        SpikeInterface job kwargs: ``n_jobs`` sets the number of torch CPU threads during the compute,
        ``progress_bar`` shows a progress bar over windows. Others are accepted and ignored.

    Returns
    -------
    embedding : np.ndarray
        float32 array ``(num_units, dim)``, rows in ``sorting_analyzer.unit_ids`` order. Units that
        cannot be embedded get a row of NaN and ``embedded == False``: with the default (span-context) model,
        units with fewer than ``min_span_spikes`` (3) spikes in every span of the recording; with a
        window-context model, units that never fire in a full 10 s window.

    Notes
    -----
    Data keys: ``embedding``, ``num_windows`` (10 s windows averaged per unit: those of the spans it took part
    in, for a span-context model), ``embedded`` (bool) and ``provenance`` (a dict: ``fine_tuned_sha256``, see
    below). When the analyzer has a computed ``templates`` extension, each unit's peak-channel template feeds the
    model's waveform channel (models without one ignore it); compute ``templates`` before ``neuron_embedding`` to
    use them.

    Labels are not stored: :func:`~spikeinterface_neuronid.labeling.neuronid_label_units` applies the task heads
    of the model (:func:`~spikeinterface_neuronid.calibration.fit_head`,
    :meth:`~spikeinterface_neuronid.bundle.ModelBundle.add_head`) to the stored embeddings when asked, and
    :func:`~spikeinterface_neuronid.labeling.extension_predictions` gives the probabilities too.

    **A recompute never loses the previous result.** Every parameter is validated and the model file loaded
    before anything stored changes (errors name the parameter: integers must be integers, ``seed >= 0``, the
    device must exist). The new result is computed in memory, written to a staging folder
    (``<analyzer folder>/.neuronid_staging``, or a root zarr group) and swapped in by renames, so an error,
    Ctrl-C or a killed process leaves the previous result on disk and in memory; a stale staging folder is
    removed by the next compute.

    ``select_units`` / ``remove_units`` slice rows: the kept units keep the embedding computed with
    the full population as context. ``merge_units`` and ``split_units`` change the population itself,
    so every row is recomputed on the new analyzer (a unit's embedding depends on all the others);
    the cost equals one compute.

    With ``covariates``, the params hold a summary instead of the arrays (``covariates``: a dict with
    ``source`` ("array" or the ``.npy`` path), ``num_covariates``, ``num_samples`` per segment and the
    ``sha256`` of the stored float32 arrays) and ``covariate_rate_hz``.

    The model file's SHA-256 is stored in the params (``model_sha256``) for provenance, and ``method`` holds
    the model's method (``"nuclr"`` or ``"neurpir"``) whatever was passed. With ``fine_tune_steps > 0``,
    ``data["provenance"]["fine_tuned_sha256"]`` holds the SHA-256 of the fine-tuned model (encoder and heads)
    the embeddings were computed with (None without fine-tuning). The fine-tuned model is not saved:
    recomputing fine-tunes again, with the same result for the same seed on the same machine.
    ``merge_units`` and ``split_units`` recompute on the new analyzer, so they also **fine-tune again on
    the new population** (starting from ``model``, with ``fine_tune_seed``), with a new ``fine_tuned_sha256``;
    their cost is then one fine-tuning plus one compute. The heads were fitted on embeddings of the original
    encoder, so fine-tune for few steps when relying on the labels.
    """

    extension_name = EXTENSION_NAME
    depend_on = []
    need_recording = False
    use_nodepipeline = False
    need_job_kwargs = True
    # provenance added to the params by _set_params; fine_tuned_sha256 is only in params stored by versions <= 0.1
    _resolved_params = ("model_name", "model_sha256", "method", "fine_tuned_sha256")

    @classmethod
    def get_required_dependencies(cls, **params):
        # Runs before anything else of a compute: reject typos. The values are checked by _set_params, which
        # runs before anything stored changes (set_params and _delete_extension_folder keep the previous result).
        allowed = set(inspect.signature(cls._set_params).parameters) - {"self"}
        unknown = sorted(set(params) - allowed - set(cls._resolved_params))
        if unknown:
            raise TypeError(
                f"compute('neuron_embedding') got unknown parameter(s) {unknown}; valid parameters are {sorted(allowed)}"
            )
        return list(cls.depend_on)

    def _set_params(
        self,
        model: str = "default",
        method: str | None = None,
        batch_size: int = 16,
        max_context_units: int | None = None,
        seed: int = 0,
        device: str = "cpu",
        fine_tune_steps: int = 0,
        fine_tune_seed: int = 0,
        covariates: np.ndarray | str | Path | list | None = None,
        covariate_rate_hz: float | None = None,
    ):
        """Validate every parameter and load the model, once; the params record the inputs and the model's identity.

        Checked: the integers (no silent truncation of floats), the device, the method, the model file (missing,
        truncated, not a model, edited) and the covariates (type, shape, values, rate, coverage of each segment,
        channel count of the model).
        """
        from .models import resolve_model

        checked = _check_scalar_params(
            dict(
                batch_size=batch_size,
                max_context_units=max_context_units,
                seed=seed,
                device=device,
                fine_tune_steps=fine_tune_steps,
                fine_tune_seed=fine_tune_seed,
            )
        )
        if not isinstance(model, (str, Path)):
            raise TypeError(
                "model must be 'default' or the path of a model file; save a ModelBundle with bundle.save(path) first"
            )
        if method is not None and not isinstance(method, str):
            raise TypeError(f"method must be a method name (e.g. 'nuclr', 'neurpir') or None, got {method!r}")
        bundle = resolve_model(str(model), method)  # ValueError when a model file's method differs from method
        analyzer = self.sorting_analyzer
        durations = [
            analyzer.get_num_samples(i) / analyzer.sampling_frequency for i in range(analyzer.get_num_segments())
        ]
        arrays = _covariate_arrays(covariates, covariate_rate_hz, durations)
        covariate_summary = None
        if arrays is not None:
            covariate_summary = _covariate_summary(bundle, arrays)
            # one .npy path: that path; an array, or a list (one item per segment): "array"
            covariate_summary["source"] = str(covariates) if isinstance(covariates, (str, Path)) else "array"
        self._covariate_arrays = arrays  # stored as data by _run (the params only get a summary)
        self._bundle = bundle  # the model of this compute, used by _run
        return dict(
            model=str(model),
            model_name=bundle.name,
            model_sha256=bundle.sha256,
            method=bundle.method,
            **checked,
            covariates=covariate_summary,
            covariate_rate_hz=None if arrays is None else float(covariate_rate_hz),
        )

    def _stored_covariates(self) -> list[np.ndarray] | None:
        """The covariates of this compute: those just set by ``_set_params``, else those in the data."""
        if getattr(self, "_covariate_arrays", None) is not None:
            return self._covariate_arrays
        keys = sorted(
            (k for k in self.data if k.startswith(COVARIATES_PREFIX)), key=lambda k: int(k[len(COVARIATES_PREFIX) :])
        )
        return [np.asarray(self.data[k]) for k in keys] or None

    def _model(self):
        """The model of these params: the one ``_set_params`` loaded, else resolved again (a loaded analyzer)."""
        bundle = getattr(self, "_bundle", None)
        if bundle is None:
            from .models import resolve_model

            bundle = resolve_model(self.params["model"], self.params.get("method"))
        if bundle.sha256 != self.params["model_sha256"]:
            raise ValueError(
                f"the model file {self.params['model']} changed since these params were set "
                f"(sha256 {bundle.sha256[:12]}… != {self.params['model_sha256'][:12]}…); recompute the extension"
            )
        return bundle

    def _compute(self, sorting_analyzer, verbose=False, **job_kwargs) -> dict:
        """Embed the units of ``sorting_analyzer`` (a new one for merges and splits) with this extension's params."""
        from .inference import embed_populations

        job_kwargs = fix_job_kwargs(job_kwargs)
        bundle = self._model()
        covariates = self._stored_covariates()
        rate_hz = self.params.get("covariate_rate_hz")  # absent in params stored by older versions
        segments = analyzer_to_spike_train_sets(
            sorting_analyzer, covariates=covariates, covariate_rate_hz=None if covariates is None else rate_hz
        )
        n_jobs = job_kwargs.get("n_jobs", 1)
        num_threads = n_jobs if isinstance(n_jobs, int) and n_jobs > 0 else None
        progress_bar = bool(job_kwargs.get("progress_bar", False))
        fine_tuned_sha256 = None
        steps = int(self.params.get("fine_tune_steps", 0))  # absent in params stored by older versions
        if steps > 0:
            from .training import fine_tune_transductive

            bundle = fine_tune_transductive(
                bundle,
                segments,
                steps=steps,
                seed=int(self.params.get("fine_tune_seed", 0)),
                device=self.params["device"],
                num_threads=num_threads,
                progress_bar=progress_bar,
            )
            fine_tuned_sha256 = bundle.sha256
        result = embed_populations(
            bundle,
            segments,
            batch_size=self.params["batch_size"],
            max_context_units=self.params["max_context_units"],
            seed=self.params["seed"],
            device=self.params["device"],
            num_threads=num_threads,
            progress_bar=progress_bar,
        )
        data = {
            EMBEDDING_KEY: result.embedding,
            NUM_WINDOWS_KEY: result.num_windows,
            EMBEDDED_KEY: result.embedded,
            PROVENANCE_KEY: {"fine_tuned_sha256": fine_tuned_sha256},
        }
        for i, values in enumerate(covariates or []):  # the inputs, kept for reloads, merges and splits
            data[covariates_key(i)] = values
        return data

    def _run(self, verbose=False, **job_kwargs):
        self.data.update(self._compute(self.sorting_analyzer, verbose=verbose, **job_kwargs))

    def _select_units_extension_data(self, unit_ids):
        indices = self.sorting_analyzer.sorting.ids_to_indices(unit_ids)
        # per-unit rows are sliced; the covariates and the provenance are not per unit. Label arrays stored by
        # versions <= 0.1 are dropped: labels are derived from the embedding on demand.
        kept = {key: slice_rows(np.asarray(self.data[key]), indices) for key in PER_UNIT_KEYS if key in self.data}
        kept.update({key: value for key, value in self.data.items() if key.startswith(COVARIATES_PREFIX)})
        if PROVENANCE_KEY in self.data:
            kept[PROVENANCE_KEY] = self.data[PROVENANCE_KEY]
        return kept

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
