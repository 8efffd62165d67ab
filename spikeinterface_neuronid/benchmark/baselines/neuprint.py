"""NeuPRINT (Mi et al., NeurIPS 2023): implicit per-neuron vectors learned through a dynamics model.

A compact re-implementation of the recipe in ``shared/notes/methods.md`` §3 ("NeuPRINT-lite"; facts from
``lumimim/NeuPRINT``):

* **Representation.** Every unit ``i`` of every fitted population owns a learnable vector ``Φ_i``
  (``embedding_dim`` = 32). It is not computed from the data by an encoder: it is a free parameter that
  the dynamics model ``f`` needs to predict the unit's activity ("implicit" representation). **Φ is the
  embedding.** As in NeuPRINT, Φ is concatenated (here: added after a linear map, which is the same up to
  the first layer) to every time step of the unit's input.
* **Data.** Spike counts in ``bin_s`` bins (100 ms, the notes' choice for ephys: at 20 ms most bins hold 0
  or 1 spike, and a 3.2 s context would need 160 tokens instead of 32, 25x the attention cost on 2 CPU
  cores). Population features per bin, as NeuPRINT's ``mean_activity`` / ``std_activity``: the mean and
  standard deviation of the counts of the *other* units of the population in that bin (leave-one-out),
  z-scored per population over time. The model input of a unit in bin ``t`` is
  ``[log1p(count_{t-1}), pop_mean_t, pop_std_t]``: its own past and the population at the predicted step.
* **Model f.** A small causal transformer (``num_layers`` = 1, ``model_dim`` = 64, ``num_heads`` = 4,
  pre-LayerNorm, GELU feed-forward ``ff_mult * model_dim``, sinusoidal positions, no dropout) over windows
  of ``window_bins`` (32) bins; the output of step ``t`` sees steps ``<= t`` only and gives the log rate of
  the unit's count in bin ``t``. Loss: Poisson negative log-likelihood on every step of the window. Optional
  BERT-style input masking (``mask_ratio``, default 0): an input count is replaced by 0 (80 %), by a random
  count of the window (10 %) or kept (10 %), the loss staying on all steps.
* **fit.** Φ of all units of all populations and ``f`` are learned jointly with Adam (``lr`` for ``f``,
  ``embedding_lr`` for Φ, cosine decay), each step on ``batch_size`` windows of uniformly drawn units at
  uniformly drawn times. Φ starts at 0.
* **transform.** A population object passed to ``fit`` (the same object, checked with ``is``) gets its jointly
  learned Φ. Any other population gets Φ by **test-time optimisation**: ``f`` is frozen and a fresh Φ table
  (zeros) is fitted to that population's units alone, ``transform_steps`` Adam steps at ``transform_lr``,
  each step one window per unit (so every unit gets ``transform_steps`` updates). This is NeuPRINT's
  procedure for new neurons and is *not* feed-forward: embedding a new population costs about
  ``transform_steps`` forward+backward passes of ``f`` over ``num_units`` windows (see
  ``last_transform_seconds_``); the result depends on ``seed``.

Cost (one thread, a busy 2-core machine, the defaults): about 0.08 s per ``fit`` step (256 windows of 32
bins) and 0.045 s per test-time step for 200 units; ``fit`` on 5 populations of 200 units x 480 s took 32 s,
``transform`` of one new such population 9 s (200 steps), of a fitted one ~0 s. Memory is the binned counts
(4 bytes x units x bins). On the ``easy`` simulator (4 training animals of 120 units x 240 s, animal 4 embedded
by test-time optimisation) a linear probe reached macro-F1 0.62 for cell type and 0.84 for region.

Pure torch and numpy; no SpikeInterface.
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

__all__ = ["NeuPRINT", "bin_population"]


def bin_population(pop, bin_s: float) -> np.ndarray:
    """Spike counts of every unit in ``floor(duration / bin_s)`` bins (last partial bin dropped).

    Returns
    -------
    np.ndarray
        float32 array ``(num_units, num_bins)``.
    """
    num_bins = int(math.floor(float(pop.duration) / bin_s + 1e-9))
    counts = np.zeros((len(pop.spike_times), num_bins), dtype=np.float32)
    for u, times in enumerate(pop.spike_times):
        idx = np.floor(np.asarray(times, dtype=np.float64) / bin_s).astype(np.int64)
        idx = idx[(idx >= 0) & (idx < num_bins)]
        counts[u] = np.bincount(idx, minlength=num_bins)
    return counts


class _Population:
    """Binned counts of one population plus what the leave-one-out population features need."""

    def __init__(self, counts: np.ndarray):
        self.counts = torch.from_numpy(counts)  # (N, T)
        self.num_units, self.num_bins = counts.shape
        c64 = counts.astype(np.float64)
        self.total = torch.from_numpy(c64.sum(0).astype(np.float32))
        self.total_sq = torch.from_numpy((c64**2).sum(0).astype(np.float32))
        n = self.num_units
        mean = c64.mean(0)
        std = np.sqrt(np.maximum((c64**2).mean(0) - mean**2, 0.0))
        self.norm = [(float(mean.mean()), float(mean.std()) or 1.0), (float(std.mean()), float(std.std()) or 1.0)]
        self.log_counts = torch.log1p(self.counts)
        self.single = n < 2

    def windows(self, units: Tensor, starts: Tensor, width: int) -> tuple[Tensor, Tensor, Tensor]:
        """Inputs ``(B, W)`` (log1p of the previous bin's count), population features ``(B, W, 2)`` and targets
        ``(B, W)`` for windows ``[start, start + width)`` (``start >= 1``)."""
        steps = starts.unsqueeze(1) + torch.arange(width)
        target = self.counts[units.unsqueeze(1), steps]
        previous = self.log_counts[units.unsqueeze(1), steps - 1]
        if self.single:
            pop = target.new_zeros(target.shape + (2,))
        else:
            m = self.num_units - 1
            mean = (self.total[steps] - target) / m
            var = (self.total_sq[steps] - target**2) / m - mean**2
            std = var.clamp_min(0.0).sqrt()
            (m0, s0), (m1, s1) = self.norm
            pop = torch.stack(((mean - m0) / s0, (std - m1) / s1), dim=-1)
        return previous, pop, target


def _sinusoid(length: int, dim: int) -> Tensor:
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)[:, : dim // 2]
    return table


class _Dynamics(nn.Module):
    """f: causal transformer predicting a unit's log rate per bin from its past, Φ and population features."""

    def __init__(self, embedding_dim, model_dim, num_layers, num_heads, ff_mult, window_bins):
        super().__init__()
        self.read_in = nn.Linear(3, model_dim)
        self.read_phi = nn.Linear(embedding_dim, model_dim, bias=False)
        self.register_buffer("position", _sinusoid(window_bins, model_dim), persistent=False)
        layer = nn.TransformerEncoderLayer(
            model_dim,
            num_heads,
            dim_feedforward=ff_mult * model_dim,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(model_dim)
        self.read_out = nn.Linear(model_dim, 1)
        causal = torch.triu(torch.full((window_bins, window_bins), -math.inf), diagonal=1)
        self.register_buffer("causal", causal, persistent=False)

    def forward(self, previous: Tensor, pop: Tensor, phi: Tensor) -> Tensor:
        x = torch.cat((previous.unsqueeze(-1), pop), dim=-1)
        w = x.shape[1]
        h = self.read_in(x) + self.read_phi(phi).unsqueeze(1) + self.position[:w]
        h = self.blocks(h, mask=self.causal[:w, :w], is_causal=True)
        return self.read_out(self.norm(h)).squeeze(-1)


class NeuPRINT(BaseEstimator):
    """Self-supervised NeuPRINT baseline: per-unit vectors Φ learned through a causal dynamics model.

    See the module docstring for the recipe. ``transform`` of a population passed to ``fit`` returns its
    jointly learned Φ; any other population is embedded by test-time optimisation with ``f`` frozen.

    Parameters
    ----------
    steps : int, default: 400
        Joint optimisation steps of ``f`` and Φ in ``fit``.
    batch_size : int, default: 256
        Windows per step in ``fit``.
    lr : float, default: 1e-3
        Peak Adam learning rate of ``f`` (cosine decay to 0).
    embedding_lr : float, default: 1e-2
        Peak Adam learning rate of Φ in ``fit`` (cosine decay to 0).
    transform_steps : int or None, default: None
        Test-time optimisation steps for a population not seen in ``fit``; None: ``max(1, steps // 2)`` (200 at
        the defaults), so that shrinking ``steps`` also shrinks the cost of ``transform``.
    transform_lr : float, default: 1e-2
        Adam learning rate of Φ during test-time optimisation (cosine decay to 0).
    embedding_dim : int, default: 32
        Width K of Φ.
    model_dim : int, default: 64
        Transformer width.
    num_layers : int, default: 1
        Transformer layers.
    num_heads : int, default: 4
        Attention heads.
    ff_mult : int, default: 2
        Feed-forward width is ``ff_mult * model_dim``.
    bin_s : float, default: 0.1
        Bin width in seconds.
    window_bins : int, default: 32
        Context length in bins.
    mask_ratio : float, default: 0.0
        Fraction of input counts masked BERT-style during ``fit`` (0 disables masking).
    seed : int, default: 0
        Seed of the initialisation and of the window draws.
    num_threads : int or None, default: 1
        Torch threads during ``fit``/``transform`` (restored afterwards); None keeps the current setting.
    progress_bar : bool, default: False
        Show tqdm bars over the optimisation steps.

    Attributes
    ----------
    dynamics_ : torch.nn.Module
        The trained dynamics model ``f`` (eval mode; never changed by ``transform``).
    embeddings_ : list of np.ndarray
        Jointly learned Φ of the fitted populations, ``(num_units, embedding_dim)`` each, in ``fit`` order.
    fitted_populations_ : list of SpikeTrainSet
        The populations given to ``fit``, in order: ``transform`` returns the learned Φ of these objects.
    loss_history_ : list of float
        Training loss (Poisson NLL per bin) of every ``fit`` step.
    transform_loss_ : list of float
        Final test-time-optimisation loss of every new population of the last ``transform``.
    fit_seconds_, last_transform_seconds_ : float
        Wall-clock time of the last ``fit`` and ``transform`` (the latter is ~0 when every population was
        fitted).
    """

    supervised = False
    needs_templates = False

    def __init__(
        self,
        steps: int = 400,
        batch_size: int = 256,
        lr: float = 1e-3,
        embedding_lr: float = 1e-2,
        transform_steps: int | None = None,
        transform_lr: float = 1e-2,
        embedding_dim: int = 32,
        model_dim: int = 64,
        num_layers: int = 1,
        num_heads: int = 4,
        ff_mult: int = 2,
        bin_s: float = 0.1,
        window_bins: int = 32,
        mask_ratio: float = 0.0,
        seed: int = 0,
        num_threads: int | None = 1,
        progress_bar: bool = False,
    ):
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr
        self.embedding_lr = embedding_lr
        self.transform_steps = transform_steps
        self.transform_lr = transform_lr
        self.embedding_dim = embedding_dim
        self.model_dim = model_dim
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.ff_mult = ff_mult
        self.bin_s = bin_s
        self.window_bins = window_bins
        self.mask_ratio = mask_ratio
        self.seed = seed
        self.num_threads = num_threads
        self.progress_bar = progress_bar

    # ------------------------------------------------------------------------------------------------------

    def _check_params(self) -> None:
        name = type(self).__name__
        for key in ("steps", "batch_size", "embedding_dim", "model_dim", "num_layers"):
            check_int(name, key, getattr(self, key), 1)
        if self.transform_steps is not None:
            check_int(name, "transform_steps", self.transform_steps, 1)
        for key in ("num_heads", "ff_mult", "window_bins"):
            check_int(name, key, getattr(self, key), 1)
        check_int(name, "seed", self.seed, 0)
        if self.num_threads is not None:
            check_int(name, "num_threads", self.num_threads, 1)
        if self.model_dim % self.num_heads or self.model_dim % 2:
            raise ValueError(
                f"{name}: model_dim ({self.model_dim}) must be even and divisible by num_heads ({self.num_heads})"
            )
        for key in ("lr", "embedding_lr", "transform_lr", "bin_s"):
            check_float(name, key, getattr(self, key), 0.0, low_open=True)
        check_float(name, "mask_ratio", self.mask_ratio, 0.0, 1.0)

    def _bin(self, populations: list, owner: str) -> list[_Population]:
        out = []
        for k, pop in enumerate(populations):
            counts = bin_population(pop, self.bin_s)
            if counts.shape[1] < self.window_bins + 1:
                raise ValueError(
                    f"{owner}: population {k} lasts {float(pop.duration):g} s, shorter than one window plus one bin "
                    f"({(self.window_bins + 1) * self.bin_s:g} s at bin_s={self.bin_s:g}, "
                    f"window_bins={self.window_bins})"
                )
            out.append(_Population(counts))
        return out

    def _draw(self, gen: torch.Generator, pop: _Population, units: Tensor) -> Tensor:
        """Uniform window starts in ``[1, num_bins - window_bins]`` for ``units``."""
        high = pop.num_bins - self.window_bins  # inclusive upper bound of the start
        return 1 + torch.randint(high, (units.shape[0],), generator=gen)

    def _loss(self, model: _Dynamics, pop: _Population, units: Tensor, starts: Tensor, phi: Tensor) -> Tensor:
        previous, feats, target = pop.windows(units, starts, self.window_bins)
        log_rate = model(previous, feats, phi)
        return F.poisson_nll_loss(log_rate, target, log_input=True, full=False)

    def fit(self, populations: Sequence, labels: Any = None, templates: Any = None) -> "NeuPRINT":
        """Learn ``f`` and Φ of every unit of ``populations`` jointly (labels are not read).

        Parameters
        ----------
        populations : sequence of SpikeTrainSet
            One spike-train set per recording; each must last at least ``(window_bins + 1) * bin_s`` seconds.
            The objects are kept (by reference) so that ``transform`` can recognise them.
        labels : ignored
            NeuPRINT is self-supervised.
        templates : ignored
            NeuPRINT does not use waveforms.

        Returns
        -------
        NeuPRINT
            ``self``.

        Raises
        ------
        ValueError
            Bad parameters, empty populations, or a population shorter than one window.
        """
        self._check_params()
        populations = check_populations(populations, "NeuPRINT.fit")
        t0 = time.perf_counter()
        binned = self._bin(populations, "NeuPRINT.fit")
        sizes = np.array([p.num_units for p in binned])
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        pop_of_unit = torch.from_numpy(np.repeat(np.arange(len(binned)), sizes))
        history: list[float] = []
        with torch_scope(self.seed, self.num_threads) as gen:
            model = _Dynamics(
                self.embedding_dim, self.model_dim, self.num_layers, self.num_heads, self.ff_mult, self.window_bins
            )
            phi = nn.Parameter(torch.zeros(int(offsets[-1]), self.embedding_dim))
            optimizer = torch.optim.Adam(
                [{"params": model.parameters(), "lr": self.lr}, {"params": [phi], "lr": self.embedding_lr}]
            )
            peaks = [self.lr, self.embedding_lr]
            model.train()
            bar = progress(self.steps, self.progress_bar, "NeuPRINT fit")
            for step in range(self.steps):
                _cosine(optimizer, peaks, step, self.steps)
                units = torch.randint(int(offsets[-1]), (self.batch_size,), generator=gen)
                units = units[torch.argsort(pop_of_unit[units], stable=True)]
                owner = pop_of_unit[units]
                parts = []
                for p in torch.unique(owner).tolist():
                    local = units[owner == p] - int(offsets[p])
                    parts.append(binned[p].windows(local, self._draw(gen, binned[p], local), self.window_bins))
                previous, feats, target = (torch.cat(x) for x in zip(*parts))
                if self.mask_ratio > 0:
                    previous = _bert_mask(previous, self.mask_ratio, gen)
                log_rate = model(previous, feats, phi[units])
                loss = F.poisson_nll_loss(log_rate, target, log_input=True, full=False)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                history.append(float(loss.detach()))
                bar.update()
                bar.set_postfix(loss=f"{history[-1]:.4f}")
            bar.close()
            model.eval()
            for param in model.parameters():
                param.requires_grad_(False)
        table = phi.detach().numpy().astype(np.float64)
        self.dynamics_ = model
        self.embeddings_ = [table[offsets[k] : offsets[k + 1]].copy() for k in range(len(binned))]
        self.fitted_populations_ = list(populations)
        self.loss_history_ = history
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    @property
    def num_transform_steps(self) -> int:
        """Test-time optimisation steps actually used (``transform_steps`` or ``max(1, steps // 2)``)."""
        return self.transform_steps if self.transform_steps is not None else max(1, int(self.steps) // 2)

    def _optimise_phi(self, pop: _Population, gen: torch.Generator, k: int) -> tuple[np.ndarray, float]:
        """Test-time optimisation of Φ for the units of ``pop`` with ``f`` frozen."""
        model = self.dynamics_
        num_steps = self.num_transform_steps
        phi = nn.Parameter(torch.zeros(pop.num_units, self.embedding_dim))
        optimizer = torch.optim.Adam([phi], lr=self.transform_lr)
        units = torch.arange(pop.num_units)
        chunk = max(1, self.batch_size)
        bar = progress(num_steps, self.progress_bar, f"NeuPRINT transform (population {k})")
        last = math.nan
        for step in range(num_steps):
            _cosine(optimizer, [self.transform_lr], step, num_steps)
            starts = self._draw(gen, pop, units)
            optimizer.zero_grad(set_to_none=True)
            total = 0.0
            for lo in range(0, pop.num_units, chunk):  # one window per unit, in chunks of batch_size windows
                sel = units[lo : lo + chunk]
                loss = self._loss(model, pop, sel, starts[lo : lo + chunk], phi[sel])
                (loss * (sel.shape[0] / pop.num_units)).backward()
                total += float(loss.detach()) * sel.shape[0] / pop.num_units
            optimizer.step()
            last = total
            bar.update()
            bar.set_postfix(loss=f"{last:.4f}")
        bar.close()
        return phi.detach().numpy().astype(np.float64), last

    def transform(self, populations: Sequence, templates: Any = None) -> list[np.ndarray]:
        """Φ of every unit: the learned table for fitted populations, test-time optimisation for new ones.

        Parameters
        ----------
        populations : sequence of SpikeTrainSet
            Populations to embed. One that is the very object passed to ``fit`` gets its jointly learned Φ
            (a copy); any other one (even with equal content) is embedded by test-time optimisation of a fresh
            Φ table with ``f`` frozen, ``transform_steps`` Adam steps (the time is in
            ``last_transform_seconds_``).
        templates : ignored
            NeuPRINT does not use waveforms.

        Returns
        -------
        list of np.ndarray
            One float64 ``(num_units, embedding_dim)`` array per population (all rows finite).

        Raises
        ------
        ValueError
            If the model is not fitted, ``populations`` is empty / not populations, or a new population is
            shorter than one window.
        """
        check_fitted(self, "dynamics_")
        populations = check_populations(populations, "NeuPRINT.transform")
        t0 = time.perf_counter()
        out: list[np.ndarray | None] = []
        new = []
        for k, pop in enumerate(populations):
            index = next((j for j, fitted in enumerate(self.fitted_populations_) if fitted is pop), None)
            if index is None:
                out.append(None)
                new.append(k)
            else:
                out.append(self.embeddings_[index].copy())
        losses = []
        if new:
            binned = self._bin([populations[k] for k in new], "NeuPRINT.transform")
            with torch_scope(self.seed, self.num_threads):
                for k, pop in zip(new, binned):
                    gen = torch.Generator().manual_seed(self.seed + 2)  # the same draws whatever the list order
                    out[k], loss = self._optimise_phi(pop, gen, k)
                    losses.append(loss)
        self.transform_loss_ = losses
        self.last_transform_seconds_ = time.perf_counter() - t0
        return out


def _cosine(optimizer: torch.optim.Optimizer, peaks: Sequence[float], step: int, total: int) -> None:
    scale = 0.5 * (1.0 + math.cos(math.pi * step / total))
    for group, peak in zip(optimizer.param_groups, peaks):
        group["lr"] = peak * scale


def _bert_mask(x: Tensor, ratio: float, gen: torch.Generator) -> Tensor:
    """BERT-style corruption of input steps: of the masked ones 80 % -> 0, 10 % -> a random step's value, 10 % kept."""
    draw = torch.rand(x.shape, generator=gen)
    kind = torch.rand(x.shape, generator=gen)
    masked = draw < ratio
    out = torch.where(masked & (kind < 0.8), torch.zeros_like(x), x)
    shuffled = x.gather(1, torch.randint(x.shape[1], x.shape, generator=gen))
    return torch.where(masked & (kind >= 0.8) & (kind < 0.9), shuffled, out)
