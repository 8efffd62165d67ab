"""Storage backends and file access: HDF5 or Zarr, opening files, atomic output, recovery after a killed write.

Two storage backends: HDF5 (``.nwb`` files, the default, what DANDI expects) and Zarr (``.nwb.zarr`` directory
stores, through ``hdmf_zarr.NWBZarrIO``). A path that is a directory or whose name ends in ``.zarr`` is Zarr
(:func:`~spikeinterface_neuronid.nwb.is_zarr_path`). An output is written to a temporary next to it and renamed
into place; the temporaries that a killed write left behind are removed (a Zarr store moved aside is put back)
by the next write of the same output.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import shutil
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Iterator

__all__ = ["is_zarr_path", "is_nwb_path"]


def _require(module: str, hint: str):
    """Import an optional dependency, or raise an ImportError that says how to install it (``hint``)."""
    try:
        return importlib.import_module(module)
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(hint) from err


def _import_pynwb():
    return _require(
        "pynwb", "NWB support needs pynwb: pip install 'spikeinterface-neuronid[nwb]' (pynwb, ndx-neuron-embedding)"
    )


def _import_ndx():
    return _require(
        "ndx_neuron_embedding",
        "writing NWB files needs the ndx-neuron-embedding extension: pip install ndx-neuron-embedding "
        "(or 'spikeinterface-neuronid[nwb]')",
    )


def is_zarr_path(path) -> bool:
    """Whether ``path`` names a Zarr NWB store: an existing directory, or a name ending in ``.zarr``.

    Parameters
    ----------
    path : str | Path
        A file or store, existing or to be written.

    Returns
    -------
    bool
        True for Zarr, False for HDF5.
    """
    path = Path(path)
    return path.is_dir() or path.name.lower().endswith(".zarr")


def is_nwb_path(path) -> bool:
    """Whether ``path`` is named as an NWB file: ``*.nwb`` (HDF5) or ``*.nwb.zarr`` (a Zarr store).

    Parameters
    ----------
    path : str | Path
        Only its name is looked at; it need not exist.

    Returns
    -------
    bool
        True for a name ending in ``.nwb`` or ``.nwb.zarr``, in any case.
    """
    name = Path(path).name.lower()
    return name.endswith(".nwb") or name.endswith(".nwb.zarr")


def _zarr_io_class():
    return _require(
        "hdmf_zarr.nwb",
        "Zarr NWB stores (.nwb.zarr) need hdmf-zarr: pip install hdmf-zarr (or 'spikeinterface-neuronid[nwb]')",
    ).NWBZarrIO


def _nwb_io(path, mode: str, **kwargs):
    """``NWBZarrIO`` for Zarr stores (see :func:`is_zarr_path`), else ``NWBHDF5IO``."""
    if is_zarr_path(path):
        return _zarr_io_class()(str(path), mode, **kwargs)
    return _import_pynwb().NWBHDF5IO(str(path), mode, **kwargs)


#: Names of the temporaries of :func:`_atomic_store` (and :func:`._io.atomic_path`) next to an output ``NAME``:
#: ``.NAME.XXXXXXXX.tmp`` (``tempfile``'s 8 random characters) and ``.NAME.XXXXXXXX.old`` (a Zarr store moved
#: aside while its replacement is renamed into place).
_TEMP_SUFFIX_RE = r"\.[a-z0-9_]{8}\.(tmp|old)"


def _stale_temporaries(path: Path) -> list[Path]:
    """Temporaries of our own naming pattern for the output ``path`` (see ``_TEMP_SUFFIX_RE``), sorted."""
    path = Path(path)
    pattern = re.compile(re.escape(f".{path.name}") + _TEMP_SUFFIX_RE + "$")
    try:
        entries = list(path.parent.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(p for p in entries if pattern.match(p.name))


def _recover_interrupted_writes(path: Path) -> list[str]:
    """Clean up after a write to ``path`` that was killed (SIGKILL, power loss) before it could do so itself.

    A ``.tmp`` temporary is removed. A ``.old`` Zarr store (moved aside for its replacement) is removed when
    ``path`` exists, and moved back to ``path`` when it does not (the previous output, not yet replaced).
    Only entries of our own naming pattern for this output are touched.

    Returns
    -------
    list of str
        What was done, one sentence each (also emitted as warnings).
    """
    notes = []
    for stale in _stale_temporaries(path):
        if stale.name.endswith(".old") and not os.path.lexists(path):
            os.replace(stale, path)
            notes.append(f"restored {path} from {stale.name}, left by an interrupted run")
            continue
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale)
        else:
            stale.unlink()
        notes.append(f"removed {stale}, a temporary left by an interrupted run")
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=3)
    return notes


@contextlib.contextmanager
def _atomic_store(path: Path, zarr: bool) -> Iterator[Path]:
    """Like :func:`._io.atomic_path`, for an HDF5 file or a Zarr directory store.

    A Zarr store is written into a temporary directory next to ``path`` and renamed into place; an existing
    store at ``path`` is moved aside first and removed only once the new one is in place. Temporaries that an
    earlier, killed write of the same ``path`` left behind are cleaned up first
    (:func:`_recover_interrupted_writes`).
    """
    from .._io import atomic_path

    _recover_interrupted_writes(path)
    if not zarr:
        with atomic_path(path) as tmp:
            yield tmp
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    old = None
    try:
        yield tmp
        if path.exists():
            old = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.old"
            os.replace(path, old)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists():
            if path.exists():
                shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
            else:  # the rename into place failed: put the previous store back
                os.replace(old, path)


def _check_output_path(output_path: Path, overwrite: bool) -> bool:
    """Check that ``output_path`` may be written; return whether it is a Zarr store (name ending in ``.zarr``)."""
    zarr_out = output_path.name.lower().endswith(".zarr")
    if zarr_out:
        _zarr_io_class()
    if output_path.exists() and not overwrite:
        raise FileExistsError(f"{output_path} exists; pass overwrite=True to replace it")
    if output_path.is_dir() and not zarr_out:
        raise IsADirectoryError(
            f"output_path {output_path} is a directory; name an .nwb file (HDF5) or an .nwb.zarr store (Zarr)"
        )
    if zarr_out and output_path.exists():
        if not output_path.is_dir() or not any((output_path / m).exists() for m in (".zgroup", "zarr.json")):
            raise ValueError(f"{output_path} exists and is not a Zarr store: not replacing it")
    return zarr_out


def _units_table_ids(units, unit_id_column: str | None) -> list[str]:
    """Unit ids of the rows of ``units`` as strings, as SpikeInterface's NWB reader returns them."""
    if unit_id_column is None:
        unit_id_column = "unit_name" if "unit_name" in units.colnames else None
    if unit_id_column is None:
        values = units.id[:]
    else:
        if unit_id_column not in units.colnames:
            raise ValueError(
                f"unit_id_column={unit_id_column!r} is not a column of the Units table "
                f"(columns: {list(units.colnames)})"
            )
        values = units[unit_id_column][:]
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _str_list(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]
