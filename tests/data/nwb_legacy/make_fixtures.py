"""Generate the legacy NWB fixtures of this folder (see README.md for the list and the exact versions used).

Every file holds 5 or 6 units with 30 s of synthetic spike trains (seeded gamma renewal processes, so the
files are the same on every run up to identifiers and dates) in layouts that older writers produce:

* ``python make_fixtures.py pynwb OUTDIR`` writes ``pynwb<version>_*.nwb`` with whatever pynwb is installed
  (run it in a throwaway virtualenv with an old release, see README.md);
* ``python make_fixtures.py handmade OUTDIR`` (in the pynwb 2.0 virtualenv) writes a pynwb 2.0 base file and
  edits copies of it with h5py into layouts that pynwb itself does not write (MatNWB and other writers): a
  non-ragged ``electrodes`` column without ``electrodes_index``, no or incomplete cached namespaces, an
  anonymised ``session_start_time``, missing optional fields.

Only numpy, h5py and (for the ``pynwb`` mode and the base file) pynwb are needed: the script does not import
spikeinterface_neuronid, so it runs in the old virtualenvs.
"""

from __future__ import annotations

import shutil
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

DURATION_S = 30.0
FS = 30000.0
SESSION_START = datetime(2021, 3, 4, 10, 30, tzinfo=timezone.utc)


def spike_trains(num_units: int, seed: int) -> list[np.ndarray]:
    """Gamma renewal spike trains (s) on a 1/30 kHz grid, 2 ms refractory; bursty, Poisson and regular units."""
    rng = np.random.default_rng(seed)
    trains = []
    for i in range(num_units):
        rate = float(rng.uniform(2.0, 12.0))
        shape = (0.4, 1.0, 4.0)[i % 3]
        isi = rng.gamma(shape, 1.0 / (rate * shape), size=int(rate * DURATION_S * 2) + 20) + 0.002
        t = np.cumsum(isi)
        t = t[t < DURATION_S]
        trains.append(np.unique(np.round(t * FS) / FS))
    return trains


def waveform(num_samples: int, phase: float) -> np.ndarray:
    x = np.linspace(-1.0, 2.0, num_samples)
    return (-np.exp(-((x - 0.0) ** 2) / 0.02) + 0.4 * np.exp(-((x - 0.5 - phase) ** 2) / 0.1)) * 80.0


def _version_tag() -> str:
    import pynwb

    major, minor = pynwb.__version__.split(".")[:2]
    return f"pynwb{major}{minor}"


def _nwbfile(identifier: str, subject: bool = True, **extra):
    from pynwb import NWBFile
    from pynwb.file import Subject

    nwbfile = NWBFile(
        session_description="Synthetic units for spikeinterface-neuronid's legacy-file tests.",
        identifier=identifier,
        session_start_time=SESSION_START,
        **extra,
    )
    if subject:
        nwbfile.subject = Subject(
            subject_id="legacy1", species="Mus musculus", sex="F", age="P90D", description="Synthetic subject."
        )
    return nwbfile


def _electrodes(nwbfile, count: int = 4):
    device = nwbfile.create_device(name="probe", description="A 4-channel silicon probe.")
    group = nwbfile.create_electrode_group(
        name="shank0", description="Shank 0 of the probe.", location="CA1", device=device
    )
    for i in range(count):
        # x, y, z, imp and filtering are required by schema 2.2-2.4 (pynwb < 2.1), optional since
        nwbfile.add_electrode(
            x=0.0, y=float(20 * i), z=0.0, imp=float("nan"), location="CA1", filtering="none", group=group
        )


def _write(nwbfile, path: Path, cache_spec: bool = True) -> Path:
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile, cache_spec=cache_spec)
    return path


def write_full(path: Path, seed: int, num_units: int = 6, cache_spec: bool = True) -> Path:
    """Units with ragged electrodes, obs_intervals, waveform_mean, resolution, extra user columns; a Subject."""
    from pynwb.misc import Units

    nwbfile = _nwbfile(
        f"legacy-full-{seed}",
        session_id="ses-1",
        experimenter=["Doe, Jane"],
        institution="Example Institute",
        lab="Example Lab",
        experiment_description="Synthetic spike trains.",
        keywords=["legacy", "test"],
    )
    _electrodes(nwbfile)
    nwbfile.units = Units(
        name="units", description="Sorted units.", resolution=1.0 / FS, waveform_rate=FS / 2, waveform_unit="volts"
    )
    nwbfile.add_unit_column(name="quality", description="Curation label of the unit (good, mua).")
    nwbfile.add_unit_column(name="depth_um", description="Depth of the unit along the probe, in um.")
    for i, train in enumerate(spike_trains(num_units, seed)):
        nwbfile.add_unit(
            spike_times=train,
            electrodes=sorted({i % 4, (i + 1) % 4})[: 1 + i % 2],  # one or two electrodes per unit
            obs_intervals=[[0.0, DURATION_S]],
            waveform_mean=(1e-6 * waveform(20, 0.05 * i)).astype(np.float32),
            quality="good" if i % 3 else "mua",
            depth_um=float(20 * (i % 4)),
        )
    return _write(nwbfile, path, cache_spec)


def write_minimal(path: Path, seed: int, num_units: int = 5) -> Path:
    """Units with spike times only (no electrodes, no resolution, no obs_intervals), no Subject; an
    OpticalSeries whose frames are external movie files; a trials table."""
    from pynwb.image import OpticalSeries

    nwbfile = _nwbfile(f"legacy-minimal-{seed}", subject=False)
    for train in spike_trains(num_units, seed):
        nwbfile.add_unit(spike_times=train)
    nwbfile.add_stimulus(
        OpticalSeries(
            name="movie",
            description="Stimulus movie stored in external files.",
            external_file=["movie_part1.avi", "movie_part2.avi"],
            starting_frame=[0, 600],
            format="external",
            rate=30.0,
            distance=0.1,
            field_of_view=[0.2, 0.3, 0.0],
            orientation="lower left",
            unit="n.a.",
        )
    )
    for start in np.arange(2.0, DURATION_S - 2.0, 5.0):
        nwbfile.add_trial(start_time=float(start), stop_time=float(start + 2.0))
    return _write(nwbfile, path)


# ------------------------------------------------------------------------------------------------------------
# Hand-made layouts (h5py edits of a pynwb 2.0 file)


def _new_ids(f: h5py.File) -> None:
    """A new identifier and object ids, as another writer would have produced."""
    f["identifier"][()] = str(uuid.uuid4())

    def visit(_, obj):
        if "object_id" in obj.attrs:
            obj.attrs["object_id"] = str(uuid.uuid4())

    f.attrs["object_id"] = str(uuid.uuid4())
    f.visititems(visit)


def _plain_electrodes(f: h5py.File) -> None:
    """Replace the ragged ``electrodes`` column by a plain one (the first electrode of each unit)."""
    units = f["units"]
    index = units["electrodes_index"][:]
    starts = np.concatenate([[0], index[:-1]]).astype(int)
    region = units["electrodes"]
    attrs = {k: v for k, v in region.attrs.items()}
    first = region[:][starts]
    del units["electrodes"]
    del units["electrodes_index"]
    new = units.create_dataset("electrodes", data=first.astype(np.int32))
    for key, value in attrs.items():
        new.attrs[key] = value


def _set_start_time(f: h5py.File, value: str) -> None:
    f["session_start_time"][()] = value
    f["timestamps_reference_time"][()] = value


def write_handmade(out: Path, seed: int) -> list[Path]:
    base = out / "_base.nwb"
    write_full(base, seed)
    made = []

    # 1. The archive file: a non-ragged electrodes column (MatNWB, older converters), no
    #    electrodes_index, an OpticalSeries with external files; schema 2.4.0 / hdmf-common 1.5.0.
    path = out / "handmade_plain_electrodes.nwb"
    nwbfile_minimal = out / "_minimal.nwb"
    write_minimal(nwbfile_minimal, seed + 1)
    shutil.copyfile(base, path)
    with h5py.File(path, "a") as f, h5py.File(nwbfile_minimal, "r") as m:
        _plain_electrodes(f)
        m.copy(m["stimulus/presentation/movie"], f["stimulus/presentation"], name="movie")
        _new_ids(f)
    made.append(path)

    # 2. No cached namespaces at all (/specifications missing), an anonymised session start (the date only,
    #    at midnight UTC), no Subject, no waveform attributes, no resolution.
    path = out / "handmade_no_cached_spec.nwb"
    write_full(path, seed + 2, cache_spec=False)  # (deleting /specifications would not shrink the file)
    with h5py.File(path, "a") as f:
        assert "specifications" not in f and ".specloc" not in f.attrs
        _set_start_time(f, "2021-03-04T00:00:00+00:00")
        del f["general/subject"]
        for name in ("waveform_mean",):
            for key in ("sampling_rate", "unit"):
                if key in f["units"][name].attrs:
                    del f["units"][name].attrs[key]
        if "resolution" in f["units/spike_times"].attrs:
            del f["units/spike_times"].attrs["resolution"]
        _new_ids(f)
    made.append(path)

    # 3. Incomplete cached namespaces: only core is cached (hdmf-common, which it needs, is missing), and a
    #    non-ragged electrodes column; a session start anonymised to 1900-01-01 (as some archives do).
    path = out / "handmade_partial_spec.nwb"
    shutil.copyfile(base, path)
    with h5py.File(path, "a") as f:
        for name in list(f["specifications"]):
            if name != "core":
                del f["specifications"][name]
        _plain_electrodes(f)
        _set_start_time(f, "1900-01-01T00:00:00+00:00")
        _new_ids(f)
    made.append(path)

    base.unlink()
    nwbfile_minimal.unlink()
    return made


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("pynwb", "handmade"):
        print(__doc__)
        return 2
    out = Path(argv[2])
    out.mkdir(parents=True, exist_ok=True)
    if argv[1] == "pynwb":
        tag = _version_tag()
        seed = int("".join(c for c in tag if c.isdigit()))
        paths = [write_full(out / f"{tag}_full.nwb", seed), write_minimal(out / f"{tag}_minimal.nwb", seed + 1)]
    else:
        paths = write_handmade(out, 2000)
    for p in paths:
        print(f"{p} ({p.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
