"""Distributed pretraining: 2 CPU processes under torchrun (gloo) train the model of one process on the global batch.

The test launches this file with ``python -m torch.distributed.run --standalone --nproc_per_node 2``; each
rank trains with ``batch_size=2`` and writes its weights and history, and the test compares them with one
process trained with ``batch_size=4, shard_global_batch=True`` (dropout 0, so that only float rounding differs).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from spikeinterface_neuronid.data import SpikeTrainSet
from spikeinterface_neuronid.methods.nuclr import NuCLRConfig
from spikeinterface_neuronid.training import pretrain

# span context with both channels, 1 s windows of 5 x 200 ms tokens, 10 s chunks; no dropout
CONFIG = NuCLRConfig.cpu(
    dim=16,
    num_heads=2,
    ff_mult=1,
    projector_dim=16,
    edge_dim=4,
    token_bins=10,
    window_tokens=5,
    chunk_s=10.0,
    max_span_s=30.0,
    max_lag_bins=5,
    dropout=0.0,
)
PER_RANK = 2
WORLD = 2
SETTINGS = dict(
    steps=4, lr=3e-3, warmup_steps=1, seed=5, max_units=12, num_threads=1, progress_bar=False, checkpoint_every=2
)


def _corpus() -> list[SpikeTrainSet]:
    """Three 60 s populations of 12 units (half of them sharing events), with waveforms."""
    sessions = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        duration = 60.0
        shared = np.sort(rng.uniform(0, duration, 480))
        trains = []
        for u in range(12):
            own = rng.uniform(0, duration, rng.poisson(6.0 * duration * (0.5 + u / 12)))
            borrowed = shared[rng.random(shared.size) < (0.5 if u < 6 else 0.0)] + 0.02 * (u % 3)
            trains.append(np.sort(np.clip(np.concatenate([own, borrowed]), 0, duration - 1e-6)))
        waveforms = np.array([-np.exp(-0.5 * ((np.arange(90) - 30) / (3 + u % 4)) ** 2) for u in range(12)])
        sessions.append(SpikeTrainSet(trains, duration, waveforms=waveforms))
    return sessions


class _IncreasingScore:
    """Checkpoint score that grows with every call (so the last checkpoint is selected), counting its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, bundle) -> float:
        self.calls += 1
        return float(self.calls)


def _train_rank(out: Path) -> None:
    """Body of one torchrun process: train, then write this rank's weights and history."""
    rank = int(os.environ["RANK"])
    score = _IncreasingScore()
    bundle, history = pretrain(
        _corpus(),
        CONFIG,
        batch_size=PER_RANK,
        checkpoint_score=score,
        checkpoint_path=out / f"checkpoint-rank{rank}.safetensors",
        **SETTINGS,
    )
    bundle.save(out / f"rank{rank}.safetensors")
    keep = ("loss", "num_pairs", "checkpoints", "rank", "world_size")
    record = {k: history[k] for k in keep} | dict(score_calls=score.calls, training=bundle.provenance["training"])
    (out / f"rank{rank}.json").write_text(json.dumps(record))


@pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(), reason="needs gloo"
)
def test_two_processes_train_the_model_of_one_process_on_the_global_batch(tmp_path):
    from spikeinterface_neuronid.bundle import ModelBundle

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}
    env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD)]
    result = subprocess.run(
        command + [__file__, str(tmp_path)], env=env, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]

    ranks = [ModelBundle.load(tmp_path / f"rank{r}.safetensors") for r in range(WORLD)]
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    # DDP keeps the ranks in lockstep; the history is that of the global batch on every rank
    assert ranks[0].sha256 == ranks[1].sha256
    assert records[0]["loss"] == records[1]["loss"] and records[0]["num_pairs"] == records[1]["num_pairs"]
    assert [r["rank"] for r in records] == [0, 1] and {r["world_size"] for r in records} == {WORLD}
    # rank 0 alone writes checkpoints and scores them; its score reaches rank 1, which selects the same one
    assert (tmp_path / "checkpoint-rank0.safetensors").is_file()
    assert not (tmp_path / "checkpoint-rank1.safetensors").exists()
    assert [r["score_calls"] for r in records] == [2, 0]
    assert records[1]["checkpoints"] == records[0]["checkpoints"] == [
        dict(step=2, score=1.0),
        dict(step=4, score=2.0),
    ]
    training = records[0]["training"]
    assert training["world_size"] == WORLD and training["batch_size"] == PER_RANK
    assert training["shard_global_batch"] is True and training["global_batch_size"] == WORLD * PER_RANK

    single, history = pretrain(
        _corpus(),
        CONFIG,
        batch_size=WORLD * PER_RANK,
        shard_global_batch=True,
        checkpoint_score=_IncreasingScore(),
        **SETTINGS,
    )
    # the same samples (global matched-pair counts) and, up to float rounding, the same losses and weights
    assert records[0]["num_pairs"] == history["num_pairs"]
    np.testing.assert_allclose(records[0]["loss"], history["loss"], rtol=1e-5, atol=1e-6)
    reference, got = single.tensors(), ranks[0].tensors()
    assert set(got) == set(reference)
    worst = max(float((_outside_keys(k, got[k]) - _outside_keys(k, reference[k])).abs().max()) for k in reference)
    # Adam turns rounding differences of near-zero gradient entries into weight differences that depend on the
    # CPU: 3e-6 on one machine, 2.7e-5 on another (relational qkv); both far below the training moves (> 1e-3)
    assert worst < 1e-4, f"largest weight difference {worst:.2e}"
    # the key biases included, both models compute the same embeddings
    from spikeinterface_neuronid.inference import embed_populations

    for population in _corpus()[:2]:
        a = embed_populations(single, [population]).embedding
        b = embed_populations(ranks[0], [population]).embedding
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)
    # while training moved the weights far more than that
    torch.manual_seed(SETTINGS["seed"])
    from spikeinterface_neuronid.methods.nuclr import build_encoder

    initial = build_encoder(CONFIG).state_dict()
    moved = max(float((reference[f"encoder.{k}"] - initial[k]).abs().max()) for k in initial)
    assert moved > 1e-3, moved


def _outside_keys(name: str, value: torch.Tensor) -> torch.Tensor:
    """The weights but for attention's key projections and the per-head offset of the edge biases.

    Both shift all attention logits of a query by the same amount (the key bias, in the dimensions that
    rotary encoding leaves alone), so their exact gradient is zero and Adam turns the ~1e-9 rounding noise of
    that zero into steps of about ``lr`` with a random sign in either run; they change no output (the
    embedding check above covers them).
    """
    if name.endswith("edge_bias.bias"):
        return value.new_zeros(1)
    if name.endswith(("qkv.weight", "qkv.bias")):
        query, _, values = value.view(3, -1, *value.shape[1:])
        return torch.cat((query.flatten(), values.flatten()))
    return value.flatten()

if __name__ == "__main__":
    _train_rank(Path(sys.argv[1]))
