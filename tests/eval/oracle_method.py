"""The oracle method ("oracle"), for the evaluator's tests: no model; its predictor returns +-1
logits from the record's ground truth, so J&F must be 100. It plugs in like any method:
`monkeypatch.setitem(registry.METHODS, "oracle", "oracle_method")` (tests/toy_methods.py is a
trainable one)."""

import json
from pathlib import Path

import numpy as np

from jax_refvos.methods.base import Method, Predictor


class OraclePredictor(Predictor):
    def settings(self):
        return {"oracle": True}

    def infer_video(self, example, *, seed, chunk_size):
        ex = example

        def chunks():
            for lo in range(0, ex.num_frames, chunk_size):
                idx = np.arange(lo, min(ex.num_frames, lo + chunk_size))
                if ex.has_masks:
                    masks = np.stack([e.masks(idx) for e in ex.expressions], 1)
                else:
                    shape = (len(idx), len(ex.expressions), ex.height, ex.width)
                    masks = np.zeros(shape, bool)
                yield idx, np.where(masks, 1.0, -1.0).astype(np.float32)

        return {"vlm_frames": [0, 1]}, chunks()

    def predict(self, video, text, *, seed, chunk_size):
        raise NotImplementedError("the oracle needs ground truth: evaluate only")


class OracleMethod(Method):
    name = "oracle"

    def model_record(self, c, workdir):
        raise NotImplementedError("the oracle does not train")

    build = trainable = train_data = loss = batch_counts = model_record

    def load(self, path, kind, options):
        return OraclePredictor()


METHOD = OracleMethod()


def oracle_workdir(path: Path) -> Path:
    """A weights dir whose config.json records the oracle method."""
    path.mkdir(parents=True)
    meta = {"format": "jax_refvos.weights", "version": 1, "method": "oracle", "kind": "oracle"}
    (path / "config.json").write_text(json.dumps(meta))
    return path
