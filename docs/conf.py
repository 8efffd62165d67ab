"""Sphinx configuration of the spikeinterface-neuronid documentation.

Build (warnings are errors)::

    pip install -r docs/requirements.txt
    python -m sphinx -W --keep-going -b html docs docs/_build/html

The package is imported, not mocked: install it first (``pip install -e .``). No page executes code and
nothing is fetched from the network (intersphinx is off).
"""

from __future__ import annotations

import importlib.metadata

project = "spikeinterface-neuronid"
author = "spikeinterface-neuronid developers"
copyright = "spikeinterface-neuronid developers, Apache-2.0"

try:
    release = importlib.metadata.version("spikeinterface-neuronid")
except importlib.metadata.PackageNotFoundError:  # building from a source tree that is not installed
    release = "unknown"
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
]

# Pages are reStructuredText only (no markdown parser needed).
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []

# Cross-references are not checked against other projects (no intersphinx: no network at build time).
nitpicky = False

# -- autodoc / autosummary --------------------------------------------------------------------------
autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
}
# Signatures show the annotations; the numpydoc "Parameters" sections carry the descriptions.
autodoc_typehints = "signature"
# Keep the `from __future__ import annotations` strings as written instead of resolving them.
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
# torch.nn.Module.forward's generic docstring would otherwise be shown for every encoder's forward().
autodoc_inherit_docstrings = False
# The API page uses autosummary only for its summary tables (no generated stub pages).
autosummary_generate = False

# -- numpydoc ---------------------------------------------------------------------------------------
numpydoc_show_class_members = False
numpydoc_show_inherited_class_members = False
numpydoc_class_members_toctree = False
# Type names in docstrings ("np.ndarray", "sequence of int", ...) are shown as written, not linked:
# linking them would need intersphinx, and an unresolved link is a warning under -W.
numpydoc_xref_param_type = False
# No docstring style validation during the build (it would turn style nits into build errors).
numpydoc_validation_checks: set[str] = set()
numpydoc_attributes_as_param_list = True

# -- HTML -------------------------------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"spikeinterface-neuronid {release}"
html_static_path: list[str] = []
html_theme_options = {
    "description": "Neuron identity from population spiking activity, as a SpikeInterface extension.",
    "fixed_sidebar": True,
    "sidebar_collapse": True,
}
html_sidebars = {"**": ["about.html", "navigation.html", "relations.html", "searchbox.html"]}
