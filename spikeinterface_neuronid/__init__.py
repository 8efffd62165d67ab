"""spikeinterface-neuronid: which kind of neuron each spike-sorted unit is, from population activity.

Importing this package registers the ``"neuron_embedding"`` SpikeInterface analyzer extension.
"""

__version__ = "0.1.0"
