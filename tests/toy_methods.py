"""A method that lives outside the package, to show (and test) that a method plugs in through
`methods/registry.py` alone: one `METHODS` entry, no file of the trainer, the evaluator or the
CLI touched (tests/eval/oracle_method.py is another, for the evaluator's tests).

`ToyMethod` ("toy") is a real, trainable method. Text: the mean embedding of the expression's
  tokens; pixels: a linear map of each SAM-view pixel; mask logit = linear(relu(pixel * text)).
  It trains with the generic trainer on the VIRST input pipeline's batches (BCE from
  `jax_refvos.losses`), keeps a method state (a step counter, so the trainer's carrying of it is
  exercised), records its one component in config.json, evaluates every expression of a record
video and predicts on a JPEG folder. Register it for a test with
`monkeypatch.setitem(registry.METHODS, "toy", "toy_methods")`.
"""

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jax_refvos import checkpoint, config_lib, losses
from jax_refvos.methods.base import Method, Predictor
from jax_refvos.pipeline.config import SYNTH_TOKENIZER, PipelineConfig
from jax_refvos.pipeline.tokenizer import load_tokenizer
from jax_refvos.training.trainable import EVERYTHING
from jax_refvos.weights.weights_dir import config_dict, dataclass_from_config, num_params


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToyConfig:
    vocab_size: int
    width: int = 8
    size: int = 32  # square input side of the SAM view


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToyModelSection:
    width: int = 8
    size: int = 32


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToyDataSection:
    train_records: str = ""
    batch_size: int = 2
    frames: int = 4
    max_expressions: int = 2
    max_text_len: int = 128


class ToyModel(nnx.Module):
    def __init__(self, cfg: ToyConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embed = nnx.Embed(cfg.vocab_size, cfg.width, rngs=rngs)
        self.pix = nnx.Linear(3, cfg.width, rngs=rngs)
        self.out = nnx.Linear(cfg.width, 1, rngs=rngs)

    def __call__(self, frames, ids, valid):
        """frames float[b, t, s, s, 3], ids / valid [b, o, l] -> logits [b, o, t, s, s]."""
        w = valid[..., None].astype(jnp.float32)
        text = (self.embed(jnp.maximum(ids, 0)) * w).sum(-2) / jnp.maximum(w.sum(-2), 1.0)
        pix = self.pix(frames)
        return self.out(nnx.relu(pix[:, None] * text[:, :, None, None, None]))[..., 0]


def _frames(images, size: int) -> np.ndarray:
    return np.stack([np.asarray(im.resize((size, size)), np.float32) / 255.0 for im in images])


class ToyPredictor(Predictor):
    def __init__(self, model: ToyModel, tok):
        self.model, self.tok = model, tok
        self._fn = nnx.jit(lambda m, f, i, v: m(f, i, v))

    def settings(self):
        return {"toy_width": self.model.cfg.width}

    def _chunks(self, video, texts, chunk_size):
        ids = np.zeros((1, len(texts), 64), np.int32)
        valid = np.zeros((1, len(texts), 64), bool)
        for j, text in enumerate(texts):
            row = self.tok.encode(text)[:64]
            ids[0, j, : len(row)], valid[0, j, : len(row)] = row, True
        h, w = video.size
        for lo in range(0, len(video), chunk_size):
            index = np.arange(lo, min(len(video), lo + chunk_size))
            frames = _frames([im for _, im in video.images(index)], self.model.cfg.size)
            logits = np.asarray(self._fn(self.model, frames[None], ids, valid))[0]  # [e, n, s, s]
            ys = np.arange(h) * logits.shape[-2] // h
            xs = np.arange(w) * logits.shape[-1] // w
            yield index, logits[:, :, ys][..., xs].transpose(1, 0, 2, 3)

    def infer_video(self, example, *, seed, chunk_size):
        from jax_refvos import video_io

        video = video_io.RecordVideo(example)
        texts = [x.text for x in example.expressions]
        return {"frames": len(video)}, self._chunks(video, texts, chunk_size)

    def predict(self, video, text, *, seed, chunk_size):
        return {"toy": True}, self._chunks(video, [text], chunk_size)


class ToyMethod(Method):
    name = "toy"
    sections = {"model": ToyModelSection, "data": ToyDataSection}

    def model_record(self, c, workdir):
        m = config_lib.to_dataclass(ToyModelSection, c.model)
        cfg = ToyConfig(
            vocab_size=load_tokenizer(SYNTH_TOKENIZER, "virst").vocab_size,
            width=m.width,
            size=m.size,
        )
        abstract = nnx.eval_shape(lambda: ToyModel(cfg, rngs=nnx.Rngs(0)))
        comp = {"config": config_dict(cfg), "num_params": num_params(abstract)}
        return {"components": {"toy": comp}, "method_config": {}}

    def build(self, c, record, workdir):
        cfg = dataclass_from_config(ToyConfig, record["components"]["toy"]["config"])
        return ToyModel(cfg, rngs=nnx.Rngs(c.seed))

    def trainable(self, c):
        return EVERYTHING

    def init_method_state(self, c, model):
        return {"batches_seen": jnp.zeros((), jnp.int32)}

    def train_data(self, c, model, *, process_index, process_count):
        from jax_refvos.pipeline.dataset import make_dataset

        size, d = model.cfg.size, config_lib.to_dataclass(ToyDataSection, c.data)
        cfg = PipelineConfig.virst(
            mixture={"train": (d.train_records, 1.0)},
            batch_size=d.batch_size,
            vlm_size=size,
            sam_size=size,
            mask_size=size,
            vlm_frames=8,  # the VIRST sampler's minimum (the toy does not read this view)
            sam_frames=d.frames,
            max_expressions=d.max_expressions,
            max_text_len=d.max_text_len,
            tokenizer_dir=SYNTH_TOKENIZER,
            seed=c.seed,
        )
        return make_dataset(cfg, process_index=process_index, process_count=process_count)

    def loss(self, c, model):
        def loss_fn(model, state, batch):
            frames = batch["sam_frames"].astype(jnp.float32) / 255.0
            logits = model(frames, batch["input_ids"], batch["text_valid"])  # [b, o, t, s, s]
            b, o, t = logits.shape[:3]
            valid = batch["expr_valid"][:, :, None] & batch["sam_frame_valid"][:, None]
            rows = (b * o, t)
            loss = losses.sigmoid_bce(
                logits.reshape(*rows, *logits.shape[3:]),
                batch["masks"].reshape(*rows, *logits.shape[3:]),
                valid.reshape(rows),
            )
            return loss, ({"loss": loss}, {"batches_seen": state["batches_seen"] + 1})

        return loss_fn

    def batch_counts(self, c, model, batch):
        @jax.jit
        def counts(batch):
            frames = batch["sam_frame_valid"]
            return {
                "clips": jnp.sum(frames.any(axis=1)),
                "frames": jnp.sum(frames),
                "tokens": jnp.sum(batch["text_valid"] & batch["expr_valid"][..., None]),
            }

        return counts

    def load(self, path, kind, options):
        data = json.loads((Path(path) / "config.json").read_text())
        assert kind == "training", kind
        cfg = dataclass_from_config(ToyConfig, data["components"]["toy"]["config"])
        model = nnx.eval_shape(lambda: ToyModel(cfg, rngs=nnx.Rngs(0)))
        dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=dev), nnx.state(model)
        )
        restored = checkpoint.restore_subtree(Path(path) / "checkpoints", {"model": target})
        nnx.update(model, restored["model"])
        return ToyPredictor(model, load_tokenizer(SYNTH_TOKENIZER, "virst"))


METHOD = ToyMethod()
