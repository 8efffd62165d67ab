import json
import pickle

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from spikeinterface_neuronid.bundle import METADATA_KEY, ModelBundle, heads_checksum_metadata, model_sha256, weights_sha256
from spikeinterface_neuronid.methods.nuclr import NuCLRConfig, build_encoder, build_projector

TINY = NuCLRConfig.window(
    dim=16, num_heads=2, temporal_layers=1, spatiotemporal_layers=1, token_bins=5, window_tokens=4
)


@pytest.fixture
def bundle() -> ModelBundle:
    torch.manual_seed(0)
    return ModelBundle.from_modules(
        "nuclr",
        TINY,
        build_encoder(TINY),
        build_projector(TINY),
        name="tiny",
        provenance={"data": "unit test", "animals": [1, 2]},
    )


def _raw(path):
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads(f.metadata()[METADATA_KEY])
    return tensors, meta


def _write(path, tensors, meta):
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(meta)})


def test_round_trip_is_bit_exact(bundle, tmp_path):
    path = bundle.save(tmp_path / "sub" / "model.safetensors")
    loaded = ModelBundle.load(path)
    assert loaded.method == "nuclr" and loaded.config == TINY and loaded.name == "tiny"
    assert loaded.provenance == {"data": "unit test", "animals": [1, 2]}
    assert loaded.sha256 == bundle.sha256 and loaded.created == bundle.created
    a, b = bundle.tensors(), loaded.tensors()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)
    x = torch.poisson(torch.ones(1, 3, 20))
    mask = torch.ones(1, 3, dtype=torch.bool)
    with torch.no_grad():
        assert torch.equal(bundle.encoder()(x, mask), loaded.encoder()(x, mask))
    # saved again, the file is byte-identical
    again = loaded.save(tmp_path / "again.safetensors")
    assert again.read_bytes() == path.read_bytes()
    assert {p.name for p in tmp_path.iterdir()} == {"sub", "again.safetensors"}
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["model.safetensors"]  # no temporary files left


def test_file_is_plain_safetensors_with_json_metadata(bundle, tmp_path, monkeypatch):
    path = bundle.save(tmp_path / "m.safetensors")
    tensors, meta = _raw(path)
    assert set(meta) >= {"format_version", "method", "config", "name", "package_version", "created", "provenance"}
    assert meta["format_version"] == 3
    assert meta["sha256"] == model_sha256(tensors, "nuclr", meta["config"]) == bundle.sha256
    assert meta["config"] == TINY.to_dict()
    assert any(k.startswith("encoder.") for k in tensors) and any(k.startswith("projector.") for k in tensors)

    def forbidden(*args, **kwargs):
        raise AssertionError("model loading must not unpickle")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    assert ModelBundle.load(path).sha256 == bundle.sha256


def test_encoder_is_cached_in_eval_mode(bundle):
    encoder = bundle.encoder()
    assert encoder is bundle.encoder() and not encoder.training


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        ModelBundle.load(tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError):
        ModelBundle.load(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("content", [b"", b"hello", b"this is a text file, not a model\n" * 10])
def test_not_a_safetensors_file(tmp_path, content):
    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a safetensors"):
        ModelBundle.load(path)


def test_truncated_file(bundle, tmp_path):
    path = bundle.save(tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(ValueError, match="truncated"):
        ModelBundle.load(path)
    path.write_bytes(data[:20])
    with pytest.raises(ValueError, match="truncated"):
        ModelBundle.load(path)


def test_tampered_weights_fail_the_checksum(bundle, tmp_path):
    path = bundle.save(tmp_path / "m.safetensors")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch"):
        ModelBundle.load(path)


def test_safetensors_file_that_is_not_a_model(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="not a spikeinterface-neuronid model"):
        ModelBundle.load(path)


def test_config_that_does_not_fit_the_weights(bundle, tmp_path):
    path = bundle.save(tmp_path / "m.safetensors")
    tensors, meta = _raw(path)
    meta["config"]["dim"] = 32
    meta["sha256"] = model_sha256(tensors, "nuclr", meta["config"])  # consistent checksum: the shapes are checked
    _write(path, tensors, meta)
    with pytest.raises(
        ValueError, match=r"encoder\.read_in\.weight' has shape \(16, 5\) but the config expects \(32, 5\)"
    ):
        ModelBundle.load(path)


def test_missing_and_unexpected_weights(bundle, tmp_path):
    path = bundle.save(tmp_path / "m.safetensors")
    tensors, meta = _raw(path)
    del tensors["encoder.read_in.bias"]
    tensors["encoder.extra.weight"] = torch.zeros(3)
    meta["sha256"] = model_sha256(tensors, "nuclr", meta["config"])
    _write(path, tensors, meta)
    with pytest.raises(ValueError, match=r"missing weights \['encoder\.read_in\.bias'\].*unexpected weights"):
        ModelBundle.load(path)


def test_unknown_config_key_and_newer_format(bundle, tmp_path):
    path = bundle.save(tmp_path / "m.safetensors")
    tensors, meta = _raw(path)
    config = {**meta["config"], "foo": 1}
    _write(path, tensors, {**meta, "config": config, "sha256": model_sha256(tensors, "nuclr", config)})
    with pytest.raises(ValueError, match="unknown NuCLR config keys"):
        ModelBundle.load(path)
    _write(path, tensors, {**meta, "format_version": 99})
    with pytest.raises(ValueError, match="upgrade"):
        ModelBundle.load(path)


def test_constructor_validates(bundle):
    with pytest.raises(ValueError, match="shape"):
        ModelBundle("nuclr", NuCLRConfig.window(dim=32, num_heads=2, token_bins=5, window_tokens=4), bundle.state_dict)
    with pytest.raises(ValueError, match="JSON"):
        ModelBundle("nuclr", TINY, bundle.state_dict, provenance={"x": object()})
    with pytest.raises(ValueError, match="unknown method"):
        ModelBundle("nope", TINY, bundle.state_dict)


def test_bundle_weights_are_a_copy():
    torch.manual_seed(0)
    encoder = build_encoder(TINY)
    bundle = ModelBundle.from_modules("nuclr", TINY, encoder)
    before = bundle.sha256
    with torch.no_grad():
        encoder.read_in.weight.add_(1.0)
    assert model_sha256(bundle.tensors(), "nuclr", TINY.to_dict()) == before and bundle.projector() is None


@pytest.mark.parametrize("key", ["bin_s", "window_tokens", "max_context_units"])
def test_checksum_covers_the_config(bundle, tmp_path, key):
    """Editing a setting that changes the embeddings in the file's JSON is caught (issue 11 item 3)."""
    path = bundle.save(tmp_path / "m.safetensors")
    tensors, meta = _raw(path)
    value = meta["config"][key]
    meta["config"][key] = value * 2
    _write(path, tensors, meta)
    with pytest.raises(ValueError, match="checksum mismatch, the weights, config or heads were modified"):
        ModelBundle.load(path)
    # with a recomputed checksum the file loads, as a different model
    meta["sha256"] = model_sha256(tensors, "nuclr", meta["config"])
    _write(path, tensors, meta)
    assert ModelBundle.load(path).sha256 == meta["sha256"] != bundle.sha256


def test_format_2_files_still_load_with_the_current_identity(bundle, tmp_path):
    """Files of format 1/2 checksummed only tensors (and heads): read them, but identify them by the config too."""
    path = bundle.save(tmp_path / "m.safetensors")
    tensors, meta = _raw(path)
    old = {**meta, "format_version": 1, "sha256": weights_sha256(tensors, heads_checksum_metadata(None))}
    _write(path, tensors, old)
    loaded = ModelBundle.load(path)
    assert loaded.sha256 == bundle.sha256  # same content, same identity as the format 3 file
    # the checksum it was recorded with (benchmark results, scores files) stays readable
    assert loaded.stored_sha256 == old["sha256"] != loaded.sha256
    assert ModelBundle.load(bundle.save(tmp_path / "new.safetensors")).stored_sha256 == bundle.sha256
    old["config"] = {**old["config"], "bin_s": old["config"]["bin_s"] * 2}
    _write(path, tensors, old)
    edited = ModelBundle.load(path)  # format 1 cannot detect the edit, but the identity shows it
    assert edited.sha256 != bundle.sha256
    assert edited.sha256 == model_sha256(tensors, "nuclr", edited.config.to_dict())
    saved = edited.save(tmp_path / "again.safetensors")
    assert _raw(saved)[1]["format_version"] == 3 and ModelBundle.load(saved).sha256 == edited.sha256


def test_a_file_whose_config_lacks_newer_fields_saves_and_reloads(bundle, tmp_path):
    """A format-3 file written before a config field existed keeps its identity when loaded; saved again, the
    file is written with every field and the checksum of what it holds, so it reloads."""
    tensors, meta = _raw(bundle.save(tmp_path / "m.safetensors"))
    dropped = "single_unit_path"
    assert meta["config"].pop(dropped) == TINY.to_dict()[dropped]  # the field's default, as older files lack it
    meta["sha256"] = model_sha256(tensors, "nuclr", meta["config"])
    _write(tmp_path / "old.safetensors", tensors, meta)
    old = ModelBundle.load(tmp_path / "old.safetensors")
    assert old.sha256 == old.stored_sha256 == meta["sha256"]  # the identity results were recorded with
    again = ModelBundle.load(old.save(tmp_path / "again.safetensors"))
    assert _raw(tmp_path / "again.safetensors")[1]["config"][dropped] == TINY.to_dict()[dropped]
    assert again.sha256 == model_sha256(tensors, "nuclr", TINY.to_dict()) == bundle.sha256
    torch.testing.assert_close(again.tensors(), old.tensors(), rtol=0, atol=0)
