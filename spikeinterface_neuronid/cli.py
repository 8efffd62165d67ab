"""Command line: ``neuronid demo``, ``pretrain``, ``benchmark``, ``annotate`` and ``label`` (:func:`build_parser`)."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

__all__ = ["main", "build_parser", "run_demo", "DEMO_ANIMALS"]

#: Task name of the head the demo fits on the labelled animals (the labelling workflow).
WORKFLOW_TASK = "cell_type"

#: Simulated animals used by the demo; the default model is pretrained on other animal seeds.
DEMO_ANIMALS = (1000, 1001, 1002, 1003)
#: Task head whose zero-shot labels the demo scores when the model has it.
DEMO_HEAD_TASK = "firing_type"


def _parse_range(text: str) -> list[int]:
    """``"0-15"`` or ``"0,3,7"`` or ``"0-3,10"`` -> list of ints."""
    values: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = part.split("-", 1)
            values.extend(range(int(lo), int(hi) + 1))
        elif part:
            values.append(int(part))
    if not values:
        raise argparse.ArgumentTypeError(f"expected animal ids like '0-15' or '0,3,7', got {text!r}")
    return values


def run_demo(
    output: str | Path = "neuronid_demo_output",
    preset: str = "easy",
    animals: Sequence[int] = DEMO_ANIMALS,
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
    animals : sequence of int, default: DEMO_ANIMALS
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
    from .inference import resolve_model
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
            head_labels.append(np.asarray(ext.data[f"{head_task}_label"]).astype(str))
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

        from .heads import UNKNOWN

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
    from .nwb.annotate import write_demo_nwb

    nwb_file = write_demo_nwb(analyzer, output / f"sub-{animals[-1]}_ses-0.nwb", animals[-1], preset)
    if nwb_file is not None:
        print(f"wrote {nwb_file} (units, no embeddings): try `neuronid annotate {nwb_file} -o annotated`")
    return metrics


def _labelling_workflow(model: str, test_analyzer, train_x, train_y, train_groups, output: Path) -> dict:
    """Fit a head on labelled units, save it with the model, label a new analyzer with it (issue: labels)."""
    from .bundle import ModelBundle
    from .heads import UNKNOWN, fit_head
    from .inference import default_model_path
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
    predicted = labels[f"{WORKFLOW_TASK}_label"].to_numpy().astype(str)
    truth = np.asarray(test_analyzer.sorting.get_property("cell_type")).astype(str)
    answered = predicted != UNKNOWN
    return dict(
        workflow_model=str(model_file),
        workflow_accuracy=float(np.mean(predicted[answered] == truth[answered])) if answered.any() else float("nan"),
        workflow_fraction_unknown=float(np.mean(~answered)),
    )


def _input_corpus(args: argparse.Namespace):
    """The lazy corpus of ``neuronid pretrain``'s inputs (NWB files, folders of them, analyzer folders)."""
    from .streaming import LazyCorpus, expand_sources

    return LazyCorpus(expand_sources(args.inputs), cache_size=args.cache_sessions)


def _pretrain_command(args: argparse.Namespace) -> int:
    from . import training
    from .inference import resolve_model

    provenance: dict = {}
    if args.simulated:
        from .simulation import simulate_dataset

        sizes = {k: v for k, v in dict(num_neurons=args.num_neurons, duration_s=args.duration_s).items() if v}
        sessions = simulate_dataset(
            args.simulated, animals=args.animals, sessions_per_animal=args.sessions, progress_bar=True, **sizes
        )
        from .data import SpikeTrainSet

        corpus = [SpikeTrainSet(s.spike_times, s.duration) for s in sessions]
        provenance = dict(
            data="simulated Izhikevich populations (spikeinterface_neuronid.simulation)",
            preset=args.simulated,
            animals=list(args.animals),
            sessions_per_animal=args.sessions,
            num_sessions=len(corpus),
            num_units=int(sum(s.num_units for s in corpus)),
        )
    else:
        corpus = args.corpus if getattr(args, "corpus", None) is not None else _input_corpus(args)
        kinds = set(corpus.kinds)
        data = {frozenset({"analyzer"}): "sorting analyzers", frozenset({"nwb"}): "NWB files"}.get(
            frozenset(kinds), "NWB files and sorting analyzers"
        )
        provenance = dict(data=data, sources=[str(p) for p in corpus.sources], num_sessions=len(corpus))
    provenance["command"] = "neuronid " + " ".join(args.argv)
    init = resolve_model(args.init) if args.init else None
    config = None
    if init is None:
        from .methods import get_method

        method = get_method(args.method)
        config = getattr(method.Config, args.config)()
    from ._train_state import TrainingStateError

    try:
        bundle, history = training.pretrain(
            corpus,
            config=config,
            method=args.method,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            init=init,
            device=args.device,
            name=args.name,
            provenance=provenance,
            checkpoint_every=args.checkpoint_every if args.checkpoint else None,
            checkpoint_path=args.checkpoint,
            resume_from=args.checkpoint if args.resume else None,
        )
    except TrainingStateError as err:
        print(f"neuronid pretrain: error: --resume: {err}", file=sys.stderr)
        return 2
    if history.get("rank", 0) != 0:
        return 0  # under torchrun every rank holds the same weights; rank 0 writes the file
    path = bundle.save(args.output)
    from ._io import atomic_path

    with atomic_path(path.with_suffix(".md")) as tmp:
        tmp.write_text(bundle.model_card())
    bundle.save_model_info(path)
    losses = np.asarray(history["loss"])
    k = max(1, len(losses) // 10)
    print(f"loss {losses[:k].mean():.3f} -> {losses[-k:].mean():.3f}; wrote {path} (sha256 {bundle.sha256[:12]}…)")
    return 0


def _benchmark_command(args: argparse.Namespace) -> int:
    from .benchmark import run_benchmark, settings_from_args

    options = dict(
        presets="--presets", transductive_seeds="--seeds", test_animals="--test-animals", methods="--methods"
    )
    try:
        settings = settings_from_args(
            args.quick,
            presets=tuple(args.presets) if args.presets else None,
            transductive_seeds=tuple(args.seeds) if args.seeds else None,
            test_animals=tuple(args.test_animals) if args.test_animals else None,
            methods=tuple(args.methods) if args.methods else None,
        )
    except ValueError as err:
        print(f"neuronid benchmark: {_cli_terms(str(err), options)}", file=sys.stderr)
        return 2
    try:
        run_benchmark(
            args.output, settings, command="neuronid " + " ".join(args.argv), progress_bar=not args.no_progress
        )
    except (RuntimeError, FileNotFoundError) as err:
        print(f"neuronid benchmark: {err}", file=sys.stderr)
        return 1
    return 0


def _positive(kind: type) -> Callable[[str], float | int]:
    """argparse type: a positive ``kind`` (int or float), with an error in the option's terms."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}") from None
        if not np.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value

    parse.__name__ = f"positive {kind.__name__}"
    return parse


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _cli_terms(message: str, names: dict[str, str]) -> str:
    """``message`` with Python parameter names replaced by the command-line options that set them."""
    for python_name, option in names.items():
        message = re.sub(rf"\b{re.escape(python_name)}\b", option, message)
    return message


#: Help text of --model (demo, annotate, label).
_MODEL_HELP = "'default' or the path of a .safetensors model file"
#: How --model's default reads in the help.
_MODEL_DEFAULT = "(default: 'default', the model shipped with the package)"


def build_parser() -> argparse.ArgumentParser:
    """The ``neuronid`` argument parser: subcommands demo, pretrain, benchmark, annotate and label.

    Every option's help text states its default (``tests/test_cli_help.py`` walks the parser to check it).
    """
    from . import __version__
    from .methods import METHODS
    from .simulation import PRESETS

    presets = sorted(PRESETS)
    parser = argparse.ArgumentParser(
        prog="neuronid",
        description="Neuron identity (cell type) of spike-sorted units, from population spiking activity.",
        epilog="Run 'neuronid <command> --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, description=description)

    no_progress = "hide the progress bars (default: shown)"

    demo = command(
        "demo",
        "simulate held-out animals, embed, and predict cell types of an unseen one",
        "Simulate animals the default model never saw, embed their units and predict the cell types of the last "
        "one (linear probe, the model's firing_type head, and a head fitted and saved in the run).",
    )
    demo.add_argument("-o", "--output", default="neuronid_demo_output", help="output folder (default: %(default)s)")
    demo.add_argument(
        "--preset", default="easy", choices=presets, help="simulator preset of the animals (default: %(default)s)"
    )
    demo.add_argument("--model", default="default", help=f"{_MODEL_HELP} {_MODEL_DEFAULT}")
    demo.add_argument("--no-progress", action="store_true", help=no_progress)

    pre = command(
        "pretrain",
        "self-supervised pretraining of an embedding model",
        "Pretrain (or, with --init, fine-tune) an embedding model on NWB files, SortingAnalyzer folders (read "
        "lazily) or simulated animals, and write it as a .safetensors file with a model card (.md) and a "
        ".model_info.json next to it.",
    )
    pre.add_argument(
        "inputs",
        nargs="*",
        help="NWB files (.nwb, .nwb.zarr), folders searched recursively for them, and SortingAnalyzer folders "
        "to pretrain on, read lazily (default: none; then --simulated is required)",
    )
    pre.add_argument(
        "--simulated",
        metavar="PRESET",
        choices=presets,
        help=f"pretrain on simulated animals of this preset ({', '.join(presets)}) instead of inputs "
        "(default: none)",
    )
    pre.add_argument(
        "--animals",
        type=_parse_range,
        default=list(range(16)),
        help="simulated animal seeds, e.g. 0-15 or 0,3,7 (default: 0-15)",
    )
    pre.add_argument(
        "--sessions", type=_positive(int), default=2, help="simulated sessions per animal (default: %(default)s)"
    )
    pre.add_argument("--num-neurons", type=_positive(int), help="simulated neurons per session (default: the preset's)")
    pre.add_argument(
        "--duration-s", type=_positive(float), help="simulated seconds per session (default: the preset's)"
    )
    pre.add_argument(
        "--method", default="nuclr", choices=sorted(METHODS), help="self-supervised method (default: %(default)s)"
    )
    pre.add_argument(
        "--config",
        default="cpu",
        help="config preset of the method: cpu or paper, or window for nuclr (default: %(default)s); ignored "
        "with --init, which keeps the model's config",
    )
    pre.add_argument(
        "--init", help="model to fine-tune from: 'default' or a model path (default: none, random weights)"
    )
    pre.add_argument(
        "--cache-sessions",
        type=_positive(int),
        default=4,
        help="input sessions (NWB files or analyzers) held in memory at once; the others are read again when "
        "drawn (default: %(default)s)",
    )
    pre.add_argument("--steps", type=_positive(int), default=2000, help="optimiser steps (default: %(default)s)")
    pre.add_argument(
        "--batch-size",
        type=_positive(int),
        default=8,
        help="view pairs per step, per process under torchrun (default: %(default)s)",
    )
    pre.add_argument(
        "--lr", type=_positive(float), default=1e-3, help="peak learning rate of AdamW (default: %(default)s)"
    )
    pre.add_argument(
        "--seed",
        type=_non_negative_int,
        default=0,
        help="seed of initialisation, sampling and dropout (default: %(default)s)",
    )
    pre.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="write the latest weights there (.safetensors) every --checkpoint-every steps, and the training "
        "state to resume from next to it (.state.safetensors) (default: none, no checkpoints)",
    )
    pre.add_argument(
        "--checkpoint-every",
        type=_positive(int),
        default=100,
        metavar="N",
        help="steps between checkpoints, with --checkpoint (default: %(default)s)",
    )
    pre.add_argument(
        "--resume",
        action="store_true",
        help="continue the run from --checkpoint's training state, with the run's settings (default: off, "
        "start afresh)",
    )
    pre.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default: %(default)s)")
    pre.add_argument("--name", default="neuronid-model", help="model name stored in the file (default: %(default)s)")
    pre.add_argument("-o", "--output", required=True, help="model file to write (.safetensors); required, no default")

    bench = command(
        "benchmark",
        "NuCLR's three protocols: our models against the baselines, one table",
        "Run NuCLR's inductive zero-shot, transductive zero-shot and transductive protocols on simulated presets: "
        "the shipped model, its ablations and the baselines, with bootstrap intervals and verdicts.",
    )
    bench.add_argument(
        "-o", "--output", default="neuronid_benchmark_output", help="output folder (default: %(default)s)"
    )
    bench.add_argument(
        "--quick", action="store_true", help="tiny smoke run of the protocol wiring (default: off, the full run)"
    )
    bench.add_argument("--presets", nargs="+", choices=presets, help="simulator presets (default: easy hard varied)")
    bench.add_argument("--seeds", nargs="+", type=int, help="seeds of the transductive unit splits (default: 0 1 2)")
    bench.add_argument(
        "--test-animals", nargs="+", type=int, help="animals held out in turn (default: every animal, leave-one-out)"
    )
    bench.add_argument(
        "--methods", nargs="+", help="subset of the table's methods, by their row names (default: all of them)"
    )
    bench.add_argument("--no-progress", action="store_true", help=no_progress)

    ann = command(
        "annotate",
        "embed and label the units of NWB files; write annotated copies",
        "Embed and label the units of NWB files (and DANDI trees of them) and write annotated copies with the "
        "ndx-neuron-embedding columns; the sources are only read.",
    )
    ann.add_argument("inputs", nargs="+", help="NWB files (.nwb, .nwb.zarr) or folders, searched recursively")
    ann.add_argument(
        "-o",
        "--output",
        required=True,
        help="folder for the annotated copies, paths mirrored; not an input folder itself (one inside an input "
        "folder is skipped when searching, as are annotated copies of earlier runs); required, no default",
    )
    ann.add_argument("--model", default="default", help=f"{_MODEL_HELP} {_MODEL_DEFAULT}")
    ann.add_argument(
        "--sampling-frequency",
        type=_positive(float),
        metavar="HZ",
        help="frame rate for files whose Units table has no resolution (default: 1 / resolution, else 30000)",
    )
    ann.add_argument(
        "--overwrite", action="store_true", help="replace existing annotated copies (default: off, such files fail)"
    )
    ann.add_argument("--no-progress", action="store_true", help="hide the progress bar (default: shown)")

    lab = command(
        "label",
        "label the clusters of Kilosort/phy folders, analyzers or NWB files; write phy TSV columns",
        "For every task head of the model, write cluster_neuronid_<task>.tsv (cluster_id, neuronid_<task>, "
        "neuronid_<task>_probability), which phy shows as columns. Phy folders get the files themselves and "
        "are otherwise left untouched; analyzers and NWB files need -o. A failing input is reported as FAILED and "
        "the others are still labelled (exit code 1).",
    )
    lab.add_argument(
        "inputs",
        nargs="+",
        help="Kilosort/phy folders (spike_times.npy, params.py), SortingAnalyzer folders (binary or .zarr) or NWB "
        "files (.nwb, .nwb.zarr)",
    )
    lab.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="write the TSVs into OUT/<input name>/ (default: none: into each phy folder itself; required for "
        "analyzer and NWB inputs)",
    )
    lab.add_argument("--model", default="default", help=f"{_MODEL_HELP} with task heads {_MODEL_DEFAULT}")
    lab.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the cluster_neuronid_*.tsv files of an earlier run (default: off, such inputs fail)",
    )
    lab.add_argument(
        "--sampling-frequency",
        type=_positive(float),
        metavar="HZ",
        help="sampling rate of spike_times.npy for phy folders without params.py, and frame rate for NWB files "
        "without a Units resolution (default: params.py's sample_rate; for NWB 1 / resolution, else 30000)",
    )
    lab.add_argument(
        "--save-to-analyzer",
        action="store_true",
        help="analyzer inputs: also save the neuron_embedding extension and <task>_label / <task>_probability "
        "sorting properties into the analyzer (default: off, analyzers are only read)",
    )
    lab.add_argument("--no-progress", action="store_true", help=no_progress)
    return parser


def _check_model_option(parser: argparse.ArgumentParser, model: str, option: str = "--model") -> None:
    """Exit with a usage error naming ``option`` when ``model`` cannot be loaded."""
    from .inference import resolve_model

    try:
        resolve_model(model)
    except (FileNotFoundError, ValueError, OSError) as err:
        parser.error(f"{option} {model}: {err}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``neuronid`` console script."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    commands = {action.dest: action for action in parser._actions if isinstance(action, argparse._SubParsersAction)}
    subparser = commands["command"].choices[args.command]
    if args.command == "demo":
        _check_model_option(subparser, args.model)
        metrics = run_demo(args.output, preset=args.preset, model=args.model, progress_bar=not args.no_progress)
        return 0 if np.isfinite(metrics["macro_f1"]) else 1
    if args.command == "pretrain":
        if args.resume and not args.checkpoint:
            subparser.error("--resume needs --checkpoint PATH (the checkpoint of the run to continue)")
        if args.resume:
            from ._train_state import state_path

            if not state_path(args.checkpoint).is_file():
                subparser.error(f"--resume: no training state {state_path(args.checkpoint)} to continue from")
        if not args.simulated and not args.inputs:
            subparser.error(
                "give NWB files, folders of NWB files or SortingAnalyzer folders to pretrain on, or --simulated PRESET"
            )
        if args.init:
            _check_model_option(subparser, args.init, "--init")
        else:
            from .methods import get_method

            config_class = get_method(args.method).Config
            if not callable(getattr(config_class, args.config, None)):
                subparser.error(f"--config {args.config}: not a config preset of --method {args.method}")
        if not args.simulated:
            from .streaming import CorpusSourceError

            try:  # only metadata is read here; a source that fails later names itself in the error
                args.corpus = _input_corpus(args)
            except (FileNotFoundError, CorpusSourceError) as err:
                subparser.error(str(err))
        return _pretrain_command(args)
    if args.command == "benchmark":
        return _benchmark_command(args)
    if args.command == "annotate":
        from .nwb.annotate import annotate_command

        return annotate_command(
            args.inputs,
            args.output,
            model=args.model,
            sampling_frequency=args.sampling_frequency,
            overwrite=args.overwrite,
            progress_bar=not args.no_progress,
        )
    if args.command == "label":
        from .phy import label_command

        _check_model_option(subparser, args.model)
        return label_command(
            args.inputs,
            args.output,
            model=args.model,
            overwrite=args.overwrite,
            sampling_frequency=args.sampling_frequency,
            save_to_analyzer=args.save_to_analyzer,
            progress_bar=not args.no_progress,
        )
    return 2


if __name__ == "__main__":
    sys.exit(main())
