"""The scripts that produce the model files shipped in ``spikeinterface_neuronid/default_model/``.

Run them as modules from the repository root (no ``sys.path`` changes; they import each other as
``tools.release.<module>``)::

    python -m tools.release.train_default_model     # NuCLR default model, its firing_type head and MODEL_CARD.md
    python -m tools.release.fit_default_head        # refit only the firing_type head of the default model
    python -m tools.release.train_default_neurpir   # NeurPIR default model and its card

Stages, each imported only by the later ones (no cycle):

* :mod:`tools.release.common`: paths, the animal splits and the commands the scripts record;
* :mod:`tools.release.cards`: the one model-card writer, :func:`tools.release.cards.write_card`;
* :mod:`tools.release.fit_default_head`: the ``firing_type`` head (also run at the end of ``train_default_model``);
* :mod:`tools.release.train_default_model` and :mod:`tools.release.train_default_neurpir`: pretraining.

Measurements of the shipped models (``bench_*.py``, ``run_benchmark.py`` and the analysis scripts) stay in
``benchmarks/``.
"""
