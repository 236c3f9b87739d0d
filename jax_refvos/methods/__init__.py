"""The methods (VIRST; SAM 2 and GLUS next), each a package behind one protocol (`base.py`),
reached by the trainer, the evaluator and the CLI only through `registry.py`."""
