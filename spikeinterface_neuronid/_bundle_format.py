"""The model file's container: reading and checking the safetensors header, the metadata and the tensor names.

Private to :mod:`~spikeinterface_neuronid.bundle`, which documents the layout and owns the checksum and the
:class:`~spikeinterface_neuronid.bundle.ModelBundle` built from what is read here. Every function raises a
ValueError that names the file and the reason. Nothing is unpickled: the header is parsed as JSON and the
tensors are read by safetensors.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load as _safetensors_load

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "METADATA_KEY",
    "SECTIONS",
    "read_header",
    "read_metadata",
    "read_tensors",
    "split_sections",
    "group_head_arrays",
]

FORMAT = "spikeinterface_neuronid.model"
#: Format version this package writes, and the newest it reads (3: the checksum covers method and config).
FORMAT_VERSION = 3
METADATA_KEY = "spikeinterface_neuronid"
#: Tensor name prefixes a model file may hold.
SECTIONS = ("encoder", "projector", "head")


def read_header(path: Path, data: bytes) -> dict:
    """Parse and sanity-check the safetensors header of ``data`` (the whole file read from ``path``).

    Says 'truncated' when the data ends early. Returns the header: one entry per tensor, and ``"__metadata__"``
    where the file has metadata.
    """
    if len(data) < 8:
        raise ValueError(f"{path} is not a safetensors model file (only {len(data)} bytes)")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > 100_000_000:
        raise ValueError(f"{path} is not a safetensors model file (invalid header length)")
    if 8 + header_len > len(data):
        raise ValueError(
            f"{path} is truncated or not a safetensors file: its header needs {8 + header_len} bytes, "
            f"the file has {len(data)}"
        )
    try:
        header = json.loads(data[8 : 8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{path} is not a safetensors model file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a safetensors model file (unexpected header)")
    end = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (TypeError, KeyError, IndexError, ValueError):
            raise ValueError(f"{path} is not a safetensors model file (bad entry for tensor {key!r})") from None
    available = len(data) - 8 - header_len
    if end > available:
        raise ValueError(
            f"{path} is truncated: its tensors need {end} bytes of data, the file holds {available}; "
            "the copy or download was probably interrupted"
        )
    return header


def read_metadata(path: Path, data: bytes) -> dict:
    """The model's JSON document from the header (:func:`read_header`), of a format version this package reads.

    Parameters
    ----------
    path : Path
        The file ``data`` was read from (named in the errors).
    data : bytes
        The whole file.

    Returns
    -------
    dict
        The document; its ``"format_version"`` is an int of at most :data:`FORMAT_VERSION`.
    """
    header = read_header(path, data)
    raw = (header.get("__metadata__") or {}).get(METADATA_KEY)
    if raw is None:
        raise ValueError(
            f"{path} is a safetensors file but not a spikeinterface-neuronid model "
            f"(no '{METADATA_KEY}' metadata); save models with ModelBundle.save"
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: the model metadata is not valid JSON ({err})") from None
    fmt = meta.get("format") if isinstance(meta, dict) else None
    if fmt != FORMAT:
        raise ValueError(f"{path}: unrecognised model metadata (format {fmt!r}, not {FORMAT!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{path} uses model format version {version!r}; this spikeinterface-neuronid reads version "
            f"{FORMAT_VERSION} or older: upgrade the package"
        )
    return meta


def read_tensors(path: Path, data: bytes) -> dict[str, torch.Tensor]:
    """The file's tensors, by their stored names (read by safetensors, never unpickled)."""
    try:
        return _safetensors_load(data)
    except Exception as err:  # safetensors raises its own error type
        raise ValueError(f"{path} is not a readable safetensors file ({err})") from None


def split_sections(path: Path, tensors: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Group tensors named ``<section>.<rest>`` by section (:data:`SECTIONS`), keyed by ``<rest>``."""
    sections: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        section, _, rest = key.partition(".")
        if section not in SECTIONS or not rest:
            raise ValueError(
                f"{path}: unexpected tensor {key!r} (known sections: {', '.join(SECTIONS)}); "
                "was it written by a newer spikeinterface-neuronid?"
            )
        sections.setdefault(section, {})[rest] = tensor
    return sections


def group_head_arrays(
    path: Path, head_section: Mapping[str, torch.Tensor], heads_meta: Mapping[str, Any]
) -> dict[str, dict[str, torch.Tensor]]:
    """The ``head`` section's float64 tensors (``<task>.<array>``) by task, for each task in ``heads_meta``."""
    head_arrays: dict[str, dict[str, torch.Tensor]] = {task: {} for task in heads_meta}
    for key, tensor in head_section.items():
        task, _, name = key.partition(".")
        if task not in heads_meta:
            raise ValueError(f"{path}: tensor 'head.{key}' belongs to no head listed in the metadata")
        if tensor.dtype != torch.float64:
            raise ValueError(f"{path}: tensor 'head.{key}' must be float64, not {tensor.dtype}")
        head_arrays[task][name] = tensor
    return head_arrays
