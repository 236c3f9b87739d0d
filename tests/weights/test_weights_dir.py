"""weights_dir: our imported-weights format round-trips, reshards, and rejects bad directories."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jax_refvos import sharding
from jax_refvos.errors import InputError
from jax_refvos.weights import weights_dir


@dataclasses.dataclass(frozen=True)
class TinyCfg:
    d: int = 8
    f: int = 16
    dtype: object = jnp.float32


class Tiny(nnx.Module):
    def __init__(self, cfg, *, rngs):
        init = nnx.initializers.lecun_normal()
        self.up = nnx.Linear(cfg.d, cfg.f, rngs=rngs,
                             kernel_init=nnx.with_partitioning(init, ("embed", "mlp")))  # fmt: skip
        self.norm = nnx.LayerNorm(cfg.f, rngs=rngs)

    def __call__(self, x):
        return self.norm(self.up(x))


def build(config):
    return Tiny(TinyCfg(d=config["d"], f=config["f"]), rngs=nnx.Rngs(1))


def _save(out, model, kind, **kw):
    return weights_dir.save_weights(
        out, {"lm": (model, TinyCfg())}, method=None, kind=kind, source="s", **kw
    )


def test_round_trip_and_metadata(tmp_path):
    model = Tiny(TinyCfg(), rngs=nnx.Rngs(0))
    out = weights_dir.save_weights(
        tmp_path / "w", {"lm": (model, TinyCfg())}, method=None, kind="hf-lm", source="/src"
    )
    meta = json.loads((out / "config.json").read_text())
    assert (
        meta["method"] is None
        and meta["kind"] == "hf-lm"
        and meta["components"]["lm"]["config"]["dtype"] == "float32"
    )
    assert meta["components"]["lm"]["num_params"] == 8 * 16 + 16 + 2 * 16
    loaded = weights_dir.load_weights(out, {"lm": build})["lm"]
    x = jnp.ones((2, 8))
    np.testing.assert_array_equal(loaded(x), model(x))
    assert "lm: 176 params" in weights_dir.describe(out)


def test_restore_onto_a_mesh_with_logical_shardings(tmp_path):
    model = Tiny(TinyCfg(), rngs=nnx.Rngs(0))
    out = weights_dir.save_weights(
        tmp_path / "w", {"lm": (model, TinyCfg())}, method=None, kind="x", source="s"
    )
    mesh = sharding.make_mesh({"fsdp": 4, "model": 2})
    with jax.set_mesh(mesh), nnx.logical_axis_rules(sharding.PARAM_RULES):
        loaded = weights_dir.load_weights(out, {"lm": build}, mesh=mesh)["lm"]
    kernel = loaded.up.kernel[...]
    assert tuple(kernel.sharding.spec) == ("fsdp", "model")
    np.testing.assert_array_equal(np.asarray(kernel), np.asarray(model.up.kernel[...]))


def test_bad_directories_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="config.json"):
        weights_dir.read_meta(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(InputError, match="not a jax_refvos weights directory"):
        weights_dir.read_meta(tmp_path)
    model = Tiny(TinyCfg(), rngs=nnx.Rngs(0))
    out = weights_dir.save_weights(
        tmp_path / "w", {"lm": (model, TinyCfg())}, method=None, kind="x", source="s"
    )
    with pytest.raises(InputError, match="no components"):
        weights_dir.load_weights(out, {"vision": build})
    with pytest.raises(InputError, match="do not fit"):
        weights_dir.load_weights(out, {"lm": lambda c: build({"d": 4, "f": 16})})


def test_existing_output_is_kept_unless_overwrite(tmp_path):
    model = Tiny(TinyCfg(), rngs=nnx.Rngs(0))
    out = weights_dir.save_weights(
        tmp_path / "w", {"lm": (model, TinyCfg())}, method=None, kind="x", source="s"
    )
    with pytest.raises(InputError):
        _save(out, model, "x")
    weights_dir.save_weights(
        out, {"lm": (model, TinyCfg())}, method=None, kind="y", source="s", overwrite=True
    )
    assert weights_dir.read_meta(out)["kind"] == "y"
