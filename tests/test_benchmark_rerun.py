"""Re-running some rows of a benchmark run and merging them gives the results of a full run."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import TINY_BENCHMARK

from spikeinterface_neuronid.benchmark import PRODUCT, QUICK, TASKS, rerun_benchmark, run_benchmark

TINY = replace(
    TINY_BENCHMARK,
    methods=(PRODUCT, "pairwise correlations", "LOLCAT"),
    baseline_steps=dict(lolcat=3),
)
# recomputed from the merged records, and equal to the full run's
SAME = (
    "command",
    "date",
    "machine",
    "elapsed_s",
    "settings",
    "methods",
    "models",
    "summary",
    "differences",
    "ablation",
    "verdict",
    "label_efficiency",
    "checks",
    "folds",
    "ledger",
    "figures",
)
TIMINGS = ("seconds", "peak_mib")


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    run_benchmark(out, TINY, command="full", progress_bar=False, log=None)
    return out


def _read(folder: Path) -> tuple[dict, dict, str]:
    return (
        json.loads((folder / "results.json").read_text()),
        json.loads((folder / "predictions.json").read_text()),
        (folder / "results.md").read_text(),
    )


def _spoil(folder: Path, method: str, shift: bool = False) -> None:
    """Overwrite the method's stored scores and predictions (or shift its classes), so that only a re-run can
    restore them."""
    result, predictions, _ = _read(folder)
    for key in ("summary", "folds", "label_efficiency"):
        for row in result[key]:
            if row["method"] == method:
                row["macro_f1"] = -1.0
    (folder / "results.json").write_text(json.dumps(result))
    for entry in predictions.values():
        for task in entry["tasks"].values():
            for key, pred in task["predictions"].items():
                if key.endswith("|" + method):
                    n = len(task["classes"])
                    task["predictions"][key] = [(c + 1) % n if shift else -1 for c in pred]
    (folder / "predictions.json").write_text(json.dumps(predictions))


@pytest.mark.parametrize("method, verify_kept", [(PRODUCT, False), ("LOLCAT", True)])
def test_rerun_of_one_row_equals_the_full_run(full_run, tmp_path, method, verify_kept):
    merged_dir = tmp_path / "merged"
    shutil.copytree(full_run, merged_dir)
    _spoil(merged_dir, method)
    rerun_benchmark(merged_dir, [method], TINY, command="rerun", progress_bar=False, log=None, verify_kept=verify_kept)
    full, full_predictions, full_md = _read(full_run)
    merged, merged_predictions, merged_md = _read(merged_dir)
    for key in SAME:
        assert merged[key] == full[key], key
    assert merged_predictions == full_predictions  # the paired bootstrap's input, for every row
    untimed = [[{k: v for k, v in r.items() if k not in TIMINGS} for r in res["speed"]] for res in (full, merged)]
    assert untimed[0] == untimed[1]
    assert {m: s["num_fits"] for m, s in merged["speed_summary"].items()} == {
        m: s["num_fits"] for m, s in full["speed_summary"].items()
    }
    # provenance: the re-run rows, their model files, and the refits of the kept figure rows matched the run
    (rerun,) = merged["reruns"]
    assert rerun["command"] == "rerun" and rerun["methods"] == [method] and rerun["elapsed_s"] > 0
    assert rerun["models"] == [m for m in full["models"] if m["method"] == method]
    checked = TINY.methods if verify_kept else (PRODUCT, "LOLCAT")  # LOLCAT, PRODUCT: drawn in the figures
    assert rerun["kept_rows_checked"] == [m for m in checked if m != method]
    assert rerun["kept_rows_differ"] == []
    assert "reruns" not in full
    assert f"Re-run of **{method}**: `rerun`" in merged_md and "from the original run" in merged_md
    assert "Command: `full`" in merged_md
    # the tables, differences and verdicts read the same
    start = full_md.index("## easy — cell type")
    end = full_md.index("## Speed and memory")
    assert (
        merged_md[merged_md.index("## easy — cell type") : merged_md.index("## Speed and memory")]
        == (full_md[start:end])
    )
    for name in merged["figures"]:
        assert (merged_dir / name).stat().st_size > 0
    # a second re-run is recorded after the first
    again = rerun_benchmark(merged_dir, [method], TINY, command="again", progress_bar=False, log=None)
    assert [r["command"] for r in again["reruns"]] == ["rerun", "again"]
    assert again["summary"] == full["summary"]


def test_rerun_errors_name_the_problem(full_run, tmp_path):
    with pytest.raises(ValueError, match=r"no such row.*pairwise correlations"):
        rerun_benchmark(full_run, ["no such row"], TINY, progress_bar=False, log=None)
    with pytest.raises(ValueError, match=r"other settings \(differing: bootstrap_resamples, seed\)"):
        rerun_benchmark(full_run, [PRODUCT], replace(TINY, bootstrap_resamples=50, seed=1), log=None)
    with pytest.raises(ValueError, match="--quick results cannot be merged"):
        rerun_benchmark(full_run, [PRODUCT], QUICK, log=None)
    with pytest.raises(FileNotFoundError, match=r"results\.json does not exist"):
        rerun_benchmark(tmp_path, [PRODUCT], TINY, log=None)
    shutil.copy(full_run / "results.json", tmp_path / "results.json")
    with pytest.raises(FileNotFoundError, match=r"predictions\.json does not exist"):
        rerun_benchmark(tmp_path, [PRODUCT], TINY, log=None)


def test_cli_rerun_error_is_one_line(tmp_path, monkeypatch, capsys):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "run_benchmark.py"
    spec = importlib.util.spec_from_file_location("run_benchmark_script", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(sys, "argv", ["run_benchmark.py", "--quick", "-o", str(tmp_path), "--rerun", PRODUCT])
    assert script.main() == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(tmp_path / "results.json") in err


def test_kept_row_that_the_code_no_longer_reproduces_is_flagged(full_run, tmp_path):
    merged_dir = tmp_path / "merged"
    shutil.copytree(full_run, merged_dir)
    _spoil(merged_dir, "pairwise correlations", shift=True)  # as if its code had changed since the run
    with pytest.raises(RuntimeError, match=r"no longer reproduces.*pairwise correlations"):
        rerun_benchmark(merged_dir, ["LOLCAT"], TINY, progress_bar=False, log=None, verify_kept=True)
    merged, _, md = _read(merged_dir)  # written all the same, and saying so
    assert merged["reruns"][0]["kept_rows_differ"] == [f"easy, {t}, pairwise correlations" for t in TASKS]
    assert "NOT reproduced by the current code" in md
