"""The command line explains itself: every option of every subcommand has a help text that states its default."""

import argparse

import pytest

import spikeinterface_neuronid
from spikeinterface_neuronid.cli import build_parser, main

SUBCOMMANDS = {"demo", "pretrain", "benchmark", "annotate", "label"}


def subparsers(parser: argparse.ArgumentParser) -> dict:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def documented_actions():
    """(subcommand, action) for every option and positional of every subcommand, help and version excluded."""
    for name, sub in subparsers(build_parser()).items():
        for action in sub._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                continue
            yield name, action


def test_every_subcommand_is_there():
    assert set(subparsers(build_parser())) == SUBCOMMANDS


@pytest.mark.parametrize("name, action", list(documented_actions()), ids=lambda x: getattr(x, "dest", x))
def test_every_option_has_help_with_its_default(name, action):
    label = f"neuronid {name} {'/'.join(action.option_strings) or action.dest}"
    assert action.help and action.help.strip(), f"{label} has no help text"
    required_positional = not action.option_strings and action.nargs not in ("?", "*")
    if required_positional:
        return
    text = action.help.lower()
    assert "default" in text or (
        action.required and "required" in text
    ), f"{label}: the help does not state its default"


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_help_renders_every_default(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "%(default)" not in text and text.count("(default:") >= 1
    sub = subparsers(build_parser())[name]
    for action in sub._actions:
        for option in action.option_strings:
            assert option in text


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"neuronid {spikeinterface_neuronid.__version__}"


def test_errors_name_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--steps", "0", "-o", "x.safetensors", "--simulated", "easy"])
    assert "--steps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["pretrain", "-o", "x.safetensors"])
    assert "--simulated" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["label", "somewhere", "--model", "missing-model.safetensors"])
    assert "--model missing-model.safetensors" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["annotate", "x.nwb", "-o", "out", "--sampling-frequency", "-5"])
    assert "--sampling-frequency" in capsys.readouterr().err
