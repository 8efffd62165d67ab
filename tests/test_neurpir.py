import numpy as np
import pytest
import torch
from conftest import make_analyzer

from spikeinterface_neuronid.bundle import ModelBundle
from spikeinterface_neuronid.data import SpikeTrainSet
from spikeinterface_neuronid.inference import MissingCovariatesWarning
from spikeinterface_neuronid.methods import ViewBatch, available_methods, get_method
from spikeinterface_neuronid.methods import neurpir
from spikeinterface_neuronid.methods.neurpir import (
    NeurPIRConfig,
    build_encoder,
    build_projector,
    crop_segments,
    draw_segment_length,
    vicreg_loss,
    vicreg_terms,
)
from spikeinterface_neuronid.simulation import CELL_TYPES, EVALUATION_ANIMALS
from spikeinterface_neuronid.training import pretrain

# 1 s windows of 50 bins; segments of 10-50 bins
TINY = NeurPIRConfig(dim=8, channels=8, token_bins=10, window_tokens=5, min_segment_bins=10, max_segment_bins=50)


def _counts(batch, units, bins, seed=1):
    g = torch.Generator().manual_seed(seed)
    rates = torch.rand(batch, units, 1, generator=g) * 2
    return torch.poisson(rates.expand(batch, units, bins).contiguous(), generator=g)


def test_registered_and_config_round_trip():
    assert "neurpir" in available_methods() and get_method("neurpir") is neurpir
    for config in (NeurPIRConfig.cpu(), NeurPIRConfig.paper(), TINY, NeurPIRConfig(num_covariates=2)):
        assert NeurPIRConfig.from_dict(config.to_dict()) == config
    cfg = NeurPIRConfig.cpu()
    assert (cfg.bin_s, cfg.inv_weight, cfg.var_weight, cfg.cov_weight, cfg.gamma, cfg.eps) == (0.02, 25, 25, 1, 1, 1e-4)
    assert cfg.projector_dim == 4 * cfg.dim and cfg.window_spec.window_bins == 500
    with pytest.raises(ValueError, match="unknown NeurPIR config keys"):
        NeurPIRConfig.from_dict({"dimm": 3})
    with pytest.raises(ValueError, match="min_segment_bins"):
        NeurPIRConfig(min_segment_bins=5)


def test_vicreg_invariance_zero_for_identical_views():
    z = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    terms = vicreg_terms(z, z.clone())
    assert float(terms["inv"]) == 0.0
    assert float(vicreg_loss(z, z)) == pytest.approx(25 * float(terms["var"]) + float(terms["cov"]))


def test_vicreg_variance_penalises_collapse():
    z = torch.ones(32, 8)
    terms = vicreg_terms(z, z, gamma=1.0, eps=1e-4)
    assert float(terms["var"]) == pytest.approx(1.0 - 1e-2)  # gamma - sqrt(eps)
    wide = torch.randn(4096, 8, generator=torch.Generator().manual_seed(0)) * 3
    assert float(vicreg_terms(wide, wide)["var"]) == 0.0


def test_vicreg_covariance_zero_for_decorrelated():
    # orthogonal, zero-mean columns: exactly decorrelated dimensions
    h = torch.tensor([[1.0, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]])
    z = h[:, 1:] * 2
    assert float(vicreg_terms(z, z)["cov"]) == pytest.approx(0.0, abs=1e-7)
    correlated = torch.cat((z[:, :1], z[:, :1]), dim=1)
    assert float(vicreg_terms(correlated, correlated)["cov"]) > 0


def test_encoder_shapes_padding_and_independence():
    torch.manual_seed(0)
    enc = build_encoder(TINY).eval()
    counts = _counts(2, 5, 50)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    out = enc(counts, mask)
    assert out.shape == (2, 5, 8)
    assert torch.all(out[1, 2:] == 0)
    # each unit encoded on its own: a unit's vector does not depend on the other units
    alone = enc(counts[:1, 1:2], torch.ones(1, 1, dtype=torch.bool))
    torch.testing.assert_close(alone[0, 0], out[0, 1], atol=1e-5, rtol=1e-5)
    # adaptive pooling: any length >= the receptive field works
    assert enc(_counts(1, 3, 17), torch.ones(1, 3, dtype=torch.bool)).shape == (1, 3, 8)


def test_covariates_change_the_output():
    cfg = NeurPIRConfig(**{**TINY.to_dict(), "num_covariates": 2})
    torch.manual_seed(0)
    enc = build_encoder(cfg).eval()
    counts, mask = _counts(2, 3, 50), torch.ones(2, 3, dtype=torch.bool)
    cov = torch.randn(2, 50, 2, generator=torch.Generator().manual_seed(3))
    base = enc(counts, mask)
    torch.testing.assert_close(base, enc(counts, mask, torch.zeros(2, 50, 2)))  # None means zeros
    assert not torch.allclose(base, enc(counts, mask, cov))
    with pytest.raises(ValueError, match="covariates must have shape"):
        enc(counts, mask, torch.zeros(2, 49, 2))


def test_segment_lengths_vary_between_draws():
    g = torch.Generator().manual_seed(0)
    lengths = {draw_segment_length(TINY, 50, g) for _ in range(50)}
    assert len(lengths) > 5 and min(lengths) >= 10 and max(lengths) <= 50
    series = torch.arange(40.0).repeat(3, 1)
    crop = crop_segments(series, 7, g)
    assert crop.shape == (3, 7)
    assert torch.all(crop[:, 1:] - crop[:, :-1] == 1)  # contiguous segments


def test_loss_runs_and_backpropagates():
    torch.manual_seed(0)
    enc, proj = build_encoder(TINY), build_projector(TINY)
    counts1, counts2 = _counts(2, 4, 50, 1), _counts(2, 4, 50, 2)
    units = torch.arange(4).repeat(2, 1)
    mask = torch.ones(2, 4, dtype=torch.bool)
    batch = ViewBatch(counts1, mask, units, counts2, mask, units.flip(1))
    value = neurpir.loss(enc, proj, batch, TINY)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert enc.read_in.weight.grad is not None


def _corpus(num_sessions=2, num_units=8, duration=30.0, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(num_sessions):
        rates = rng.uniform(2, 30, num_units)
        trains = [np.sort(rng.uniform(0, duration, rng.poisson(r * duration))) for r in rates]
        out.append(SpikeTrainSet(trains, duration))
    return out


def test_pretrain_bundle_round_trip_and_extension(tmp_path):
    kwargs = dict(
        method="neurpir",
        config=TINY,
        steps=4,
        batch_size=2,
        max_units=8,
        max_shift_s=5.0,
        warmup_steps=1,
        progress_bar=False,
        num_threads=1,
    )
    bundle, history = pretrain(_corpus(), **kwargs)
    assert bundle.method == "neurpir" and len(history["loss"]) == 4
    # the random segment lengths come from the seeded RNG: same seed, same weights
    assert pretrain(_corpus(), **kwargs)[0].sha256 == bundle.sha256
    assert all(np.isfinite(history["loss"]))
    path = tmp_path / "neurpir.safetensors"
    bundle.save(path)
    loaded = ModelBundle.load(path)
    assert loaded.method == "neurpir" and loaded.config == TINY and loaded.sha256 == bundle.sha256
    for key, value in bundle.state_dict.items():
        torch.testing.assert_close(loaded.state_dict[key], value)

    analyzer = make_analyzer(num_units=6, duration=8.0)
    ext = analyzer.compute("neuron_embedding", model=str(path), progress_bar=False)
    emb = ext.get_data()
    assert emb.shape == (6, TINY.dim) and np.all(np.isfinite(emb))
    assert ext.params["method"] == "neurpir"


# ----------------------------------------------------------------------------------------------------------
# surrounding information (covariates) in training and inference; the shipped NeurPIR default model
# ----------------------------------------------------------------------------------------------------------

TINY_COV = NeurPIRConfig(**{**TINY.to_dict(), "num_covariates": 2})


def _cov_corpus(num_sessions=2, num_units=6, duration=12.0, rate_hz=100.0, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(num_sessions):
        trains = [np.sort(rng.uniform(0, duration, rng.poisson(15 * duration))) for _ in range(num_units)]
        cov = rng.normal(size=(int(duration * rate_hz), 2))
        out.append(SpikeTrainSet(trains, duration, covariates=cov, covariate_rate_hz=rate_hz))
    return out


def test_covariates_are_validated_and_binned():
    cov = np.arange(40.0).reshape(20, 2)  # 2 s at 10 Hz
    trains = SpikeTrainSet([np.array([0.5])], 2.0, covariates=cov, covariate_rate_hz=10.0)
    assert trains.num_covariates == 2 and SpikeTrainSet([np.array([0.5])], 2.0).num_covariates == 0
    binned = trains.bin_covariates(0.2, 3, 0.4)  # bins [0.2, 0.6), [0.6, 1.0), [1.0, 1.4): samples 2-5, 6-9, 10-13
    assert binned.dtype == np.float32 and binned.shape == (3, 2)
    np.testing.assert_allclose(binned, [cov[2:6].mean(0), cov[6:10].mean(0), cov[10:14].mean(0)])
    # bins shorter than a sample take the sample covering them
    np.testing.assert_allclose(trains.bin_covariates(0.05, 2, 0.05), [cov[0], cov[1]])
    for kwargs, match in [
        (dict(covariates=cov[:15], covariate_rate_hz=10.0), "cover the duration"),
        (dict(covariates=cov, covariate_rate_hz=0.0), "positive"),
        (dict(covariates=cov[:, 0], covariate_rate_hz=10.0), "2-D"),
        (dict(covariates=np.where(cov > 30, np.nan, cov), covariate_rate_hz=10.0), "non-finite"),
        (dict(covariates=cov), "together"),
    ]:
        with pytest.raises(ValueError, match=match):
            SpikeTrainSet([np.array([0.5])], 2.0, **kwargs)
    with pytest.raises(ValueError, match="no covariates"):
        SpikeTrainSet([np.array([0.5])], 2.0).bin_covariates(0.0, 2, 0.1)


def test_training_batches_carry_covariates_and_neurpir_uses_them():
    from spikeinterface_neuronid.data import sample_view_pair
    from spikeinterface_neuronid.training import collate_view_pairs, draw_view_pairs

    corpus = _cov_corpus()
    spec = TINY_COV.window_spec
    pairs = draw_view_pairs(np.random.default_rng(0), corpus, spec, 3, max_shift_s=2.0)
    batch = collate_view_pairs(pairs)
    assert batch.covariates1.shape == (3, spec.window_bins, 2) and batch.covariates2.shape == (3, spec.window_bins, 2)
    torch.testing.assert_close(batch.covariates1[0], torch.from_numpy(pairs[0].covariates1))
    # a pair's covariates are its window's, binned like the counts
    rng = np.random.default_rng(5)
    pair = sample_view_pair(rng, corpus[0], spec, max_shift_s=2.0)
    start = np.random.default_rng(5).uniform(0.0, corpus[0].duration - spec.window_s)
    np.testing.assert_allclose(pair.covariates1, corpus[0].bin_covariates(start, spec.window_bins, spec.bin_s))
    # without covariates: None (NuCLR batches unchanged)
    plain = collate_view_pairs(draw_view_pairs(np.random.default_rng(0), _corpus(), spec, 2, max_shift_s=2.0))
    assert plain.covariates1 is None and plain.covariates2 is None
    # the NeurPIR loss depends on the covariates
    torch.manual_seed(0)
    enc, proj = build_encoder(TINY_COV), build_projector(TINY_COV)
    proj.eval()
    losses = []
    for scale in (1.0, 0.0):
        b = ViewBatch(*(getattr(batch, f) for f in ("counts1", "mask1", "units1", "counts2", "mask2", "units2")),
                      batch.covariates1 * scale, batch.covariates2 * scale)
        losses.append(float(neurpir.loss(enc, proj, b, TINY_COV, generator=torch.Generator().manual_seed(1)).detach()))
    assert losses[0] != losses[1]
    bundle, history = pretrain(corpus, method="neurpir", config=TINY_COV, steps=2, batch_size=2, max_units=6,
                               max_shift_s=2.0, warmup_steps=1, progress_bar=False, num_threads=1)
    assert bundle.config.num_covariates == 2 and np.all(np.isfinite(history["loss"]))


def test_covariates_change_neurpir_embeddings_through_embed_populations():
    from spikeinterface_neuronid.inference import embed_populations

    torch.manual_seed(0)
    bundle, _ = pretrain(_cov_corpus(), method="neurpir", config=TINY_COV, steps=1, batch_size=2, max_units=6,
                         max_shift_s=2.0, warmup_steps=1, progress_bar=False, num_threads=1)
    segment = _cov_corpus(num_sessions=1, seed=3)[0]
    with_cov = embed_populations(bundle, [segment]).embedding
    other = SpikeTrainSet(segment.spike_times, segment.duration, covariates=segment.covariates * 3 + 1,
                          covariate_rate_hz=segment.covariate_rate_hz)
    assert not np.allclose(with_cov, embed_populations(bundle, [other]).embedding)
    bare = SpikeTrainSet(segment.spike_times, segment.duration)
    zeros = SpikeTrainSet(segment.spike_times, segment.duration, covariates=np.zeros_like(segment.covariates),
                          covariate_rate_hz=segment.covariate_rate_hz)
    with pytest.warns(MissingCovariatesWarning, match="none given, zeros used"):
        no_cov = embed_populations(bundle, [bare]).embedding
    np.testing.assert_allclose(no_cov, embed_populations(bundle, [zeros]).embedding, rtol=1e-6, atol=1e-6)
    wrong = SpikeTrainSet(segment.spike_times, segment.duration, covariates=segment.covariates[:, :1],
                          covariate_rate_hz=segment.covariate_rate_hz)
    with pytest.raises(ValueError, match="takes 2 covariates"):
        embed_populations(bundle, [wrong])


def test_simulated_session_gives_stimulus_covariates():
    from spikeinterface_neuronid.simulation import simulate_session

    session = simulate_session("easy", animal=0, num_neurons=20, duration_s=12.0)
    trains = session.to_spike_train_set()
    assert trains.num_units == session.num_units and trains.covariate_rate_hz == session.stimulus_rate_hz
    np.testing.assert_allclose(trains.bin_covariates(0.0, 1, 0.02)[0], session.stimulus[:4].mean(0), rtol=1e-6)
    assert session.to_spike_train_set(covariates=False).covariates is None


def test_compute_with_method_neurpir_uses_the_shipped_model(tmp_path):
    from spikeinterface_neuronid.models import default_model_path

    shipped = ModelBundle.load(default_model_path("neurpir"))
    analyzer = make_analyzer(num_units=5, duration=12.0, format="binary_folder", folder=tmp_path / "a")
    with pytest.warns(MissingCovariatesWarning, match="none given, zeros used"):
        ext = analyzer.compute("neuron_embedding", method="neurpir", progress_bar=False)
    assert ext.params["method"] == "neurpir" and ext.params["model"] == "default"
    assert ext.params["model_sha256"] == shipped.sha256
    emb = ext.get_data()
    assert emb.shape == (5, shipped.config.dim)
    # an explicit model path with a mismatching method is rejected before the result is touched
    with pytest.raises(ValueError, match="does not match the model"):
        analyzer.compute("neuron_embedding", model=str(default_model_path("neurpir")), method="nuclr")
    with pytest.raises(ValueError, match="no default model for method"):
        analyzer.compute("neuron_embedding", method="cebra")
    kept = analyzer.get_extension("neuron_embedding")
    np.testing.assert_array_equal(kept.get_data(), emb)
    assert kept.params["method"] == "neurpir"
    # reloading and selecting keep working with the stored params (which record the method)
    import spikeinterface.core as si

    reloaded = si.load_sorting_analyzer(tmp_path / "a").get_extension("neuron_embedding")
    np.testing.assert_array_equal(reloaded.get_data(), emb)
    sub = analyzer.select_units(analyzer.unit_ids[:3]).get_extension("neuron_embedding")
    np.testing.assert_array_equal(sub.get_data(), emb[:3])


def test_shipped_neurpir_model_scores_and_card_agree():
    import hashlib
    import json

    from spikeinterface_neuronid.models import default_model_path

    path = default_model_path("neurpir")
    assert path.name == "neuronid-neurpir-default.safetensors" and path.stat().st_size <= 2 * 1024 * 1024
    bundle = ModelBundle.load(path)
    assert bundle.method == "neurpir" and bundle.config.num_covariates == 2
    scores = json.loads((path.parent / "neurpir_default_scores.json").read_text())
    assert scores["model_sha256"] == bundle.sha256 and scores["method"] == "neurpir"
    assert scores["eval_animals"] == list(EVALUATION_ANIMALS)
    assert not set(scores["train_animals"]) & set(scores["eval_animals"])
    probe, baseline = scores["probe"], scores["baseline_log_rate_probe"]
    assert probe["classes"] == sorted(CELL_TYPES) and np.sum(probe["confusion"]) == scores["num_probe_test_units"]
    assert probe["macro_f1"] == pytest.approx(np.mean([probe["per_class"][c]["f1"] for c in probe["classes"]]))
    # recorded 0.917 against the log-rate baseline's 0.431 (chance 0.2)
    assert probe["macro_f1"] > 0.8 and probe["macro_f1"] > baseline["macro_f1"] + 0.3
    card = (path.parent / "neuronid-neurpir-default.md").read_text()
    assert bundle.sha256 in card and f"{scores['probe']['macro_f1']:.3f}" in card
    assert scores["file_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert scores["file_sha256"] in card
    assert default_model_path() == default_model_path("nuclr") != path
