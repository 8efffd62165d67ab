"""Reports of a run: the markdown of ``results.md``, the excerpt the README quotes, the figures.

Everything here reads a finished run's result (the content of ``results.json``); the figures also read the
run's pooled predictions and its first test animal's embeddings.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .settings import PRODUCT, TASKS, is_baseline

if TYPE_CHECKING:
    from .engine import _Run

__all__ = ["FIGURE_METHODS", "readme_excerpt"]

_TASK_NAMES = {"cell_type": "cell type", "brain_region": "brain region"}


def _fmt(row: dict) -> str:
    """Mean ± std over folds (the mean alone when there was one fold)."""
    if row.get("num_folds", 2) < 2:
        return f"{row['macro_f1_mean']:.3f}"
    return f"{row['macro_f1_mean']:.3f} ± {row['macro_f1_std']:.3f}"


def _fmt_ci(value: float, low: float, high: float, signed: bool = False) -> str:
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(value)} [{f.format(low)}, {f.format(high)}]"


def _preset_tables(result: dict, presets: Sequence[str]) -> list[str]:
    """The markdown tables (one per preset and task) of a run."""
    lines: list[str] = []
    summary = result["summary"]
    for preset in presets:
        for task in TASKS:
            cells = {
                (r["method"], r["protocol"], r["probe"]): r
                for r in summary
                if r["preset"] == preset and r["task"] == task
            }
            if not cells:
                continue
            lines += [
                f"## {preset} — {_TASK_NAMES[task]}",
                "",
                "| method | TD | TZS | IZS [95 % CI] | IZS mean ± std over animals | IZS, C tuned "
                "| IZS balanced acc. |",
                "|---|---|---|---|---|---|---|",
            ]
            for m in result["methods"]:
                name = m["name"]
                td = cells.get((name, "transductive", "C=1"))
                tzs = cells.get((name, "transductive_zero_shot", "C=1"))
                izs = cells.get((name, "inductive_zero_shot", "C=1"))
                tuned = cells.get((name, "inductive_zero_shot", "C tuned"))
                if izs is None and td is None and tzs is None:
                    continue
                dash = "–"
                shown = f"**{name}**" if name == PRODUCT else name
                lines.append(
                    " | ".join(
                        [
                            f"| {shown}",
                            _fmt(td) if td else dash,
                            f"{tzs['macro_f1']:.3f}" if tzs else dash,
                            _fmt_ci(izs["macro_f1"], izs["ci_low"], izs["ci_high"]) if izs else dash,
                            _fmt(izs) if izs else dash,
                            f"{tuned['macro_f1']:.3f}" if tuned else dash,
                            f"{izs['balanced_accuracy']:.3f}" if izs else dash,
                        ]
                    )
                    + " |"
                )
            lines.append("")
    return lines


def _difference_table(result: dict) -> list[str]:
    """Product row minus every baseline (IZS, C=1, pooled macro-F1) with 95 % intervals, as one table."""
    diffs = result["differences"]
    if not diffs:
        return []
    columns = list(dict.fromkeys((d["preset"], d["task"]) for d in diffs))
    by_key = {(d["preset"], d["task"], d["method"]): d for d in diffs}
    lines = [
        f"## {PRODUCT} minus each baseline (IZS, pooled macro-F1, C=1, paired 95 % CI)",
        "",
        "| baseline | " + " | ".join(f"{p} {_TASK_NAMES[t]}" for p, t in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for m in result["methods"]:
        if not is_baseline(m["name"]) or not any((p, t, m["name"]) in by_key for p, t in columns):
            continue
        cells = []
        for p, t in columns:
            d = by_key.get((p, t, m["name"]))
            cells.append(_fmt_ci(d["difference"], d["ci_low"], d["ci_high"], signed=True) if d else "–")
        lines.append(f"| {m['name']} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def _verdict_lines(result: dict) -> list[str]:
    """The computed verdicts, as markdown lines."""
    verdict = result.get("verdict") or {}
    lines: list[str] = []
    if verdict.get("product"):
        margin = verdict["target_margin"]
        lines += [f"## Verdict: does {PRODUCT} beat the best baseline by ≥ {margin:.2f} (IZS, macro-F1, C=1)?", ""]
        for v in verdict["product"]:
            answer = "**yes**" if v["target_met"] else "**no**"
            lines.append(
                f"- {v['preset']}, {_TASK_NAMES[v['task']]}: {answer} — ours {v['product_macro_f1']:.3f}, "
                f"best baseline {v['best_baseline']} {v['best_baseline_macro_f1']:.3f}; difference "
                f"{_fmt_ci(v['difference'], v['ci_low'], v['ci_high'], signed=True)} "
                f"(target: ≥ {margin:+.2f} with the interval above 0)."
            )
        lines.append("")
    abl = verdict.get("ablation")
    if abl:
        answer = "**yes**" if abl["target_met"] else "**no**"
        lines += [
            f"## Verdict: is the relational channel worth ≥ {abl['margin']:.2f} region macro-F1 on `hard` (IZS)?",
            "",
            f"- {answer} — {abl['full']} minus {abl['no_relational']}: "
            f"{_fmt_ci(abl['drop'], abl['ci_low'], abl['ci_high'], signed=True)}"
            f" (interval {'above' if abl['interval_above_zero'] else 'not above'} 0).",
            "",
        ]
    return lines


def _rerun_lines(result: dict) -> list[str]:
    """Which rows were re-run, when and how (none: no lines); the other rows are from the original run."""
    reruns = result.get("reruns") or []
    if not reruns:
        return []
    lines = []
    for r in reruns:
        rows = ", ".join(f"**{m}**" for m in r["methods"])
        lines.append(
            f"Re-run{'s' if len(r['methods']) > 1 else ''} of {rows}: `{r['command']}`, {r['date']}, "
            f"{r['elapsed_s'] / 60:.1f} min on {r['machine']['cpu_count']} CPU cores.  "
        )
        if r.get("kept_rows_differ"):
            lines.append(f"NOT reproduced by the current code (kept anyway): {', '.join(r['kept_rows_differ'])}.  ")
    lines[-1] = lines[-1].rstrip()
    lines += [
        "",
        "The re-run rows' scores, predictions, timings and model files (sha256 in `results.json`, `reruns`) come "
        "from their latest re-run; every other row, and the command, date and wall time above, come from the "
        "original run. Everything computed across rows (tables, differences, verdicts) was recomputed from the merged "
        "predictions, as a full run computes it.",
        "",
    ]
    return lines


def _markdown(result: dict) -> str:
    s = result["settings"]
    tested = s["test_animals"] if s["test_animals"] is not None else list(range(s["num_animals"]))
    lines = [
        "# Benchmark results",
        "",
        f"Command: `{result['command']}`  ",
        f"Wall time: {result['elapsed_s'] / 60:.1f} min on {result['machine']['cpu_count']} CPU cores "
        f"({result['machine']['platform']}), torch {result['machine']['torch']}, {result['date']}.",
        "",
        *_rerun_lines(result),
        f"Data: simulator presets {', '.join(s['presets'])}; {s['num_animals']} animals × {s['num_neurons']} "
        f"neurons × {s['duration_s']:g} s per preset (simulation seed {s['simulation_seed']}); test animals "
        f"{', '.join(map(str, tested))}, each held out once. Our product row: the shipped default model "
        f"(IZS as shipped; TD/TZS after {s['transductive_steps']} steps of transductive fine-tuning on all animals). "
        f"NeurPIR: {s['ssl_steps']} steps, batch {s['batch_size']} × ≤{s['max_units']} units.",
        "",
        "Cells: macro-F1, linear probe (StandardScaler + class-balanced logistic regression, C=1 unless tuned). "
        "IZS = inductive zero-shot: leave one animal out, methods that learn are refitted without it; its "
        "macro-F1 is computed on the predictions pooled over all test animals, with a 95 % hierarchical bootstrap "
        f"interval ({s['bootstrap_resamples']} resamples of animals, then units within animals); mean ± std over "
        "test animals beside it. 'C tuned' chooses C on a validation animal. TZS = transductive zero-shot (the same "
        "probes; self-supervised methods fitted on all animals), pooled. TD = transductive (stratified random unit "
        f"split), mean ± std over split seeds {', '.join(map(str, s['transductive_seeds']))}. "
        "Chance macro-F1 ≈ 1 / classes.",
        "",
    ]
    lines += _preset_tables(result, s["presets"])
    lines += _difference_table(result)
    lines += _verdict_lines(result)
    if result["label_efficiency"]:
        rows = result["label_efficiency"]
        fractions = sorted({r["fraction"] for r in rows})
        lines += [
            f"## Label efficiency of {PRODUCT} (IZS, pooled macro-F1)",
            "",
            "| preset, task | " + " | ".join(f"{f:g}" for f in fractions) + " |",
            "|---|" + "---|" * len(fractions),
        ]
        for preset in s["presets"]:
            for task in TASKS:
                got = {r["fraction"]: r["macro_f1"] for r in rows if r["preset"] == preset and r["task"] == task}
                if got:
                    lines.append(
                        f"| {preset}, {_TASK_NAMES[task]} | "
                        + " | ".join(f"{got[f]:.3f}" if f in got else "–" for f in fractions)
                        + " |"
                    )
        lines.append("")
    speed = result["speed_summary"]
    lines += [
        "## Speed and memory (same run)" if not result.get("reruns") else "## Speed and memory",
        "",
        *(
            ["Each row's timings come from the run that produced its scores (the re-run, for re-run rows).", ""]
            if result.get("reruns")
            else []
        ),
        "| method | fits | fit time per fit (s) | embed time per fit (s) | peak memory (MiB above baseline) |",
        "|---|---|---|---|---|",
    ]
    for m in result["methods"]:
        if m["name"] in speed:
            sp = speed[m["name"]]
            lines.append(
                f"| {m['name']} | {sp['num_fits']} | {sp['fit_s_mean']:.1f} | {sp['embed_s_mean']:.1f} | "
                f"{sp['peak_mib_max']:.0f} |"
            )
    lines += [
        "",
        "Checks of the protocol wiring (from the ledger of every fit and probe, and the models' provenance):",
        "",
    ]
    lines += [f"- {k.replace('_', ' ')}: {'passed' if v else 'FAILED'}" for k, v in result["checks"].items()]
    lines += ["", "Figures: " + ", ".join(f"`{f}`" for f in result["figures"]), ""]
    return "\n".join(lines)


#: Rows whose embedding maps and confusion matrices are drawn (those present in the run).
FIGURE_METHODS = (PRODUCT, "single-unit 1 ms + pairwise + spike-triggered population", "LOLCAT", "NEMO")


def _figures(run: _Run, result: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ..plots import plot_confusion_matrix, plot_embedding_map, save_figure

    names = []
    first = run.settings.tested_animals[0]
    for preset in result["settings"]["presets"]:
        truth = run.truth.get(preset)
        if truth is None:
            continue
        units = np.flatnonzero(np.isin(truth["animal"], run.settings.tested_animals))
        for task in TASKS:
            present = [m for m in FIGURE_METHODS if task in run.examples.get((preset, m), {})]
            if not present:
                continue
            for kind in ("embedding_map", "confusion"):
                fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.8), squeeze=False)
                for ax, m in zip(axes[0], present):
                    title = "\n".join(textwrap.wrap(m, 34))
                    if kind == "embedding_map":
                        ex = run.examples[(preset, m)][task]
                        plot_embedding_map(ex["x"], ex["y"], ax=ax, title=title)
                    else:
                        pred = run.predictions[(preset, task, "inductive_zero_shot", "C=1", m)][units].astype(str)
                        ok = pred != ""
                        plot_confusion_matrix(truth["y"][task][units][ok], pred[ok], ax=ax, title=title)
                where = f"test animal {first}" if kind == "embedding_map" else "all test animals pooled"
                fig.suptitle(f"{preset}, {_TASK_NAMES[task]}: inductive zero-shot, {where}")
                fig.tight_layout()
                name = f"{kind}_{preset}_{task}.png"
                save_figure(fig, out / name)
                plt.close(fig)
                names.append(name)
    if result["label_efficiency"]:
        fig, axes = plt.subplots(1, len(TASKS), figsize=(5 * len(TASKS), 3.8), squeeze=False)
        for ax, task in zip(axes[0], TASKS):
            for preset in result["settings"]["presets"]:
                rs = sorted(
                    (r for r in result["label_efficiency"] if r["preset"] == preset and r["task"] == task),
                    key=lambda r: r["fraction"],
                )
                ax.plot([r["fraction"] for r in rs], [r["macro_f1"] for r in rs], "o-", label=preset)
            ax.set_xscale("log")
            ax.set_xlabel("fraction of probe-training labels")
            ax.set_ylabel("macro-F1 (held-out animals, pooled)")
            ax.set_title(f"{PRODUCT}: {_TASK_NAMES[task]}")
            ax.legend(frameon=False)
        fig.tight_layout()
        save_figure(fig, out / "label_efficiency.png")
        plt.close(fig)
        names.append("label_efficiency.png")
    return names



def readme_excerpt(result: dict, presets: Sequence[str] = ("hard", "varied")) -> str:
    """The part of a run's ``results.md`` the README quotes: the given presets' tables, differences, verdicts.

    Raises
    ------
    ValueError
        If ``result`` comes from the previous benchmark protocol (no pooled scores and differences).
    """
    if "differences" not in result or "test_animals" not in result.get("settings", {}):
        raise ValueError(
            "this results.json comes from the previous benchmark protocol (no pooled scores or differences); "
            "rerun python benchmarks/run_benchmark.py"
        )
    s = result["settings"]
    tested = s["test_animals"] if s["test_animals"] is not None else list(range(s["num_animals"]))
    lines = [
        f"Command: `{result['command']}` ({result['elapsed_s'] / 60:.0f} min on "
        f"{result['machine']['cpu_count']} CPU cores, {result['date']}); macro-F1 on the predictions pooled "
        f"over {len(tested)} held-out animals per preset, 95 % hierarchical bootstrap intervals "
        f"({s['bootstrap_resamples']} resamples); TD: mean ± std over split seeds "
        f"{', '.join(map(str, s['transductive_seeds']))}.",
        "",
        *_rerun_lines(result),
    ]
    lines += _preset_tables(result, [p for p in presets if p in s["presets"]])
    lines += _difference_table(result)
    lines += _verdict_lines(result)
    lines = ["#### " + line[3:] if line.startswith("## ") else line for line in lines]  # README sub-headings
    return "\n".join(lines).rstrip() + "\n"
