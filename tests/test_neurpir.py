import numpy as np
import pytest
import torch
from conftest import make_analyzer

from spikeinterface_neuronid.bundle import ModelBundle
from spikeinterface_neuronid.data import SpikeTrainSet
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
