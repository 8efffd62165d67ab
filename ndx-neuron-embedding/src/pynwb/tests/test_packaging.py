"""Release metadata agrees: package, namespace and catalog record versions; licence; the generated spec is current."""
import re
import subprocess
import sys
from pathlib import Path

from ruamel.yaml import YAML  # a dependency of hdmf

import ndx_neuron_embedding

ROOT = Path(__file__).resolve().parents[3]


def _yaml(path):
    return YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))


def _pyproject_field(name):
    match = re.search(rf'^{name}\s*=\s*"([^"]*)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"), flags=re.M)
    assert match, f"pyproject.toml has no {name}"
    return match.group(1)


def test_versions_agree():
    version = _pyproject_field("version")
    namespace = _yaml(ROOT / "spec" / "ndx-neuron-embedding.namespace.yaml")["namespaces"][0]
    assert namespace["name"] == "ndx-neuron-embedding"
    assert namespace["version"] == version
    assert ndx_neuron_embedding.__version__ == version
    assert _yaml(ROOT / "ndx-meta.yaml")["version"] == version
    assert f"## [{version}]" in (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")


def test_catalog_record_and_licence():
    meta = _yaml(ROOT / "ndx-meta.yaml")
    assert set(meta) == {"name", "version", "src", "pip", "license", "maintainers"}
    assert meta["name"] == _pyproject_field("name") == "ndx-neuron-embedding"
    assert meta["pip"] == "https://pypi.org/project/ndx-neuron-embedding/"
    assert meta["license"] == _pyproject_field("license") == "Apache-2.0"
    assert isinstance(meta["maintainers"], list) and meta["maintainers"]
    assert (ROOT / "LICENSE.txt").read_text(encoding="utf-8").lstrip().startswith("Apache License")


def test_generated_spec_is_current(tmp_path):
    """Running the spec script reproduces the committed YAML files."""
    script = ROOT / "src" / "spec" / "create_extension_spec.py"
    copy = tmp_path / "src" / "spec"
    copy.mkdir(parents=True)
    (copy / script.name).write_text(script.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "spec").mkdir()
    proc = subprocess.run([sys.executable, str(copy / script.name)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in ("ndx-neuron-embedding.namespace.yaml", "ndx-neuron-embedding.extensions.yaml"):
        assert (tmp_path / "spec" / name).read_text() == (ROOT / "spec" / name).read_text(), name
