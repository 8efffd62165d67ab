"""Span-context NuCLR: encoder symmetries, config compatibility, span views, training and inference end to end."""

import numpy as np
import pytest
import torch

from spikeinterface_neuronid.bundle import ModelBundle
from spikeinterface_neuronid.data import SpikeTrainSet, waveform_input
from spikeinterface_neuronid.inference import embed_populations, span_boundaries
from spikeinterface_neuronid.methods.nuclr import NuCLRConfig, build_encoder, build_projector
from spikeinterface_neuronid.span_views import SpanViewSettings, _disjoint_spans, sample_span_pair
from spikeinterface_neuronid.spike_stats import chunk_statistics
from spikeinterface_neuronid.training import collate_view_pairs, pretrain

# small but complete: 1 s windows of 10 x 100 ms bins, 10 s chunks, spans up to 30 s
TINY = NuCLRConfig.cpu(
    dim=16,
    num_heads=2,
    ff_mult=1,
    projector_dim=16,
    edge_dim=4,
    bin_s=0.02,
    token_bins=10,
    window_tokens=5,
    chunk_s=10.0,
    max_span_s=30.0,
    max_lag_bins=5,
)


def _population(num_units=12, duration=60.0, seed=0, rate=8.0):
    rng = np.random.default_rng(seed)
    shared = np.sort(rng.uniform(0, duration, int(rate * duration)))
    trains = []
    for u in range(num_units):
        own = rng.uniform(0, duration, rng.poisson(rate * duration * 0.7))
        borrowed = shared[rng.random(shared.size) < (0.5 if u < num_units // 2 else 0.0)] + 0.02 * (u % 3)
        trains.append(np.sort(np.clip(np.concatenate([own, borrowed]), 0, duration - 1e-6)))
    waveforms = np.array([-np.exp(-0.5 * ((np.arange(90) - 30) / (3 + u % 4)) ** 2) for u in range(num_units)])
    return SpikeTrainSet(trains, duration, waveforms=waveforms)


def _inputs(config, trains, units):
    stats = chunk_statistics(
        trains,
        config.stats_spec,
        relational=config.relational,
        starts=np.array([0.0]),
        stops=np.array([trains.duration]),
    )
    from spikeinterface_neuronid.span_views import span_unit_inputs

    ui, edges = span_unit_inputs(
        stats, slice(0, 1), units, trains, config.relational, config.fine_channel, config.waveform_channel
    )
    counts = trains.bin(0.0, 2 * config.window_spec.window_bins, config.bin_s, units)
    return (
        torch.from_numpy(counts)[None],
        torch.ones(1, len(units), dtype=torch.bool),
        torch.from_numpy(ui)[None],
        None if edges is None else torch.from_numpy(edges)[None],
    )


def _encoder(config=TINY, seed=0):
    torch.manual_seed(seed)
    return build_encoder(config).eval()


def test_old_config_dicts_load_as_window_models_and_new_ones_round_trip():
    legacy = {
        k: v
        for k, v in NuCLRConfig.window().to_dict().items()
        if k not in ("context", "fine_channel", "relational", "waveform_channel", "relational_layers")
    }
    assert NuCLRConfig.from_dict(legacy) == NuCLRConfig.window()
    for config in (NuCLRConfig.cpu(), TINY, NuCLRConfig.cpu(relational=False), NuCLRConfig.cpu(fine_channel=False)):
        assert NuCLRConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="context='span'"):
        NuCLRConfig.window(relational=True)
    with pytest.raises(ValueError, match="chunk_s"):
        NuCLRConfig.cpu(chunk_s=5.0)  # shorter than a 10 s window


def test_span_encoder_is_permutation_equivariant():
    trains = _population()
    units = np.arange(trains.num_units)
    counts, mask, ui, edges = _inputs(TINY, trains, units)
    enc = _encoder()
    out = enc(counts, mask, ui, edges)[0]
    perm = torch.from_numpy(np.random.default_rng(0).permutation(len(units)))
    permuted = enc(counts[:, perm], mask, ui[:, perm], edges[:, perm][:, :, perm])[0]
    torch.testing.assert_close(permuted, out[perm], rtol=1e-4, atol=1e-5)


def test_padding_does_not_change_real_units():
    trains = _population()
    units = np.arange(trains.num_units)
    counts, mask, ui, edges = _inputs(TINY, trains, units)
    enc = _encoder()
    out = enc(counts, mask, ui, edges)
    pad = 3
    padded = enc(
        torch.nn.functional.pad(counts, [0, 0, 0, pad]),
        torch.nn.functional.pad(mask, [0, pad], value=False),
        torch.nn.functional.pad(ui, [0, 0, 0, pad]),
        torch.nn.functional.pad(edges, [0, 0, 0, pad, 0, pad]),
    )
    torch.testing.assert_close(padded[:, : len(units)], out, rtol=1e-4, atol=1e-5)
    assert torch.all(padded[:, len(units) :] == 0)


def test_relational_channel_changes_embeddings_and_ablations_build():
    trains = _population()
    units = np.arange(trains.num_units)
    counts, mask, ui, edges = _inputs(TINY, trains, units)
    enc = _encoder()
    out = enc(counts, mask, ui, edges)
    assert not torch.allclose(out, enc(counts, mask, ui, torch.zeros_like(edges)))
    for ablation in (
        dict(relational=False),
        dict(relational=False, relational_layers=0),
        dict(fine_channel=False, waveform_channel=False),
    ):
        config = NuCLRConfig.from_dict({**TINY.to_dict(), **ablation})
        c, m, u, e = _inputs(config, trains, units)
        assert u.shape[-1] == config.num_unit_inputs
        assert _encoder(config)(c, m, u, e).shape == (1, len(units), config.embedding_dim)
    with pytest.raises(ValueError, match="edges"):
        enc(counts, mask, ui, None)
    with pytest.raises(ValueError, match="unit_inputs"):
        enc(counts, mask, ui[..., :-1], edges)


def test_waveforms_are_used_when_present_and_replaced_when_missing():
    trains = _population()
    units = np.arange(trains.num_units)
    wave, present = waveform_input(trains, units)
    assert present.all() and np.allclose(wave.min(axis=1), -1.0, atol=0.05)
    counts, mask, ui, edges = _inputs(TINY, trains, units)
    hidden = ui.clone()
    hidden[..., -1] = 0.0
    enc = _encoder()
    with_waves, without = enc(counts, mask, ui, edges), enc(counts, mask, hidden, edges)
    assert not torch.allclose(with_waves, without)
    hidden[..., -1 - wave.shape[1] : -1] = 123.0  # a hidden waveform's values are never read
    torch.testing.assert_close(enc(counts, mask, hidden, edges), without)


def test_span_views_are_disjoint_and_follow_the_settings():
    trains = _population(duration=60.0)
    stats = chunk_statistics(trains, TINY.stats_spec).to_cumulative()
    settings = SpanViewSettings.from_config(TINY, small_view_probability=0.0)
    rng = np.random.default_rng(0)
    for _ in range(200):
        first, second = _disjoint_spans(rng, 6, 3)
        assert 1 <= first.stop - first.start <= 3 and 1 <= second.stop - second.start <= 3
        assert first.stop <= second.start or second.stop <= first.start
    drawn = [sample_span_pair(rng, trains, stats, TINY.window_spec, settings, max_units=8) for _ in range(30)]
    assert sum(p is not None for p in drawn) >= 20  # None: fewer than 2 units in both views
    for pair in (p for p in drawn if p is not None):
        assert len(pair.units1) <= 8 and len(pair.units2) <= 8
        assert pair.counts1.shape == (len(pair.units1), TINY.windows_per_view * TINY.window_spec.window_bins)
        assert pair.unit_inputs1.shape == (len(pair.units1), TINY.num_unit_inputs)
        assert pair.edges2.shape == (len(pair.units2), len(pair.units2), TINY.num_edge_inputs)
    small = SpanViewSettings.from_config(TINY, small_view_probability=1.0)
    pair = sample_span_pair(rng, trains, stats, TINY.window_spec, small)
    assert np.array_equal(pair.units1, pair.units2) and 2 <= len(pair.units1) <= 10
    one_chunk = chunk_statistics(trains, TINY.stats_spec, starts=np.array([0.0]), stops=np.array([60.0]))
    assert sample_span_pair(rng, trains, one_chunk, TINY.window_spec, settings) is None
    batch = collate_view_pairs(
        [sample_span_pair(np.random.default_rng(s), trains, stats, TINY.window_spec, settings) for s in range(3)]
    )
    assert batch.unit_inputs1.shape[:2] == batch.counts1.shape[:2]
    assert batch.edges1.shape[1] == batch.edges1.shape[2] == batch.counts1.shape[1]


def test_span_boundaries_split_long_segments_into_equal_spans():
    cfg = NuCLRConfig.cpu()
    assert span_boundaries(5.0, cfg) == []
    assert span_boundaries(240.0, cfg) == [(0.0, 240.0, 24)]
    spans = span_boundaries(1800.0, cfg)
    assert len(spans) == 6 and all(abs((b - a) - 300.0) < 1e-9 and w == 30 for a, b, w in spans)
    spans = span_boundaries(301.0, cfg)
    assert len(spans) == 2 and spans[0][1] == pytest.approx(150.5) and spans[0][2] == 15


def test_training_and_inference_end_to_end_are_deterministic():
    corpus = [_population(seed=s) for s in range(2)]
    kwargs = dict(config=TINY, steps=3, batch_size=2, seed=0, num_threads=1, progress_bar=False)
    a, history = pretrain(corpus, **kwargs)
    b, _ = pretrain(corpus, **kwargs)
    assert a.sha256 == b.sha256 and len(history["loss"]) == 3
    loaded = ModelBundle.from_modules("nuclr", TINY, a.encoder(), name="t")
    pop = _population(seed=5)
    first = embed_populations(loaded, [pop], num_threads=1)
    second = embed_populations(loaded, [pop], num_threads=1)
    np.testing.assert_array_equal(first.embedding, second.embedding)
    assert first.embedding.shape == (pop.num_units, TINY.embedding_dim) and np.all(first.embedded)
    # a silent unit has no embedding; population order does not matter for the others
    silent = SpikeTrainSet(pop.spike_times + [np.array([1.0])], pop.duration)
    third = embed_populations(loaded, [silent], num_threads=1)
    assert np.isnan(third.embedding[-1]).all() and not third.embedded[-1]


def test_checkpoint_selection_keeps_the_best_scoring_weights(tmp_path):
    corpus = [_population(seed=s) for s in range(2)]
    scores = iter([0.2, 0.9, 0.1])
    path = tmp_path / "ckpt.safetensors"
    bundle, history = pretrain(
        corpus,
        config=TINY,
        steps=6,
        batch_size=2,
        num_threads=1,
        progress_bar=False,
        checkpoint_every=2,
        checkpoint_score=lambda b: next(scores),
        checkpoint_path=path,
    )
    assert [c["step"] for c in history["checkpoints"]] == [2, 4, 6]
    assert bundle.provenance["training"]["selected_checkpoint"] == dict(step=4, score=0.9)
    assert ModelBundle.load(path).sha256 != bundle.sha256  # the file holds the latest, not the best


def test_projector_is_trained_alongside():
    assert sum(p.numel() for p in build_projector(TINY).parameters()) > 0


class _Lazy(list):
    """A list corpus that announces a cache size, as a lazy corpus does."""

    cache_size = 1


def test_bounded_statistics_cache_gives_the_same_training():
    """The span sampler keeps at most cache_size items' statistics for a lazy corpus; recomputed ones are equal."""
    from spikeinterface_neuronid.training import SpanSampler

    corpus = [_population(seed=s) for s in range(3)]
    sampler = SpanSampler(corpus, TINY, max_cached=1)
    first = sampler.statistics(0)
    sampler.statistics(1)
    assert list(sampler._stats) == [1]
    again = sampler.statistics(0)
    assert again is not first and list(sampler._stats) == [0]
    for name in vars(first):
        a, b = getattr(first, name), getattr(again, name)
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="max_cached must be a positive integer"):
        SpanSampler(corpus, TINY, max_cached=0)
    assert SpanSampler(_Lazy(corpus), TINY).max_cached == 1
    kwargs = dict(config=TINY, steps=3, batch_size=2, seed=0, num_threads=1, progress_bar=False)
    bounded, h1 = pretrain(_Lazy(corpus), **kwargs)
    unbounded, h2 = pretrain(corpus, **kwargs)
    assert bounded.sha256 == unbounded.sha256 and h1["loss"] == h2["loss"]


def test_single_unit_half_is_context_free_and_the_context_half_is_not():
    """With the single-unit path, a unit's second half is the same whoever it is recorded with."""
    trains = _population()
    units = np.arange(trains.num_units)
    enc = _encoder()
    full = enc(*_inputs(TINY, trains, units))[0]
    assert full.shape == (len(units), 2 * TINY.dim)
    few = np.array([1, 4, 9])
    alone = enc(*_inputs(TINY, trains, few))[0]
    half = TINY.dim
    torch.testing.assert_close(alone[:, half:], full[few, half:], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(alone[:, :half], full[few, :half], rtol=1e-3, atol=1e-4)
    # the old layout (no single-unit path) keeps one dim-wide vector per unit
    old = NuCLRConfig.from_dict({**TINY.to_dict(), "single_unit_path": False})
    assert _encoder(old)(*_inputs(old, trains, units)).shape == (1, len(units), TINY.dim)
    # a span-context model saved before the field existed loads without the single-unit path
    saved = {k: v for k, v in TINY.to_dict().items() if k not in ("single_unit_path", "single_path_weight")}
    assert NuCLRConfig.from_dict(saved).single_unit_path is False


def test_single_unit_path_needs_a_context_free_window_path_and_a_valid_weight():
    with pytest.raises(ValueError, match="spatiotemporal_layers=0"):
        NuCLRConfig.cpu(spatiotemporal_layers=1)
    assert NuCLRConfig.cpu(spatiotemporal_layers=1, single_unit_path=False).embedding_dim == 64
    with pytest.raises(ValueError, match="context='span'"):
        NuCLRConfig.window(single_unit_path=True)
    for bad in (-1.0, float("nan"), True, "1"):
        with pytest.raises(ValueError, match="single_path_weight"):
            NuCLRConfig.cpu(single_path_weight=bad)


def _span_batch(num_pairs: int):
    """A collated batch of span view pairs of one 60 s population (no small views)."""
    trains = _population(duration=60.0)
    stats = chunk_statistics(trains, TINY.stats_spec).to_cumulative()
    settings = SpanViewSettings.from_config(TINY, small_view_probability=0.0)
    rngs = [np.random.default_rng(s) for s in range(num_pairs)]
    pairs = [sample_span_pair(rng, trains, stats, TINY.window_spec, settings) for rng in rngs]
    return collate_view_pairs(pairs)


def test_single_unit_half_has_its_own_contrastive_term():
    from spikeinterface_neuronid.methods import nuclr

    batch = _span_batch(3)
    enc = _encoder()
    torch.manual_seed(1)
    proj = build_projector(TINY)
    losses = {}
    for weight in (0.0, 1.0, 2.0):
        config = NuCLRConfig.from_dict({**TINY.to_dict(), "single_path_weight": weight})
        losses[weight] = float(nuclr.loss(enc, proj, batch, config).detach())
    single = losses[1.0] - losses[0.0]
    assert single > 0.1
    assert losses[2.0] - losses[0.0] == pytest.approx(2 * single, rel=1e-4)


def test_the_single_unit_loss_does_not_train_the_context_tower():
    """The single-unit tower reads the window features detached: its loss leaves the context tower's weights alone."""
    from spikeinterface_neuronid.methods import nuclr

    batch = _span_batch(2)
    enc = _encoder()
    proj = build_projector(TINY)
    context_only = NuCLRConfig.from_dict({**TINY.to_dict(), "single_path_weight": 0.0})
    single_only = (nuclr.loss(enc, proj, batch, TINY) - nuclr.loss(enc, proj, batch, context_only)).sum()
    single_only.backward()
    for name, param in enc.named_parameters():
        tower = name.startswith(("single_read_in", "single_waveform"))
        touched = param.grad is not None and bool(param.grad.abs().sum() > 0)
        assert touched == tower or (tower and name == "single_waveform_missing"), name


def test_a_single_unit_tower_grows_onto_a_frozen_model():
    """pretrain(init=..., freeze_init=True) trains only the new tower: the context half stays the init embedding."""
    old = NuCLRConfig.from_dict({**TINY.to_dict(), "single_unit_path": False})
    corpus = [_population(duration=60.0, seed=s) for s in range(2)]
    kwargs = dict(steps=3, batch_size=2, warmup_steps=1, progress_bar=False, num_threads=1, seed=0)
    base, _ = pretrain(corpus, config=old, **kwargs)
    grown, history = pretrain(corpus, config=TINY, init=base, freeze_init=True, **kwargs)
    assert grown.provenance["training"]["freeze_init"] is True
    before = embed_populations(base, corpus[:1], progress_bar=False).embedding
    after = embed_populations(grown, corpus[:1], progress_bar=False).embedding
    assert after.shape == (before.shape[0], 2 * TINY.dim)
    np.testing.assert_array_equal(after[:, : TINY.dim], before)
    assert np.abs(after[:, TINY.dim :]).sum() > 0
    # the grown projector's context half is the init projector
    for name, value in base.projector_state_dict.items():
        torch.testing.assert_close(grown.projector_state_dict[f"context.{name}"], value)
    with pytest.raises(ValueError, match="freeze_init=True needs an init model"):
        pretrain(corpus, config=TINY, freeze_init=True, **kwargs)
    with pytest.raises(ValueError, match="adds no module"):
        pretrain(corpus, config=old, init=base, freeze_init=True, **kwargs)
