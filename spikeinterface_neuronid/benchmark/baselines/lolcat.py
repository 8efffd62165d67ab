"""LOLCAT (Schneider et al., Cell Reports 2023): supervised cell-type classifier over sets of ISI snippets.

A compact re-implementation of the released model (``nerdslab/lolcat``; facts in ``shared/notes/methods.md``
§3), without PyTorch Geometric:

* **Input.** Each unit is an *unordered set* of non-overlapping ``snippet_s``-second snippets (3 s) of its
  spike train. Each snippet becomes a histogram of its inter-spike intervals on ``num_bins`` (90)
  log-spaced bins from ``isi_min_s`` (1 ms; shorter ISIs go to the first bin) to ``snippet_s``, normalised
  to sum 1. Snippets with fewer than two spikes (no ISI) are left out; a unit with no snippet left gets NaN
  embeddings. As in the released code, the histograms are then standardised feature by feature with the
  mean and standard deviation of the training snippets (features with zero spread are set to 0).
* **Model.** Per-snippet encoder MLP ``90 -> 128 -> 64`` (ReLU, linear output); multi-head *gated*
  attention pooling over the unit's snippets: a gate MLP ``64 -> heads*64 -> heads`` (PReLU, no biases) gives
  one score per snippet and head, a value MLP ``64 -> heads*head_dim -> heads*head_dim`` gives one vector per
  head; the scores are soft-maxed over the snippets of each unit (segment softmax with ``scatter_reduce`` /
  ``index_add_``) and the weighted values summed, giving ``heads * head_dim`` (4 x 64 = 256) numbers per unit.
  **This pooled vector is the embedding.** A classifier MLP ``256 -> classifier_hidden -> classes`` (ReLU,
  dropout) reads it.
* **Training.** Cross-entropy on the labelled units (label ``""`` = unlabelled, never read). Each step draws
  ``batch_size`` units with a *dynamic class-balanced sampler*: a class is drawn with probability
  proportional to its weight, then a unit of that class uniformly. The weights start equal (5 each, every
  class as likely) and every ``resample_every`` steps move towards classes with a lower training recall over
  the last interval by a zero-sum increment (``m = (1 - recall) / sum(1 - recall)``, ``w += m - mean(m)``,
  floored at 0.1), as LOLCAT's ``DynamicBalancedSampler``, which applies the same update to per-class
  over-sampling factors that start at 5 (there with validation scores once per epoch; here with the recent
  training batches, so no labels are held back). Each unit of a batch loses a random fraction of
  its snippets (snippet dropout, the fraction uniform in ``[dropout_min, dropout_max]`` = 20-50 %, at least one
  kept), and at most ``max_snippets`` of the rest are used (a random subset, a cost cap). AdamW with a
  cosine learning-rate decay.

``transform`` embeds every snippet of a unit (no dropout, no cap). Everything is pure torch and numpy.

Cost (one thread, a busy 2-core machine, the defaults): about 0.05 s per training step (64 units x <= 48
snippets); ``fit`` on 5 populations of 200 units x 480 s took 22 s (histograms included), ``transform`` of
one such population 0.2 s. On the ``easy`` simulator (trained on 4 animals of 120 units x 240 s) a linear probe
on the pooled vectors of a fifth animal reached cell-type macro-F1 0.92 (brain region 0.39: single-unit
timing does not carry the region there).
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator
from torch import Tensor, nn

from ._torch_common import check_fitted, check_float, check_int, check_populations, progress, torch_scope

__all__ = ["LOLCAT", "isi_snippet_histograms", "segment_softmax"]


# ----------------------------------------------------------------------------------------------------------
# Features
# ----------------------------------------------------------------------------------------------------------


def isi_snippet_histograms(
    spike_times: np.ndarray,
    duration: float,
    snippet_s: float = 3.0,
    num_bins: int = 90,
    isi_min_s: float = 0.001,
) -> np.ndarray:
    """Normalised log-ISI histograms of a unit's non-overlapping snippets.

    Parameters
    ----------
    spike_times : np.ndarray
        Sorted spike times in seconds.
    duration : float
        Recording length in seconds; ``max(1, floor(duration / snippet_s))`` snippets tile it (the last partial
        snippet is dropped, unless the recording is shorter than one snippet).
    snippet_s : float, default: 3.0
        Snippet length in seconds; also the upper edge of the histogram.
    num_bins : int, default: 90
        Log-spaced bins between ``isi_min_s`` and ``snippet_s``.
    isi_min_s : float, default: 0.001
        Lower edge of the first bin; shorter intervals are counted in the first bin.

    Returns
    -------
    np.ndarray
        float32 array ``(num_snippets_with_isi, num_bins)``, each row summing to 1; snippets with fewer than
        two spikes are left out (the array can have zero rows).
    """
    times = np.asarray(spike_times, dtype=np.float64)
    num_snippets = max(1, int(math.floor(duration / snippet_s + 1e-9)))
    times = times[times < num_snippets * snippet_s] if duration >= snippet_s else times
    if times.size < 2:
        return np.zeros((0, num_bins), dtype=np.float32)
    snippet = np.minimum((times / snippet_s).astype(np.int64), num_snippets - 1)
    same = snippet[1:] == snippet[:-1]
    isi = np.diff(times)[same]
    owner = snippet[1:][same]
    log_lo, log_hi = math.log(isi_min_s), math.log(snippet_s)
    position = (np.log(np.maximum(isi, isi_min_s)) - log_lo) / (log_hi - log_lo) * num_bins
    bins = np.clip(position.astype(np.int64), 0, num_bins - 1)
    hist = np.bincount(owner * num_bins + bins, minlength=num_snippets * num_bins).reshape(num_snippets, num_bins)
    totals = hist.sum(axis=1)
    keep = totals > 0
    return (hist[keep] / totals[keep, None]).astype(np.float32)


def _population_features(pop, units: Sequence[int] | None, snippet_s: float, num_bins: int, isi_min_s: float):
    """Stacked histograms of ``units`` (all by default) of one population and per-unit row offsets."""
    units = range(len(pop.spike_times)) if units is None else units
    blocks = [isi_snippet_histograms(pop.spike_times[u], pop.duration, snippet_s, num_bins, isi_min_s) for u in units]
    counts = np.array([b.shape[0] for b in blocks], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    features = np.concatenate(blocks, axis=0) if blocks else np.zeros((0, num_bins), dtype=np.float32)
    return features, offsets


# ----------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------


def segment_softmax(scores: Tensor, segment: Tensor, num_segments: int) -> Tensor:
    """Softmax of ``scores`` ``(n, heads)`` over the rows of each segment (``segment``: ``(n,)`` int64 ids)."""
    index = segment.unsqueeze(1).expand_as(scores)
    top = scores.new_full((num_segments, scores.shape[1]), -math.inf)
    top = top.scatter_reduce(0, index, scores.detach(), reduce="amax", include_self=True)
    e = torch.exp(scores - top.index_select(0, segment))
    total = scores.new_zeros((num_segments, scores.shape[1])).index_add_(0, segment, e)
    return e / total.index_select(0, segment)


class _GatedAttentionPool(nn.Module):
    """LOLCAT's multi-head global attention pooling over the snippets of each unit."""

    def __init__(self, in_dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.gate = nn.Sequential(
            nn.Linear(in_dim, heads * in_dim, bias=False), nn.PReLU(), nn.Linear(heads * in_dim, heads, bias=False)
        )
        self.value = nn.Sequential(
            nn.Linear(in_dim, heads * head_dim), nn.ReLU(), nn.Linear(heads * head_dim, heads * head_dim)
        )

    def forward(self, h: Tensor, segment: Tensor, num_segments: int) -> tuple[Tensor, Tensor]:
        score = segment_softmax(self.gate(h), segment, num_segments)  # (n, heads)
        value = self.value(h).view(-1, self.heads, self.head_dim)
        pooled = h.new_zeros((num_segments, self.heads, self.head_dim))
        pooled.index_add_(0, segment, score.unsqueeze(-1) * value)
        return pooled.reshape(num_segments, self.heads * self.head_dim), score


class _LOLCATNet(nn.Module):
    def __init__(self, num_bins, hidden, snippet_dim, heads, head_dim, classifier_hidden, num_classes, dropout):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(num_bins, hidden), nn.ReLU(), nn.Linear(hidden, snippet_dim))
        self.pool = _GatedAttentionPool(snippet_dim, heads, head_dim)
        self.classifier = nn.Sequential(
            nn.Linear(heads * head_dim, classifier_hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(classifier_hidden, num_classes),
        )

    def embed(self, x: Tensor, segment: Tensor, num_segments: int) -> Tensor:
        return self.pool(self.encoder(x), segment, num_segments)[0]

    def forward(self, x: Tensor, segment: Tensor, num_segments: int) -> tuple[Tensor, Tensor]:
        pooled = self.embed(x, segment, num_segments)
        return self.classifier(pooled), pooled


# ----------------------------------------------------------------------------------------------------------
# Estimator
# ----------------------------------------------------------------------------------------------------------


def _check_labels(labels: Any, populations: list) -> list[np.ndarray]:
    """One boolean 'labelled' mask and one object label array per population; ``""`` entries are not read."""
    if labels is None:
        raise ValueError("LOLCAT is supervised: give labels, one string array per population ('' = unlabelled)")
    if isinstance(labels, np.ndarray) and labels.dtype != object:
        raise ValueError("labels must be a list with one string array per population, not a single array")
    labels = list(labels)
    if len(labels) != len(populations):
        raise ValueError(f"{len(labels)} label arrays for {len(populations)} populations; give one per population")
    out = []
    for k, (lab, pop) in enumerate(zip(labels, populations)):
        lab = np.asarray(lab, dtype=object).ravel() if not isinstance(lab, str) else None
        if lab is None:
            raise ValueError(f"labels[{k}] is a string; give one label per unit")
        if lab.shape[0] != len(pop.spike_times):
            raise ValueError(
                f"labels[{k}] has {lab.shape[0]} entries but population {k} has {len(pop.spike_times)} units"
            )
        for value in lab:
            if not isinstance(value, (str, np.str_)):
                raise ValueError(f"labels[{k}] holds a {type(value).__name__} ({value!r}); labels must be strings")
        out.append(lab)
    return out


class LOLCAT(BaseEstimator):
    """Supervised LOLCAT baseline: ISI-snippet sets -> gated attention pooling -> classifier.

    The embedding of a unit is the pooled vector (``heads * head_dim`` numbers) that feeds the classifier.
    See the module docstring for the recipe.

    Parameters
    ----------
    steps : int, default: 400
        Optimisation steps (batches of units).
    batch_size : int, default: 64
        Units per step.
    lr : float, default: 1e-3
        Peak AdamW learning rate (cosine decay to 0 over ``steps``).
    weight_decay : float, default: 1e-4
        AdamW weight decay.
    snippet_s : float, default: 3.0
        Snippet length in seconds.
    num_bins : int, default: 90
        Log-spaced ISI bins per snippet.
    isi_min_s : float, default: 0.001
        Lower edge of the ISI histogram in seconds.
    hidden_dim : int, default: 128
        Hidden width of the snippet encoder.
    snippet_dim : int, default: 64
        Output width of the snippet encoder.
    heads : int, default: 4
        Attention-pooling heads.
    head_dim : int, default: 64
        Width of each head's pooled vector; the embedding has ``heads * head_dim`` dimensions.
    classifier_hidden : int, default: 64
        Hidden width of the classifier MLP.
    dropout : float, default: 0.2
        Dropout in the classifier.
    dropout_min, dropout_max : float, default: 0.2, 0.5
        Range of the per-unit snippet-dropout fraction during training.
    max_snippets : int, default: 48
        At most this many snippets of a unit per training step (a random subset after dropout).
    resample_every : int, default: 50
        Steps between updates of the dynamic class-balanced sampler's weights.
    seed : int, default: 0
        Seed of the initialisation, the sampler and dropout.
    num_threads : int or None, default: 1
        Torch threads during ``fit``/``transform`` (restored afterwards); None keeps the current setting.
    progress_bar : bool, default: False
        Show a tqdm bar over the training steps.

    Attributes
    ----------
    classes_ : np.ndarray
        Sorted class names seen in ``fit``.
    embedding_dim_ : int
        Width of the embedding (``heads * head_dim``).
    feature_mean_, feature_std_ : np.ndarray
        Per-bin standardisation of the histograms, from the training snippets.
    model_ : torch.nn.Module
        The trained network (eval mode).
    loss_history_ : list of float
        Training loss of every step.
    class_weights_ : np.ndarray
        Final sampler weights of the classes (they start at 5; a class is drawn with probability proportional
        to its weight).
    num_train_units_ : int
        Labelled units with at least one snippet used in training.
    fit_seconds_, last_transform_seconds_ : float
        Wall-clock time of the last ``fit`` and ``transform``.
    """

    supervised = True
    needs_templates = False

    def __init__(
        self,
        steps: int = 400,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        snippet_s: float = 3.0,
        num_bins: int = 90,
        isi_min_s: float = 0.001,
        hidden_dim: int = 128,
        snippet_dim: int = 64,
        heads: int = 4,
        head_dim: int = 64,
        classifier_hidden: int = 64,
        dropout: float = 0.2,
        dropout_min: float = 0.2,
        dropout_max: float = 0.5,
        max_snippets: int = 48,
        resample_every: int = 50,
        seed: int = 0,
        num_threads: int | None = 1,
        progress_bar: bool = False,
    ):
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.snippet_s = snippet_s
        self.num_bins = num_bins
        self.isi_min_s = isi_min_s
        self.hidden_dim = hidden_dim
        self.snippet_dim = snippet_dim
        self.heads = heads
        self.head_dim = head_dim
        self.classifier_hidden = classifier_hidden
        self.dropout = dropout
        self.dropout_min = dropout_min
        self.dropout_max = dropout_max
        self.max_snippets = max_snippets
        self.resample_every = resample_every
        self.seed = seed
        self.num_threads = num_threads
        self.progress_bar = progress_bar

    # ------------------------------------------------------------------------------------------------------

    def _check_params(self) -> None:
        name = type(self).__name__
        for key in ("steps", "batch_size", "num_bins", "hidden_dim", "snippet_dim", "heads", "head_dim"):
            check_int(name, key, getattr(self, key), 1)
        for key in ("classifier_hidden", "max_snippets", "resample_every"):
            check_int(name, key, getattr(self, key), 1)
        check_int(name, "seed", self.seed, 0)
        if self.num_threads is not None:
            check_int(name, "num_threads", self.num_threads, 1)
        check_float(name, "lr", self.lr, 0.0, low_open=True)
        check_float(name, "weight_decay", self.weight_decay, 0.0)
        check_float(name, "snippet_s", self.snippet_s, 0.0, low_open=True)
        check_float(name, "isi_min_s", self.isi_min_s, 0.0, self.snippet_s, low_open=True)
        if self.isi_min_s >= self.snippet_s:
            raise ValueError(f"{name}: isi_min_s ({self.isi_min_s}) must be below snippet_s ({self.snippet_s})")
        check_float(name, "dropout", self.dropout, 0.0, 1.0)
        check_float(name, "dropout_min", self.dropout_min, 0.0, 1.0)
        check_float(name, "dropout_max", self.dropout_max, self.dropout_min, 1.0)

    def _features(self, pop, units=None):
        return _population_features(pop, units, self.snippet_s, self.num_bins, self.isi_min_s)

    def fit(self, populations: Sequence, labels: Sequence[np.ndarray] | None = None, templates: Any = None) -> "LOLCAT":
        """Train on the labelled units of ``populations``.

        Parameters
        ----------
        populations : sequence of SpikeTrainSet
            One spike-train set per recording.
        labels : sequence of np.ndarray
            One string array per population, one entry per unit; ``""`` marks an unlabelled unit, which is never
            read. Populations without labelled units are not trained on.
        templates : ignored
            LOLCAT does not use waveforms.

        Returns
        -------
        LOLCAT
            ``self``.

        Raises
        ------
        ValueError
            Bad parameters, empty populations, a label array of the wrong length or with non-string entries,
            or fewer than two classes among the labelled units that have at least one ISI.
        """
        self._check_params()
        populations = check_populations(populations, "LOLCAT.fit")
        labels = _check_labels(labels, populations)
        t0 = time.perf_counter()

        # Features of the labelled units only: unlabelled rows are never indexed.
        blocks, unit_labels = [], []
        for pop, lab in zip(populations, labels):
            labelled = np.flatnonzero(np.array([value != "" for value in lab], dtype=bool))
            if labelled.size == 0:
                continue
            feats, offsets = self._features(pop, labelled)
            for j, u in enumerate(labelled):
                if offsets[j + 1] > offsets[j]:
                    blocks.append(feats[offsets[j] : offsets[j + 1]])
                    unit_labels.append(str(lab[u]))
        classes = np.array(sorted(set(unit_labels)))
        if classes.size < 2:
            raise ValueError(
                f"LOLCAT needs at least two classes among the labelled units with spikes, got {classes.tolist()}"
            )
        y = np.searchsorted(classes, np.array(unit_labels))
        x_all = np.concatenate(blocks, axis=0)
        counts = np.array([b.shape[0] for b in blocks], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        mean = x_all.mean(axis=0)
        std = x_all.std(axis=0)
        x_all = _standardise(x_all, mean, std)

        rng = np.random.default_rng(self.seed)
        num_classes = classes.size
        members = [np.flatnonzero(y == c) for c in range(num_classes)]
        weights = np.full(num_classes, 5.0)
        hits, seen = np.zeros(num_classes), np.zeros(num_classes)
        history: list[float] = []
        with torch_scope(self.seed, self.num_threads):
            model = _LOLCATNet(
                self.num_bins,
                self.hidden_dim,
                self.snippet_dim,
                self.heads,
                self.head_dim,
                self.classifier_hidden,
                num_classes,
                self.dropout,
            )
            optimizer = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            x_tensor = torch.from_numpy(x_all)
            model.train()
            bar = progress(self.steps, self.progress_bar, "LOLCAT fit")
            for step in range(self.steps):
                for group in optimizer.param_groups:
                    group["lr"] = self.lr * 0.5 * (1.0 + math.cos(math.pi * step / self.steps))
                batch_classes = rng.choice(num_classes, size=self.batch_size, p=weights / weights.sum())
                units = np.array([members[c][rng.integers(members[c].size)] for c in batch_classes])
                rows, segment = self._training_snippets(rng, units, offsets)
                logits, _ = model(x_tensor[torch.from_numpy(rows)], torch.from_numpy(segment), units.size)
                target = torch.from_numpy(y[units])
                loss = F.cross_entropy(logits, target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                history.append(float(loss.detach()))
                correct = (logits.detach().argmax(1) == target).numpy()
                np.add.at(hits, batch_classes, correct)
                np.add.at(seen, batch_classes, 1.0)
                if (step + 1) % self.resample_every == 0:
                    weights = _update_weights(weights, hits, seen)
                    hits[:], seen[:] = 0.0, 0.0
                bar.update()
                bar.set_postfix(loss=f"{history[-1]:.3f}")
            bar.close()
            model.eval()

        self.classes_ = classes
        self.embedding_dim_ = self.heads * self.head_dim
        self.feature_mean_, self.feature_std_ = mean, std
        self.model_ = model
        self.loss_history_ = history
        self.class_weights_ = weights
        self.num_train_units_ = int(y.size)
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _training_snippets(self, rng: np.random.Generator, units: np.ndarray, offsets: np.ndarray):
        """Rows of the kept snippets of each batch unit (dropout, then the cap) and their segment ids."""
        rows, segment = [], []
        for j, u in enumerate(units):
            n = int(offsets[u + 1] - offsets[u])
            p = rng.uniform(self.dropout_min, self.dropout_max)
            keep = min(self.max_snippets, max(1, int(round(n * (1.0 - p)))))
            chosen = (
                offsets[u] + rng.choice(n, size=keep, replace=False)
                if keep < n
                else np.arange(offsets[u], offsets[u + 1])
            )
            rows.append(chosen)
            segment.append(np.full(keep, j, dtype=np.int64))
        return np.concatenate(rows).astype(np.int64), np.concatenate(segment)

    def _embed_population(self, pop) -> tuple[np.ndarray, np.ndarray]:
        """(num_units, dim) embeddings (NaN rows for units without snippets) and (num_units, classes) logits."""
        feats, offsets = self._features(pop)
        feats = _standardise(feats, self.feature_mean_, self.feature_std_)
        n_units = offsets.size - 1
        emb = np.full((n_units, self.embedding_dim_), np.nan)
        logits = np.full((n_units, self.classes_.size), np.nan)
        has = np.flatnonzero(np.diff(offsets) > 0)
        chunk = 64
        with torch.no_grad():
            for start in range(0, has.size, chunk):
                units = has[start : start + chunk]
                rows = np.concatenate([np.arange(offsets[u], offsets[u + 1]) for u in units])
                segment = np.repeat(np.arange(units.size), np.diff(offsets)[units])
                out, pooled = self.model_(
                    torch.from_numpy(feats[rows]), torch.from_numpy(segment.astype(np.int64)), units.size
                )
                emb[units] = pooled.double().numpy()
                logits[units] = out.double().numpy()
        return emb, logits

    def _run(self, populations: Sequence, owner: str) -> list[tuple[np.ndarray, np.ndarray]]:
        check_fitted(self, "model_")
        populations = check_populations(populations, owner)
        t0 = time.perf_counter()
        with torch_scope(self.seed, self.num_threads):
            out = [self._embed_population(pop) for pop in populations]
        self.last_transform_seconds_ = time.perf_counter() - t0
        return out

    def transform(self, populations: Sequence, templates: Any = None) -> list[np.ndarray]:
        """Pooled embedding of every unit.

        Parameters
        ----------
        populations : sequence of SpikeTrainSet
            Populations to embed (fitted or new ones: the model is feed-forward).
        templates : ignored
            LOLCAT does not use waveforms.

        Returns
        -------
        list of np.ndarray
            One float64 ``(num_units, heads * head_dim)`` array per population; units without any ISI inside a
            snippet get NaN rows.

        Raises
        ------
        ValueError
            If the model is not fitted or ``populations`` is empty / not a sequence of populations.
        """
        return [emb for emb, _ in self._run(populations, "LOLCAT.transform")]

    def predict(self, populations: Sequence) -> list[np.ndarray]:
        """Class predicted by the LOLCAT classifier for every unit (``""`` for units without any ISI).

        Returns
        -------
        list of np.ndarray
            One string array per population.
        """
        out = []
        for _, logits in self._run(populations, "LOLCAT.predict"):
            pred = np.full(logits.shape[0], "", dtype=object)
            ok = np.all(np.isfinite(logits), axis=1)
            pred[ok] = self.classes_[np.argmax(logits[ok], axis=1)]
            out.append(pred.astype(str))
        return out


def _standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(x - mean) / std`` per feature, 0 where ``std`` is 0 (as LOLCAT's Normalize)."""
    safe = np.where(std > 0, std, 1.0)
    out = (x - mean) / safe
    out[:, std <= 0] = 0.0
    return out.astype(np.float32)


def _update_weights(weights: np.ndarray, hits: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """LOLCAT's sampler update: a zero-sum shift of the class weights towards classes with a low recent recall.

    Classes not drawn in the interval count as recall 1. Weights are floored at 0.1 (they start at 5).
    """
    recall = np.where(seen > 0, hits / np.maximum(seen, 1.0), 1.0)
    miss = 1.0 - recall
    if miss.sum() <= 0:
        return weights
    miss = miss / miss.sum()
    return np.maximum(weights + miss - miss.mean(), 0.1)
