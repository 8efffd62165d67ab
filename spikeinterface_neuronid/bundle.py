"""The model file: one ``.safetensors`` file holding weights and a JSON description.

Layout
------
* **Tensors**, named ``<section>.<parameter>``: ``encoder.*`` (always), ``projector.*`` (the training
  head, kept so a model can be fine-tuned) and ``head.<task>.<array>`` (float64 ``mean``, ``scale``,
  ``coef``, ``intercept`` of each task head, :class:`~spikeinterface_neuronid.heads.LinearHead`);
  sections are listed in one place (:data:`SECTIONS`).
* **Metadata**: the safetensors header's ``__metadata__`` (str -> str) has one key,
  ``"spikeinterface_neuronid"``, whose value is a JSON document::

      {"format": "spikeinterface_neuronid.model", "format_version": 3, "method": "nuclr",
       "config": {...}, "name": "...", "package_version": "0.1.0", "created": "2026-...Z",
       "provenance": {...}, "sha256": "<hex>"}

  A model with task heads adds
  ``"heads": {"<task>": {"classes": [...], "temperature": T, "threshold": t, "provenance": {...}}}``.
* ``sha256`` is the model's identity: SHA-256 over every tensor in sorted name order, each as ``name``, dtype,
  shape and byte length on one header line followed by its raw little-endian bytes, then one line of canonical
  JSON with everything else that changes the model's output (:func:`model_sha256`): the method, the whole
  config (``bin_s``, ``window_tokens``, ``max_context_units``, ...) and each head's metadata except its
  provenance (class names in order, temperature, threshold, ...). It does not cover the name, the creation
  time, the package version or any provenance, so renaming a model or editing its provenance keeps its
  identity, while editing its config changes it (and a file whose config was edited fails to load).

Format versions: 3 (written by this package) checksums as above. 1 (no heads) and 2 (heads) checksummed the
tensors and the heads' classes, temperature and threshold only; they are still read (verified with that
older definition), and a loaded bundle's :attr:`ModelBundle.sha256` is always the current definition, so an
edited config in an old file shows up as a different identity.

Loading never unpickles anything: the header is parsed as JSON and the tensors are read by safetensors
(the container's checks live in the private ``_bundle_format`` module).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping

import torch
from safetensors.torch import save as _safetensors_save
from torch import nn

from ._bundle_format import (
    FORMAT,
    FORMAT_VERSION,
    METADATA_KEY,
    SECTIONS,
    group_head_arrays,
    read_metadata,
    read_tensors,
    split_sections,
)
from ._io import atomic_path
from .heads import LinearHead
from .methods import get_method

__all__ = [
    "ModelBundle",
    "ModelFileNotFoundError",
    "weights_sha256",
    "model_sha256",
    "FORMAT",
    "FORMAT_VERSION",
    "SECTIONS",
]

class ModelFileNotFoundError(FileNotFoundError, ValueError):
    """The model file does not exist (both a FileNotFoundError and a ValueError)."""


def weights_sha256(tensors: Mapping[str, torch.Tensor], extra: Mapping[str, Any] | None = None) -> str:
    """SHA-256 of named tensors: names, dtypes, shapes and bytes, in sorted name order.

    Parameters
    ----------
    tensors : mapping of str to torch.Tensor
        Flat tensor dict, as stored in the file (e.g. ``"encoder.read_in.weight"``).
    extra : mapping | None, default: None
        JSON-serialisable values hashed after the tensors, as one line of canonical JSON (the task heads'
        classes, temperature and threshold, :func:`heads_checksum_metadata`). None or empty hashes the tensors
        only, as format version 1 does.

    Returns
    -------
    str
        Hex digest.
    """
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        data = tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        dtype = str(tensor.dtype).removeprefix("torch.")
        header = f"{name}\t{dtype}\t{list(tensor.shape)}\t{len(data)}\n"
        digest.update(header.encode("utf-8"))
        digest.update(data)
    if extra:
        text = json.dumps(extra, sort_keys=True, separators=(",", ":"), allow_nan=False)
        digest.update(f"__metadata__\t{text}\n".encode("utf-8"))
    return digest.hexdigest()


def heads_checksum_metadata(heads_meta: Mapping[str, Mapping[str, Any]] | None) -> dict:
    """The heads' metadata covered by the format 1-2 checksum: classes, temperature, threshold per task."""
    return {
        task: {key: meta.get(key) for key in ("classes", "temperature", "threshold")}
        for task, meta in (heads_meta or {}).items()
    }


def model_sha256(
    tensors: Mapping[str, torch.Tensor],
    method: str,
    config: Mapping[str, Any],
    heads_meta: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    """The model's identity (format version 3): tensors, method, config and heads' metadata but provenance.

    Parameters
    ----------
    tensors : mapping of str to torch.Tensor
        Flat tensor dict, as stored in the file.
    method : str
        Method name (``"nuclr"``, ``"neurpir"``).
    config : mapping
        The config as a JSON-serialisable dict (``config.to_dict()``).
    heads_meta : mapping | None, default: None
        Each task head's JSON metadata; its ``"provenance"`` is left out.

    Returns
    -------
    str
        Hex digest.
    """
    heads = {
        task: {key: value for key, value in meta.items() if key != "provenance"}
        for task, meta in (heads_meta or {}).items()
    }
    return weights_sha256(tensors, dict(method=method, config=dict(config), heads=heads))


def _package_version() -> str:
    from . import __version__

    return __version__


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _copy_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").clone().contiguous() for k, v in state.items()}


def _check_state(section: str, expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor]) -> None:
    """Raise a ValueError naming the first key that is missing, unexpected or of the wrong shape."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing weights {[f'{section}.{k}' for k in missing]}")
    if unexpected:
        problems.append(f"unexpected weights {[f'{section}.{k}' for k in unexpected]}")
    for key in sorted(set(expected) & set(got)):
        if tuple(got[key].shape) != tuple(expected[key].shape):
            problems.append(
                f"weight '{section}.{key}' has shape {tuple(got[key].shape)} but the config expects "
                f"{tuple(expected[key].shape)}"
            )
    if problems:
        raise ValueError("the weights do not match the config: " + "; ".join(problems))


class ModelBundle:
    """A trained model: method name, config, weights, name and provenance.

    Parameters
    ----------
    method : str
        Registered method name (see :func:`~spikeinterface_neuronid.methods.get_method`).
    config : dataclass or dict
        The method's config (a dict is read with ``Config.from_dict``).
    state_dict : mapping of str to torch.Tensor
        Encoder weights (``encoder.state_dict()``); copied to CPU.
    projector_state_dict : mapping of str to torch.Tensor | None, default: None
        Training projector weights, kept for fine-tuning.
    name : str, default: "neuronid-model"
        Human-readable model name.
    provenance : dict | None, default: None
        JSON-serialisable description of how the model was made (data, training settings, ...).
    created : str | None, default: None
        ISO 8601 creation time; None means now.
    package_version : str | None, default: None
        Version of spikeinterface-neuronid that made the model; None means the running one.
    heads : iterable of LinearHead | None, default: None
        Task heads (at most one per task), see :meth:`add_head`.

    Raises
    ------
    ValueError
        If the method is unknown, the config invalid, the weights do not fit the config (naming the key
        and both shapes), the provenance is not JSON-serialisable or a head does not fit the embeddings.
    """

    def __init__(
        self,
        method: str,
        config: Any,
        state_dict: Mapping[str, torch.Tensor],
        projector_state_dict: Mapping[str, torch.Tensor] | None = None,
        name: str = "neuronid-model",
        provenance: dict | None = None,
        created: str | None = None,
        package_version: str | None = None,
        heads: Iterable[LinearHead] | None = None,
    ):
        module = get_method(method)
        if isinstance(config, dict):
            config = module.Config.from_dict(config)
        if not isinstance(config, module.Config):
            raise ValueError(f"config must be a {module.Config.__name__} or a dict, got {type(config).__name__}")
        provenance = dict(provenance or {})
        try:
            json.dumps(provenance)
        except (TypeError, ValueError) as err:
            raise ValueError(f"provenance must be JSON-serialisable: {err}") from None
        self.method = method
        self.config = config
        self.name = str(name)
        self.provenance = provenance
        self.created = created or _utc_now()
        self.package_version = package_version or _package_version()
        self.state_dict = _copy_state(state_dict)
        self.projector_state_dict = None if projector_state_dict is None else _copy_state(projector_state_dict)
        with torch.device("meta"):  # shapes only: no memory, no draw from torch's global RNG
            _check_state("encoder", module.build_encoder(config).state_dict(), self.state_dict)
            if self.projector_state_dict is not None:
                _check_state("projector", module.build_projector(config).state_dict(), self.projector_state_dict)
        self._sha256: str | None = None
        #: The checksum written in the header of the file this bundle was loaded from (verified on load with
        #: its format version's definition; for files of format 1-2 it differs from :attr:`sha256`), else None.
        self.stored_sha256: str | None = None
        self._encoder: nn.Module | None = None
        self._heads: dict[str, LinearHead] = {}
        for head in heads or ():
            self.add_head(head)

    @classmethod
    def from_modules(
        cls,
        method: str,
        config: Any,
        encoder: nn.Module,
        projector: nn.Module | None = None,
        name: str = "neuronid-model",
        provenance: dict | None = None,
    ) -> "ModelBundle":
        """Bundle trained modules (their weights are copied)."""
        return cls(
            method,
            config,
            encoder.state_dict(),
            None if projector is None else projector.state_dict(),
            name=name,
            provenance=provenance,
        )

    # -- task heads ---------------------------------------------------------------------------------------

    @property
    def heads(self) -> Mapping[str, LinearHead]:
        """Task heads by task name (read-only view; change them with :meth:`add_head` / :meth:`remove_head`)."""
        return MappingProxyType(self._heads)

    def add_head(self, head: LinearHead, overwrite: bool = False) -> None:
        """Add a task head (e.g. from :func:`~spikeinterface_neuronid.calibration.fit_head`), saved with the model.

        The model's :attr:`sha256` changes: predictions of the ``neuron_embedding`` extension computed with the
        head-less model are not reused.

        Parameters
        ----------
        head : LinearHead
            The head; its dimension must be the model's embedding dimension.
        overwrite : bool, default: False
            Replace a head of the same task instead of raising.

        Raises
        ------
        ValueError
            If the head's dimension differs from the model's, or a head for the task exists and ``overwrite`` is
            False.
        """
        if not isinstance(head, LinearHead):
            raise TypeError(f"head must be a LinearHead (see fit_head), got {type(head).__name__}")
        dim = getattr(self.config, "embedding_dim", None)
        if dim is not None and head.dim != dim:
            raise ValueError(
                f"head '{head.task}' expects embeddings of dimension {head.dim}, but the model's embeddings have "
                f"dimension {dim}; fit the head on embeddings of this model"
            )
        if head.task in self._heads and not overwrite:
            raise ValueError(f"the model already has a head for task '{head.task}'; pass overwrite=True to replace it")
        self._heads[head.task] = head
        self._sha256 = self.stored_sha256 = None

    def remove_head(self, task: str) -> LinearHead:
        """Remove and return the head of ``task`` (KeyError if there is none)."""
        if task not in self._heads:
            raise KeyError(f"the model has no head for task {task!r}; it has {sorted(self._heads)}")
        self._sha256 = self.stored_sha256 = None
        return self._heads.pop(task)

    def _heads_metadata(self) -> dict:
        return {task: head.to_arrays()[1] for task, head in sorted(self._heads.items())}

    # -- content ------------------------------------------------------------------------------------------

    def tensors(self) -> dict[str, torch.Tensor]:
        """All weights as stored in the file, named ``<section>.<parameter>`` (heads: ``head.<task>.<array>``)."""
        out = {f"encoder.{k}": v for k, v in self.state_dict.items()}
        if self.projector_state_dict is not None:
            out.update({f"projector.{k}": v for k, v in self.projector_state_dict.items()})
        for task, head in self._heads.items():
            arrays, _ = head.to_arrays()
            out.update({f"head.{task}.{name}": torch.from_numpy(arr) for name, arr in arrays.items()})
        return out

    @property
    def sha256(self) -> str:
        """The model's identity (:func:`model_sha256`): weights, method, config and heads, not provenance."""
        if self._sha256 is None:
            self._sha256 = model_sha256(self.tensors(), self.method, self.config.to_dict(), self._heads_metadata())
        return self._sha256

    def metadata(self) -> dict:
        """The JSON document stored in the file's header."""
        meta = dict(
            format=FORMAT,
            format_version=FORMAT_VERSION,
            method=self.method,
            config=self.config.to_dict(),
            name=self.name,
            package_version=self.package_version,
            created=self.created,
            provenance=self.provenance,
            sha256=self.sha256,
        )
        if self._heads:
            meta["heads"] = self._heads_metadata()
        return meta

    def encoder(self) -> nn.Module:
        """The encoder with the bundle's weights, in eval mode (built once, then cached)."""
        if self._encoder is None:
            with torch.random.fork_rng(devices=[]):  # the random init is overwritten; keep the global RNG
                encoder = get_method(self.method).build_encoder(self.config)
            encoder.load_state_dict(self.state_dict)
            self._encoder = encoder.eval()
        return self._encoder

    def projector(self) -> nn.Module | None:
        """A new projector with the stored weights (None if the bundle has none)."""
        if self.projector_state_dict is None:
            return None
        with torch.random.fork_rng(devices=[]):
            projector = get_method(self.method).build_projector(self.config)
        projector.load_state_dict(self.projector_state_dict)
        return projector

    def num_parameters(self) -> int:
        """Number of encoder weights."""
        return int(sum(v.numel() for v in self.state_dict.values()))

    def __repr__(self) -> str:
        heads = f", heads={sorted(self._heads)}" if self._heads else ""
        return (
            f"ModelBundle(name={self.name!r}, method={self.method!r}, "
            f"dim={getattr(self.config, 'embedding_dim', '?')}, "
            f"params={self.num_parameters():,}{heads}, sha256={self.sha256[:12]}…)"
        )

    # -- file ---------------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the bundle to one ``.safetensors`` file, atomically (temporary file, then rename).

        Parameters
        ----------
        path : str | Path
            Destination; parent folders are created.

        Returns
        -------
        Path
            ``path``.
        """
        path = Path(path).expanduser()
        tensors, meta = self.tensors(), self.metadata()
        # the identity of what is written: a file read with a config that lacked fields added since is written
        # with every field, so its checksum is recomputed rather than the loaded file's carried over
        meta["sha256"] = model_sha256(tensors, self.method, meta["config"], meta.get("heads") or {})
        data = _safetensors_save(tensors, metadata={METADATA_KEY: json.dumps(meta, sort_keys=True)})
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ModelBundle":
        """Read a model file written by :meth:`save`, without unpickling anything.

        Raises
        ------
        ValueError
            With the file name and the reason: the file is missing (a :class:`ModelFileNotFoundError`),
            is not a safetensors file, is truncated, is not a spikeinterface-neuronid model or was written by
            a newer format version, its weights do not match the stored checksum (modified or corrupted),
            its weights do not fit its config (the key and both shapes are named) or a task head is
            inconsistent.
        """
        path = Path(path).expanduser()
        if not path.is_file():
            raise ModelFileNotFoundError(2, "model file not found", str(path))
        data = path.read_bytes()
        meta = read_metadata(path, data)
        version = meta["format_version"]
        tensors = read_tensors(path, data)

        heads_meta = meta.get("heads") or {}
        if not isinstance(heads_meta, dict) or not all(isinstance(v, dict) for v in heads_meta.values()):
            raise ValueError(f"{path}: the 'heads' metadata must map task names to objects")
        expected = meta.get("sha256")
        try:
            if version >= 3:
                actual = model_sha256(tensors, meta.get("method"), meta.get("config") or {}, heads_meta)
            else:
                actual = weights_sha256(tensors, heads_checksum_metadata(heads_meta))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: the 'heads' metadata or the config is not valid JSON data ({err})") from None
        if actual != expected:
            covered = "weights, config or heads" if version >= 3 else "weights or heads" if heads_meta else "weights"
            raise ValueError(
                f"{path}: checksum mismatch, the {covered} were modified or corrupted (the file says sha256 "
                f"{str(expected)[:12]}…, its content hashes to {actual[:12]}…); use the original file"
            )
        sections = split_sections(path, tensors)
        missing = [k for k in ("method", "config") if k not in meta]
        if missing:
            raise ValueError(f"{path}: the model metadata lacks {missing}")
        head_arrays = group_head_arrays(path, sections.get("head", {}), heads_meta)
        try:
            heads = [LinearHead.from_arrays(task, head_arrays[task], heads_meta[task]) for task in heads_meta]
            bundle = cls(
                meta["method"],
                meta["config"],
                sections.get("encoder", {}),
                sections.get("projector"),
                name=meta.get("name", path.stem),
                provenance=meta.get("provenance") or {},
                created=meta.get("created"),
                package_version=meta.get("package_version"),
                heads=heads,
            )
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: {err}") from None
        if version >= 3:
            bundle._sha256 = actual
        bundle.stored_sha256 = actual
        return bundle

