"""Self-supervised methods: one module per method, looked up by name.

A method module is everything the rest of the package knows about a method. It must define:

``NAME : str``
    The method's registry name (stored in model files).
``Config``
    A dataclass of JSON-native fields with ``to_dict()``, ``from_dict(d)`` (unknown keys raise a
    ValueError), the presets ``Config.cpu()`` and ``Config.paper()``, the window fields ``bin_s``,
    ``token_bins``, ``window_tokens`` and the inference fields ``dim`` and ``max_context_units``.
``build_encoder(config) -> torch.nn.Module``
    The encoder: ``encoder(counts, unit_mask) -> embedding`` with ``counts`` float32 of shape
    ``(batch, units, window_bins)``, ``unit_mask`` bool of shape ``(batch, units)`` (False = padding) and an
    output of shape ``(batch, units, dim)``. An encoder may take further optional inputs (NeurPIR's
    ``covariates`` of shape ``(batch, window_bins, k)``); inference passes ``covariates=`` only when the
    model's config has ``num_covariates > 0``, so without them the defaults must give a usable embedding.
``build_projector(config) -> torch.nn.Module``
    The training-only head between the encoder output and the loss.
``loss(encoder, projector, batch, config) -> torch.Tensor``
    The scalar training loss of one :class:`ViewBatch` (two views of each population sample).

Adding a method is adding a module and one line to :data:`METHODS`; training, model files and inference
need no branch per method.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, fields
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is only needed once a method is used
    import torch

__all__ = ["METHODS", "REQUIRED_ATTRIBUTES", "MethodConfig", "ViewBatch", "get_method", "available_methods", "check_encoder_input"]

#: Registry: method name -> module implementing it.
METHODS: dict[str, str] = {
    "nuclr": "spikeinterface_neuronid.methods.nuclr",
    "neurpir": "spikeinterface_neuronid.methods.neurpir",
}

#: What every method module must define (see the module docstring).
REQUIRED_ATTRIBUTES = ("NAME", "Config", "build_encoder", "build_projector", "loss")


class MethodConfig:
    """Behaviour shared by the methods' config dataclasses (which inherit from it).

    Subclasses are frozen dataclasses with the window fields ``bin_s``, ``token_bins`` and ``window_tokens``
    and set ``label`` to the method's display name (used in error messages).
    """

    label = "method"

    @property
    def window_spec(self):
        """The training window discretisation."""
        from ..data import WindowSpec

        return WindowSpec(bin_s=self.bin_s, token_bins=self.token_bins, window_tokens=self.window_tokens)

    @property
    def embedding_dim(self) -> int:
        """Width of the unit embeddings the encoder returns (``dim`` unless the method says otherwise)."""
        return self.dim

    @property
    def context_dim(self) -> int:
        """Leading embedding columns that describe the unit in its population (all of them unless the method
        says otherwise); pass it as ``ood_columns`` to :func:`~spikeinterface_neuronid.calibration.fit_head`."""
        return self.embedding_dim

    def to_dict(self) -> dict:
        """JSON-native dict of all fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict):
        """Inverse of :meth:`to_dict`; missing keys take their defaults.

        Raises
        ------
        ValueError
            If ``values`` has keys that are not fields of the config, or a value is invalid.
        """
        if not isinstance(values, dict):
            raise ValueError(f"a {cls.label} config must be a dict, got {type(values).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown {cls.label} config keys {unknown}; valid keys: {', '.join(known)}")
        return cls(**values)


@dataclass
class ViewBatch:
    """A training batch of two views per population sample, padded to the widest view of each side.

    Attributes
    ----------
    counts1, counts2 : torch.Tensor
        float32 spike counts, shape ``(batch, units1, window_bins)`` / ``(batch, units2, window_bins)``.
    mask1, mask2 : torch.Tensor
        bool, shape ``(batch, units1)`` / ``(batch, units2)``; False marks padding.
    units1, units2 : torch.Tensor
        int64 index of each unit in its source population, -1 for padding. The same index in both views
        of a sample is the same neuron (a positive pair).
    covariates1, covariates2 : torch.Tensor or None
        float32 surrounding information binned like the counts, shape ``(batch, window_bins, k)``, or None
        when the populations have no covariates. Methods that do not use them ignore them.
    unit_inputs1, unit_inputs2 : torch.Tensor or None
        Span samples only: float32 per-unit statistics of each view's span, ``(batch, units, F)`` (0 for
        padding), or None for window samples.
    edges1, edges2 : torch.Tensor or None
        Span samples of relational models only: float32 pair statistics, ``(batch, units, units, L)``.
    """

    counts1: "torch.Tensor"
    mask1: "torch.Tensor"
    units1: "torch.Tensor"
    counts2: "torch.Tensor"
    mask2: "torch.Tensor"
    units2: "torch.Tensor"
    covariates1: "torch.Tensor | None" = None
    covariates2: "torch.Tensor | None" = None
    unit_inputs1: "torch.Tensor | None" = None
    unit_inputs2: "torch.Tensor | None" = None
    edges1: "torch.Tensor | None" = None
    edges2: "torch.Tensor | None" = None

    @property
    def batch_size(self) -> int:
        return int(self.counts1.shape[0])

    def to(self, device) -> "ViewBatch":
        """The same batch on another torch device."""
        moved = (getattr(self, f) for f in self.__dataclass_fields__)
        return ViewBatch(*(None if t is None else t.to(device) for t in moved))


def check_encoder_input(counts, unit_mask) -> tuple[int, int, int]:
    """``(batch, units, bins)`` of an encoder's input; a ValueError naming the tensor if the shapes or dtype are off.

    Parameters
    ----------
    counts : torch.Tensor
        ``(batch, units, bins)`` spike counts.
    unit_mask : torch.Tensor
        bool ``(batch, units)``: which unit slots hold a unit.
    """
    import torch

    if counts.dim() != 3:
        raise ValueError(f"counts must have shape (batch, units, bins), got {tuple(counts.shape)}")
    batch, width, bins = counts.shape
    if unit_mask.shape != (batch, width) or unit_mask.dtype != torch.bool:
        raise ValueError(
            f"unit_mask must be a bool tensor of shape {(batch, width)}, got {unit_mask.dtype} "
            f"{tuple(unit_mask.shape)}"
        )
    return batch, width, bins


def available_methods() -> list[str]:
    """Names of the registered methods."""
    return sorted(METHODS)


def get_method(name: str) -> ModuleType:
    """Return the module implementing method ``name``.

    Parameters
    ----------
    name : str
        A registered method name, e.g. ``"nuclr"``.

    Returns
    -------
    ModuleType
        The method module, with the attributes listed in :data:`REQUIRED_ATTRIBUTES`.

    Raises
    ------
    ValueError
        If no method of that name is registered.
    """
    if not isinstance(name, str) or name not in METHODS:
        raise ValueError(f"unknown method {name!r}; available methods: {', '.join(available_methods())}")
    module = importlib.import_module(METHODS[name])
    missing = [attr for attr in REQUIRED_ATTRIBUTES if not hasattr(module, attr)]
    if missing:
        raise TypeError(f"method module {module.__name__} does not define {', '.join(missing)}")
    return module
