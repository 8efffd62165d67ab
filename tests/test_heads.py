"""Task heads: equivalence with scikit-learn, abstention, calibration, storage in the model file."""

import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from spikeinterface_neuronid import LinearHead, fit_head
from spikeinterface_neuronid.bundle import METADATA_KEY, ModelBundle, model_sha256
from spikeinterface_neuronid.evaluation import expected_calibration_error
from spikeinterface_neuronid.calibration import (
    _group_split,
    _sklearn_pipeline,
    fit_temperature,
    head_from_sklearn,
)
from spikeinterface_neuronid.labeling import predict_task
from spikeinterface_neuronid.model_card import model_card
from spikeinterface_neuronid.methods.nuclr import NuCLRConfig, build_encoder, build_projector

TINY = NuCLRConfig.window(
    dim=16, num_heads=2, temporal_layers=1, spatiotemporal_layers=1, token_bins=5, window_tokens=4
)


def blobs(n=90, dim=16, num_classes=3, separation=1.5, seed=0):
    """Gaussian classes with means ``separation`` apart along random directions."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, dim))
    centres *= separation / np.linalg.norm(centres, axis=1, keepdims=True)
    y = np.resize(np.arange(num_classes), n)
    rng.shuffle(y)
    x = centres[y] + rng.normal(size=(n, dim))
    return x, np.array(["abcdefgh"[i] * 3 for i in y])


@pytest.mark.parametrize("num_classes", [2, 3])
def test_head_equals_the_sklearn_pipeline(num_classes):
    x, y = blobs(num_classes=num_classes)
    pipe = _sklearn_pipeline(0.5, 2000).fit(x, y)
    head = head_from_sklearn(pipe, "cell_type")
    assert head.classes == list(pipe.classes_) and head.coef.shape == (num_classes, 16)
    np.testing.assert_allclose(head.predict_proba(x), pipe.predict_proba(x), rtol=0, atol=1e-12)

    # fit_head's final refit uses every labelled unit: with T=1 it is the same pipeline; unlabelled / NaN skipped
    y_missing = y.astype(object)
    y_missing[:3] = [None, "", np.nan]
    x_nan = x.copy()
    x_nan[3] = np.nan
    fitted = fit_head(x_nan, y_missing, "cell_type", C=0.5)
    ok = np.ones(len(y), dtype=bool)
    ok[:4] = False
    ref = _sklearn_pipeline(0.5, 2000).fit(x[ok], y[ok])
    uncalibrated = dataclasses.replace(fitted, temperature=1.0)
    np.testing.assert_allclose(uncalibrated.predict_proba(x[ok]), ref.predict_proba(x[ok]), rtol=0, atol=1e-10)
    assert fitted.provenance["fit"]["num_units"] == len(y) - 4
    assert fitted.temperature != 1.0

    proba = fitted.predict_proba(x_nan)
    assert np.all(np.isnan(proba[3])) and np.all(np.isfinite(np.delete(proba, 3, axis=0)))
    np.testing.assert_allclose(np.delete(proba, 3, axis=0).sum(axis=1), 1.0)
    assert fitted.predict(x_nan)[3] == "unknown" and np.isnan(fitted.confidence(x_nan)[3])
    logits = fitted.logits(x)
    np.testing.assert_allclose(
        proba[5], np.exp(logits[5] / fitted.temperature) / np.exp(logits[5] / fitted.temperature).sum()
    )


def test_abstention_honours_the_threshold_exactly():
    x, y = blobs(n=120, separation=1.0)
    head = fit_head(x, y, "cell_type", ood_quantile=None)  # the confidence threshold alone
    conf = head.confidence(x)
    best = np.asarray(head.classes)[np.argmax(head.predict_proba(x), axis=1)]
    for threshold in (0.0, float(np.median(conf)), float(np.sort(conf)[10]), 1.0):
        labels = dataclasses.replace(head, threshold=threshold).predict(x)
        below = conf < threshold
        assert np.all(labels[below] == "unknown")
        np.testing.assert_array_equal(labels[~below], best[~below])
        assert labels.dtype.kind == "U"
    # a unit exactly at the threshold is labelled
    at = dataclasses.replace(head, threshold=float(conf[7])).predict(x[7:8])
    assert at[0] == best[7]
    assert 0 < np.sum(dataclasses.replace(head, threshold=float(np.median(conf))).predict(x) == "unknown") < len(x)


def test_calibration_lowers_the_ece_of_an_overconfident_fit():
    # few units, many dimensions, overlapping classes and almost no regularisation: a very over-confident fit
    x, y = blobs(n=160, dim=40, num_classes=3, separation=2.0, seed=1)
    x_test, y_test = blobs(n=3000, dim=40, num_classes=3, separation=2.0, seed=1)
    head = fit_head(x, y, "cell_type", C=100.0, calibration_fraction=0.3, seed=0)
    raw = dataclasses.replace(head, temperature=1.0)
    assert head.temperature > 1.5
    ece_raw = expected_calibration_error(raw.predict_proba(x_test), y_test, head.classes)
    ece_cal = expected_calibration_error(head.predict_proba(x_test), y_test, head.classes)
    assert ece_raw > 0.15 and ece_cal < ece_raw / 2
    fit = head.provenance["fit"]
    assert fit["calibration_nll_after"] < fit["calibration_nll_before"]


def test_temperature_search_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(scale=2.0, size=(5000, 4))
    p = np.exp(true_logits) / np.exp(true_logits).sum(axis=1, keepdims=True)
    y = (rng.random((5000, 1)) > np.cumsum(p, axis=1)).sum(axis=1)
    assert fit_temperature(true_logits * 3.0, y) == pytest.approx(3.0, rel=0.1)
    assert fit_temperature(true_logits / 2.0, y) == pytest.approx(0.5, rel=0.1)


def test_perfectly_separated_calibration_units_warn():
    x, y = blobs(n=40, separation=30.0)
    with pytest.warns(UserWarning, match="end of its search range"):
        head = fit_head(x, y, "cell_type", C=100.0)
    assert head.provenance["fit"]["temperature_at_bound"]


def test_group_split_holds_out_whole_groups():
    x, y = blobs(n=120)
    groups = np.repeat(np.arange(6), 20)
    cal = _group_split(np.unique(y, return_inverse=True)[1], groups, 0.25, np.random.default_rng(0))
    for g in range(6):
        assert cal[groups == g].all() or not cal[groups == g].any()
    assert 0 < cal.sum() < len(y)
    head = fit_head(x, y, "region", groups=groups)
    assert head.provenance["fit"]["split"] == "groups"
    with pytest.raises(ValueError, match="at least 2 groups"):
        fit_head(x, y, "region", groups=np.zeros(len(y)))


def test_fit_head_errors():
    x, y = blobs(n=30)
    with pytest.raises(ValueError, match="30 units"):
        fit_head(x, y[:-1], "cell_type")
    with pytest.raises(ValueError, match="at least 2 classes"):
        fit_head(x, ["a"] * 30, "cell_type")
    with pytest.raises(ValueError, match=r"at least 2 labelled units.*'z': 1"):
        fit_head(x, list(y[:-1]) + ["z"], "cell_type")
    with pytest.raises(ValueError, match="reserved"):
        fit_head(x, np.where(y == y[0], "unknown", y), "cell_type")
    with pytest.raises(ValueError, match="task must be"):
        fit_head(x, y, "cell type")
    with pytest.raises(ValueError, match="groups"):
        fit_head(x, y, "cell_type", groups=np.zeros(5))
    with pytest.raises(ValueError, match="calibration_fraction"):
        fit_head(x, y, "cell_type", calibration_fraction=1.0)


def test_arrays_round_trip_and_immutability():
    x, y = blobs()
    head = fit_head(x, y, "cell_type", threshold=0.4, provenance={"labels": "test"})
    arrays, meta = head.to_arrays()
    assert all(a.dtype == np.float64 for a in arrays.values())
    json.dumps(meta)
    again = LinearHead.from_arrays("cell_type", arrays, meta)
    np.testing.assert_array_equal(again.predict_proba(x), head.predict_proba(x))
    assert again.threshold == 0.4 and again.provenance["labels"] == "test" and "fit" in again.provenance
    with pytest.raises(dataclasses.FrozenInstanceError):
        head.threshold = 0.9
    with pytest.raises(ValueError):
        head.coef[0, 0] = 1.0
    with pytest.raises(ValueError, match="missing arrays"):
        LinearHead.from_arrays("cell_type", {k: v for k, v in arrays.items() if k != "coef"}, meta)
    with pytest.raises(ValueError, match="expects embeddings of shape"):
        head.predict(x[:, :5])


# -- in the model file ------------------------------------------------------------------------------------


@pytest.fixture
def bundle_with_heads():
    torch.manual_seed(0)
    bundle = ModelBundle.from_modules("nuclr", TINY, build_encoder(TINY), build_projector(TINY), name="tiny")
    x, y = blobs(dim=16)
    bundle.add_head(fit_head(x, y, "cell_type", provenance={"labels": "blobs"}))
    x2, y2 = blobs(dim=16, num_classes=2, seed=3)
    bundle.add_head(fit_head(x2, y2, "region", threshold=0.7))
    return bundle


def _raw(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()[METADATA_KEY])


def test_bundle_with_heads_round_trips_bit_exact(bundle_with_heads, tmp_path):
    bundle = bundle_with_heads
    path = bundle.save(tmp_path / "m.safetensors")
    tensors, meta = _raw(path)
    assert meta["format_version"] == 3 and set(meta["heads"]) == {"cell_type", "region"}
    assert meta["heads"]["region"]["threshold"] == 0.7 and meta["heads"]["cell_type"]["classes"] == [
        "aaa",
        "bbb",
        "ccc",
    ]
    assert tensors["head.cell_type.coef"].shape == (3, 16) and tensors["head.cell_type.coef"].dtype == torch.float64

    loaded = ModelBundle.load(path)
    assert loaded.sha256 == bundle.sha256 and list(loaded.heads) == list(bundle.heads)
    for task, head in bundle.heads.items():
        other = loaded.heads[task]
        for name in ("mean", "scale", "coef", "intercept"):
            np.testing.assert_array_equal(getattr(other, name), getattr(head, name))
        assert (other.classes, other.temperature, other.threshold) == (head.classes, head.temperature, head.threshold)
        assert other.provenance == head.provenance
    assert loaded.save(tmp_path / "again.safetensors").read_bytes() == path.read_bytes()

    headless = ModelBundle("nuclr", TINY, bundle.state_dict, bundle.projector_state_dict, name="tiny")
    assert headless.sha256 != bundle.sha256
    encoder_only = {k: v for k, v in bundle.tensors().items() if not k.startswith("head.")}
    assert headless.sha256 == model_sha256(encoder_only, "nuclr", TINY.to_dict())
    headless_path = headless.save(tmp_path / "headless.safetensors")
    assert _raw(headless_path)[1]["format_version"] == 3 and "heads" not in _raw(headless_path)[1]
    assert ModelBundle.load(headless_path).heads == {}

    removed = bundle.remove_head("region")
    assert removed.task == "region" and list(bundle.heads) == ["cell_type"] and bundle.sha256 != loaded.sha256
    with pytest.raises(ValueError, match="already has a head"):
        bundle.add_head(loaded.heads["cell_type"])
    bundle.add_head(loaded.heads["region"])
    assert bundle.sha256 == loaded.sha256
    with pytest.raises(TypeError):
        bundle.heads["x"] = removed


def test_tampered_heads_are_rejected(bundle_with_heads, tmp_path):
    path = bundle_with_heads.save(tmp_path / "m.safetensors")
    tensors, meta = _raw(path)

    def write(t, m):
        save_file(t, str(path), metadata={METADATA_KEY: json.dumps(m)})

    bad = dict(tensors)
    bad["head.cell_type.coef"] = bad["head.cell_type.coef"].clone()
    bad["head.cell_type.coef"][0, 0] += 1e-9
    write(bad, meta)
    with pytest.raises(ValueError, match="checksum mismatch"):
        ModelBundle.load(path)

    swapped = json.loads(json.dumps(meta))
    swapped["heads"]["cell_type"]["classes"] = ["bbb", "aaa", "ccc"]
    write(tensors, swapped)
    with pytest.raises(ValueError, match="checksum mismatch"):
        ModelBundle.load(path)
    for key, value in (("temperature", 0.5), ("threshold", 0.0)):
        changed = json.loads(json.dumps(meta))
        changed["heads"]["region"][key] = value
        write(tensors, changed)
        with pytest.raises(ValueError, match="checksum mismatch"):
            ModelBundle.load(path)

    # the provenance is not part of the identity
    edited = json.loads(json.dumps(meta))
    edited["heads"]["cell_type"]["provenance"] = {"labels": "renamed"}
    write(tensors, edited)
    assert ModelBundle.load(path).heads["cell_type"].provenance == {"labels": "renamed"}

    # a head tensor without metadata, or metadata without tensors
    orphan = json.loads(json.dumps(meta))
    del orphan["heads"]["region"]
    orphan["sha256"] = model_sha256(tensors, orphan["method"], orphan["config"], orphan["heads"])
    write(tensors, orphan)
    with pytest.raises(ValueError, match="belongs to no head"):
        ModelBundle.load(path)


def test_head_must_fit_the_model_dimension(bundle_with_heads):
    x, y = blobs(dim=8)
    with pytest.raises(ValueError, match="dimension 8"):
        bundle_with_heads.add_head(fit_head(x, y, "other"))


def test_model_card_is_generated_from_the_bundle_metadata():
    import torch

    from spikeinterface_neuronid.bundle import ModelBundle
    from spikeinterface_neuronid.calibration import fit_head
    from spikeinterface_neuronid.methods.nuclr import NuCLRConfig, build_encoder

    torch.manual_seed(0)
    config = NuCLRConfig.cpu(dim=8, num_heads=2, projector_dim=8)
    bundle = ModelBundle.from_modules("nuclr", config, build_encoder(config), name="card-test", provenance={"data": "x"})
    rng = np.random.default_rng(0)
    width = config.embedding_dim
    x = np.concatenate([rng.normal(0, 1, (40, width)), rng.normal(3, 1, (40, width))])
    y = np.array(["PV"] * 40 + ["SST"] * 40)
    bundle.add_head(fit_head(x, y, task="cell_type", threshold=0.6))
    card = model_card(bundle)
    from ruamel.yaml import YAML  # an hdmf dependency

    front, body = card.split("---\n")[1:3]
    meta = YAML(typ="safe").load(front)
    assert meta["sha256"] == bundle.sha256 and meta["model_name"] == "card-test" and meta["method"] == "nuclr"
    assert meta["label_classes"] == {"cell_type": ["PV", "SST"]} and meta["model_format"] == "safetensors"
    assert set(meta["package_versions"]) >= {"spikeinterface_neuronid", "torch", "numpy", "python"}
    assert body.lstrip().startswith("# Model card: card-test") and bundle.sha256 in body
    assert "## Head `cell_type`" in card and "PV, SST" in card and "below 0.6" in card
    assert '"data": "x"' in card


# -- out-of-distribution check ------------------------------------------------------------------------------


def ood_data(n=480, dim=16, seed=0):
    """Three classes on a curved low-dimensional sheet (like embeddings), 8 groups ("animals")."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    y = np.resize(np.arange(3), n)
    t = rng.normal(size=(n, 3)) + 3.0 * np.eye(3)[y]
    latent = np.concatenate([t, 0.3 * np.sin(t[:, :2]), 0.05 * rng.normal(size=(n, dim - 5))], axis=1)
    return latent @ basis, np.array(["aaa", "bbb", "ccc"])[y], np.repeat(np.arange(8), n // 8), basis


def test_far_embeddings_are_unknown_and_in_distribution_ones_are_not():
    x, y, groups, basis = ood_data()
    head = fit_head(x, y, "cell_type", groups=groups)
    assert head.has_ood and "ood_threshold" in repr(head)
    info = head.provenance["fit"]["ood"]
    assert info["split"] == "groups" and info["folds"] == 4 and info["threshold"] == head.ood_threshold

    x_new, y_new, _, _ = ood_data(n=960, seed=0)  # the same distribution, other draws (same basis, seed 0)
    x_new = x_new[480:]
    rate = head.is_ood(x_new).mean()
    assert 0.0 < rate < 0.08  # about 1 - ood_quantile = 2.5 %
    # off the sheet: as confident as in-distribution units (a linear head extrapolates), but unknown
    rng = np.random.default_rng(1)
    far = x_new[:100] + 1.5 * rng.normal(size=(100, 11)) @ basis[5:]  # the sheet lies along basis[:5]
    assert np.all(head.is_ood(far)) and np.all(head.predict(far) == "unknown")
    without = head.without_ood()
    assert not without.has_ood and np.mean(without.predict(far) != "unknown") > 0.8
    np.testing.assert_array_equal(without.predict_proba(far), head.predict_proba(far))

    # the labeller's prediction: "unknown" labels, probabilities still given
    emb = np.concatenate([x_new[:50], far[:50], np.full((1, 16), np.nan)])
    out = predict_task(head, emb)
    assert out.task == "cell_type" and out.classes == tuple(head.classes)
    labels = out.labels
    assert np.all(labels[50:] == "unknown") and np.all(np.isfinite(out.confidence[:100]))
    assert np.isnan(out.confidence[-1]) and np.all(np.isnan(out.probabilities[-1]))
    np.testing.assert_array_equal(labels[:50], head.predict(x_new[:50]))
    kept = ~head.is_ood(x_new[:50]) & (head.confidence(x_new[:50]) >= head.threshold)
    assert kept.sum() > 40 and np.all(labels[:50][kept] != "unknown") and np.all(labels[:50][~kept] == "unknown")
    np.testing.assert_array_equal(predict_task(without, emb).labels[:50], without.predict(emb[:50]))
    assert np.isnan(head.ood_score(emb)[-1]) and not head.is_ood(emb)[-1]


def test_ood_score_is_the_mixture_negative_log_density():
    from scipy.stats import multivariate_normal

    x, y, groups, _ = ood_data()
    head = fit_head(x, y, "cell_type", groups=groups, ood_components=3)
    assert head.ood_location.shape == (3, 16) and head.ood_precision.shape == (3, 16, 16)
    z = (x[:20] - head.mean) / head.scale
    density = sum(
        np.exp(w) * multivariate_normal(m, np.linalg.inv(p)).pdf(z)
        for m, p, w in zip(head.ood_location, head.ood_precision, head.ood_log_weight)
    )
    np.testing.assert_allclose(head.ood_score(x[:20]), -np.log(density), rtol=1e-9)
    # the threshold is the conformal quantile of held-out scores: about 2.5 % of the training units' folds
    assert 0.0 <= head.provenance["fit"]["ood"]["training_fraction_flagged"] < 0.025
    again = fit_head(x, y, "cell_type", groups=groups, ood_components=3)
    np.testing.assert_array_equal(again.ood_precision, head.ood_precision)
    assert again.ood_threshold == head.ood_threshold
    stricter = fit_head(x, y, "cell_type", groups=groups, ood_components=3, ood_quantile=0.8)
    assert stricter.ood_threshold < head.ood_threshold


def test_ood_folds_hold_out_whole_groups():
    from spikeinterface_neuronid.calibration import _ood_folds

    y = np.resize(np.arange(3), 120)
    groups = np.repeat(np.arange(6), 20)
    fold = _ood_folds(y, groups, 4, np.random.default_rng(0))
    assert len(np.unique(fold)) == 4
    for g in range(6):
        assert len(np.unique(fold[groups == g])) == 1
    assert len(np.unique(_ood_folds(y, np.repeat([0, 1], 60), 4, np.random.default_rng(0)))) == 2
    stratified = _ood_folds(y, None, 4, np.random.default_rng(0))
    for f in range(4):
        assert np.bincount(y[stratified == f], minlength=3).min() == 10


def test_ood_check_is_skipped_when_it_cannot_be_calibrated():
    x, y = blobs(n=30)
    with pytest.warns(UserWarning, match="too few to set the out-of-distribution threshold.*at least 39"):
        head = fit_head(x, y, "cell_type")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 39 units: the conformal rank ceil(40 * 0.975) = 39 exists
        assert fit_head(*blobs(n=39, separation=3.0), "cell_type", C=0.1).has_ood
    assert not head.has_ood and "skipped" in head.provenance["fit"]["ood"]
    assert not fit_head(*blobs(n=120), "cell_type", calibration_fraction=0).has_ood
    off = fit_head(*blobs(n=120), "cell_type", ood_quantile=None)
    assert not off.has_ood and "ood" not in off.provenance["fit"]
    with pytest.raises(ValueError, match="has no out-of-distribution check"):
        off.ood_score(blobs(n=3)[0])
    assert not off.is_ood(blobs(n=3)[0]).any()


def test_ood_threshold_round_trips_through_the_model_file(tmp_path):
    torch.manual_seed(0)
    bundle = ModelBundle.from_modules("nuclr", TINY, build_encoder(TINY), build_projector(TINY), name="tiny")
    x, y, groups, _ = ood_data()
    head = fit_head(x, y, "cell_type", groups=groups)
    bundle.add_head(head)
    path = bundle.save(tmp_path / "m.safetensors")
    tensors, meta = _raw(path)
    assert meta["heads"]["cell_type"]["ood_threshold"] == head.ood_threshold
    for name in ("ood_location", "ood_precision", "ood_log_weight"):
        assert tensors[f"head.cell_type.{name}"].dtype == torch.float64
    loaded = ModelBundle.load(path).heads["cell_type"]
    assert loaded.ood_threshold == head.ood_threshold
    for name in ("ood_location", "ood_precision", "ood_log_weight"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(head, name))
    np.testing.assert_array_equal(loaded.ood_score(x), head.ood_score(x))
    np.testing.assert_array_equal(loaded.predict(x * 3.0), head.predict(x * 3.0))

    # the threshold and the arrays are part of the model's identity
    def write(t, m):
        save_file(t, str(path), metadata={METADATA_KEY: json.dumps(m)})

    changed = json.loads(json.dumps(meta))
    changed["heads"]["cell_type"]["ood_threshold"] = head.ood_threshold * 2
    write(tensors, changed)
    with pytest.raises(ValueError, match="checksum mismatch"):
        ModelBundle.load(path)
    bad = dict(tensors)
    bad["head.cell_type.ood_location"] = bad["head.cell_type.ood_location"] + 1e-9
    write(bad, meta)
    with pytest.raises(ValueError, match="checksum mismatch"):
        ModelBundle.load(path)
    # arrays without their threshold (re-checksummed) are rejected
    lacking = json.loads(json.dumps(meta))
    del lacking["heads"]["cell_type"]["ood_threshold"]
    lacking["sha256"] = model_sha256(tensors, lacking["method"], lacking["config"], lacking["heads"])
    write(tensors, lacking)
    with pytest.raises(ValueError, match="must be stored together"):
        ModelBundle.load(path)


def test_heads_stored_without_ood_arrays_still_load_and_work(tmp_path):
    from spikeinterface_neuronid.bundle import heads_checksum_metadata, weights_sha256

    x, y, groups, _ = ood_data()
    head = fit_head(x, y, "cell_type", groups=groups).without_ood()
    arrays, meta = head.to_arrays()
    # exactly what versions before the out-of-distribution check stored
    assert set(arrays) == {"mean", "scale", "coef", "intercept"}
    assert set(meta) == {"classes", "temperature", "threshold", "provenance"}
    torch.manual_seed(0)
    bundle = ModelBundle.from_modules("nuclr", TINY, build_encoder(TINY), build_projector(TINY), name="tiny")
    bundle.add_head(head)
    path = bundle.save(tmp_path / "m.safetensors")
    tensors, raw = _raw(path)
    # rewrite it as a format-2 file (heads, old checksum), as the package wrote before
    raw["format_version"] = 2
    raw["sha256"] = weights_sha256(tensors, heads_checksum_metadata(raw["heads"]))
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(raw)})
    loaded = ModelBundle.load(path).heads["cell_type"]
    assert not loaded.has_ood and loaded.ood_threshold is None
    far = x[:10] * 5.0
    np.testing.assert_array_equal(loaded.predict(far), head.predict(far))
    assert not loaded.is_ood(far).any()
    assert np.any(predict_task(loaded, far).labels != "unknown")


def test_ood_parameters_are_validated():
    x, y = blobs(n=120)
    for bad in (0.0, 1.0, 1.5, -0.1, "high", True):
        with pytest.raises(ValueError, match="ood_quantile"):
            fit_head(x, y, "cell_type", ood_quantile=bad)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="ood_components"):
            fit_head(x, y, "cell_type", ood_components=bad)

    xs, ys, groups, _ = ood_data()
    head = fit_head(xs, ys, "cell_type", groups=groups, ood_components=2)
    with pytest.raises(ValueError, match="must be given together"):
        dataclasses.replace(head, ood_threshold=None)
    with pytest.raises(ValueError, match="do not fit dimension 16"):
        dataclasses.replace(head, ood_location=head.ood_location[:, :8])
    with pytest.raises(ValueError, match="do not fit dimension 16"):
        dataclasses.replace(head, ood_log_weight=head.ood_log_weight[:1])
    asymmetric = head.ood_precision.copy()
    asymmetric[0, 0, 1] += 1.0
    with pytest.raises(ValueError, match=r"ood_precision\[0\] must be symmetric"):
        dataclasses.replace(head, ood_precision=asymmetric)
    with pytest.raises(ValueError, match=r"ood_precision\[1\] must be positive definite"):
        dataclasses.replace(head, ood_precision=np.stack([head.ood_precision[0], -head.ood_precision[1]]))
    for bad in (np.inf, np.nan, "x"):
        with pytest.raises(ValueError, match="ood_threshold must be a finite number"):
            dataclasses.replace(head, ood_threshold=bad)
    arrays, meta = head.to_arrays()
    with pytest.raises(ValueError, match="missing arrays"):
        LinearHead.from_arrays("cell_type", {k: v for k, v in arrays.items() if k != "ood_log_weight"}, meta)
    with pytest.raises(ValueError, match="must be stored together"):
        LinearHead.from_arrays("cell_type", arrays, {k: v for k, v in meta.items() if k != "ood_threshold"})
    with pytest.raises(ValueError, match="ood must have shape"):
        head.labels_from_proba(head.predict_proba(xs[:5]), ood=np.zeros(4, dtype=bool))


def test_ood_density_can_see_only_the_first_columns(tmp_path):
    """ood_columns=d: the density (and so the check) reads the first d columns; the classifier reads all."""
    x, y, groups, _ = ood_data()
    rng = np.random.default_rng(3)
    wide = np.concatenate([x, rng.normal(size=(len(x), 4))], axis=1)  # a 20-column embedding
    head = fit_head(wide, y, "cell_type", groups=groups, ood_columns=16)
    assert head.dim == 20 and head.ood_location.shape[1] == 16 and head.ood_precision.shape[1:] == (16, 16)
    assert head.provenance["fit"]["ood"]["columns"] == 16
    moved = wide.copy()
    moved[:, 16:] += 50.0  # far away in the columns the density does not see
    np.testing.assert_array_equal(head.ood_score(moved), head.ood_score(wide))
    assert not np.array_equal(head.predict_proba(moved), head.predict_proba(wide))
    far = wide.copy()
    far[:, :16] *= 10.0
    assert head.is_ood(far).mean() > 0.9 and head.is_ood(wide).mean() < 0.1
    everything = fit_head(wide, y, "cell_type", groups=groups)
    assert everything.ood_location.shape[1] == 20 and everything.is_ood(moved).all()
    # stored and read back with its width
    torch.manual_seed(0)
    config = NuCLRConfig.from_dict({**TINY.to_dict(), "dim": 20, "num_heads": 2})
    bundle = ModelBundle.from_modules("nuclr", config, build_encoder(config), build_projector(config), name="w")
    bundle.add_head(head)
    loaded = ModelBundle.load(bundle.save(tmp_path / "m.safetensors")).heads["cell_type"]
    np.testing.assert_array_equal(loaded.ood_score(moved), head.ood_score(wide))
    for bad in (0, 21, 2.5, True):
        with pytest.raises(ValueError, match="ood_columns"):
            fit_head(wide, y, "cell_type", groups=groups, ood_columns=bad)
