"""Model cards and ``model_info.json``: what a model file says about itself, written for people and indexes.

Everything here is generated from a :class:`~spikeinterface_neuronid.bundle.ModelBundle`'s metadata; the release
cards of the shipped models (``tools/release/cards.py``) add measured scores around :func:`model_card`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch

from .bundle import FORMAT_VERSION

if TYPE_CHECKING:
    from .bundle import ModelBundle

__all__ = ["model_card", "model_info", "save_model_info", "front_matter"]


def model_card(bundle: "ModelBundle") -> str:
    """A human-readable markdown model card generated from a model's metadata.

    Parameters
    ----------
    bundle : ModelBundle
        The model.

    Returns
    -------
    str
        Markdown: identity and checksum, architecture, training provenance, and each task head with its
        classes, calibration temperature, abstention threshold and fit provenance. It opens with Hugging
        Face style YAML front matter (``library_name``, tags, ``model_format: safetensors``, the checksum,
        the method, the package versions and each head's classes); fill in ``license`` before publishing.
    """
    meta = bundle.metadata()
    lines = [
        *front_matter(bundle),
        f"# Model card: {bundle.name}",
        "",
        f"- **Method:** `{bundle.method}`; {bundle.num_parameters():,} encoder parameters",
        f"- **SHA-256 (weights, config and heads):** `{bundle.sha256}`",
        f"- **Created:** {bundle.created} with spikeinterface-neuronid {bundle.package_version}",
        "",
        "## Configuration",
        "",
        "| key | value |",
        "|---|---|",
        *(f"| `{k}` | `{v}` |" for k, v in meta["config"].items()),
        "",
        "## Provenance",
        "",
        "```json",
        json.dumps(bundle.provenance, indent=2, sort_keys=True),
        "```",
    ]
    for task, head in sorted(bundle.heads.items()):
        lines += [
            "",
            f"## Head `{task}`",
            "",
            f"- **Classes:** {', '.join(head.classes)} (label `unknown` when the largest calibrated "
            f"probability is below {head.threshold:g})",
            f"- **Calibration temperature:** {head.temperature:.4g}",
        ]
        if head.has_ood:
            lines.append(
                f"- **Out-of-distribution check:** `unknown` when the embedding's out-of-distribution score "
                f"(negative log-density under a {head.ood_location.shape[0]}-component Gaussian mixture of "
                f"the training embeddings) exceeds {head.ood_threshold:.4g}"
            )
        if head.provenance:
            lines += ["", "```json", json.dumps(head.provenance, indent=2, sort_keys=True, default=str), "```"]
    return "\n".join(lines) + "\n"


def _package_versions(bundle: "ModelBundle") -> dict[str, str]:
    """The package version that made the model, and the torch, numpy and Python versions writing its card."""
    import platform

    import numpy

    versions = {"spikeinterface_neuronid": bundle.package_version, "torch": torch.__version__}
    versions.update(numpy=numpy.__version__, python=platform.python_version())
    return versions


def model_info(bundle: "ModelBundle", file_name: str | None = None) -> dict:
    """A JSON-able summary to publish next to the model file (like SpikeInterface's ``model_info.json``).

    Parameters
    ----------
    bundle : ModelBundle
        The model.
    file_name : str | None, default: None
        The model file's name, recorded under ``"file"``.

    Returns
    -------
    dict
        ``name``, ``method``, ``sha256`` (the identity, :func:`model_sha256`), ``file``, ``file_format``,
        ``format_version``, ``created``, ``embedding_dim``, ``num_parameters``, ``package_versions``,
        ``label_classes`` (each head's classes in probability-column order; ``"unknown"`` is the abstention),
        ``heads`` (classes, temperature, threshold) and the ``config``. Everything in it is also in the file.
    """
    return dict(
        model_info_version=1,
        name=bundle.name,
        method=bundle.method,
        sha256=bundle.sha256,
        file=file_name,
        file_format="safetensors",
        format_version=FORMAT_VERSION,
        created=bundle.created,
        embedding_dim=getattr(bundle.config, "embedding_dim", None),
        num_parameters=bundle.num_parameters(),
        package_versions=_package_versions(bundle),
        label_classes={task: list(head.classes) for task, head in sorted(bundle.heads.items())},
        heads={
            task: dict(classes=list(head.classes), temperature=head.temperature, threshold=head.threshold)
            for task, head in sorted(bundle.heads.items())
        },
        config=bundle.config.to_dict(),
    )


def save_model_info(bundle: "ModelBundle", model_path: str | Path) -> Path:
    """Write :func:`model_info` of ``bundle`` as ``<model stem>.model_info.json`` next to ``model_path`` (atomically)."""
    from ._io import write_json

    model_path = Path(model_path)
    path = model_path.with_name(f"{model_path.stem}.model_info.json")
    write_json(path, model_info(bundle, model_path.name))
    return path


def front_matter(
    bundle: "ModelBundle", license: str = "unknown  # set before publishing", extra: Sequence[str] = ()
) -> list[str]:
    """Hugging Face style YAML front matter of a model card, as lines (JSON-quoted scalars are valid YAML).

    Parameters
    ----------
    bundle : ModelBundle
        The model.
    license : str, default: "unknown  # set before publishing"
        The ``license`` value.
    extra : sequence of str, default: ()
        Further YAML lines (e.g. a ``model-index`` of measured metrics), placed before the closing ``---``.

    Returns
    -------
    list of str
        ``---``, the keys (library, tags, format, name, method, checksum, creation time, package versions,
        label classes per head), ``extra``, ``---`` and an empty line.
    """
    versions = _package_versions(bundle)
    heads = {task: list(head.classes) for task, head in sorted(bundle.heads.items())}
    return [
        "---",
        f"license: {license}",
        "library_name: spikeinterface-neuronid",
        "tags: [neuroscience, electrophysiology, spike-sorting, spikeinterface, nwb, self-supervised]",
        "model_format: safetensors",
        f"model_name: {json.dumps(bundle.name)}",
        f"method: {json.dumps(bundle.method)}",
        f"sha256: {bundle.sha256}",
        f"created: {json.dumps(bundle.created)}",
        f"package_versions: {json.dumps(versions)}",
        f"label_classes: {json.dumps(heads)}",
        *extra,
        "---",
        "",
    ]
