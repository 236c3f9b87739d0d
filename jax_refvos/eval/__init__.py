"""Benchmark evaluation: J/F metrics, split scoring, prediction I/O, reference baselines."""
