"""The one model-card writer of the shipped models: :func:`write_card`.

Every card is written from a model file and the scores file next to it, which the release scripts write; no
number is typed by hand. :data:`CARDS` names the files of each kind of model: ``"nuclr"`` (the NuCLR default
model, and candidate or grown models written by ``train_default_model --output-dir``) and ``"neurpir"`` (the
NeurPIR default model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

from spikeinterface_neuronid.model_card import front_matter, save_model_info
from spikeinterface_neuronid.model_card import model_card as bundle_card
from tools.release.common import EVAL_ANIMALS, MOVED_FROM, NEURPIR_TRAIN_ANIMALS, RESULTS_DIR, VALIDATION_ANIMALS


class CardFiles(NamedTuple):
    """The file names of one kind of model in its folder."""

    model: str
    scores: str
    card: str


#: The files :func:`write_card` reads (``model``, ``scores``) and writes (``card``) for each kind of model.
CARDS = {
    "nuclr": CardFiles("neuronid-default.safetensors", "default_model_scores.json", "MODEL_CARD.md"),
    "neurpir": CardFiles(
        "neuronid-neurpir-default.safetensors", "neurpir_default_scores.json", "neuronid-neurpir-default.md"
    ),
}


def _runnable(command: str) -> tuple[str, str]:
    """``(command to run now, note)`` for a recorded ``command``: the note names the recorded one if it has moved."""
    command = command.strip()
    for before, now in MOVED_FROM.items():
        if command == before or command.startswith(before + " "):
            return now + command[len(before):], f"recorded as `{command}`, the script's earlier path"
    return command, ""


def _ood_line(bundle, head, head_info: dict) -> str:
    """The card's bullet on the head's out-of-distribution check (empty for a head without one)."""
    check = head_info.get("ood_check")
    if not head.has_ood or not check:
        return ""
    rates = RESULTS_DIR / "ood.json"
    measured = ""
    if rates.is_file():
        ood = json.loads(rates.read_text())
        if ood.get("model_sha256") == bundle.sha256:
            measured = " Abstention rates on in- and out-of-distribution populations: `benchmarks/results/ood.md`."
        else:
            measured = " (`benchmarks/results/ood.md` was measured on another model file: re-run it.)"
    return (
        f"- **Out-of-distribution check:** units whose embedding is unlike the training embeddings (negative "
        f"log-density under a {check['components']}-component Gaussian mixture above {check['threshold']:.2f}, "
        f"the {check['quantile']:g} quantile of whole held-out animals' scores) are labelled `unknown` whatever "
        f"their probabilities; measured by `{check['measured_by']}`.{measured}\n"
    )


def _head_section(bundle, head_info: dict | None) -> str:
    """The card's "firing_type head" section (empty when the model has no such head)."""
    head = bundle.heads.get("firing_type")
    if head is None or not head_info:
        return ""
    trained = ", ".join(f"`{p}` animals {a[0]}-{a[-1]}" for p, a in head_info["trained_on"].items())
    zs = head_info["zero_shot"]
    rows = "\n".join(
        f"| {preset} | {s['macro_f1']:.3f} | {s['balanced_accuracy']:.3f} | {s['ece_before']:.3f} "
        f"| {s['ece_after']:.3f} | {s['num_units']} |"
        for preset, s in zs.items()
    )
    thresholds = [c["threshold"] for c in next(iter(zs.values()))["coverage_accuracy"]]
    header = " | ".join(f"t = {t:g}" for t in thresholds)
    cov_rows = "\n".join(
        f"| {preset} | "
        + " | ".join(
            f"{c['coverage']:.2f} / {c['accuracy']:.2f}" if c["accuracy"] is not None else f"{c['coverage']:.2f} / -"
            for c in s["coverage_accuracy"]
        )
        + " |"
        for preset, s in zs.items()
    )
    counts = ", ".join(f"{c} {n}" for c, n in head_info["class_counts"].items())
    ood = _ood_line(bundle, head, head_info)
    reproduce, note = _runnable(head_info["command"])
    return f"""
## firing_type head

The file holds one task head, `firing_type`, so that `neuronid_label_units(analyzer)` and
`compute("neuron_embedding")` label units out of the box: classes {", ".join(head.classes)}, calibrated
temperature {head.temperature:.3f}, abstention threshold {head.threshold:g} (units whose largest calibrated
probability is below it are labelled `unknown`).

- **Trained on:** the simulator's `cell_type` labels of {trained}, one session each
  ({head_info["num_training_units"]} units: {counts}); these seeds are disjoint from pretraining and from the
  evaluation animals. The encoder weights were not changed. Linear head: StandardScaler + class-balanced
  logistic regression (C=1), temperature fitted on whole held-out animals ({head_info["num_calibration_units"]}
  units; their ECE {head_info["calibration_ece_before"]:.3f} at T=1, {head_info["calibration_ece_after"]:.3f}
  after).
{ood}- **What the labels mean:** putative *electrophysiological firing classes* of the Izhikevich model (regular
  spiking, intrinsically bursting, chattering, fast spiking, low-threshold spiking), read from spike trains
  only. They are **not** transcriptomic or molecular cell types, and on real recordings they are a hypothesis
  about firing behaviour learned from simulation, to be checked against your own ground truth (or replaced by
  a head fitted on your own labels with `fit_head`).
- **No brain-region head is shipped:** simulated region names (`region0`, ...) mean nothing on real data; fit
  a region head on your own atlas-registered units with `fit_head`.
- **Reproduce:** `{reproduce}` (also run at the end of the pretraining command{"; " + note if note else ""}); results in
  `benchmarks/results/calibration.json`.

### Zero-shot scores of the head

The head's own predictions (no probe refit, no abstention) on all units of the evaluation animals
{head_info["eval_animals"]}, which neither pretraining nor the head saw. ECE: expected calibration error of the
top label (10 bins), before (T=1) and after temperature scaling.

| simulator preset | macro-F1 | balanced acc. | ECE, T=1 | ECE, calibrated | units |
|---|---|---|---|---|---|
{rows}

### Coverage / accuracy when abstaining

Fraction of units labelled (calibrated probability >= t) / accuracy on those units.

| simulator preset | {header} |
|---|{"---|" * len(thresholds)}
{cov_rows}
"""


def _front_matter(bundle, scores: dict, command: str) -> str:
    """The bundle's YAML front matter with the license and a model-index of the measured zero-shot metrics."""
    data = f"simulated Izhikevich populations ({bundle.provenance.get('num_sessions')} sessions)"
    index = [f"datasets: [{json.dumps(data)}]"]
    index += ["model-index:", f"  - name: {json.dumps(bundle.name)}", "    results:"]
    for preset, by_task in scores.items():
        for task, s in by_task.items():
            index += [
                f"      - task: {{type: {task}, name: \"{task} (linear probe, inductive zero-shot)\"}}",
                f"        dataset: {{type: simulated, name: spikeinterface_neuronid.simulation {preset} preset}}",
                "        metrics:",
                f"          - {{type: macro_f1, value: {s['macro_f1']:.4f}}}",
                f"          - {{type: balanced_accuracy, value: {s['balanced_accuracy']:.4f}}}",
                f"        source: {{name: {json.dumps(command.strip())}}}",
            ]
    return "\n".join(front_matter(bundle, license="apache-2.0", extra=index))


def _continuation(continued_from: dict | None) -> str:
    """The card's words for a run continued (``--resume``) from an earlier run's checkpoint."""
    if not continued_from:
        return ""
    before = continued_from.get("steps_before")
    text = (
        f"; continued (new warm-up and cosine schedule) from checkpoint `{continued_from['checkpoint_sha256'][:12]}…`"
        f" of `{continued_from['command']}`"
    )
    if before is None:
        return text + ", trained for an unrecorded number of steps before"
    return text + f", which had trained {before} steps before: {before + continued_from['steps']} steps in all"


def _growth(grown_from: dict | None) -> str:
    """The card's words for a run that trained the single-unit tower onto a frozen model (``--grow-from``)."""
    if not grown_from:
        return ""
    how = f", {grown_from['steps']:,} steps: `{grown_from['command']}`" if grown_from.get("steps") else ""
    return (
        f"; only the single-unit tower was trained, onto the population-context model `{grown_from['name']}` "
        f"(`{grown_from['sha256'][:12]}…`{how}), whose weights were kept fixed"
    )


def _architecture(bundle) -> str:
    cfg = bundle.config
    if getattr(cfg, "context", "window") != "span":
        return (
            f"window context: dim {cfg.dim}, {cfg.num_heads} heads, {cfg.temporal_layers} temporal + "
            f"{cfg.spatiotemporal_layers} spatiotemporal blocks"
        )
    channels = [
        name
        for name, on in (
            ("fine-timescale", cfg.fine_channel),
            ("relational", cfg.relational),
            ("waveform", cfg.waveform_channel),
        )
        if on
    ]
    return (
        f"span context: dim {cfg.dim}, {cfg.num_heads} heads, {cfg.temporal_layers} temporal block(s) over "
        f"{cfg.window_tokens * cfg.token_bins * cfg.bin_s:g} s windows of {cfg.bin_s * 1000:g} ms bins, "
        f"{cfg.relational_layers} relational blocks across units (edge width {cfg.edge_dim}, lags ±"
        f"{cfg.max_lag_bins * cfg.bin_s * 1000:g} ms), channels: {', '.join(channels) or 'none'}; spans of "
        f"{cfg.chunk_s:g}-{cfg.max_span_s:g} s"
        + (
            f"; single-unit path: embedding = [population-context vector, context-free single-unit vector], "
            f"{cfg.embedding_dim} dimensions"
            if getattr(cfg, "single_unit_path", False)
            else ""
        )
    )


def model_card(
    bundle,
    scores: dict,
    command: str,
    seconds: float,
    head_info: dict | None,
    selection: dict | None,
    eval_animals,
    validation_animals,
    continued_from: dict | None = None,
    grown_from: dict | None = None,
) -> str:
    """The markdown model card of a NuCLR model (the default model, or a candidate or grown one).

    Parameters
    ----------
    bundle : ModelBundle
        The model.
    scores : dict
        ``{preset: {task: probe scores}}`` of the scores file (``"scores"``).
    command : str
        The command that trained the model, as recorded.
    seconds : float
        Training time, simulation included.
    head_info : dict or None
        The scores file's ``"firing_type_head"`` section (None: no head section).
    selection : dict or None
        The scores file's ``"checkpoint_selection"`` section (None: the last step was kept).
    eval_animals, validation_animals : sequence of int
        The evaluation and checkpoint-validation animals.
    continued_from, grown_from : dict or None, default: None
        The scores file's sections on a ``--resume`` or ``--grow-from`` run.

    Returns
    -------
    str
        The card, YAML front matter first.
    """
    prov = bundle.provenance
    training = prov.get("training", {})
    rows = "\n".join(
        f"| {preset} | {s['cell_type']['macro_f1']:.3f} | {s['cell_type']['balanced_accuracy']:.3f} "
        f"| {s['brain_region']['macro_f1']:.3f} | {s['cell_type']['num_test_units']} |"
        for preset, s in scores.items()
    )
    presets = ", ".join(f"`{p}` animals {a[0]}-{a[-1]}" for p, a in prov.get("presets", {}).items() if a)
    chosen = (selection or {}).get("selected") or {}
    selected = (
        f"checkpoint of step {chosen['step']} (validation score {chosen['score']:.3f}), chosen every "
        f"{selection['every']} steps on validation animals {list(validation_animals)}"
        if chosen
        else "last step"
    )
    reproduce, note = _runnable(command)
    return f"""{_front_matter(bundle, scores, command)}# Model card: {bundle.name}

- **Method:** `{bundle.method}` (NuCLR-style population-context contrastive model), {_architecture(bundle)};
  {bundle.num_parameters():,} parameters.
- **File:** `neuronid-default.safetensors`, SHA-256 of the weights, config and heads `{bundle.sha256}`,
  created {bundle.created} with spikeinterface-neuronid {bundle.package_version}.
- **Training data:** {prov.get("data")}: {presets}; {prov.get("sessions_per_animal")} session per animal of
  {prov.get("duration_s", "?")} s, {prov.get("num_sessions")} sessions, {prov.get("num_units")} units. Self-supervised
  only: no label was read.
- **Training:** {training.get("steps", "?")} steps, batch {training.get("batch_size", "?")} view pairs of up to
  {training.get("max_units", "?")} units, seed {training.get("seed", "?")}; {selected};
  {seconds / 60:.0f} min on a 2-core CPU (simulation included){_continuation(continued_from)}{_growth(grown_from)}.
- **Reproduce:** `{reproduce}`{f" ({note})" if note else ""}

## Measured zero-shot scores

Inductive zero-shot: the evaluation animals {list(eval_animals)} were never seen in pretraining. A linear
probe (StandardScaler + class-balanced logistic regression, C=1) is trained on the units of animals
{list(eval_animals[:-1])} and tested on animal {eval_animals[-1]}; chance is 0.2 for the five cell types and
0.33 for the three regions. Produced by the command above, not typed by hand. The benchmark
(`benchmarks/results/benchmark/results.md`) compares this model with the baselines on more animals, with
intervals.

| simulator preset | cell type macro-F1 | cell type balanced acc. | brain region macro-F1 | test units |
|---|---|---|---|---|
{rows}

## Intended use and limits

- The embedding encodes each unit's firing identity in its population context: its own 1 ms spike-time
  statistics (and waveform, when the analyzer has `templates`), how it co-fluctuates with the other units
  (lagged correlations over the whole recording, in spans of up to {bundle.config.max_span_s:g} s) and its 20 ms
  activity. It was trained on simulated Izhikevich populations only; on real recordings, fine-tune it
  self-supervised on your own sortings (`neuronid pretrain ANALYZER ... --init default`) and fit probes on your
  own labels.
- Simulated cell types (RS, IB, CH, FS, LTS) are electrophysiological firing classes, not transcriptomic
  types; simulated region names carry no meaning on real data.
- Spike pairs of two units closer than 1 ms are ignored by the relational channel (duplicate units and sorting
  artefacts); recordings much shorter than a minute give noisier relational statistics.
{_head_section(bundle, head_info)}"""


def neurpir_model_card(bundle, scores: dict) -> str:
    """The markdown model card of the NeurPIR default model: the bundle's generated card and the measured scores.

    Parameters
    ----------
    bundle : ModelBundle
        The model.
    scores : dict
        The contents of ``neurpir_default_scores.json``.

    Returns
    -------
    str
        The card.
    """
    probe, base = scores["probe"], scores["baseline_log_rate_probe"]
    lines = [
        bundle_card(bundle).rstrip(),
        "",
        "## Zero-shot cell-type score (inductive)",
        "",
        f"Trained by `{scores['command']}` in {scores['train_seconds']:.0f} s on simulated `varied` + `easy` "
        f"animals {list(NEURPIR_TRAIN_ANIMALS)}, with the stimulus as covariates (num_covariates = 2).",
        f"Evaluation: `easy` animals {scores['eval_animals']} (never seen in training), linear probe fitted on "
        f"animals {scores['probe_train_animals']} and scored on animal {scores['probe_test_animals']}.",
        "",
        "| features | macro-F1 | balanced accuracy |",
        "|---|---|---|",
        f"| NeurPIR embedding (with covariates) | {probe['macro_f1']:.3f} | {probe['balanced_accuracy']:.3f} |",
        f"| log firing rate (baseline) | {base['macro_f1']:.3f} | {base['balanced_accuracy']:.3f} |",
        "",
        "Sorting analyzers carry no covariates: "
        "`compute(\"neuron_embedding\", method=\"neurpir\")` feeds zeros in the",
        "covariate channels, which is not the condition measured above.",
        "",
        f"Model file SHA-256 (file bytes): `{scores['file_sha256']}`",
        "",
    ]
    return "\n".join(lines)


def card_text(out: Path, kind: str = "nuclr") -> tuple[object, str]:
    """The model in ``out`` and the text of its card, from its model file and scores file.

    Parameters
    ----------
    out : Path
        Folder holding the model file and the scores file named by ``CARDS[kind]``.
    kind : {"nuclr", "neurpir"}, default: "nuclr"
        Which kind of model (see :data:`CARDS`).

    Returns
    -------
    bundle : ModelBundle
        The loaded model.
    text : str
        The markdown card.

    Raises
    ------
    ValueError
        If the scores file does not describe this model file (its checksum differs).
    """
    from spikeinterface_neuronid.bundle import ModelBundle

    files = CARDS[kind]
    out = Path(out)
    bundle = ModelBundle.load(out / files.model)
    saved = json.loads((out / files.scores).read_text())
    if saved["sha256" if kind == "nuclr" else "model_sha256"] != bundle.sha256:
        raise ValueError(f"{files.scores} does not describe this model file; retrain instead")
    if kind == "neurpir":
        return bundle, neurpir_model_card(bundle, saved)
    text = model_card(
        bundle,
        saved["scores"],
        saved["command"],
        saved["train_seconds"],
        saved.get("firing_type_head"),
        saved.get("checkpoint_selection"),
        EVAL_ANIMALS,
        VALIDATION_ANIMALS,
        saved.get("continued_from"),
        saved.get("grown_from"),
    )
    return bundle, text


def write_card(out: Path, kind: str = "nuclr") -> Path:
    """Rewrite the model card in ``out`` from its model file and scores file (atomically).

    Also rewrites the model's ``.model_info.json`` next to the model file.

    Parameters
    ----------
    out : Path
        Folder holding the files named by ``CARDS[kind]``: the default model's folder, or the ``--output-dir``
        of a candidate or grown model.
    kind : {"nuclr", "neurpir"}, default: "nuclr"
        Which kind of model (see :data:`CARDS`).

    Returns
    -------
    Path
        The card written.
    """
    from spikeinterface_neuronid._io import atomic_path

    files = CARDS[kind]
    out = Path(out)
    bundle, text = card_text(out, kind)
    with atomic_path(out / files.card) as tmp:
        tmp.write_text(text, encoding="utf-8")
    save_model_info(bundle, out / files.model)
    return out / files.card
