"""Activations of the VIRST training forward carry the shardings `sharding.ACT_RULES` gives.

On a data=2 x fsdp=2 x model=2 mesh of fake CPU devices, each block boundary that constrains
its output (`sharding.shard`) is jitted on a batch split over ("data", "fsdp"); the output
sharding must be the rule table's, e.g. LM logits [batch, tokens, vocab] ->
P(("data", "fsdp"), None, "model"). Parameters are checked in test_virst_training.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import virst_batches as vb
from flax import nnx
from jax.sharding import NamedSharding

from jax_refvos import sharding
from jax_refvos.methods.virst import batch as vbatch
from jax_refvos.training.mesh import batch_sharding


@pytest.fixture(scope="module")
def setup():
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "model": 2})
    model = vb.micro_model(seed=1)
    sharding.place_state(model, mesh)
    args = vbatch.forward_args(jax.tree.map(jnp.asarray, vb.batch(videos=4, expressions=1)))
    return mesh, model, args


def _assert_act(x: jax.Array, mesh, *axes: str | None) -> None:
    want = NamedSharding(mesh, sharding.logical_to_pspec(axes, sharding.ACT_RULES))
    assert x.sharding.is_equivalent_to(want, x.ndim), (axes, x.sharding.spec, want.spec)


def test_batch_axis_is_data_times_fsdp(setup):
    mesh, _, _ = setup
    assert sharding.logical_to_pspec(("batch", "tokens", "vocab"), sharding.ACT_RULES) == (
        jax.sharding.PartitionSpec(("data", "fsdp"), None, "model")
    )
    assert mesh.shape == {"data": 2, "fsdp": 2, "model": 2}


def test_vision_tokens_and_lm_activations(setup):
    mesh, model, args = setup
    put = batch_sharding(mesh)
    with jax.set_mesh(mesh):
        frames = jax.device_put(args["vlm_frames"], put)
        visual = nnx.jit(lambda m, x: m.visual_tokens(x))(model, frames)
        _assert_act(visual, mesh, "batch", "tokens", "embed")

        ids = jax.device_put(args["input_ids"], put)
        valid = jax.device_put(args["text_valid"], put)

        @nnx.jit
        def lm(m, ids, valid):
            h = m.lm.hidden(jnp.maximum(ids, 0), attention_mask=valid)
            return h, m.lm.head(h)

        hidden, logits = lm(model, ids, valid)
        _assert_act(hidden, mesh, "batch", "tokens", "embed")
        _assert_act(logits, mesh, "batch", "tokens", "vocab")
        assert not logits.sharding.is_fully_replicated


def test_seg_prompter_activations(setup):
    mesh, model, args = setup
    put = batch_sharding(mesh)
    b, t = args["stf_frames"].shape[:2]
    with jax.set_mesh(mesh):
        stf = jax.device_put(args["stf_frames"], put)

        @nnx.jit
        def prompts(m, stf):
            feats = m.seg_model.forward_image(stf.reshape(b * t, *stf.shape[2:]))
            pix = feats.pix.reshape(b, t, *feats.pix.shape[1:])
            seg = jnp.ones((b, 10, m.cfg.lm.hidden_size), jnp.float32)
            seg = sharding.shard(seg, "batch", "tokens", "embed")
            return m.seg_prompter(seg, pix).prompts

        out = prompts(model, stf)
        assert out.shape[:2] == (b, 10) and np.isfinite(np.asarray(out)).all()
        _assert_act(out, mesh, "batch", None, None, None)
