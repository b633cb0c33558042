"""CPU fast paths behind models/layers.py, each tested against the plain layer it replaces."""
