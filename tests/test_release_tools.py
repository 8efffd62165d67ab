"""The release scripts of ``tools/release/``: run as modules from the repository root, one model-card writer."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RELEASE = ROOT / "tools" / "release"
MODEL_DIR = ROOT / "spikeinterface_neuronid" / "default_model"
SCRIPTS = ("train_default_model", "fit_default_head", "train_default_neurpir")


@pytest.mark.parametrize("script", SCRIPTS)
def test_release_script_runs_as_a_module_from_the_repository_root(script):
    done = subprocess.run(
        [sys.executable, "-m", f"tools.release.{script}", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:") and f"python -m tools.release.{script}" in done.stdout


def test_release_modules_do_not_touch_sys_path():
    for path in RELEASE.glob("*.py"):
        assert "sys.path.insert" not in path.read_text(encoding="utf-8"), path


def test_shipped_cards_are_regenerated_by_the_one_writer(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from tools.release.cards import CARDS, write_card

    for files in CARDS.values():
        for name in (files.model, files.scores):
            shutil.copy(MODEL_DIR / name, tmp_path / name)
    neurpir = write_card(tmp_path, "neurpir").read_text(encoding="utf-8")
    assert neurpir == (MODEL_DIR / CARDS["neurpir"].card).read_text(encoding="utf-8")

    def reproduce(text):
        return [line for line in text.splitlines() if line.startswith("- **Reproduce:**")]

    nuclr = write_card(tmp_path).read_text(encoding="utf-8")
    assert reproduce(nuclr) == reproduce((MODEL_DIR / CARDS["nuclr"].card).read_text(encoding="utf-8"))
    assert "`python -m tools.release.fit_default_head`" in nuclr
