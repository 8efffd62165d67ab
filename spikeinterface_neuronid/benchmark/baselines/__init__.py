"""Baseline unit-embedding methods the benchmark compares the self-supervised models against.

Every baseline is a scikit-learn estimator over populations (:class:`sklearn.base.BaseEstimator`; no
SpikeInterface inside): ``__init__`` stores its parameters unchanged (checked in ``fit``), work happens in
``fit``, learned state ends with an underscore, and the same ``seed`` gives the same result on the same
machine and thread count. ``get_params`` / ``set_params`` and :func:`sklearn.base.clone` (an unfitted copy
with the same parameters) work as for any scikit-learn estimator.

``fit(populations, labels=None, templates=None) -> self``
    ``populations``: sequence of :class:`~spikeinterface_neuronid.data.SpikeTrainSet`, one per recording.
    ``labels``: for supervised baselines only, one string array per population (``""`` = unlabelled unit,
    never used); self-supervised baselines ignore it and must not read it. ``templates``: for
    waveform-based baselines, one ``(num_units, num_samples)`` float array per population (the
    peak-channel mean waveform of each unit), otherwise ignored.
``transform(populations, templates=None) -> list[np.ndarray]``
    One ``(num_units, dim)`` float array per population; rows of units the method cannot embed are NaN.

The attribute ``supervised`` says whether ``fit`` reads labels, ``needs_templates`` whether it needs
waveforms. Modules: :mod:`.features` (handcrafted single-unit, population-coupling, pairwise-correlation and
spike-triggered population features), :mod:`.lolcat`, :mod:`.nemo` and :mod:`.neuprint` (compact
re-implementations of LOLCAT, NEMO and NeuPRINT).
"""

from __future__ import annotations

__all__: list[str] = []
