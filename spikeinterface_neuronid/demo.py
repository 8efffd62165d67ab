"""The ``neuronid demo`` run: simulate held-out animals, embed their units, predict the cell types of an unseen one.

:func:`run_demo` simulates the animals, embeds their units with a model, fits a linear probe on all but the last
animal and tests it on the last, scores the model's ``firing_type`` head zero-shot when it has one, fits a
``cell_type`` head on the probe animals and labels the test animal with it (:data:`WORKFLOW_TASK`), draws the
figures and writes the metrics and the test animal's NWB file. :func:`demo_command` is what ``neuronid demo`` runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from .schema import UNKNOWN, label_property
from .simulation import EVALUATION_ANIMALS

__all__ = ["run_demo", "demo_command", "WORKFLOW_TASK", "DEMO_HEAD_TASK"]

#: Task name of the head the demo fits on the labelled animals (the labelling workflow).
WORKFLOW_TASK = "cell_type"

#: Task head whose zero-shot labels the demo scores when the model has it.
DEMO_HEAD_TASK = "firing_type"


def run_demo(
    output: str | Path = "neuronid_demo_output",
    preset: str = "easy",
    animals: Sequence[int] = EVALUATION_ANIMALS,
    model: str = "default",
    progress_bar: bool = True,
    simulate_kwargs: dict | None = None,
) -> dict:
    """Simulate held-out animals, embed their units, probe cell types on an unseen animal.

    The linear probe (StandardScaler + balanced logistic regression) is trained on the units of all
    animals but the last and tested on the last one, which the default model never saw in pretraining.
    If the model has a ``firing_type`` task head (its classes are the simulator's cell types), the head's
    zero-shot labels of the test animal (no probe fitted) are scored too: macro-F1 over the test units
    (a unit labelled ``"unknown"`` counts as wrong) and the fraction labelled ``"unknown"``.

    Parameters
    ----------
    output : str | Path, default: "neuronid_demo_output"
        Folder for ``demo_metrics.json``, ``embedding_map.png`` and ``confusion_matrix.png`` (true cell types
        of the test animal against the probe's predictions, and the head's when the model has one).
    preset : str, default: "easy"
        Simulator preset.
    animals : sequence of int, default: EVALUATION_ANIMALS
        Animal seeds; the last one is the test animal.
    model : str, default: "default"
        Model to embed with.
    progress_bar : bool, default: True
        Show progress bars.
    simulate_kwargs : dict | None, default: None
        Extra keyword arguments of :func:`~spikeinterface_neuronid.simulation.simulate_sorting`
        (e.g. ``num_neurons``, ``duration_s``); None keeps the preset's defaults.

    Returns
    -------
    dict
        The metrics written to ``demo_metrics.json``; with a ``firing_type`` head also ``head_task``,
        ``head_macro_f1``, ``head_fraction_unknown`` and ``head_num_test_units``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import spikeinterface.core as si

    import spikeinterface_neuronid  # noqa: F401  (registers the extension)

    from ._io import write_json
    from .evaluation import linear_probe
    from .models import resolve_model
    from .labeling import extension_predictions
    from .plots import plot_confusion_matrix, plot_embedding_map, save_figure
    from .simulation import simulate_sorting

    if len(animals) < 2:
        raise ValueError("the demo needs at least two animals: probe training animals and one test animal")
    output = Path(output)
    bundle = resolve_model(model)
    head_task = DEMO_HEAD_TASK if DEMO_HEAD_TASK in bundle.heads else None
    seen = set(bundle.provenance.get("animals", []))
    overlap = sorted(seen & set(animals))
    if overlap:
        raise ValueError(f"animals {overlap} were used to pretrain the model; choose held-out animal seeds")

    t0 = time.perf_counter()
    embeddings, cell_types, animal_of, head_labels = [], [], [], []
    analyzer = None
    for animal in animals:
        print(f"simulating animal {animal} ({preset}) ...", flush=True)
        recording, sorting = simulate_sorting(
            preset, animal=animal, session=0, with_recording=True, **(simulate_kwargs or {})
        )
        analyzer = si.create_sorting_analyzer(sorting, recording, format="memory", sparse=False)
        ext = analyzer.compute("neuron_embedding", model=model, progress_bar=progress_bar, n_jobs=-1)
        embeddings.append(ext.get_data())
        if head_task is not None:
            head_labels.append(extension_predictions(ext, head_task)[head_task].labels.astype(str))
        cell_types.append(np.asarray(analyzer.sorting.get_property("cell_type")).astype(str))
        animal_of.append(np.full(analyzer.get_num_units(), animal))
    x, y, animal_of = np.concatenate(embeddings), np.concatenate(cell_types), np.concatenate(animal_of)
    test = animal_of == animals[-1]
    result = linear_probe(x[~test], y[~test], x[test], y[test])
    elapsed = time.perf_counter() - t0

    print(f"\nCell types of unseen animal {animals[-1]} (probe trained on animals {list(animals[:-1])}):")
    print(result.table())

    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    ok = np.all(np.isfinite(x), axis=1)
    plot_embedding_map(x[ok], y[ok], ax=axes[0], title=f"All {ok.sum()} units, true type")
    test_ok = ok & test
    plot_embedding_map(x[test_ok], result.predictions, ax=axes[1], title=f"Animal {animals[-1]}, predicted type")
    fig.suptitle(f"neuron_embedding ({bundle.name}), simulated '{preset}' animals never seen in pretraining")
    figure = save_figure(fig, output / "embedding_map.png")
    plt.close(fig)

    head_metrics: dict = {}
    head_pred = None
    if head_task is not None:
        from sklearn.metrics import f1_score


        head_pred = np.concatenate(head_labels)[test]
        y_test = y[test]
        head_metrics = dict(
            head_task=head_task,
            head_macro_f1=float(
                f1_score(y_test, head_pred, labels=sorted(set(y_test)), average="macro", zero_division=0)
            ),
            head_fraction_unknown=float(np.mean(head_pred == UNKNOWN)),
            head_num_test_units=int(test.sum()),
        )
        print(
            f"\n'{head_task}' head of the model, zero-shot on animal {animals[-1]} (no probe): macro-F1 "
            f"{head_metrics['head_macro_f1']:.3f}, {100 * head_metrics['head_fraction_unknown']:.0f} % 'unknown'"
        )

    workflow = _labelling_workflow(model, analyzer, x[~test], y[~test], animal_of[~test], output)
    print(
        f"\nLabelling workflow: a '{WORKFLOW_TASK}' head fitted on the labelled units of animals "
        f"{list(animals[:-1])}, saved with the model to {workflow['workflow_model']}, labels animal "
        f"{animals[-1]} via neuronid_label_units: accuracy {workflow['workflow_accuracy']:.3f} on the "
        f"labelled units, {100 * workflow['workflow_fraction_unknown']:.0f} % 'unknown'"
    )

    classes = sorted(set(y))
    panels = 1 if head_pred is None else 2
    fig, axes = plt.subplots(1, panels, figsize=(1.5 + 4.2 * panels, 4.2), squeeze=False)
    plot_confusion_matrix(
        y[test_ok], result.predictions, classes=classes, ax=axes[0, 0], title=f"Linear probe, animal {animals[-1]}"
    )
    if head_pred is not None:
        plot_confusion_matrix(
            y[test], head_pred, classes=classes, ax=axes[0, 1], title=f"'{head_task}' head (zero-shot)"
        )
    fig.tight_layout()
    confusion_figure = save_figure(fig, output / "confusion_matrix.png")
    plt.close(fig)

    metrics = dict(
        task="cell_type",
        preset=preset,
        probe_animals=[int(a) for a in animals[:-1]],
        test_animal=int(animals[-1]),
        model=bundle.name,
        model_sha256=bundle.sha256,
        num_train_units=int((~test).sum()),
        num_test_units=int(test.sum()),
        seconds=round(elapsed, 1),
        **result.to_dict(),
        **head_metrics,
        **workflow,
    )
    write_json(output / "demo_metrics.json", metrics)
    print(f"\nmacro-F1 {result.macro_f1:.3f}, balanced accuracy {result.balanced_accuracy:.3f} in {elapsed:.0f} s")
    print(f"wrote {figure}, {confusion_figure} and {output / 'demo_metrics.json'}")
    from .nwb.demo_file import write_demo_nwb

    nwb_file = write_demo_nwb(analyzer, output / f"sub-{animals[-1]}_ses-0.nwb", animals[-1], preset)
    if nwb_file is not None:
        print(f"wrote {nwb_file} (units, no embeddings): try `neuronid annotate {nwb_file} -o annotated`")
    return metrics


def demo_command(
    output: str | Path = "neuronid_demo_output",
    preset: str = "easy",
    model: str = "default",
    progress_bar: bool = True,
) -> int:
    """Run ``neuronid demo``: :func:`run_demo` on :data:`~spikeinterface_neuronid.simulation.EVALUATION_ANIMALS`.

    Parameters
    ----------
    output : str | Path, default: "neuronid_demo_output"
        Output folder, see :func:`run_demo`.
    preset : str, default: "easy"
        Simulator preset.
    model : str, default: "default"
        Model to embed with.
    progress_bar : bool, default: True
        Show progress bars.

    Returns
    -------
    int
        Exit code: 0 when the probe's macro-F1 is finite, else 1.
    """
    metrics = run_demo(output, preset=preset, model=model, progress_bar=progress_bar)
    return 0 if np.isfinite(metrics["macro_f1"]) else 1


def _labelling_workflow(model: str, test_analyzer, train_x, train_y, train_groups, output: Path) -> dict:
    """Fit a head on labelled units, save it with the model, label a new analyzer with it (issue: labels)."""
    from .bundle import ModelBundle
    from .calibration import fit_head
    from .models import default_model_path
    from .labeling import neuronid_label_units

    # a fresh copy: resolve_model() returns a cached bundle shared by the session
    bundle = ModelBundle.load(default_model_path() if model in (None, "default") else model)
    # calibrate on whole held-out animals when there are several, else on held-out units
    groups = train_groups if len(np.unique(train_groups)) > 1 else None
    head = fit_head(
        train_x, train_y, task=WORKFLOW_TASK, groups=groups, seed=0, ood_columns=bundle.config.context_dim
    )
    bundle.add_head(head, overwrite=True)
    model_file = bundle.save(output / f"neuronid-demo-{WORKFLOW_TASK}.safetensors")
    labels = neuronid_label_units(test_analyzer, model=str(model_file), tasks=[WORKFLOW_TASK], progress_bar=False)
    predicted = labels[label_property(WORKFLOW_TASK)].to_numpy().astype(str)
    truth = np.asarray(test_analyzer.sorting.get_property("cell_type")).astype(str)
    answered = predicted != UNKNOWN
    return dict(
        workflow_model=str(model_file),
        workflow_accuracy=float(np.mean(predicted[answered] == truth[answered])) if answered.any() else float("nan"),
        workflow_fraction_unknown=float(np.mean(~answered)),
    )
