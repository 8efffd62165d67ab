"""Draw ``docs/_static/plots.png``: the three plot functions on one held-out simulated animal.

    python docs/figures/make_plots_figure.py      # about a minute on 2 CPU cores

Simulates the ``hard`` preset's animal 1003 (never seen in pretraining; 200 neurons, 240 s), computes
``neuron_embedding`` with the shipped default model, labels the units with its ``firing_type`` head
(:func:`~spikeinterface_neuronid.labeling.neuronid_label_units`) and draws
:func:`~spikeinterface_neuronid.plots.plot_embedding_map` (coloured by the true firing type),
:func:`~spikeinterface_neuronid.plots.plot_predicted_labels` and
:func:`~spikeinterface_neuronid.plots.plot_confusion_matrix`. The docs only show the committed picture (no page
executes code); re-run this script when the model or the plots change.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "_static" / "plots.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="hard", help="simulator preset of the animal")
    parser.add_argument("--animal", type=int, default=1003, help="animal seed (held out from pretraining)")
    parser.add_argument("-o", "--output", default=str(OUT), help="where the PNG is written")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import spikeinterface.core as si

    import spikeinterface_neuronid  # noqa: F401  (registers the extension)
    from spikeinterface_neuronid.labeling import neuronid_label_units
    from spikeinterface_neuronid.plots import (
        plot_confusion_matrix,
        plot_embedding_map,
        plot_predicted_labels,
        save_figure,
    )
    from spikeinterface_neuronid.simulation import simulate_sorting

    recording, sorting = simulate_sorting(args.preset, animal=args.animal, session=0, with_recording=True)
    analyzer = si.create_sorting_analyzer(sorting, recording, format="memory", sparse=False)
    labels = neuronid_label_units(analyzer, tasks="firing_type", progress_bar=True)
    embedding = analyzer.get_extension("neuron_embedding").get_data()
    truth = np.asarray(analyzer.sorting.get_property("cell_type")).astype(str)
    predicted = labels["firing_type_label"].to_numpy().astype(str)
    ok = np.all(np.isfinite(embedding), axis=1)

    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    plot_embedding_map(embedding[ok], truth[ok], ax=axes[0], title="plot_embedding_map: true type")
    plot_predicted_labels(analyzer, task="firing_type", ax=axes[1])
    axes[1].set_title("plot_predicted_labels: firing_type head")
    plot_confusion_matrix(truth, predicted, ax=axes[2], title=f"plot_confusion_matrix: {args.preset} {args.animal}")
    fig.tight_layout()
    path = save_figure(fig, args.output)
    answered = predicted != "unknown"
    print(
        f"wrote {path}: {analyzer.get_num_units()} units, {np.mean(~answered):.0%} 'unknown', accuracy where "
        f"answered {np.mean(predicted[answered] == truth[answered]):.3f}"
    )


if __name__ == "__main__":
    main()
