"""Resuming pretraining from a checkpoint's training state: the resumed run is the uninterrupted one."""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from spikeinterface_neuronid import _optim
from spikeinterface_neuronid.bundle import ModelBundle
from spikeinterface_neuronid.data import SpikeTrainSet
from spikeinterface_neuronid.methods.nuclr import NuCLRConfig
from spikeinterface_neuronid.training import pretrain

SPAN = NuCLRConfig.cpu(
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
WINDOW = NuCLRConfig.window(
    dim=16, num_heads=2, ff_mult=1, projector_dim=16, bin_s=0.02, token_bins=10, window_tokens=5
)
# dropout on, so that the torch RNG state matters; warm-up longer than the crash point, so the schedule does
RUN = dict(steps=6, batch_size=2, lr=3e-3, warmup_steps=4, seed=3, num_threads=1, progress_bar=False)


def _population(num_units=10, duration=40.0, seed=0, rate=8.0):
    rng = np.random.default_rng(seed)
    shared = np.sort(rng.uniform(0, duration, int(rate * duration)))
    trains = []
    for u in range(num_units):
        own = rng.uniform(0, duration, rng.poisson(rate * duration * 0.7))
        borrowed = shared[rng.random(shared.size) < (0.5 if u < num_units // 2 else 0.0)] + 0.02 * (u % 3)
        trains.append(np.sort(np.clip(np.concatenate([own, borrowed]), 0, duration - 1e-6)))
    return SpikeTrainSet(trains, duration)


CORPUS = [_population(seed=s) for s in range(3)]


class _Crash(RuntimeError):
    pass


def _crash_at(monkeypatch, crash_step):
    """Make the run fail when it starts step ``crash_step`` (0-based), as a killed process would."""
    original = _optim.lr_factor

    def factor(step, steps, warmup):
        if step == crash_step:
            raise _Crash(f"crash at step {step}")
        return original(step, steps, warmup)

    monkeypatch.setattr(_optim, "lr_factor", factor)


def _state_dicts_equal(a: ModelBundle, b: ModelBundle):
    for section in ("state_dict", "projector_state_dict"):
        x, y = getattr(a, section), getattr(b, section)
        assert x.keys() == y.keys()
        for key in x:
            assert torch.equal(x[key], y[key]), f"{section}.{key} differs"


@pytest.mark.parametrize("config", [SPAN, WINDOW], ids=["span", "window"])
def test_a_resumed_run_equals_the_uninterrupted_one(tmp_path, monkeypatch, config):
    config = type(config).from_dict({**config.to_dict(), "dropout": 0.1})
    full, full_history = pretrain(CORPUS, config, **RUN)

    path = tmp_path / "ckpt.safetensors"
    with monkeypatch.context() as patch:
        _crash_at(patch, 4)
        with pytest.raises(_Crash):
            pretrain(CORPUS, config, checkpoint_every=3, checkpoint_path=path, **RUN)
    state = path.with_name("ckpt.state.safetensors")
    assert path.is_file() and state.is_file()

    resumed, history = pretrain(CORPUS, config, checkpoint_every=3, checkpoint_path=path, resume_from=path, **RUN)
    assert resumed.sha256 == full.sha256
    _state_dicts_equal(resumed, full)
    assert history["loss"] == full_history["loss"] and history["lr"] == full_history["lr"]
    assert history["num_pairs"] == full_history["num_pairs"] and len(history["step_time_s"]) == 6
    assert resumed.provenance["training"]["resumed_from_step"] == 3
    # the state was rewritten at the last step; resuming a finished run returns its result
    done, done_history = pretrain(CORPUS, config, resume_from=state, **RUN)
    assert done.sha256 == full.sha256 and done_history["loss"] == full_history["loss"]


def test_best_checkpoint_bookkeeping_survives_a_resume(tmp_path, monkeypatch):
    def scores():
        values = iter([0.9, 0.1])
        return lambda bundle: next(values)

    settings = dict(checkpoint_every=3, **RUN)
    full, full_history = pretrain(CORPUS, SPAN, checkpoint_score=scores(), **settings)
    path = tmp_path / "ckpt.safetensors"
    with monkeypatch.context() as patch:
        _crash_at(patch, 3)
        with pytest.raises(_Crash):
            pretrain(CORPUS, SPAN, checkpoint_score=scores(), checkpoint_path=path, **settings)
    later = iter([0.1])
    resumed, history = pretrain(
        CORPUS, SPAN, checkpoint_score=lambda b: next(later), checkpoint_path=path, resume_from=path, **settings
    )
    assert history["checkpoints"] == full_history["checkpoints"] == [dict(step=3, score=0.9), dict(step=6, score=0.1)]
    assert resumed.provenance["training"]["selected_checkpoint"] == dict(step=3, score=0.9)
    _state_dicts_equal(resumed, full)


def test_the_state_file_is_safetensors_and_json_without_pickle(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    pretrain(CORPUS, SPAN, checkpoint_every=3, checkpoint_path=path, **{**RUN, "steps": 3})
    state = path.with_name("ckpt.state.safetensors")
    raw = state.read_bytes()
    assert b"\x80\x04" not in raw[:16] and not raw.startswith(b"PK")  # neither a pickle nor a torch.save zip
    with safe_open(str(state), framework="pt") as f:
        meta = json.loads(f.metadata()["spikeinterface_neuronid.training_state"])
        keys = set(f.keys())
        rng = f.get_tensor("torch_rng.0")
    assert meta["step"] == 3 and meta["settings"]["steps"] == 3 and meta["settings"]["seed"] == RUN["seed"]
    assert meta["sampler_state"]["bit_generator"] == "PCG64" and len(meta["history"]["loss"]) == 3
    assert rng.dtype == torch.uint8
    assert {"optimizer.0.exp_avg", "optimizer.0.exp_avg_sq", "optimizer.0.step"} <= keys
    assert any(k.startswith("encoder.") for k in keys) and any(k.startswith("projector.") for k in keys)
    assert ModelBundle.load(path).num_parameters() > 0  # the checkpoint itself is still a plain model file


def test_resume_errors_name_the_file_and_the_setting(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    settings = {**RUN, "steps": 2}
    with pytest.raises(FileNotFoundError, match="ckpt.state.safetensors"):
        pretrain(CORPUS, SPAN, resume_from=path, **settings)
    pretrain(CORPUS, SPAN, checkpoint_every=2, checkpoint_path=path, **settings)
    with pytest.raises(ValueError, match="setting lr differs"):
        pretrain(CORPUS, SPAN, resume_from=path, **{**settings, "lr": 1e-2})
    with pytest.raises(ValueError, match="setting steps differs"):
        pretrain(CORPUS, SPAN, resume_from=path, **{**settings, "steps": 5})
    other = type(SPAN).from_dict({**SPAN.to_dict(), "dropout": 0.3})
    with pytest.raises(ValueError, match="setting config.dropout differs"):
        pretrain(CORPUS, other, resume_from=path, **settings)
    state = path.with_name("ckpt.state.safetensors")
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(ValueError, match="ckpt.state.safetensors is not a readable training-state file"):
        pretrain(CORPUS, SPAN, resume_from=path, **settings)


def test_cli_resume_needs_a_checkpoint_with_a_training_state(tmp_path, capsys):
    from spikeinterface_neuronid.cli import build_parser, main

    args = build_parser().parse_args(["pretrain", "--simulated", "easy", "-o", "m.safetensors"])
    assert args.checkpoint is None and args.checkpoint_every == 100 and not args.resume
    base = ["pretrain", "--simulated", "easy", "-o", str(tmp_path / "m.safetensors"), "--resume"]
    with pytest.raises(SystemExit):
        main(base)
    assert "--resume needs --checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(base + ["--checkpoint", str(tmp_path / "ck.safetensors")])
    err = capsys.readouterr().err
    assert "no training state" in err and "ck.state.safetensors" in err


def test_resume_in_an_initialised_process_group(tmp_path, monkeypatch):
    """The torchrun code path (RNG states gathered across ranks, DDP) in a one-process gloo group."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available() or dist.is_initialized():
        pytest.skip("needs gloo and no process group")
    settings = dict(checkpoint_every=3, shard_global_batch=True, **RUN)
    full, _ = pretrain(CORPUS, SPAN, **settings)
    path = tmp_path / "ckpt.safetensors"
    dist.init_process_group("gloo", init_method=(tmp_path / "store").as_uri(), rank=0, world_size=1)
    try:
        with monkeypatch.context() as patch:
            _crash_at(patch, 4)
            with pytest.raises(_Crash):
                pretrain(CORPUS, SPAN, checkpoint_path=path, **settings)
        resumed, _ = pretrain(CORPUS, SPAN, checkpoint_path=path, resume_from=path, **settings)
    finally:
        dist.destroy_process_group()
    _state_dicts_equal(resumed, full)


def test_cli_resume_with_other_settings_is_one_line(tmp_path, capsys):
    from spikeinterface_neuronid.cli import main

    out, ckpt = str(tmp_path / "m.safetensors"), str(tmp_path / "ck.safetensors")
    base = ["pretrain", "--simulated", "easy", "--animals", "0", "--sessions", "1", "--num-neurons", "20"]
    base += ["--duration-s", "30", "--batch-size", "2", "-o", out, "--checkpoint", ckpt, "--checkpoint-every", "2"]
    assert main(base + ["--steps", "2"]) == 0
    capsys.readouterr()
    assert main(base + ["--steps", "2", "--lr", "0.01", "--resume"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("neuronid")]
    assert len(lines) == 1 and "--resume:" in lines[0] and "setting lr differs" in lines[0], lines


def test_a_blocked_run_resumed_with_workers_equals_the_uninterrupted_one(tmp_path, monkeypatch):
    config = type(SPAN).from_dict({**SPAN.to_dict(), "dropout": 0.1})
    settings = dict(RUN, session_block=2, session_block_steps=2, shard_global_batch=True)
    full, full_history = pretrain(CORPUS, config, **settings)
    path = tmp_path / "ckpt.safetensors"
    with monkeypatch.context() as patch:
        _crash_at(patch, 4)
        with pytest.raises(_Crash):
            pretrain(CORPUS, config, checkpoint_every=3, checkpoint_path=path, num_workers=2, **settings)
    # the number of workers may change on resume; the blocks may not
    resumed, history = pretrain(CORPUS, config, resume_from=path, **settings)
    assert resumed.sha256 == full.sha256 and history["loss"] == full_history["loss"]
    with pytest.raises(ValueError, match="session_block"):
        pretrain(CORPUS, config, resume_from=path, **{**settings, "session_block": 1})
