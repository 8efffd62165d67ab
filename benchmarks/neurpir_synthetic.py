"""NeurPIR's synthetic experiment: recover Izhikevich cell types from single-neuron embeddings.

    python benchmarks/neurpir_synthetic.py                      # 5 animals x 400 neurons, 120 s, 600 steps
    python benchmarks/neurpir_synthetic.py --duration 600 --steps 2000

Simulates 2,000 Izhikevich neurons (``"easy"`` preset, five types RS / IB / CH / FS / LTS in equal base
proportions, all neurons recorded) as 5 animals x 400 neurons. Each animal draws its own type proportions
around 0.2 (``type_concentration``), so the per-type totals are about, not exactly, 400. NeurPIR is
pretrained on the training animals only; every unit of every animal is embedded with
:func:`~spikeinterface_neuronid.inference.embed_populations`; a linear probe (StandardScaler + balanced
logistic regression) is fitted on the training animals' units and scored on the held-out animals' units
(per-class precision / recall / F1, macro-F1). Writes ``benchmarks/results/neurpir_synthetic.json``
(atomic) and ``benchmarks/results/neurpir_synthetic.png`` (PCA map of the held-out embeddings).

The paper's network, segment lengths and sizes are not published (``shared/notes/methods.md`` §2); this is
the project's reconstruction, without surrounding information (no covariates).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--animals", type=int, default=5)
    parser.add_argument("--held-out", type=int, default=2, help="last N animals are held out")
    parser.add_argument("--neurons", type=int, default=400, help="neurons per animal")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds per session")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-units", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", default=str(HERE / "results" / "neurpir_synthetic.json"))
    args = parser.parse_args()
    if not 1 <= args.held_out < args.animals:
        parser.error("--held-out must be in [1, animals - 1]")

    import torch

    from spikeinterface_neuronid._io import write_json
    from spikeinterface_neuronid.evaluation import linear_probe
    from spikeinterface_neuronid.inference import embed_populations
    from spikeinterface_neuronid.methods.neurpir import NeurPIRConfig
    from spikeinterface_neuronid.plots import plot_embedding_map, save_figure
    from spikeinterface_neuronid.simulation import simulate_dataset
    from spikeinterface_neuronid.training import pretrain

    t0 = time.perf_counter()
    sessions = simulate_dataset(
        "easy",
        animals=range(args.animals),
        num_neurons=args.neurons,
        duration_s=args.duration,
        type_proportions=(0.2, 0.2, 0.2, 0.2, 0.2),
        recorded_fraction=1.0,
        seed=args.seed,
        progress_bar=False,
    )
    simulate_s = time.perf_counter() - t0
    train_sessions = sessions[: args.animals - args.held_out]
    test_sessions = sessions[args.animals - args.held_out :]
    print(f"simulated {sum(s.num_units for s in sessions)} units in {simulate_s:.1f} s", flush=True)

    config = NeurPIRConfig.cpu()
    corpus = [s.to_spike_train_set(covariates=False) for s in train_sessions]
    t0 = time.perf_counter()
    bundle, history = pretrain(
        corpus,
        method="neurpir",
        config=config,
        steps=args.steps,
        batch_size=args.batch_size,
        max_units=args.max_units,
        lr=args.lr,
        warmup_steps=min(50, args.steps // 10),
        seed=args.seed,
        device=args.device,
        num_threads=args.threads,
        progress_bar=False,
        name="neurpir-synthetic",
    )
    train_s = time.perf_counter() - t0
    loss_last = np.mean(history["loss"][-10:])
    print(f"pretrained {args.steps} steps in {train_s:.1f} s; loss {history['loss'][0]:.2f} -> {loss_last:.2f}")

    t0 = time.perf_counter()

    def embed(group):
        xs, ys = [], []
        for s in group:
            segment = s.to_spike_train_set(covariates=False)
            result = embed_populations(bundle, [segment], device=args.device, num_threads=args.threads)
            xs.append(result.embedding)
            ys.append(np.asarray(s.cell_type).astype(str))
        return np.concatenate(xs), np.concatenate(ys)

    train_x, train_y = embed(train_sessions)
    test_x, test_y = embed(test_sessions)
    embed_s = time.perf_counter() - t0
    probe = linear_probe(train_x, train_y, test_x, test_y)
    print(probe.table(), flush=True)

    # baseline: the same probe on the firing rate alone (log), to show what the embedding adds
    def log_rate(group):
        return np.concatenate([np.log1p([t.size / s.duration for t in s.spike_times]) for s in group])[:, None]

    rate_probe = linear_probe(log_rate(train_sessions), train_y, log_rate(test_sessions), test_y)

    out = Path(args.output)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    ok = np.all(np.isfinite(test_x), axis=1)
    title = f"NeurPIR, held-out animals (macro-F1 {probe.macro_f1:.2f})"
    plot_embedding_map(test_x[ok], test_y[ok], ax=ax, title=title)
    png = save_figure(fig, out.with_suffix(".png"))
    plt.close(fig)

    counts = {t: int(n) for t, n in zip(*np.unique(np.concatenate([train_y, test_y]), return_counts=True))}
    result = dict(
        benchmark="neurpir_synthetic",
        command="python benchmarks/neurpir_synthetic.py " + " ".join(sys.argv[1:]),
        date=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        preset="easy",
        animals=args.animals,
        held_out_animals=[s.animal_id for s in test_sessions],
        neurons_per_animal=args.neurons,
        units_per_type=counts,
        duration_s=args.duration,
        config=config.to_dict(),
        steps=args.steps,
        batch_size=args.batch_size,
        max_units=args.max_units,
        lr=args.lr,
        seed=args.seed,
        loss_first=float(np.mean(history["loss"][:10])),
        loss_last=float(np.mean(history["loss"][-10:])),
        simulate_seconds=round(simulate_s, 1),
        train_seconds=round(train_s, 1),
        embed_seconds=round(embed_s, 1),
        num_train_units=int(np.isfinite(train_x).all(1).sum()),
        num_test_units=int(np.isfinite(test_x).all(1).sum()),
        probe=probe.to_dict(),
        baseline_log_rate_probe=rate_probe.to_dict(),
        figure=png.name,
        device=args.device,
        torch=torch.__version__,
        python_version=platform.python_version(),
        platform=platform.platform(),
    )
    write_json(out, result)
    print(f"wrote {out} and {png}")


if __name__ == "__main__":
    main()
