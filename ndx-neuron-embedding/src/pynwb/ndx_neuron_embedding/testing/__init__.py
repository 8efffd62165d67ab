"""Testing utilities (mock factories) for ndx-neuron-embedding."""
