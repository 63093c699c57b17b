"""Metrics: one feature pass per set, split across ranks, then one small module per metric (fid,
kid, isc, prc, attr) on torch-fidelity's maths. registry.py is the light part (names, directions,
record keys); score.py runs them; features.py extracts; inception.py, vgg.py and classifier.py
are the extractors.

A docstring only, on purpose: a face here would load torch-fidelity wherever the light registry
is imported."""
