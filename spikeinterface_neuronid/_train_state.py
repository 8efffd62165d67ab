"""The training-state file of :func:`~spikeinterface_neuronid.training.pretrain`: what a run needs to resume.

Written next to each checkpoint (``<checkpoint stem>.state.safetensors``), atomically and on rank 0 only.
Like a model file it is one ``.safetensors`` file, never a pickle:

* **Tensors**: ``encoder.*`` and ``projector.*`` (the weights after the checkpoint's step),
  ``optimizer.<index>.<key>`` (AdamW's ``exp_avg``, ``exp_avg_sq`` and ``step`` of each parameter, indexed
  as in ``optimizer.state_dict()``), ``torch_rng.<rank>`` (torch's CPU RNG state of each rank, uint8),
  ``cuda_rng.<rank>`` on CUDA, and ``best.encoder.*`` / ``best.projector.*`` (the best-scoring checkpoint's
  weights, with ``checkpoint_score``).
* **Metadata** (the header's ``__metadata__``, key ``"spikeinterface_neuronid.training_state"``, JSON): the
  format, the step reached, the settings that define the run (compared on resume), the numpy sampler
  state (``bit_generator.state``, taken before the batch of the next step was drawn), the history so far,
  the best checkpoint's step and score, and non-tensor optimiser state values.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save as _safetensors_save

from ._io import atomic_path

FORMAT = "spikeinterface_neuronid.training_state"
FORMAT_VERSION = 1
METADATA_KEY = "spikeinterface_neuronid.training_state"
#: History entries carried over by a resumed run.
HISTORY_KEYS = ("loss", "lr", "step_time_s", "num_pairs", "checkpoints")


class TrainingStateError(ValueError):
    """A training-state file cannot be resumed from (corrupted, another format, or another run's settings)."""


def state_path(path: str | Path) -> Path:
    """The training-state file of a checkpoint path; a path that already is one is returned as it is."""
    path = Path(path).expanduser()
    if path.name.endswith(".state.safetensors"):
        return path
    stem = path.name[: -len(".safetensors")] if path.name.endswith(".safetensors") else path.name
    return path.with_name(f"{stem}.state.safetensors")


def _tensors(prefix: str, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().to("cpu").clone().contiguous() for k, v in state.items()}


def _section(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    start = prefix + "."
    return {k[len(start) :]: v for k, v in tensors.items() if k.startswith(start)}


def _json_value(value: Any) -> Any:
    """JSON-safe float: NaN/inf as strings (a NaN checkpoint score must survive the round trip)."""
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": repr(value)}
    return value


def _from_json_value(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"float"}:
        return float(value["float"])
    return value


def save_state(
    path: str | Path,
    *,
    step: int,
    settings: Mapping[str, Any],
    encoder: torch.nn.Module,
    projector: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    torch_rng: list[torch.Tensor],
    cuda_rng: list[torch.Tensor] | None,
    sampler_state: Mapping[str, Any],
    history: Mapping[str, Any],
    best: Mapping[str, Any] | None,
) -> Path:
    """Write the training state after ``step`` steps to ``state_path(path)``, atomically."""
    tensors = _tensors("encoder", encoder.state_dict())
    tensors.update(_tensors("projector", projector.state_dict()))
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in optimizer.state_dict()["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().to("cpu").clone().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    for rank, state in enumerate(torch_rng):
        tensors[f"torch_rng.{rank}"] = state.to("cpu").contiguous()
    for rank, state in enumerate(cuda_rng or []):
        tensors[f"cuda_rng.{rank}"] = state.to("cpu").contiguous()
    if best is not None:
        tensors.update(_tensors("best.encoder", best["encoder"]))
        tensors.update(_tensors("best.projector", best["projector"]))
    saved_history = {k: history[k] for k in HISTORY_KEYS if k in history}
    if "checkpoints" in saved_history:
        saved_history["checkpoints"] = [
            dict(step=c["step"], score=_json_value(c["score"])) for c in saved_history["checkpoints"]
        ]
    meta = dict(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        step=int(step),
        settings=dict(settings),
        sampler_state=dict(sampler_state),
        history=saved_history,
        best=None if best is None else dict(step=int(best["step"]), score=_json_value(best["score"])),
        optimizer_groups=[len(group["params"]) for group in optimizer.state_dict()["param_groups"]],
        optimizer_scalars=scalars,
    )
    data = _safetensors_save(tensors, metadata={METADATA_KEY: json.dumps(meta)})
    target = state_path(path)
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return target


def load_state(path: str | Path, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Read a training-state file and check that its run is the one described by ``settings``.

    Raises FileNotFoundError for a missing file and ValueError (naming the file) for one that is corrupted,
    of another format, or whose run differs from ``settings`` (naming the first differing setting).
    """
    target = state_path(path)
    if not target.is_file():
        hint = f" (the checkpoint {path} exists, but not its training state)" if Path(path).is_file() else ""
        raise FileNotFoundError(f"no training-state file {target} to resume from{hint}")
    try:
        with safe_open(str(target), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as err:  # safetensors raises its own error types
        raise TrainingStateError(
            f"{target} is not a readable training-state file (corrupted or truncated: {err})"
        ) from None
    if raw is None:
        raise TrainingStateError(
            f"{target} is a safetensors file but not a pretrain training state (no '{METADATA_KEY}')"
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as err:
        raise TrainingStateError(f"{target}: the training-state metadata is not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise TrainingStateError(f"{target}: unrecognised training-state format (version {FORMAT_VERSION} expected)")
    missing = [k for k in ("step", "settings", "sampler_state", "history", "best", "optimizer_groups") if k not in meta]
    if missing:
        raise TrainingStateError(f"{target}: the training-state metadata lacks {missing}")
    expected = json.loads(json.dumps(dict(settings)))
    saved = meta["settings"]
    for key in list(expected) + [k for k in saved if k not in expected]:
        new, old = expected.get(key), saved.get(key)
        if key == "config" and isinstance(new, dict) and isinstance(old, dict):
            for field in list(new) + [f for f in old if f not in new]:
                if new.get(field) != old.get(field):
                    raise TrainingStateError(
                        f"{target}: setting config.{field} differs from the checkpoint's run: {new.get(field)!r} "
                        f"here, {old.get(field)!r} there; resume with the run's settings"
                    )
        elif new != old:
            raise TrainingStateError(
                f"{target}: setting {key} differs from the checkpoint's run: {new!r} here, {old!r} there; "
                "resume with the run's settings"
            )
    history = dict(meta["history"])
    if "checkpoints" in history:
        history["checkpoints"] = [
            dict(step=c["step"], score=_from_json_value(c["score"])) for c in history["checkpoints"]
        ]
    best = None
    if meta["best"] is not None:
        best = dict(
            step=int(meta["best"]["step"]),
            score=_from_json_value(meta["best"]["score"]),
            encoder=_section(tensors, "best.encoder"),
            projector=_section(tensors, "best.projector"),
        )
    optimizer: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            optimizer.setdefault(int(index), {})[name] = value
    for index, values in meta.get("optimizer_scalars", {}).items():
        optimizer.setdefault(int(index), {}).update(values)
    world = int(saved.get("world_size", 1))
    return dict(
        path=target,
        step=int(meta["step"]),
        encoder=_section(tensors, "encoder"),
        projector=_section(tensors, "projector"),
        optimizer=optimizer,
        optimizer_groups=list(meta["optimizer_groups"]),
        torch_rng=[tensors.get(f"torch_rng.{r}") for r in range(world)],
        cuda_rng=[tensors.get(f"cuda_rng.{r}") for r in range(world)],
        sampler_state=meta["sampler_state"],
        history=history,
        best=best,
    )


def restore_optimizer(optimizer: torch.optim.Optimizer, state: Mapping[str, Any]) -> None:
    """Load the saved AdamW state into a freshly built optimiser of the same parameter groups."""
    current = optimizer.state_dict()
    groups = [len(group["params"]) for group in current["param_groups"]]
    if groups != state["optimizer_groups"]:
        raise ValueError(
            f"{state['path']}: the optimiser's parameter groups ({groups}) differ from the checkpoint's "
            f"({state['optimizer_groups']})"
        )
    optimizer.load_state_dict(dict(state=state["optimizer"], param_groups=current["param_groups"]))
