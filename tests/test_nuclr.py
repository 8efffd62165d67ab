import math

import numpy as np
import pytest
import torch

from spikeinterface_neuronid.methods import ViewBatch, available_methods, get_method
from spikeinterface_neuronid.methods import nuclr
from spikeinterface_neuronid.methods.nuclr import NuCLRConfig, build_encoder, build_projector, contrastive_loss

TINY = NuCLRConfig.window(
    dim=16, num_heads=2, temporal_layers=1, spatiotemporal_layers=1, token_bins=5, window_tokens=4
)
BINS = TINY.token_bins * TINY.window_tokens


def _encoder(config: NuCLRConfig = TINY, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_encoder(config).eval()


def _counts(batch: int, units: int, bins: int = BINS, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    rates = torch.rand(batch, units, 1, generator=g) * 2
    return torch.poisson(rates.expand(batch, units, bins).contiguous(), generator=g)


# -- registry and config -------------------------------------------------------------------------------------


def test_registry_returns_the_method_module():
    method = get_method("nuclr")
    assert method is nuclr and method.NAME == "nuclr" and method.Config is NuCLRConfig
    assert "nuclr" in available_methods()
    with pytest.raises(ValueError, match="unknown method 'nope'.*nuclr"):
        get_method("nope")


def test_config_json_round_trip_and_presets():
    for config in (NuCLRConfig.cpu(), NuCLRConfig.paper(), TINY, NuCLRConfig(input_transform="log1p")):
        assert NuCLRConfig.from_dict(config.to_dict()) == config
    paper = NuCLRConfig.paper()
    assert (paper.dim, paper.num_heads, paper.temporal_layers, paper.spatiotemporal_layers, paper.ff_mult) == (
        256,
        4,
        2,
        2,
        4,
    )
    assert NuCLRConfig.cpu().window_spec.window_bins == 500
    # missing keys take defaults
    assert NuCLRConfig.from_dict({"dim": 32}).dim == 32


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match=r"unknown NuCLR config keys \['dimm'\]"):
        NuCLRConfig.from_dict({"dimm": 32})
    with pytest.raises(ValueError, match="num_heads"):
        NuCLRConfig(dim=30, num_heads=4)
    with pytest.raises(ValueError, match="input_transform"):
        NuCLRConfig(input_transform="zscore")
    with pytest.raises(ValueError, match="dropout"):
        NuCLRConfig(dropout=1.0)


def test_parameter_counts_of_presets():
    def count(module):
        return sum(p.numel() for p in module.parameters())

    paper = NuCLRConfig.paper()
    # the reference model: read-in 13,056 + 6 attention/FFN pairs; projector 132,096 (~6.46 M in all)
    assert count(build_encoder(paper)) == 6_330_624
    assert count(build_projector(paper)) == 132_096
    assert count(build_encoder(NuCLRConfig.window())) == 128_640


# -- encoder -------------------------------------------------------------------------------------------------


def test_permuting_units_permutes_the_output_with_padding():
    encoder = _encoder()
    counts = _counts(2, 6)
    mask = torch.tensor([[True, False, True, True, False, True], [True] * 6])
    counts[~mask] = 7.0  # garbage in padded rows
    out = encoder(counts, mask)
    perm = torch.tensor([3, 5, 0, 4, 1, 2])
    out_perm = encoder(counts[:, perm], mask[:, perm])
    torch.testing.assert_close(out_perm, out[:, perm], atol=1e-5, rtol=1e-5)
    assert torch.all(out[~mask] == 0)


def test_padded_units_do_not_change_real_outputs():
    encoder = _encoder()
    counts = _counts(1, 3)
    alone = encoder(counts, torch.ones(1, 3, dtype=torch.bool))
    padded_counts = torch.cat((counts, torch.full((1, 4, BINS), 9.0)), dim=1)
    mask = torch.tensor([[True] * 3 + [False] * 4])
    padded = encoder(padded_counts, mask)
    torch.testing.assert_close(padded[:, :3], alone, atol=1e-6, rtol=1e-6)
    # batched with a wider sample: the same result
    other = _counts(1, 7, seed=5)
    batched = encoder(torch.cat((padded_counts, other)), torch.cat((mask, torch.ones(1, 7, dtype=torch.bool))))
    torch.testing.assert_close(batched[:1, :3], alone, atol=1e-6, rtol=1e-6)


def test_population_context_changes_a_units_embedding():
    encoder = _encoder()
    counts = _counts(1, 4)
    mask = torch.ones(1, 4, dtype=torch.bool)
    changed = counts.clone()
    changed[0, 1:] = torch.flip(changed[0, 1:], dims=[-1]) + 3
    a, b = encoder(counts, mask)[0, 0], encoder(changed, mask)[0, 0]
    assert not torch.allclose(a, b, atol=1e-4), "spatial attention does not reach other units"


def test_token_order_matters_through_rotary_encoding():
    encoder = _encoder()
    counts = _counts(1, 3).view(1, 3, TINY.window_tokens, TINY.token_bins)
    mask = torch.ones(1, 3, dtype=torch.bool)
    forward = encoder(counts.reshape(1, 3, BINS), mask)
    reversed_tokens = encoder(counts.flip(2).reshape(1, 3, BINS), mask)
    assert not torch.allclose(forward, reversed_tokens, atol=1e-4)


@pytest.mark.parametrize("units", [1, 2, 5, 40])
def test_any_number_of_units(units):
    out = _encoder()(_counts(2, units), torch.ones(2, units, dtype=torch.bool))
    assert out.shape == (2, units, TINY.dim) and torch.isfinite(out).all()


@pytest.mark.parametrize("tokens", [1, 2, 4, 7])
def test_any_number_of_tokens(tokens):
    out = _encoder()(_counts(2, 3, bins=tokens * TINY.token_bins), torch.ones(2, 3, dtype=torch.bool))
    assert out.shape == (2, 3, TINY.dim) and torch.isfinite(out).all()


def test_bad_inputs_are_rejected():
    encoder = _encoder()
    with pytest.raises(ValueError, match="whole number"):
        encoder(_counts(1, 3, bins=BINS + 1), torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="unit_mask"):
        encoder(_counts(1, 3), torch.ones(1, 4, dtype=torch.bool))


def test_fully_padded_sample_gives_zeros_and_finite_gradients():
    encoder = build_encoder(TINY).train()
    counts = _counts(2, 4)
    mask = torch.tensor([[True, True, False, False], [False] * 4])
    out = encoder(counts, mask)
    assert torch.isfinite(out).all() and torch.all(out[1] == 0)
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)


def _read_in_input(encoder, counts, mask) -> tuple[torch.Tensor, torch.Tensor]:
    """What the token read-in layer receives (``(real units, tokens, token_bins)``) and the output."""
    seen = []
    handle = encoder.read_in.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    try:
        out = encoder(counts, mask)
    finally:
        handle.remove()
    assert len(seen) == 1
    return seen[0], out


def test_log1p_transform_feeds_log1p_of_the_counts():
    config = NuCLRConfig.from_dict({**TINY.to_dict(), "input_transform": "log1p"})
    log_encoder, raw_encoder = _encoder(config), _encoder(TINY)  # same seed: same weights
    counts = _counts(2, 3) * 3  # counts up to ~20, where log1p differs from the counts
    mask = torch.tensor([[True, False, True], [True, True, True]])
    tokens = counts.numpy().reshape(2, 3, TINY.window_tokens, TINY.token_bins)[mask.numpy()]
    assert tokens.max() >= 10
    fed, out = _read_in_input(log_encoder, counts, mask)
    np.testing.assert_allclose(fed.numpy(), np.log1p(tokens), rtol=1e-6, atol=0)
    raw_fed, raw_out = _read_in_input(raw_encoder, counts, mask)
    np.testing.assert_array_equal(raw_fed.numpy(), tokens)
    # the rest of the encoder is the same: log1p counts through the raw encoder give the same embeddings
    torch.testing.assert_close(out, raw_encoder(torch.log1p(counts), mask))
    assert (out - raw_out).abs().max() > 1e-3


# -- loss ----------------------------------------------------------------------------------------------------


def _reference_loss(z1, z2, units1, units2, tau, scale_within_view=True):
    """Per-sample loop of NuCLR's sw_dcl (full denominator), no padding."""
    total, weights = 0.0, 0
    for b in range(z1.shape[0]):
        x1 = torch.nn.functional.normalize(z1[b], dim=-1)
        x2 = torch.nn.functional.normalize(z2[b], dim=-1)
        pairs = [(i, j) for i in range(len(units1[b])) for j in range(len(units2[b])) if units1[b][i] == units2[b][j]]
        if not pairs:
            continue
        m0, m1 = torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
        sim12 = x1 @ x2.T / tau
        numer = 1 / tau - sim12[m0, m1].mean()
        sim12[m0, m1] = float("-inf")
        div = tau if scale_within_view else 1.0
        sim11 = (x1 @ x1.T / div).fill_diagonal_(float("-inf"))
        sim22 = (x2 @ x2.T / div).fill_diagonal_(float("-inf"))
        sim1 = torch.cat((sim12, sim11), dim=1)[m0]
        sim2 = torch.cat((sim12.T, sim22), dim=1)[m1]
        denom = 0.5 * (
            (sim1.logsumexp(1) - math.log(sim1.shape[1])).mean() + (sim2.logsumexp(1) - math.log(sim2.shape[1])).mean()
        )
        total = total + len(pairs) * (numer + denom)
        weights += len(pairs)
    return total / weights


@pytest.mark.parametrize("scale_within_view", [True, False])
def test_loss_matches_per_sample_reference(scale_within_view):
    torch.manual_seed(0)
    z1, z2 = torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    units1 = torch.tensor([[0, 1, 2, 3, 4, 5], [3, 4, 5, 7, 8, 9]])
    units2 = torch.tensor([[5, 1, 9, 0, 2, 11], [9, 3, 12, 13, 14, 15]])
    mask = torch.ones(2, 6, dtype=torch.bool)
    got = contrastive_loss(z1, mask, units1, z2, mask, units2, 0.2, scale_within_view=scale_within_view)
    want = _reference_loss(z1, z2, units1.tolist(), units2.tolist(), 0.2, scale_within_view)
    torch.testing.assert_close(got, want)


def test_loss_ignores_padding():
    torch.manual_seed(0)
    z1, z2 = torch.randn(1, 4, 8), torch.randn(1, 3, 8)
    u1, u2 = torch.tensor([[0, 1, 2, 3]]), torch.tensor([[2, 0, 7]])
    base = contrastive_loss(z1, torch.ones(1, 4, dtype=torch.bool), u1, z2, torch.ones(1, 3, dtype=torch.bool), u2)
    z1p = torch.cat((z1, 50 * torch.randn(1, 2, 8)), dim=1)
    z2p = torch.cat((z2, 50 * torch.randn(1, 3, 8)), dim=1)
    m1 = torch.tensor([[True] * 4 + [False] * 2])
    m2 = torch.tensor([[True] * 3 + [False] * 3])
    u1p = torch.cat((u1, torch.tensor([[-1, 0]])), dim=1)  # padded rows may even repeat a real index
    u2p = torch.cat((u2, torch.tensor([[-1, -1, 1]])), dim=1)
    torch.testing.assert_close(contrastive_loss(z1p, m1, u1p, z2p, m2, u2p), base)


def test_matched_identical_embeddings_beat_shuffled_ones():
    torch.manual_seed(0)
    z = torch.randn(3, 10, 16)
    units = torch.arange(10).repeat(3, 1)
    mask = torch.ones(3, 10, dtype=torch.bool)
    matched = contrastive_loss(z, mask, units, z.clone(), mask, units)
    shuffled = contrastive_loss(z, mask, units, z[:, torch.randperm(10)], mask, units)
    assert matched < shuffled - 1.0


def test_single_matched_pair_gives_a_finite_loss_and_gradient():
    z1 = torch.randn(1, 1, 8, requires_grad=True)
    z2 = torch.randn(1, 1, 8, requires_grad=True)
    mask = torch.ones(1, 1, dtype=torch.bool)
    loss = contrastive_loss(z1, mask, torch.tensor([[4]]), z2, mask, torch.tensor([[4]]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()


def test_no_matched_pair_gives_zero_loss():
    z1 = torch.randn(1, 2, 8, requires_grad=True)
    mask = torch.ones(1, 2, dtype=torch.bool)
    loss = contrastive_loss(z1, mask, torch.tensor([[0, 1]]), torch.randn(1, 2, 8), mask, torch.tensor([[2, 3]]))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(z1.grad == 0)


def test_method_loss_on_a_view_batch():
    torch.manual_seed(0)
    encoder, projector = build_encoder(TINY), build_projector(TINY)
    batch = ViewBatch(
        counts1=_counts(2, 5),
        mask1=torch.tensor([[True] * 5, [True] * 3 + [False] * 2]),
        units1=torch.tensor([[0, 1, 2, 3, 4], [0, 2, 4, -1, -1]]),
        counts2=_counts(2, 3, seed=2),
        mask2=torch.ones(2, 3, dtype=torch.bool),
        units2=torch.tensor([[1, 3, 5], [4, 0, 1]]),
    )
    loss = nuclr.loss(encoder, projector, batch, TINY)
    loss.backward()
    assert torch.isfinite(loss)
    assert encoder.read_in.weight.grad is not None and torch.isfinite(encoder.read_in.weight.grad).all()
