"""The ``neuron_embedding`` SpikeInterface analyzer extension: a thin adapter from a sorting to the model."""

from __future__ import annotations

import inspect
import shutil
import sys
from pathlib import Path
from time import perf_counter

import numpy as np
from spikeinterface.core.core_tools import slice_rows
from spikeinterface.core.job_tools import fix_job_kwargs
from spikeinterface.core.sortinganalyzer import AnalyzerExtension, register_result_extension

from .corpus import analyzer_to_spike_train_sets
from .heads import CLASSES_SUFFIX, head_outputs

__all__ = ["ComputeNeuronEmbedding", "compute_neuron_embedding"]

#: Data key prefix of the covariates given to the compute, one float32 ``(n_samples, k)`` array per segment.
COVARIATES_PREFIX = "covariates_segment_"


def _covariate_arrays(covariates, covariate_rate_hz) -> list[np.ndarray] | None:
    """``covariates`` (array, ``.npy`` path, or a list of them) as float32 2-D arrays, one per segment; None if none.

    Checked here, before SpikeInterface deletes a previous result: types, shapes, finiteness and the rate. The
    model's number of covariates and the segments' durations are checked in ``_set_params``.
    """
    if covariates is None and covariate_rate_hz is None:
        return None
    if covariates is None or covariate_rate_hz is None:
        raise ValueError(
            "give covariates and covariate_rate_hz together (covariate_rate_hz is the sampling rate of the "
            "covariate samples in Hz)"
        )
    if isinstance(covariate_rate_hz, bool) or not isinstance(covariate_rate_hz, (int, float, np.integer, np.floating)):
        raise TypeError(f"covariate_rate_hz must be a number of Hz, got {covariate_rate_hz!r}")
    if not np.isfinite(covariate_rate_hz) or covariate_rate_hz <= 0:
        raise ValueError(f"covariate_rate_hz must be a positive finite number of Hz, got {covariate_rate_hz!r}")
    items = list(covariates) if isinstance(covariates, (list, tuple)) else [covariates]
    if not items:
        raise ValueError("covariates is an empty list; give one array per segment, or None")
    arrays = []
    for i, item in enumerate(items):
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
        values = np.asarray(item)
        if values.ndim == 1:
            raise ValueError(f"{where} must be 2-D (n_samples, k); for one channel use values[:, None]")
        if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
            raise ValueError(f"{where} must be a non-empty 2-D array (n_samples, k), got shape {values.shape}")
        if not np.issubdtype(values.dtype, np.number) or np.issubdtype(values.dtype, np.complexfloating):
            raise TypeError(f"{where} must hold real numbers, got dtype {values.dtype}")
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{where} has NaN or infinite values; fill or interpolate them first")
        arrays.append(np.ascontiguousarray(values, dtype=np.float32))
    return arrays


def _check_covariate_channels(bundle, arrays: list[np.ndarray]) -> int:
    """The model's number of covariates ``k``; raise if it takes none or ``arrays`` have another count."""
    k = int(getattr(bundle.config, "num_covariates", 0) or 0)
    if k == 0:
        raise ValueError(
            f"covariates were given but the model '{bundle.name}' ({bundle.method}) takes none "
            "(num_covariates = 0); drop covariates= or use a model trained with covariates"
        )
    for i, values in enumerate(arrays):
        if values.shape[1] != k:
            raise ValueError(
                f"the model '{bundle.name}' takes {k} covariates but the covariates of segment {i} have "
                f"{values.shape[1]} channel(s) (shape {values.shape})"
            )
    return k


#: Where a recompute writes its result before it replaces the previous one: a hidden folder next to the
#: analyzer's ``extensions`` folder (same file system, so the swap is two renames), or a root zarr group.
STAGING_NAME = ".neuronid_staging"
_ZARR_STAGING = "neuronid_staging"


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
    in, for a span-context model) and ``embedded`` (bool). When the analyzer has a computed ``templates``
    extension, each unit's peak-channel template feeds the model's waveform channel (models without one ignore
    it); compute ``templates`` before ``neuron_embedding`` to use them.

    If the model has task heads (:func:`~spikeinterface_neuronid.heads.fit_head`,
    :meth:`~spikeinterface_neuronid.bundle.ModelBundle.add_head`), each task adds ``<task>_label`` (fixed-width
    unicode, ``"unknown"`` where the head abstains or the unit has no embedding), ``<task>_probabilities``
    (float32, units x classes, calibrated; NaN rows for units without an embedding), ``<task>_confidence``
    (float32, the largest calibrated probability) and ``<task>_classes`` (the class order of the probability
    columns). :func:`~spikeinterface_neuronid.labeling.neuronid_label_units` gathers them in a DataFrame.

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
    the model's method (``"nuclr"`` or ``"neurpir"``) whatever was passed. With
    ``fine_tune_steps > 0``, ``fine_tuned_sha256`` holds the SHA-256 of the fine-tuned model (encoder and
    heads) the embeddings were computed with (None without fine-tuning). The fine-tuned model is not saved:
    recomputing fine-tunes again, with the same result for the same seed on the same machine.
    ``merge_units`` and ``split_units`` recompute on the new analyzer, so they also **fine-tune again on
    the new population** (starting from ``model``, with ``fine_tune_seed``) and update
    ``fine_tuned_sha256``; their cost is then one fine-tuning plus one compute. The heads were fitted on
    embeddings of the original encoder, so fine-tune for few steps when relying on the labels.
    """

    extension_name = "neuron_embedding"
    depend_on = []
    need_recording = False
    use_nodepipeline = False
    need_job_kwargs = True
    _resolved_params = ("model_name", "model_sha256", "method", "fine_tuned_sha256")

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
        if "model_sha256" not in params:  # a new compute (stored params were checked when they were set)
            cls._check_new_params(params)
        return list(cls.depend_on)

    @classmethod
    def _check_new_params(cls, params: dict):
        """Validate the parameters of a new compute and load its model.

        Returns the model, the normalised integer/device parameters and the covariate arrays (or None).

        Everything that needs only the parameters is checked here, before SpikeInterface touches a previous
        result: the integers (no silent truncation of floats), the device, the method, the model file
        (missing, truncated, not a model, edited) and the covariates' type, shape and channel count.
        """
        from .inference import resolve_model

        checked = _check_scalar_params(params)
        model = params.get("model", "default")
        if not isinstance(model, (str, Path)):
            raise TypeError(
                "model must be 'default' or the path of a model file; save a ModelBundle with bundle.save(path) first"
            )
        cls._check_method(model, params.get("method"))
        bundle = resolve_model(str(model), params.get("method"))
        arrays = _covariate_arrays(params.get("covariates"), params.get("covariate_rate_hz"))
        if arrays is not None:
            _check_covariate_channels(bundle, arrays)
        return bundle, checked, arrays

    @staticmethod
    def _check_method(model, method) -> None:
        """Reject a ``method`` with no default model, or one that disagrees with the model file's method."""
        from .inference import default_model_path, resolve_model

        if method is None:
            return
        if not isinstance(method, str):
            raise TypeError(f"method must be a method name (e.g. 'nuclr', 'neurpir') or None, got {method!r}")
        if isinstance(model, str) and model == "default":
            default_model_path(method)  # ValueError for a method without a default model
        elif isinstance(model, (str, Path)):
            resolve_model(str(model), method)  # ValueError when the file's method differs

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
        given = dict(
            model=model,
            method=method,
            batch_size=batch_size,
            max_context_units=max_context_units,
            seed=seed,
            device=device,
            fine_tune_steps=fine_tune_steps,
            fine_tune_seed=fine_tune_seed,
            covariates=covariates,
            covariate_rate_hz=covariate_rate_hz,
        )
        # already checked by get_required_dependencies; cheap (the model is cached)
        bundle, checked, arrays = self._check_new_params(given)
        model = str(model)
        self._covariate_arrays = arrays  # stored as data by _run (the params only get a summary)
        covariate_summary = None
        if arrays is not None:
            covariate_summary = self._check_covariates(bundle, arrays, float(covariate_rate_hz))
            # one .npy path: that path; an array, or a list (one item per segment): "array"
            covariate_summary["source"] = str(covariates) if isinstance(covariates, (str, Path)) else "array"
        return dict(
            model=model,
            model_name=bundle.name,
            model_sha256=bundle.sha256,
            method=bundle.method,
            **checked,
            fine_tuned_sha256=None,  # set by the compute when fine_tune_steps > 0
            covariates=covariate_summary,
            covariate_rate_hz=None if arrays is None else float(covariate_rate_hz),
        )

    def _check_covariates(self, bundle, arrays: list[np.ndarray], rate_hz: float) -> dict:
        """Check the covariates against the model and the analyzer's segments; return the params summary."""
        import hashlib

        from .data import _check_covariates

        k = _check_covariate_channels(bundle, arrays)
        analyzer = self.sorting_analyzer
        num_segments = analyzer.get_num_segments()
        if len(arrays) != num_segments:
            raise ValueError(
                f"{len(arrays)} covariate array(s) for {num_segments} segment(s); pass a list with one array per segment"
            )
        digest = hashlib.sha256()
        for i, values in enumerate(arrays):
            duration = analyzer.get_num_samples(i) / analyzer.sampling_frequency
            try:
                _check_covariates(values, rate_hz, duration)
            except ValueError as err:
                raise ValueError(f"covariates of segment {i}: {err}") from None
            digest.update(np.ascontiguousarray(values).tobytes())
        return dict(num_covariates=k, num_samples=[int(a.shape[0]) for a in arrays], sha256=digest.hexdigest())

    def _stored_covariates(self) -> list[np.ndarray] | None:
        """The covariates of this compute: those just set by ``_set_params``, else those in the data."""
        if getattr(self, "_covariate_arrays", None) is not None:
            return self._covariate_arrays
        keys = sorted(
            (k for k in self.data if k.startswith(COVARIATES_PREFIX)), key=lambda k: int(k[len(COVARIATES_PREFIX) :])
        )
        return [np.asarray(self.data[k]) for k in keys] or None

    def _compute(self, sorting_analyzer, verbose=False, **job_kwargs) -> dict:
        """Embed (and label) the units of ``sorting_analyzer``; sets ``self._fine_tuned_sha256``."""
        from .inference import embed_populations, resolve_model

        job_kwargs = fix_job_kwargs(job_kwargs)
        # "method" selects the default model ("default" + "neurpir"); stored params always hold the resolved one
        bundle = resolve_model(self.params["model"], self.params.get("method"))
        if bundle.sha256 != self.params["model_sha256"]:
            raise ValueError(
                f"the model file {self.params['model']} changed since these params were set "
                f"(sha256 {bundle.sha256[:12]}… != {self.params['model_sha256'][:12]}…); recompute the extension"
            )
        covariates = self._stored_covariates()
        rate_hz = self.params.get("covariate_rate_hz")  # absent in params stored by older versions
        segments = analyzer_to_spike_train_sets(
            sorting_analyzer, covariates=covariates, covariate_rate_hz=None if covariates is None else rate_hz
        )
        n_jobs = job_kwargs.get("n_jobs", 1)
        num_threads = n_jobs if isinstance(n_jobs, int) and n_jobs > 0 else None
        progress_bar = bool(job_kwargs.get("progress_bar", False))
        self._fine_tuned_sha256 = None
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
            self._fine_tuned_sha256 = bundle.sha256
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
        data = dict(embedding=result.embedding, num_windows=result.num_windows, embedded=result.embedded)
        for head in bundle.heads.values():
            data.update(head_outputs(head, result.embedding))
        for i, values in enumerate(covariates or []):  # the inputs, kept for reloads, merges and splits
            data[f"{COVARIATES_PREFIX}{i}"] = values
        return data

    def _run(self, verbose=False, **job_kwargs):
        self.data.update(self._compute(self.sorting_analyzer, verbose=verbose, **job_kwargs))
        self._record_fine_tuned_sha256(self)  # written to disk with the rest by run()

    def _record_fine_tuned_sha256(self, extension) -> bool:
        """Store the checksum of the last compute's fine-tuned model in ``extension.params``; True if changed."""
        sha = getattr(self, "_fine_tuned_sha256", None)
        if extension.params is None or extension.params.get("fine_tuned_sha256") == sha:
            return False
        extension.params = {**extension.params, "fine_tuned_sha256": sha}
        return True

    # -- a recompute never loses the previous result ---------------------------------------------------------
    # SpikeInterface's set_params() and run() delete the stored result before computing, and its
    # compute_one_extension() deletes the folder and forgets the in-memory extension when anything raises.
    # Here nothing stored changes until the new result is complete: it is written to a staging folder (or zarr
    # group) and swapped in by renames, so a bad parameter, an error, Ctrl-C or a killed process during the
    # compute leaves the previous result, on disk and in memory.

    def set_params(self, save=True, **params):
        self._pending = True  # a new compute: its folder/group is not ours until run() swaps it in
        self.params = self._set_params(**params)

    def run(self, save=True, **kwargs):
        analyzer = self.sorting_analyzer
        save_to_disk = save and not analyzer.is_read_only() and self.format != "memory"
        self._save_to_disk = False  # _run() computes in memory
        self._pending = True
        t_start = perf_counter()
        self._run(**kwargs)
        self.run_info["runtime_s"] = perf_counter() - t_start
        self.run_info["run_completed"] = True
        if save_to_disk:
            self._replace_saved_result()
        self._pending = False

    def _replace_saved_result(self) -> None:
        """Write this result to the staging location, then swap it in for the stored one."""
        analyzer = self.sorting_analyzer
        name = self.extension_name
        self._remove_staging()
        if self.format == "binary_folder":
            root = Path(analyzer.folder) / STAGING_NAME
            self._staging = root / "new"
            self._staging.mkdir(parents=True)
            try:
                self.save()
            finally:
                self._staging = None
            old = analyzer.extensions.get(name)
            if old is not None and old is not self:
                old._close_memmaps()
            final = Path(analyzer.folder) / "extensions" / name
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():
                final.rename(root / "previous")
            (root / "new").rename(final)
            shutil.rmtree(root, ignore_errors=True)
        elif self.format == "zarr":
            import zarr

            zarr_root = analyzer._get_zarr_root(mode="r+")
            zarr_root.create_group(f"{_ZARR_STAGING}/new", overwrite=True)
            self._staging = f"{_ZARR_STAGING}/new"
            try:
                self.save()
            finally:
                self._staging = None
            zarr_root = analyzer._get_zarr_root(mode="r+")
            extensions = zarr_root.require_group("extensions")
            if name in extensions:
                zarr_root.move(f"extensions/{name}", f"{_ZARR_STAGING}/previous")
            zarr_root.move(f"{_ZARR_STAGING}/new", f"extensions/{name}")
            del zarr_root[_ZARR_STAGING]
            zarr.consolidate_metadata(zarr_root.store)

    def _remove_staging(self) -> None:
        """Remove what an unfinished compute left in the staging location (never the stored result)."""
        analyzer = self.sorting_analyzer
        if self.format == "binary_folder":
            shutil.rmtree(Path(analyzer.folder) / STAGING_NAME, ignore_errors=True)
        elif self.format == "zarr" and not analyzer.is_read_only():
            zarr_root = analyzer._get_zarr_root(mode="r+")
            if _ZARR_STAGING in zarr_root:
                del zarr_root[_ZARR_STAGING]

    def _get_binary_extension_folder(self):
        staging = getattr(self, "_staging", None)
        return staging if staging is not None else super()._get_binary_extension_folder()

    def _get_zarr_extension_group(self, mode="r+"):
        staging = getattr(self, "_staging", None)
        if staging is None:
            return super()._get_zarr_extension_group(mode=mode)
        return self.sorting_analyzer._get_zarr_root(mode=mode)[staging]

    def _reset_extension_folder(self):
        staging = getattr(self, "_staging", None)
        if staging is None:
            return super()._reset_extension_folder()
        if self.format == "binary_folder":
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        else:
            self.sorting_analyzer._get_zarr_root(mode="r+").create_group(staging, overwrite=True)

    def _delete_extension_folder(self):
        if not getattr(self, "_pending", False):
            return super()._delete_extension_folder()
        # SpikeInterface calls this on the new instance when set_params() or run() raised; the stored
        # result is still the previous one, so only the staging goes. Re-raising the exception being handled
        # skips compute_one_extension's next line, which would drop the previous result from memory.
        self._remove_staging()
        handled = sys.exc_info()[1]
        if handled is not None:
            raise handled

    def merge(self, new_sorting_analyzer, *args, **kwargs):
        # SpikeInterface copies this extension's params to the merged one; with fine-tuning, the merged
        # population gets its own fine-tuned model, whose checksum replaces the copied one.
        new_extension = super().merge(new_sorting_analyzer, *args, **kwargs)
        if self._record_fine_tuned_sha256(new_extension):
            new_extension.save()
        return new_extension

    def split(self, new_sorting_analyzer, *args, **kwargs):
        new_extension = super().split(new_sorting_analyzer, *args, **kwargs)
        if self._record_fine_tuned_sha256(new_extension):
            new_extension.save()
        return new_extension

    def _select_units_extension_data(self, unit_ids):
        indices = self.sorting_analyzer.sorting.ids_to_indices(unit_ids)
        return {
            key: (
                np.asarray(value)
                if key.endswith(CLASSES_SUFFIX) or key.startswith(COVARIATES_PREFIX)  # not per unit
                else slice_rows(np.asarray(value), indices)
            )
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
