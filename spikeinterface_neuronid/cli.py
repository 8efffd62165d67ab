"""Command line: ``neuronid demo``, ``pretrain``, ``benchmark``, ``annotate`` and ``label`` (:func:`build_parser`).

This module only parses the arguments and dispatches (:func:`main`); each command's work is a function of the module
that owns it: :func:`~spikeinterface_neuronid.demo.demo_command`,
:func:`~spikeinterface_neuronid.commands.pretrain_command`, :func:`~spikeinterface_neuronid.commands.benchmark_command`,
:func:`~spikeinterface_neuronid.nwb.annotate.annotate_command` and :func:`~spikeinterface_neuronid.phy.label_command`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

import numpy as np

__all__ = ["main", "build_parser"]


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
    pre.add_argument(
        "--session-block",
        type=_non_negative_int,
        metavar="N",
        help="draw the steps of each block of --session-block-steps from N input sessions only (a seeded "
        "shuffle of the inputs per epoch), so that each session is read about once per block; 0 draws from "
        "all sessions (default: --cache-sessions when there are more inputs than that, else 0)",
    )
    pre.add_argument(
        "--session-block-steps",
        type=_positive(int),
        default=100,
        metavar="STEPS",
        help="steps per session block (default: %(default)s)",
    )
    pre.add_argument(
        "--workers",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="DataLoader worker processes that draw batches ahead of training; each holds its own session cache; "
        "the model does not depend on N (default: %(default)s, draw in a thread)",
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
    from .models import resolve_model

    try:
        resolve_model(model)
    except (FileNotFoundError, ValueError, OSError) as err:
        parser.error(f"{option} {model}: {err}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``neuronid`` console script."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    command_line = "neuronid " + " ".join(argv)
    commands = {action.dest: action for action in parser._actions if isinstance(action, argparse._SubParsersAction)}
    subparser = commands["command"].choices[args.command]
    if args.command == "demo":
        _check_model_option(subparser, args.model)
        from .demo import demo_command

        return demo_command(args.output, preset=args.preset, model=args.model, progress_bar=not args.no_progress)
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
        from .commands import input_corpus, pretrain_command

        corpus = None
        if not args.simulated:
            from .streaming import CorpusSourceError

            try:
                corpus = input_corpus(args.inputs, args.cache_sessions)
            except (FileNotFoundError, CorpusSourceError) as err:
                subparser.error(str(err))
        return pretrain_command(
            args.output,
            command=command_line,
            inputs=args.inputs,
            corpus=corpus,
            simulated=args.simulated,
            animals=args.animals,
            sessions=args.sessions,
            num_neurons=args.num_neurons,
            duration_s=args.duration_s,
            method=args.method,
            config=args.config,
            init=args.init,
            cache_sessions=args.cache_sessions,
            session_block=args.session_block,
            session_block_steps=args.session_block_steps,
            num_workers=args.workers,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            checkpoint=args.checkpoint,
            checkpoint_every=args.checkpoint_every,
            resume=args.resume,
            device=args.device,
            name=args.name,
        )
    if args.command == "benchmark":
        from .commands import benchmark_command

        return benchmark_command(
            args.output,
            command=command_line,
            quick=args.quick,
            presets=args.presets,
            seeds=args.seeds,
            test_animals=args.test_animals,
            methods=args.methods,
            progress_bar=not args.no_progress,
        )
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
