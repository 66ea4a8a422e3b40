"""Simulators the demo, tests and benchmarks use: MNI-based sites, lesion slices, toy tasks, a PHI corpus.

Nothing in the product layers below imports this package; only demo/, tests and benchmarks do.
"""
