"""Benchmark evaluation: J/F metrics, split scoring (raw layouts and records), prediction I/O,
reference baselines, and the evaluator of every method (`runner.py`, through the registry)."""
