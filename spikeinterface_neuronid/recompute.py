"""A recompute that never loses the previous result, for a SpikeInterface analyzer extension.

SpikeInterface's ``set_params()`` and ``run()`` delete the stored result before computing, and its
``compute_one_extension()`` deletes the folder and forgets the in-memory extension when anything raises. With
:class:`StagedRecomputeMixin` nothing stored changes until the new result is complete: it is written to a
staging folder (or zarr group) and swapped in by renames, so a bad parameter, an error, Ctrl-C or a killed
process during the compute leaves the previous result, on disk and in memory.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from time import perf_counter

__all__ = ["StagedRecomputeMixin", "STAGING_NAME"]

#: Where a recompute writes its result before it replaces the previous one: a hidden folder next to the
#: analyzer's ``extensions`` folder (same file system, so the swap is two renames), or a root zarr group.
STAGING_NAME = ".neuronid_staging"
_ZARR_STAGING = "neuronid_staging"


class StagedRecomputeMixin:
    """Mixin for an ``AnalyzerExtension`` subclass (listed before it): staged, atomic recomputes."""

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
