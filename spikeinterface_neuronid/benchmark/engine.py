"""The run loop: one preset's simulated animals, every row fitted, embedded and probed under each protocol.

``_Dataset`` holds a preset's simulated animals; ``_Run`` keeps the records of a run (ledger of fits, probes, folds,
pooled predictions, timings, label efficiency) and turns them into the summary rows with their intervals.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Callable, Sequence

import numpy as np

from ..data import SpikeTrainSet
from ..evaluation import linear_probe
from .adapters import MethodSpec
from .protocol import _finite_rows, _summarise, _transductive_split, pooled_scores
from .settings import PRODUCT, TASKS, BenchmarkSettings

__all__: list[str] = []


class _PeakMemory:
    """Peak resident memory (MiB above the start) of the process during a block, sampled every 20 ms."""

    def __init__(self):
        self.peak_mib = 0.0
        self._stop = threading.Event()

    @staticmethod
    def _rss() -> float:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except (OSError, ValueError):  # not Linux: fall back to the lifetime peak
            import resource

            scale = 1 / 2**20 if sys.platform == "darwin" else 1 / 1024
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale

    def _sample(self):
        while not self._stop.wait(0.02):
            self.peak_mib = max(self.peak_mib, self._rss() - self._start)

    def __enter__(self):
        self._start = self._rss()
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_mib = max(self.peak_mib, self._rss() - self._start)
        self.seconds = time.perf_counter() - self._t0
        return False


class _Dataset:
    """One preset's simulated animals as model input, with labels and waveform templates."""

    def __init__(self, preset: str, settings: BenchmarkSettings, progress_bar: bool):
        from ..simulation import simulate_dataset, simulate_templates

        sessions = simulate_dataset(
            preset,
            animals=list(range(settings.num_animals)),
            num_neurons=settings.num_neurons,
            duration_s=settings.duration_s,
            seed=settings.simulation_seed,
            progress_bar=progress_bar,
        )
        self.preset = preset
        self.labels = {task: [np.asarray(getattr(s, task)).astype(str) for s in sessions] for task in TASKS}
        self.animal_of_unit = np.concatenate([np.full(s.num_units, a) for a, s in enumerate(sessions)])
        fs, ms_before = 30000.0, 1.0
        self.templates = [
            simulate_templates(s, sampling_frequency=fs, ms_before=ms_before, seed=settings.simulation_seed)
            for s in sessions
        ]
        self.populations = [s.to_spike_train_set() for s in sessions]
        if settings.waveforms:  # the templates NEMO gets, as a SortingAnalyzer's templates extension gives them
            self.populations = [
                SpikeTrainSet(
                    p.spike_times,
                    p.duration,
                    covariates=p.covariates,
                    covariate_rate_hz=p.covariate_rate_hz,
                    waveforms=t,
                    waveform_sampling_frequency=fs,
                    waveform_nbefore=int(round(ms_before * 1e-3 * fs)),
                )
                for p, t in zip(self.populations, self.templates)
            ]

    @classmethod
    def simulated(cls, preset: str, settings: BenchmarkSettings, log: Callable[[str], None]) -> "_Dataset":
        """Simulate ``preset`` for a run and log how long it took."""
        t0 = time.perf_counter()
        data = cls(preset, settings, progress_bar=False)
        log(
            f"{preset}: simulated {len(data.populations)} animals, {len(data.animal_of_unit)} units "
            f"in {time.perf_counter() - t0:.1f} s"
        )
        return data

    def y(self, task: str) -> np.ndarray:
        return np.concatenate(self.labels[task])


class _Run:
    def __init__(self, settings: BenchmarkSettings, log: Callable[[str], None]):
        self.settings = settings
        self.log = log
        self.ledger: list[dict] = []
        self.probes: list[dict] = []
        self.folds: list[dict] = []
        self.speed: list[dict] = []
        self.label_efficiency: list[dict] = []
        self.predictions: dict[tuple, np.ndarray] = {}  # (preset, task, protocol, probe, method) -> label per unit
        self.truth: dict[str, dict] = {}  # preset -> animal of each unit, labels per task
        self.examples: dict = {}  # (preset, method) -> {task: embedding and labels of the first test animal, IZS}

    # -- fitting with bookkeeping ------------------------------------------------------------------------------

    def _fit(
        self,
        spec: MethodSpec,
        data: _Dataset,
        corpus: Sequence[int],
        protocol: str,
        fold,
        test_animals,
        labels: list[np.ndarray] | None = None,
        test_units: np.ndarray | None = None,
        task: str | None = None,
    ):
        est = spec.build(self.settings.seed)
        if spec.kind == "pretrained" and protocol == "transductive":
            est.transductive_steps = self.settings.transductive_steps
        pops = [data.populations[a] for a in corpus]
        kwargs: dict = {}
        if getattr(est, "needs_templates", False):
            kwargs["templates"] = [data.templates[a] for a in corpus]
        labelled = labelled_test = 0
        if labels is not None:
            kwargs["labels"] = [labels[a] for a in corpus]
            labelled = int(sum((labels[a] != "").sum() for a in corpus))
            labelled_test = int(sum((labels[a] != "").sum() for a in test_animals if a in corpus))
            if test_units is not None:  # transductive: the test units are spread over all animals
                labelled_test = int((np.concatenate(labels)[test_units] != "").sum())
        with _PeakMemory() as meter:
            est.fit(pops, **kwargs)
        self.ledger.append(
            dict(
                preset=data.preset,
                method=spec.name,
                kind=spec.kind,
                protocol=protocol,
                fold=fold,
                task=task,
                corpus_animals=[int(a) for a in corpus],
                test_animals=[int(a) for a in test_animals],
                labelled_units=labelled,
                labelled_test_units=labelled_test,
                transductive_steps=int(getattr(est, "transductive_steps", 0) or 0) if spec.kind == "pretrained" else 0,
            )
        )
        self._record_speed(data, spec, "fit", protocol, fold, meter, pops)
        return est

    def _record_speed(self, data: "_Dataset", spec: MethodSpec, stage: str, protocol: str, fold, meter, pops) -> None:
        self.speed.append(
            dict(
                preset=data.preset,
                method=spec.name,
                stage=stage,
                protocol=protocol,
                fold=fold,
                seconds=meter.seconds,
                peak_mib=meter.peak_mib,
                num_units=sum(p.num_units for p in pops),
            )
        )

    def _embed(self, spec: MethodSpec, est, data: _Dataset, protocol: str, fold) -> np.ndarray:
        kwargs = {"templates": data.templates} if getattr(est, "needs_templates", False) else {}
        with _PeakMemory() as meter:
            parts = est.transform(data.populations, **kwargs)
        self._record_speed(data, spec, "embed", protocol, fold, meter, data.populations)
        return np.concatenate([np.asarray(p, dtype=np.float64) for p in parts])

    # -- scoring -----------------------------------------------------------------------------------------------

    def _record(self, data, task, protocol, probe, spec, fold, C, result, train, test):
        self.folds.append(
            dict(
                preset=data.preset,
                task=task,
                protocol=protocol,
                method=spec.name,
                probe=probe,
                fold=int(fold),
                C=float(C),
                macro_f1=result.macro_f1,
                balanced_accuracy=result.balanced_accuracy,
                num_train_units=int(len(train)),
                num_test_units=int(len(test)),
            )
        )
        if protocol != "transductive":
            key = (data.preset, task, protocol, probe, spec.name)
            if key not in self.predictions:
                self.predictions[key] = np.full(len(data.animal_of_unit), "", dtype=object)
            self.predictions[key][test] = result.predictions

    def _zero_shot(
        self,
        x: np.ndarray,
        data: _Dataset,
        task: str,
        spec: MethodSpec,
        animal: int,
        protocols: Sequence[str],
        tune: bool,
    ) -> None:
        """Leave-one-animal-out probes for ``animal``: C=1 (recorded under every protocol), and C tuned."""
        y, of = data.y(task), data.animal_of_unit
        ok = _finite_rows(x)
        train = np.flatnonzero((of != animal) & ok)
        test = np.flatnonzero((of == animal) & ok)
        if len(test) == 0 or len(np.unique(y[train])) < 2:
            raise ValueError(f"{spec.name} on {data.preset}: no embedded test units or < 2 training classes")
        result = linear_probe(x[train], y[train], x[test], y[test], C=1.0)
        self._add_probe(data, task, protocols[0], spec, animal, train, test)
        for protocol in protocols:
            self._record(data, task, protocol, "C=1", spec, animal, 1.0, result, train, test)
        if tune:
            val_animal = (animal - 1) % self.settings.num_animals
            sub, val = train[of[train] != val_animal], train[of[train] == val_animal]
            best_c, best = 1.0, -1.0
            if len(np.unique(y[sub])) >= 2 and len(val):
                for c in self.settings.c_grid:
                    f1 = linear_probe(x[sub], y[sub], x[val], y[val], C=c).macro_f1
                    if f1 > best + 1e-12:
                        best_c, best = float(c), f1
            tuned = result if best_c == 1.0 else linear_probe(x[train], y[train], x[test], y[test], C=best_c)
            self._record(data, task, "inductive_zero_shot", "C tuned", spec, animal, best_c, tuned, train, test)
        if protocols[0] == "inductive_zero_shot" and animal == self.settings.tested_animals[0]:
            self.examples.setdefault((data.preset, spec.name), {})[task] = dict(x=x[test], y=y[test])

    def _add_probe(
        self, data: _Dataset, task: str, protocol: str, spec: MethodSpec, fold: int, train: np.ndarray, test: np.ndarray
    ) -> None:
        """Note one fitted probe and how many units its training and test sets share (checked by check_protocol)."""
        self.probes.append(
            dict(
                preset=data.preset,
                method=spec.name,
                task=task,
                protocol=protocol,
                fold=int(fold),
                overlap=int(np.intersect1d(train, test).size),
            )
        )

    def _transductive(self, x: np.ndarray, data: _Dataset, task: str, spec: MethodSpec, seed: int, split) -> None:
        y = data.y(task)
        ok = _finite_rows(x)
        train, test = split[0][ok[split[0]]], split[1][ok[split[1]]]
        result = linear_probe(x[train], y[train], x[test], y[test], C=1.0)
        self._add_probe(data, task, "transductive", spec, seed, train, test)
        self._record(data, task, "transductive", "C=1", spec, seed, 1.0, result, train, test)

    # -- one preset ----------------------------------------------------------------------------------------------

    def run_preset(self, data: _Dataset, specs: Sequence[MethodSpec], bar=None) -> None:
        s = self.settings
        everyone = list(range(s.num_animals))
        tested = s.tested_animals
        self.truth[data.preset] = dict(animal=data.animal_of_unit, y={task: data.y(task) for task in TASKS})
        tsplits = {
            task: {
                seed: _transductive_split(data.y(task), s.transductive_test_fraction, seed)
                for seed in s.transductive_seeds
            }
            for task in TASKS
        }
        izs, tzs = "inductive_zero_shot", "transductive_zero_shot"
        for spec in specs:
            t0 = time.perf_counter()
            if spec.kind in ("fixed", "pretrained"):
                est = self._fit(spec, data, everyone, "fixed", "all", tested)
                x = self._embed(spec, est, data, "fixed", "all")
                for task in TASKS:
                    for a in tested:
                        self._zero_shot(x, data, task, spec, a, (izs, tzs) if spec.kind == "fixed" else (izs,), True)
                if spec.kind == "pretrained":
                    if spec.name == PRODUCT:
                        self._label_efficiency(data, x)
                    est = self._fit(spec, data, everyone, "transductive", "all", tested)
                    x = self._embed(spec, est, data, "transductive", "all")
                    for task in TASKS:
                        for a in tested:
                            self._zero_shot(x, data, task, spec, a, (tzs,), False)
                for task in TASKS:
                    for seed, split in tsplits[task].items():
                        self._transductive(x, data, task, spec, seed, split)
            elif spec.kind == "ssl":
                for a in tested:
                    corpus = [b for b in everyone if b != a]
                    est = self._fit(spec, data, corpus, "inductive", int(a), [a])
                    x = self._embed(spec, est, data, "inductive", int(a))
                    for task in TASKS:
                        self._zero_shot(x, data, task, spec, a, (izs,), True)
                    self.log(f"  {data.preset} {spec.name}: test animal {a} done ({time.perf_counter() - t0:.0f} s)")
                est = self._fit(spec, data, everyone, "transductive", "all", tested)
                x = self._embed(spec, est, data, "transductive", "all")
                for task in TASKS:
                    for a in tested:
                        self._zero_shot(x, data, task, spec, a, (tzs,), False)
                    for seed, split in tsplits[task].items():
                        self._transductive(x, data, task, spec, seed, split)
            else:  # supervised: fitted on the probe-training labels of each task and split
                for task in TASKS:
                    parts = data.labels[task]
                    for a in tested:
                        corpus = [b for b in everyone if b != a]  # the test animal is not even given unlabelled
                        est = self._fit(spec, data, corpus, "inductive", int(a), [a], labels=parts, task=task)
                        x = self._embed(spec, est, data, "inductive", int(a))
                        # reads labelled units only: a TZS fit (test animal unlabelled) would be this fit
                        self._zero_shot(x, data, task, spec, a, (izs, tzs), True)
                    bounds = np.cumsum([0] + [len(y) for y in parts])
                    for seed, (train, test) in tsplits[task].items():
                        flat = np.full(bounds[-1], "", dtype=object)
                        flat[train] = data.y(task)[train]
                        labels = [flat[bounds[b] : bounds[b + 1]].astype(str) for b in everyone]
                        est = self._fit(
                            spec,
                            data,
                            everyone,
                            "transductive",
                            int(seed),
                            tested,
                            labels=labels,
                            test_units=test,
                            task=task,
                        )
                        x = self._embed(spec, est, data, "transductive", int(seed))
                        self._transductive(x, data, task, spec, seed, (train, test))
            self.log(f"  {data.preset} {spec.name}: {time.perf_counter() - t0:.1f} s")
            if bar is not None:
                bar.update(1)

    def izs_example(self, data: _Dataset, spec: MethodSpec) -> None:
        """Only the IZS fit(s) and C=1 probes of the first test animal, as :meth:`run_preset` makes them.

        Fills ``examples`` (the embedding maps' input) and the C=1 predictions of that animal, with the same
        fits (corpus, labels, seed) as a full run, so that a re-run can redraw the figures of a row it keeps.
        """
        everyone = list(range(self.settings.num_animals))
        a = self.settings.tested_animals[0]
        izs = ("inductive_zero_shot",)
        if spec.kind in ("fixed", "pretrained"):
            est = self._fit(spec, data, everyone, "fixed", "all", self.settings.tested_animals)
            x = self._embed(spec, est, data, "fixed", "all")
            for task in TASKS:
                self._zero_shot(x, data, task, spec, a, izs, False)
        elif spec.kind == "ssl":
            est = self._fit(spec, data, [b for b in everyone if b != a], "inductive", int(a), [a])
            x = self._embed(spec, est, data, "inductive", int(a))
            for task in TASKS:
                self._zero_shot(x, data, task, spec, a, izs, False)
        else:
            for task in TASKS:
                corpus = [b for b in everyone if b != a]
                est = self._fit(spec, data, corpus, "inductive", int(a), [a], labels=data.labels[task], task=task)
                x = self._embed(spec, est, data, "inductive", int(a))
                self._zero_shot(x, data, task, spec, a, izs, False)

    # -- label efficiency (product row, IZS) -----------------------------------------------------------------------

    def _label_efficiency(self, data: _Dataset, x: np.ndarray) -> None:
        of = data.animal_of_unit
        ok = _finite_rows(x)
        tested = self.settings.tested_animals
        units = np.flatnonzero(np.isin(of, tested))
        rng = np.random.default_rng(self.settings.seed)
        for task in TASKS:
            y = data.y(task)
            for fraction in self.settings.label_fractions:
                pred = np.full(len(y), "", dtype=object)
                sizes = []
                for a in tested:
                    pool = np.flatnonzero((of != a) & ok)
                    # stratified subsample with at least one unit per class
                    chosen = np.sort(
                        np.concatenate(
                            [
                                rng.choice(m, size=max(1, int(round(fraction * m.size))), replace=False)
                                for m in (pool[y[pool] == c] for c in np.unique(y[pool]))
                            ]
                        )
                    )
                    test = np.flatnonzero((of == a) & ok)
                    pred[test] = linear_probe(x[chosen], y[chosen], x[test], y[test]).predictions
                    sizes.append(chosen.size)
                score = pooled_scores(y[units], pred[units])
                self.label_efficiency.append(
                    dict(
                        preset=data.preset,
                        task=task,
                        method=PRODUCT,
                        fraction=float(fraction),
                        num_labelled_units=float(np.mean(sizes)),
                        macro_f1=float(score["macro_f1"][0]),
                        balanced_accuracy=float(score["balanced_accuracy"][0]),
                    )
                )

    # -- summary, intervals ------------------------------------------------------------------------------------------

    def summarise(self, methods: Sequence[str]) -> tuple[list[dict], list[dict], list[dict]]:
        """Summary rows, product-minus-baseline differences and the ablation drops, with bootstrap intervals."""
        return _summarise(self.settings, self.truth, self.folds, self.predictions, methods)

    def predictions_record(self) -> dict:
        """Every pooled prediction as class indices (-1: no prediction), to recompute any interval later."""
        out: dict = {}
        for preset, truth in self.truth.items():
            entry = dict(animal=truth["animal"].tolist(), tasks={})
            for task in TASKS:
                y = truth["y"][task]
                preds = {
                    f"{protocol}|{probe}|{method}": p.astype(str)
                    for (pr, t, protocol, probe, method), p in self.predictions.items()
                    if pr == preset and t == task
                }
                classes = sorted(set(y) | {c for p in preds.values() for c in p if c})
                index = {c: i for i, c in enumerate(classes)}
                entry["tasks"][task] = dict(
                    classes=classes,
                    y=[index[c] for c in y],
                    predictions={k: [index.get(c, -1) for c in p] for k, p in preds.items()},
                )
            out[preset] = entry
        return out
