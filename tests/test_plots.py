"""Figures: confusion matrix, predicted-label map (Agg backend, tiny random model)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import spikeinterface_neuronid  # noqa: E402,F401  (registers the extension)
from spikeinterface_neuronid import fit_head, neuronid_label_units  # noqa: E402
from spikeinterface_neuronid.bundle import ModelBundle  # noqa: E402
from spikeinterface_neuronid.methods.nuclr import NuCLRConfig, build_encoder  # noqa: E402
from spikeinterface_neuronid.plots import (  # noqa: E402
    plot_confusion_matrix,
    plot_embedding_map,
    plot_predicted_labels,
    save_figure,
)

from conftest import make_analyzer  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.manual_seed(0)
    config = NuCLRConfig.cpu(dim=16, num_heads=2, projector_dim=16)
    bundle = ModelBundle.from_modules("nuclr", config, build_encoder(config), name="test-random")
    folder = tmp_path_factory.mktemp("model")
    headless = str(bundle.save(folder / "headless.safetensors"))
    emb = make_analyzer(num_units=12, seed=7).compute("neuron_embedding", model=headless).get_data()
    labels = np.resize(np.array(["RS", "FS", "LTS"]), len(emb))
    bundle.add_head(fit_head(emb, labels, "firing_type", threshold=0.0, calibration_fraction=0))
    return headless, str(bundle.save(folder / "heads.safetensors"))


def test_confusion_matrix_counts_and_unknown_column():
    true = ["a", "a", "b", "b", "b", "c"]
    pred = ["a", "b", "b", "b", "unknown", "c"]
    ax = plot_confusion_matrix(true, pred, normalize=False)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c", "unknown"]
    assert len(ax.images) == 1 and len(ax.texts) == 3 * 4
    np.testing.assert_array_equal(ax.images[0].get_array(), [[1, 1, 0, 0], [0, 2, 0, 1], [0, 0, 1, 0]])
    assert ax.get_xlabel() == "predicted" and ax.get_ylabel() == "true"


def test_confusion_matrix_normalized_rows_and_given_classes():
    true = ["x", "y", "y", "z"]
    pred = ["x", "x", "y", "x"]
    fig, ax = plt.subplots()
    out = plot_confusion_matrix(true, pred, classes=["y", "x"], ax=ax, title="probe")
    assert out is ax and ax.get_title() == "probe"
    values = np.asarray(ax.images[0].get_array())
    np.testing.assert_allclose(values, [[0.5, 0.5], [0.0, 1.0]])  # the "z" unit is left out
    assert [t.get_text() for t in ax.texts] == ["0.50", "0.50", "0.00", "1.00"]
    assert len(fig.axes) == 2  # the matrix and its colour bar


def test_confusion_matrix_rows_only_for_classes_in_the_truth_unless_given():
    true = ["a", "a", "b"]
    pred = ["a", "c", "b"]  # "c" is predicted but no unit is truly "c"
    ax = plot_confusion_matrix(true, pred, normalize=False)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    np.testing.assert_array_equal(ax.images[0].get_array(), [[1, 0, 1], [0, 1, 0]])
    asked = plot_confusion_matrix(true, pred, classes=["a", "b", "c"], normalize=False)
    assert [t.get_text() for t in asked.get_yticklabels()] == ["a", "b", "c"]
    plt.close("all")


def test_confusion_matrix_errors():
    with pytest.raises(ValueError, match="same length"):
        plot_confusion_matrix(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no unit has a true label"):
        plot_confusion_matrix(["a", "b"], ["a", "b"], classes=["c"])
    with pytest.raises(ValueError, match="unique"):
        plot_confusion_matrix(["a", "b"], ["a", "b"], classes=["a", "a"])


def test_predicted_labels_map(tmp_path, models):
    _, with_heads = models
    analyzer = make_analyzer(num_units=10, seed=1)
    ext = analyzer.compute("neuron_embedding", model=with_heads)
    labels = neuronid_label_units(analyzer, model=with_heads, set_properties=False)["firing_type_label"].to_numpy()
    assert analyzer.get_extension("neuron_embedding") is ext  # labelled from the stored embedding
    ax = plot_predicted_labels(analyzer)
    assert len(ax.collections) == len(set(labels))
    assert sum(len(c.get_offsets()) for c in ax.collections) == analyzer.get_num_units()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [f"{label} ({np.sum(labels == label)})" for label in sorted(set(labels))]
    assert ax.get_xlabel() == "PCA 1" and "firing_type" in ax.get_title()
    assert save_figure(ax.figure, tmp_path / "map.png").stat().st_size > 0


def test_predicted_labels_errors(models):
    headless, with_heads = models
    analyzer = make_analyzer(num_units=6, seed=2)
    with pytest.raises(ValueError, match="no 'neuron_embedding' extension"):
        plot_predicted_labels(analyzer)
    analyzer.compute("neuron_embedding", model=headless)
    with pytest.raises(ValueError, match="no predicted labels for task 'firing_type'.*heads for \\[\\]"):
        plot_predicted_labels(analyzer)
    analyzer.compute("neuron_embedding", model=with_heads)
    with pytest.raises(ValueError, match="no predicted labels for task 'region'.*\\['firing_type'\\]"):
        plot_predicted_labels(analyzer, task="region")


def test_embedding_map_one_scatter_per_label():
    emb = np.random.default_rng(0).normal(size=(20, 4))
    ax = plot_embedding_map(emb, np.resize(["p", "q"], 20), title="t")
    assert len(ax.collections) == 2 and ax.get_title() == "t"


def test_demo_scores_a_firing_type_head_and_writes_the_confusion_matrix(tmp_path):
    import json

    import spikeinterface.core as si

    from spikeinterface_neuronid.demo import run_demo
    from spikeinterface_neuronid.simulation import CELL_TYPES, simulate_sorting

    torch.manual_seed(0)
    config = NuCLRConfig.cpu(dim=16, num_heads=2, projector_dim=16)
    bundle = ModelBundle.from_modules("nuclr", config, build_encoder(config), name="test-random")
    sizes = dict(num_neurons=40, duration_s=30.0)
    recording, sorting = simulate_sorting("easy", animal=2000, session=0, with_recording=True, **sizes)
    analyzer = si.create_sorting_analyzer(sorting, recording, format="memory", sparse=False)
    emb = analyzer.compute("neuron_embedding", model=bundle.save(tmp_path / "h.safetensors")).get_data()
    head = fit_head(emb, sorting.get_property("cell_type"), "firing_type", threshold=0.6, calibration_fraction=0)
    bundle.add_head(head)
    model = str(bundle.save(tmp_path / "m.safetensors"))

    metrics = run_demo(
        tmp_path / "out", model=model, animals=(1000, 1001), progress_bar=False, simulate_kwargs=sizes
    )
    assert metrics["head_task"] == "firing_type" and metrics["head_num_test_units"] == metrics["num_test_units"] == 32
    # measured with this random encoder (chance 0.2): head 0.528 with 12 % 'unknown', probe 0.696
    assert metrics["head_macro_f1"] > 0.35 and metrics["head_fraction_unknown"] <= 0.4
    assert metrics["macro_f1"] > 0.45 and metrics["classes"] == sorted(CELL_TYPES)  # the probe's keys are still there
    saved = json.loads((tmp_path / "out" / "demo_metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    for name in ("embedding_map.png", "confusion_matrix.png"):
        assert (tmp_path / "out" / name).stat().st_size > 10_000
