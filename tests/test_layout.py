"""The package layout: imports point one way along the data path, and the model code is free of SpikeInterface.

Every import is read from the source (module level and inside functions), so a lazy import cannot hide a cycle.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "spikeinterface_neuronid"
NAME = PACKAGE.name

#: Components off the core path and the components each may import (the core path is everything else).
EDGES = {
    "simulation": {"simulation"},
    "nwb": {"nwb"},
    "benchmark": {"benchmark", "simulation"},
    "streaming": {"nwb"},
    "phy": {"nwb"},
    "demo": {"nwb", "simulation", "benchmark", "phy", "streaming"},
    "cli": {"nwb", "simulation", "benchmark", "phy", "streaming", "demo", "commands"},
    "commands": {"nwb", "simulation", "benchmark", "phy", "streaming", "demo"},
}

#: Core modules that hold the model and its numbers: they never import SpikeInterface (only the adapters do).
SPIKEINTERFACE_FREE = (
    "methods",
    "data",
    "spike_stats",
    "_chunk_sums",
    "span_views",
    "bundle",
    "_bundle_format",
    "models",
    "model_card",
    "inference",
    "training",
    "fine_tuning",
    "_sampling",
    "_optim",
    "_checkpoints",
    "_distributed",
    "_train_state",
    "heads",
    "_head_math",
    "calibration",
    "schema",
    "evaluation",
)


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        yield path, parts


def _component(parts: tuple[str, ...]) -> str:
    return parts[0] if parts[0] != "__init__" else "__init__"


def _imported_modules(path: Path, parts: tuple[str, ...]) -> set[tuple[str, ...]]:
    """Package-relative module paths imported by one file, e.g. ``("nwb", "write")``; ``("",)`` for the package."""
    package = parts[:-1]  # the package a relative import starts from (a package's own __init__ included)
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                target = base + tuple(node.module.split(".")) if node.module else base
                names = [] if node.module else [alias.name for alias in node.names]
            elif node.module and node.module.split(".")[0] == NAME:
                target = tuple(node.module.split(".")[1:])
                names = []
            else:
                continue
            if names:  # "from . import x": x may be a module
                out.update(target + (n,) for n in names)
            else:
                out.add(target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == NAME:
                    out.add(tuple(alias.name.split(".")[1:]))
    return {t for t in out if t}


def _external_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_imports_point_one_way():
    wrong = []
    for path, parts in _modules():
        component = _component(parts)
        allowed = EDGES.get(component, set()) | {component}
        for target in _imported_modules(path, parts):
            other = target[0]
            if other in EDGES and other not in allowed:
                wrong.append(f"{'/'.join(parts)}.py imports {'.'.join(target)}")
    assert not wrong, "imports against the layout (core must not import nwb/simulation/benchmark/demo/cli):\n" + (
        "\n".join(wrong)
    )


def test_the_package_root_imports_only_the_extension():
    imported = {t[0] for t in _imported_modules(PACKAGE / "__init__.py", ("__init__",))}
    assert imported == {"extension"}


@pytest.mark.parametrize("component", SPIKEINTERFACE_FREE)
def test_model_code_does_not_import_spikeinterface(component):
    files = [PACKAGE / f"{component}.py"] if (PACKAGE / f"{component}.py").exists() else []
    files += sorted((PACKAGE / component).rglob("*.py")) if (PACKAGE / component).is_dir() else []
    assert files, component
    for path in files:
        assert "spikeinterface" not in _external_imports(path), path


def test_the_layout_checker_sees_relative_and_lazy_imports(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text(
        "from ..data import x\nfrom . import write\nimport spikeinterface_neuronid.cli\n"
        "def f():\n    from ...simulation import presets\n"
    )
    got = _imported_modules(source, ("nwb", "sub", "mod"))
    assert got == {("nwb", "data"), ("nwb", "sub", "write"), ("cli",), ("simulation",)}
