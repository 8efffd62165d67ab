"""Which model a name means: the default models shipped with the package, model files, a cache of loaded ones."""

from __future__ import annotations

from pathlib import Path

from .bundle import ModelBundle, ModelFileNotFoundError

__all__ = ["DEFAULT_MODEL_FILES", "DEFAULT_METHOD", "default_model_path", "resolve_model"]

DEFAULT_MODEL_FILE = "neuronid-default.safetensors"
#: Method name -> file name of its default model in ``spikeinterface_neuronid/default_model``.
DEFAULT_MODEL_FILES: dict[str, str] = {
    "nuclr": DEFAULT_MODEL_FILE,
    "neurpir": "neuronid-neurpir-default.safetensors",
}
#: The method whose default model ``model="default"`` means when no method is given.
DEFAULT_METHOD = "nuclr"
_MODEL_CACHE: dict[tuple[str, float], ModelBundle] = {}


def default_model_path(method: str | None = None) -> Path:
    """Path of the default pretrained model of ``method`` shipped inside the package.

    Parameters
    ----------
    method : str | None, default: None
        A key of :data:`DEFAULT_MODEL_FILES` (``"nuclr"``, ``"neurpir"``); None means ``"nuclr"``.

    Raises
    ------
    ValueError
        If no default model is shipped for ``method``.
    """
    method = DEFAULT_METHOD if method is None else method
    if not isinstance(method, str) or method not in DEFAULT_MODEL_FILES:
        raise ValueError(
            f"no default model for method {method!r}; default models exist for {', '.join(sorted(DEFAULT_MODEL_FILES))}"
        )
    return Path(__file__).parent / "default_model" / DEFAULT_MODEL_FILES[method]


def resolve_model(model: str | Path | ModelBundle | None = "default", method: str | None = None) -> ModelBundle:
    """Return a :class:`ModelBundle` for ``"default"``, a path to a ``.safetensors`` model file, or a bundle.

    Parameters
    ----------
    model : str | Path | ModelBundle | None, default: "default"
        ``"default"`` (or None) for the shipped default model of ``method``, a model file path, or a bundle.
    method : str | None, default: None
        With ``"default"``: which method's default model (None: NuCLR's). With a path or bundle: the method
        the model must have (None: any).

    Loaded files are cached by path and modification time, so repeated calls do not re-read them.

    Raises
    ------
    ValueError
        If ``method`` has no default model, or disagrees with the given model's method.
    """
    if isinstance(model, ModelBundle):
        bundle = model
    else:
        is_default = model is None or (isinstance(model, str) and model == "default")
        path = default_model_path(method) if is_default else Path(model).expanduser()
        if not path.is_file():
            if is_default:
                raise FileNotFoundError(
                    f"the default model file is missing from the installation ({path}); reinstall "
                    "spikeinterface-neuronid or pass model=<path to a .safetensors model>"
                )
            what = "is a folder, not a model file" if path.is_dir() else "not found"
            raise ModelFileNotFoundError(
                2, f"model file {what}; pass model='default' or the path of a .safetensors model file", str(path)
            )
        key = (str(path.resolve()), path.stat().st_mtime)
        if key not in _MODEL_CACHE:
            _MODEL_CACHE[key] = ModelBundle.load(path)
        bundle = _MODEL_CACHE[key]
    if method is not None and bundle.method != method:
        raise ValueError(
            f"method={method!r} does not match the model, which is a {bundle.method!r} model; pass "
            f"method={bundle.method!r} or None, or a {method!r} model"
        )
    return bundle
