"""A VIRST run's model from its config and back from its workdir (issue 17's fixes):

- the record config.json keeps rebuilds the same config (no preset involved);
- `init=W` takes every shape from W's record and keeps the config's switches (it used to
  rebuild the anchor config and silently turn `use_cond_frames` off);
- a training workdir loads from any working directory (its tokenizer is inside it; the 7b
  workdir used to look for `./tokenizer`).
"""

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from jax_refvos import checkpoint, config_lib
from jax_refvos.errors import InputError
from jax_refvos.methods import registry
from jax_refvos.methods.virst import presets, train_setup
from jax_refvos.methods.virst import record as rec
from jax_refvos.methods.virst import weights as vweights
from jax_refvos.pipeline.config import SYNTH_TOKENIZER
from jax_refvos.pipeline.tokenizer import load_tokenizer
from jax_refvos.weights import weights_dir

CONFIG = "configs/virst.py"
SMALL = dict(image_size=128, vlm_size=80, llm_width=32, sam_width=64)


def _tiny_cfg(**overrides):
    tok = load_tokenizer(SYNTH_TOKENIZER, "virst")
    return presets.virst_tiny(
        vocab_size=tok.vocab_size, seg_token_id=tok.seg_id, **SMALL, **overrides
    )


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A VIRST weights dir (as `import-weights --kind virst` writes) of a random tiny model."""
    cfg = _tiny_cfg()
    model = rec.build_model(cfg, None, seed=5)
    comps = {
        name: (getattr(model, attr), getattr(cfg, field))
        for name, (field, _, attr) in rec.COMPONENTS.items()
    }
    occ = vweights.OccPredictorConfig(token_dim=cfg.segprompter.token_dim)
    comps["occ_predictor"] = (vweights.OccPredictor(occ, rngs=nnx.Rngs(0)), occ)
    out = tmp_path_factory.mktemp("w") / "weights"
    vweights.save_virst(out, comps, source="test", tokenizer_dir=SYNTH_TOKENIZER)
    return out, model


def test_the_record_rebuilds_the_config():
    cfg = _tiny_cfg(initial_seg_fusion=False)
    lora_cfg = rec.lora_config(4, 16.0)
    record = json.loads(json.dumps(rec.make_record(cfg, lora_cfg)))  # through JSON, as on disk
    back, back_lora = rec.config_from_record(record, "test")
    assert back == cfg and back_lora == lora_cfg
    assert record["components"]["lm"]["num_params"] == weights_dir.num_params(
        nnx.eval_shape(lambda: rec.build_model(cfg, None, 0)).lm
    )


def test_weights_dir_meta_records_the_method(weights):
    meta = weights_dir.read_meta(weights[0])
    assert meta["method"] == meta["kind"] == "virst" and meta["tokenizer"] == "tokenizer"
    assert registry.open_workdir(weights[0])[1] == "weights"


def test_init_takes_the_weights_shapes_and_the_configs_switches(weights, tmp_path):
    path, source = weights
    c = config_lib.load(f"{CONFIG}:variant=tiny,init={path}", lock=False)
    c.data.tokenizer_dir = "tokenizer"  # inside init, as the 7b variant has it
    c.anchors.use_cond_frames, c.anchors.window_forward = True, 3
    c.model.image_size = 256  # a preset size: ignored when starting from weights
    record = train_setup.model_record(c)
    meta = weights_dir.read_meta(path)
    for name in rec.COMPONENTS:
        assert record["components"][name]["config"] == meta["components"][name]["config"]
    anchors = record["method_config"]["anchors"]
    assert anchors["use_cond_frames"] is True and anchors["window_forward"] == 3
    model = train_setup.build(c, record)
    assert model.cfg.anchors.use_cond_frames and model.cfg.anchors.window_forward == 3
    assert model.cfg.sam2.image_size == 128
    got = np.asarray(model.seg_prompter.seg_proj.kernel[...])
    np.testing.assert_array_equal(got, np.asarray(source.seg_prompter.seg_proj.kernel[...]))


def test_a_training_workdir_loads_from_any_directory(weights, tmp_path, monkeypatch):
    """config.json (record) + tokenizer/ + a checkpoint's model state -> the same model."""
    _, source = weights
    cfg = _tiny_cfg()
    work = tmp_path / "run"
    work.mkdir()
    (work / "config.json").write_text(
        json.dumps({"method": "virst", **rec.make_record(cfg, None), "tokenizer": "tokenizer"})
    )
    vweights.copy_tokenizer(SYNTH_TOKENIZER, work)
    with checkpoint.Checkpointer(work / "checkpoints", save_every=1) as ckpt:
        ckpt.save(7, {"model": nnx.state(source), "step": jax.numpy.int32(7)}, force=True)
    monkeypatch.chdir(tmp_path)  # no ./tokenizer here, nor anywhere the config names
    method, kind = registry.open_workdir(work)
    predictor = method.load(work, kind, {"dynamic_anchors": True})
    model = predictor.model
    assert model.cfg.anchors.dynamic_update and predictor.settings()["dynamic_anchors"]
    for a, b in zip(
        jax.tree.leaves(nnx.state(model, nnx.Param)),
        jax.tree.leaves(nnx.state(source, nnx.Param)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_prepare_copies_the_tokenizer_into_the_workdir(tmp_path):
    records = tmp_path / "records"
    c = config_lib.load(f"{CONFIG}:variant=tiny,records={records}", lock=False)
    train_setup.prepare(c, tmp_path / "run")  # records given: no synthetic data is made
    got = sorted(p.name for p in (tmp_path / "run" / "tokenizer").iterdir())
    assert got == sorted(p.name for p in Path(SYNTH_TOKENIZER).iterdir())
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["tokenizer"]
    assert not records.exists()


def test_init_defaults_to_its_tokenizer_and_refuses_one_that_does_not_fit(weights, tmp_path):
    path, _ = weights
    c = config_lib.load(f"{CONFIG}:variant=tiny,init={path},records={tmp_path}", lock=False)
    c.data.synth_root = "x"  # records may be made later: only the tokenizer is checked here
    assert train_setup.tokenizer_dir(c) == str(path / "tokenizer")
    train_setup.check(c)
    small = tmp_path / "small"
    shutil.copytree(path, small)
    meta = json.loads((small / "config.json").read_text())
    meta["components"]["lm"]["config"]["vocab_size"] = 10
    (small / "config.json").write_text(json.dumps(meta))
    c.model.init = str(small)
    with pytest.raises(InputError, match="embedding rows"):
        train_setup.check(c)
