"""Re-save the shipped model files in the current file format and update every checksum recorded about them.

    python benchmarks/resave_models.py      # seconds; nothing is retrained or re-measured

Use it when the model file format changes but the models do not (format 3 made the checksum cover the method
and the config). For each shipped file (``neuronid-default.safetensors``, ``neuronid-neurpir-default.safetensors``):

1. loads it (verifying its stored checksum with the definition of its own format version) and checks that the
   re-saved file holds bit-identical tensors, the same config and the same heads;
2. saves it in the current format (atomically);
3. replaces the old checksum by the new one where it is recorded (``default_model_scores.json``,
   ``benchmarks/results/calibration.json``, ``neurpir_default_scores.json`` with the file's byte checksum), adds a
   ``format_migrations`` entry (old and new checksum, formats, command, date) to the scores file, and regenerates
   the model cards. The measured scores stay as they are: the models compute exactly what they computed.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODEL_DIR = ROOT / "spikeinterface_neuronid" / "default_model"
CALIBRATION = HERE / "results" / "calibration.json"
COMMAND = "python benchmarks/resave_models.py"


def _stored(path: Path) -> tuple[int, str]:
    """The file's format version and stored checksum, from its header."""
    from safetensors import safe_open

    from spikeinterface_neuronid.bundle import METADATA_KEY

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()[METADATA_KEY])
    return int(meta["format_version"]), str(meta["sha256"])


def resave(path: Path) -> dict:
    """Re-save one model file in the current format; return its migration record."""
    from spikeinterface_neuronid.bundle import FORMAT_VERSION, ModelBundle

    old_format, old_sha = _stored(path)
    bundle = ModelBundle.load(path)
    before = {k: v.clone() for k, v in bundle.tensors().items()}
    bundle.save(path)
    again = ModelBundle.load(path)
    after = again.tensors()
    if set(after) != set(before) or not all(after[k].equal(v) for k, v in before.items()):
        raise RuntimeError(f"{path}: the re-saved tensors differ")
    if again.config != bundle.config or again.method != bundle.method:
        raise RuntimeError(f"{path}: the re-saved config differs")
    return dict(
        file=path.name,
        from_format_version=old_format,
        to_format_version=FORMAT_VERSION,
        from_sha256=old_sha,
        to_sha256=again.sha256,
        command=COMMAND,
        date=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def _replace_sha(document: dict, old: str, new: str, keys: tuple[str, ...]) -> None:
    for key in keys:
        if document.get(key) == old:
            document[key] = new


def _add_record(scores: dict, record: dict) -> None:
    """Append a migration record, unless nothing changed (a re-run on files already in the current format)."""
    same = record["from_sha256"] == record["to_sha256"]
    if not (same and record["from_format_version"] == record["to_format_version"]):
        scores.setdefault("format_migrations", []).append(record)


def main() -> None:
    # no options: the parser gives --help (which must not re-save anything) and rejects stray arguments
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    sys.path.insert(0, str(ROOT))  # the card writer: tools/release/cards.py
    from tools.release.cards import CARDS, write_card

    from spikeinterface_neuronid._io import write_json

    MODEL_FILE, SCORES_FILE, _ = CARDS["neurpir"]

    default = MODEL_DIR / "neuronid-default.safetensors"
    record = resave(default)
    scores_path = MODEL_DIR / "default_model_scores.json"
    scores = json.loads(scores_path.read_text())
    _replace_sha(scores, record["from_sha256"], record["to_sha256"], ("sha256",))
    _add_record(scores, record)
    write_json(scores_path, scores)
    if CALIBRATION.is_file():
        calibration = json.loads(CALIBRATION.read_text())
        _replace_sha(calibration, record["from_sha256"], record["to_sha256"], ("model_sha256",))
        write_json(CALIBRATION, calibration)
    write_card(MODEL_DIR)
    print(f"{default.name}: {record['from_sha256'][:12]}… -> {record['to_sha256'][:12]}…")

    neurpir = MODEL_DIR / MODEL_FILE
    record = resave(neurpir)
    scores_path = MODEL_DIR / SCORES_FILE
    scores = json.loads(scores_path.read_text())
    _replace_sha(scores, record["from_sha256"], record["to_sha256"], ("model_sha256",))
    scores["file_sha256"] = hashlib.sha256(neurpir.read_bytes()).hexdigest()
    _add_record(scores, record)
    write_json(scores_path, scores)
    write_card(MODEL_DIR, "neurpir")
    print(f"{neurpir.name}: {record['from_sha256'][:12]}… -> {record['to_sha256'][:12]}…")


if __name__ == "__main__":
    main()
