import numpy as np
import pytest
import torch

from spikeinterface_neuronid.bundle import ModelBundle
from spikeinterface_neuronid.data import SpikeTrainSet
from spikeinterface_neuronid.methods.nuclr import NuCLRConfig
from spikeinterface_neuronid.training import collate_view_pairs, fine_tune, pretrain

# 1 s windows of 5 tokens x 10 bins of 20 ms
TINY = NuCLRConfig.window(
    dim=32, num_heads=2, temporal_layers=1, spatiotemporal_layers=1, token_bins=10, window_tokens=5, dropout=0.1
)
# one thread: tiny models gain nothing from two, and a busy second core stalls OpenMP barriers
FAST = dict(batch_size=4, max_units=16, max_shift_s=5.0, progress_bar=False, warmup_steps=5, num_threads=1)


def _unit(rng: np.random.Generator, rate: float, burst: int, duration: float) -> np.ndarray:
    """Poisson events at ``rate / burst`` Hz, each a burst of ``burst`` spikes 4 ms apart."""
    events = rng.uniform(0, duration - 0.1, rng.poisson(rate / burst * duration))
    times = (events[:, None] + 0.004 * np.arange(burst)[None, :]).ravel()
    return np.sort(times)


def _corpus(num_sessions: int = 3, num_units: int = 16, duration: float = 60.0, seed: int = 0) -> list[SpikeTrainSet]:
    """Units with distinct identities: log-spaced rates 1-40 Hz, every other unit bursting."""
    rng = np.random.default_rng(seed)
    sessions = []
    for _ in range(num_sessions):
        rates = np.exp(rng.uniform(np.log(1.0), np.log(40.0), num_units))
        trains = [_unit(rng, rate, 1 + 3 * (u % 2), duration) for u, rate in enumerate(rates)]
        sessions.append(SpikeTrainSet(trains, duration))
    return sessions


def test_loss_falls_on_units_with_distinct_identities():
    corpus = _corpus()
    bundle, history = pretrain(corpus, TINY, steps=120, lr=3e-3, seed=0, **FAST)
    loss = np.asarray(history["loss"])
    k = len(loss) // 5
    first, last = loss[:k].mean(), loss[-k:].mean()
    assert np.isfinite(loss).all()
    assert last < first - 0.3, (first, last)
    assert set(history) >= {"loss", "lr", "step_time_s", "num_pairs", "seconds"}
    assert len(history["lr"]) == 120 and max(history["lr"]) == pytest.approx(3e-3) and history["lr"][-1] < 1e-5
    assert history["lr"][0] < history["lr"][4]  # warm-up
    assert bundle.provenance["training"]["steps"] == 120
    assert bundle.provenance["training"]["loss_last"] < bundle.provenance["training"]["loss_first"]


def test_same_seed_gives_identical_weights_and_leaves_global_state_alone():
    corpus = _corpus(num_sessions=2)
    rng_state = torch.get_rng_state()
    deterministic = torch.are_deterministic_algorithms_enabled()
    a, history_a = pretrain(corpus, TINY, steps=6, seed=3, **FAST)
    b, history_b = pretrain(corpus, TINY, steps=6, seed=3, **FAST)
    c, _ = pretrain(corpus, TINY, steps=6, seed=4, **FAST)
    assert a.sha256 == b.sha256 and history_a["loss"] == history_b["loss"]
    assert all(torch.equal(a.tensors()[k], b.tensors()[k]) for k in a.tensors())
    assert c.sha256 != a.sha256
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert torch.are_deterministic_algorithms_enabled() == deterministic


def test_fine_tuning_starts_from_the_given_model(tmp_path):
    corpus = _corpus(num_sessions=2)
    base, _ = pretrain(corpus, TINY, steps=4, name="base", provenance={"data": "synthetic"}, **FAST)
    base = ModelBundle.load(base.save(tmp_path / "base.safetensors"))
    tuned, _ = fine_tune(base, corpus, steps=3, **FAST)
    again, _ = fine_tune(base, corpus, steps=3, **FAST)
    assert tuned.config == base.config and tuned.name == "base-finetuned"
    assert tuned.provenance["training"]["init"] == {"name": "base", "sha256": base.sha256}
    assert tuned.sha256 != base.sha256 and again.sha256 == tuned.sha256
    # three low-lr steps move the weights (all finite) a little, not far, from the starting model's
    for key, start in base.state_dict.items():
        assert torch.isfinite(tuned.state_dict[key]).all(), key
    moved = [float((tuned.state_dict[k] - v).abs().max()) for k, v in base.state_dict.items()]
    assert 0 < max(moved) < 0.05, max(moved)
    from spikeinterface_neuronid.inference import embed_populations

    before = embed_populations(base, corpus[:1]).embedding
    after = embed_populations(tuned, corpus[:1]).embedding
    assert np.isfinite(after).all() and after.shape == before.shape
    assert not np.allclose(after, before, atol=1e-4)
    # zero learning rate: the encoder is the starting one
    same, _ = pretrain(corpus, init=base, steps=2, lr=0.0, **FAST)
    assert all(torch.equal(same.state_dict[k], base.state_dict[k]) for k in base.state_dict)
    wider = NuCLRConfig.from_dict({**TINY.to_dict(), "dim": 64})
    with pytest.raises(ValueError, match="does not fit the weights"):
        pretrain(corpus, wider, init=base, steps=1, **FAST)


def test_lazy_corpus_is_read_on_demand():
    sessions = _corpus(num_sessions=5, duration=20.0)

    class Lazy:
        def __init__(self):
            self.loaded = set()

        def __len__(self):
            return len(sessions)

        def __getitem__(self, index):
            self.loaded.add(index)
            return sessions[index]

    corpus = Lazy()
    settings = dict(steps=2, seed=1, **{**FAST, "batch_size": 1})
    lazy, history = pretrain(corpus, TINY, **settings)
    assert len(history["loss"]) == 2 and 1 <= len(corpus.loaded) < len(sessions)
    # on demand, but the same draws: the same model as from the list
    listed, listed_history = pretrain(sessions, TINY, **settings)
    assert lazy.sha256 == listed.sha256 and history["loss"] == listed_history["loss"]


def test_recordings_shorter_than_a_window_or_too_sparse_are_rejected():
    short = [SpikeTrainSet([np.array([0.1, 0.2]), np.array([0.3])], duration=0.5)]
    with pytest.raises(ValueError, match="shorter than one window or too sparse"):
        pretrain(short, TINY, steps=1, **FAST)
    sparse = [SpikeTrainSet([np.array([5.0]), np.array([30.0]), np.array([])], duration=60.0)]
    with pytest.raises(ValueError, match="too sparse"):
        pretrain(sparse, TINY, steps=1, **FAST)
    with pytest.raises(ValueError, match="empty"):
        pretrain([], TINY, steps=1, **FAST)


def test_collate_pads_with_masks():
    from spikeinterface_neuronid.data import ViewPair

    rng = np.random.default_rng(0)

    def counts(n):
        return rng.poisson(2.0, (n, 50)).astype(np.float32) + 1  # no zero, so padding is told apart

    pairs = [
        ViewPair(counts(2), np.array([0, 3]), counts(3), np.array([0, 1, 3])),
        ViewPair(counts(4), np.array([1, 2, 5, 6]), counts(1), np.array([2])),
    ]
    batch = collate_view_pairs(pairs)
    assert batch.counts1.shape == (2, 4, 50) and batch.counts2.shape == (2, 3, 50)
    assert batch.counts1.dtype == torch.float32 and batch.units1.dtype == torch.int64
    assert batch.mask1.tolist() == [[True, True, False, False], [True] * 4]
    assert batch.mask2.tolist() == [[True] * 3, [True, False, False]]
    assert batch.units1.tolist() == [[0, 3, -1, -1], [1, 2, 5, 6]]
    assert batch.units2.tolist() == [[0, 1, 3], [2, -1, -1]]
    for row, pair in enumerate(pairs):
        for side in ("1", "2"):
            real = getattr(pair, "counts" + side)
            padded = getattr(batch, "counts" + side)[row].numpy()
            np.testing.assert_array_equal(padded[: len(real)], real)
            assert not padded[len(real) :].any()
    assert batch.unit_inputs1 is None and batch.edges1 is None and batch.covariates1 is None
    short = ViewPair(counts(2)[:, :40], np.array([0, 1]), counts(2)[:, :40], np.array([0, 1]))
    with pytest.raises(ValueError, match="different window lengths"):
        collate_view_pairs([pairs[0], short])


def test_trained_model_embeds_populations():
    from spikeinterface_neuronid.inference import embed_populations

    from spikeinterface_neuronid.methods import nuclr

    corpus = _corpus(num_sessions=1, duration=20.0)
    bundle, _ = pretrain(corpus, TINY, steps=2, seed=0, **FAST)
    torch.manual_seed(0)  # pretrain initialises from its seed: this is the model before the first step
    start = ModelBundle.from_modules("nuclr", TINY, nuclr.build_encoder(TINY), name="start")
    untrained, _ = pretrain(corpus, TINY, steps=1, lr=0.0, weight_decay=0.0, seed=0, **FAST)
    assert all(torch.equal(untrained.state_dict[k], v) for k, v in start.state_dict.items())
    result = embed_populations(bundle, corpus)
    embedding = result.embedding
    assert embedding.shape == (16, TINY.dim) and np.isfinite(embedding).all()
    np.testing.assert_array_equal(embed_populations(bundle, corpus).embedding, embedding)
    initial = embed_populations(start, corpus).embedding
    assert not np.allclose(embedding, initial, atol=1e-4), "training did not change the embeddings"
    # one vector per unit: units with different rates and firing patterns are not embedded alike
    distances = np.linalg.norm(embedding[:, None] - embedding[None, :], axis=-1)
    assert distances[~np.eye(16, dtype=bool)].min() > 1e-3


def test_sharded_stream_does_not_depend_on_how_the_global_batch_is_split():
    from spikeinterface_neuronid._sampling import draw_positions

    corpus = _corpus(num_sessions=3, duration=20.0)
    kwargs = dict(max_shift_s=5.0, min_keep=0.5, max_units=16)
    whole = draw_positions(7, 3, range(0, 4), corpus, TINY.window_spec, None, kwargs)
    halves = [draw_positions(7, 3, range(r * 2, r * 2 + 2), corpus, TINY.window_spec, None, kwargs) for r in (0, 1)]
    assert len(whole) == 4
    for a, b in zip(whole, halves[0] + halves[1]):
        assert np.array_equal(a.units1, b.units1) and np.array_equal(a.counts2, b.counts2)
    other_step = draw_positions(7, 4, range(0, 4), corpus, TINY.window_spec, None, kwargs)
    assert not all(np.array_equal(a.counts1, b.counts1) for a, b in zip(whole, other_step))


def test_single_process_default_keeps_the_sequential_stream():
    corpus = _corpus(num_sessions=2, duration=20.0)
    default, history = pretrain(corpus, TINY, steps=2, seed=2, **FAST)
    legacy, _ = pretrain(corpus, TINY, steps=2, seed=2, shard_global_batch=False, **FAST)
    sharded, _ = pretrain(corpus, TINY, steps=2, seed=2, shard_global_batch=True, **FAST)
    assert default.sha256 == legacy.sha256 != sharded.sha256
    assert history["rank"] == 0 and history["world_size"] == 1
    assert "shard_global_batch" not in default.provenance["training"]
    assert sharded.provenance["training"]["shard_global_batch"] is True
    assert sharded.provenance["training"]["global_batch_size"] == FAST["batch_size"]


def test_pair_weighted_shard_gradients_sum_to_the_global_batch_gradient():
    """What DDP computes with the all-reduced pair counts: sum_r n_r / N * grad(loss_r) = grad(global loss)."""
    from spikeinterface_neuronid.methods import nuclr
    from spikeinterface_neuronid._sampling import draw_view_pairs, num_matched

    config = NuCLRConfig.from_dict({**TINY.to_dict(), "dropout": 0.0})
    pairs = draw_view_pairs(
        np.random.default_rng(0), _corpus(), config.window_spec, 6, max_shift_s=5.0, min_keep=0.5, max_units=16
    )
    torch.manual_seed(0)
    encoder, projector = nuclr.build_encoder(config), nuclr.build_projector(config)
    params = list(encoder.parameters()) + list(projector.parameters())

    def gradients(batch, scale=1.0):
        grads = torch.autograd.grad(nuclr.loss(encoder, projector, batch, config) * scale, params)
        return [g.clone() for g in grads]

    full = gradients(collate_view_pairs(pairs))
    shards = [collate_view_pairs(pairs[:2]), collate_view_pairs(pairs[2:])]
    counts = [num_matched(b) for b in shards]
    assert counts[0] != counts[1]  # unequal shares, so that the weighting matters
    summed = [sum(parts) for parts in zip(*(gradients(b, n / sum(counts)) for b, n in zip(shards, counts)))]
    unweighted = [sum(parts) / 2 for parts in zip(*(gradients(b) for b in shards))]
    for a, b in zip(full, summed):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    assert max(float((a - b).abs().max()) for a, b in zip(full, unweighted)) > 1e-4


def test_distributed_options_are_checked():
    corpus = _corpus(num_sessions=1, duration=20.0)
    with pytest.raises(ValueError, match="shard_global_batch must be True, False or None"):
        pretrain(corpus, TINY, steps=1, shard_global_batch="yes", **FAST)
    with pytest.raises(ValueError, match="mixed_precision=True needs a CUDA device"):
        pretrain(corpus, TINY, steps=1, mixed_precision=True, **FAST)
    with pytest.raises(ValueError, match="mixed_precision must be True, False or None"):
        pretrain(corpus, TINY, steps=1, mixed_precision="bf16", **FAST)


def test_an_initialised_one_process_group_trains_as_a_plain_process(tmp_path):
    """The distributed code path (DDP, all-reduced pair counts, broadcast checkpoint scores) in one process."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available() or dist.is_initialized():
        pytest.skip("needs gloo and no process group")
    corpus = _corpus(num_sessions=2, duration=20.0)
    settings = dict(steps=3, seed=1, checkpoint_every=2, checkpoint_score=lambda bundle: 0.5, **FAST)
    plain, plain_history = pretrain(corpus, TINY, **settings)
    dist.init_process_group("gloo", init_method=(tmp_path / "store").as_uri(), rank=0, world_size=1)
    try:
        grouped, history = pretrain(corpus, TINY, **settings)
    finally:
        dist.destroy_process_group()
    assert grouped.sha256 == plain.sha256
    assert history["loss"] == pytest.approx(plain_history["loss"], rel=1e-6)
    assert history["num_pairs"] == plain_history["num_pairs"]
    assert history["checkpoints"] == plain_history["checkpoints"] == [dict(step=2, score=0.5), dict(step=3, score=0.5)]


def test_autocast_objective_keeps_the_loss_in_float32():
    """bf16 autocast of encoder and projector (used on CUDA), exercised on CPU."""
    from spikeinterface_neuronid.methods import nuclr
    from spikeinterface_neuronid._optim import Objective
    from spikeinterface_neuronid.training import draw_view_pairs

    pairs = draw_view_pairs(
        np.random.default_rng(0), _corpus(), TINY.window_spec, 4, max_shift_s=5.0, min_keep=0.5, max_units=16
    )
    batch = collate_view_pairs(pairs)
    torch.manual_seed(0)
    encoder, projector = nuclr.build_encoder(TINY).eval(), nuclr.build_projector(TINY)
    full = Objective(nuclr, TINY, encoder, projector)(batch)
    mixed = Objective(nuclr, TINY, encoder, projector, autocast="cpu")(batch)
    assert mixed.dtype == torch.float32 and torch.isfinite(mixed)
    value, reference = mixed.detach().item(), full.detach().item()
    assert value == pytest.approx(reference, abs=0.05) and value != reference
    mixed.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in encoder.read_in.parameters())
