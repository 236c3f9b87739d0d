"""Sharded optimisation: train state, optimizer, step, loop, metrics logging."""
