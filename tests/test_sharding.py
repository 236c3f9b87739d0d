"""sharding.py: mesh construction, logical -> mesh specs, and the activation helper."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jax_refvos import sharding


def test_logical_to_pspec_uses_the_table_and_rejects_unknown_names():
    assert sharding.logical_to_pspec(("batch", None, "embed")) == P(("data", "fsdp"), None, None)
    assert sharding.logical_to_pspec(("embed", "mlp"), sharding.PARAM_RULES) == P("fsdp", "model")
    with pytest.raises(KeyError):
        sharding.logical_to_pspec(("embd",))


def test_overrides_change_one_rule_and_reject_typos():
    rules = sharding.with_overrides(sharding.PARAM_RULES, {"mlp": None})
    assert dict(rules)["mlp"] is None and dict(rules)["embed"] == "fsdp"
    with pytest.raises(KeyError):
        sharding.with_overrides(sharding.PARAM_RULES, {"mpl": None})


def test_mesh_sizes_and_errors():
    mesh = sharding.make_mesh({"data": -1})
    assert mesh.axis_names == sharding.MESH_AXES and mesh.devices.size == jax.device_count()
    with pytest.raises(ValueError, match="at most one"):
        sharding.make_mesh({"data": -1, "fsdp": -1})
    with pytest.raises(ValueError, match="unknown mesh axes"):
        sharding.make_mesh({"tensor": 1})


def test_shard_is_a_noop_outside_a_mesh():
    x = jnp.ones((2, 3))
    assert sharding.shard(x, "batch", "embed") is x
    with pytest.raises(ValueError, match="rank"):
        sharding.shard(x, "batch")


def test_shard_on_eight_fake_devices():
    code = textwrap.dedent(
        """
        import jax, jax.numpy as jnp
        from jax_refvos import sharding
        mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "model": 2})
        with jax.set_mesh(mesh):
            y = jax.jit(lambda x: sharding.shard(x * 2, "batch", "mlp"))(jnp.ones((8, 4)))
        print(tuple(y.sharding.spec))
        """
    )
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, **env}, check=True)  # fmt: skip
    assert out.stdout.strip() == "(('data', 'fsdp'), 'model')"


def test_models_build_without_a_mesh_and_place_onto_one():
    from flax import nnx

    init = nnx.initializers.lecun_normal()
    lin = nnx.Linear(8, 4, kernel_init=nnx.with_partitioning(init, ("embed", "mlp")),
                     rngs=nnx.Rngs(0))  # fmt: skip
    before = np.asarray(lin.kernel[...])
    mesh = sharding.make_mesh({"fsdp": 4, "model": 2})
    sharding.place_state(lin, mesh)
    assert tuple(lin.kernel[...].sharding.spec) == ("fsdp", "model")
    np.testing.assert_array_equal(np.asarray(lin.kernel[...]), before)


def test_indivisible_dimensions_are_replicated_not_an_error():
    mesh = sharding.make_mesh({"data": 2, "fsdp": 1, "model": 4})
    sh = NamedSharding(mesh, P("fsdp", "model"))
    assert sharding.divisible(sh, (64, 694)).spec == P("fsdp", None)  # 694 % 4 != 0
    assert sharding.divisible(sh, (64, 696)).spec == P("fsdp", "model")
    two = NamedSharding(mesh, P(("data", "model")))
    assert sharding.divisible(two, (12, 3)).spec == P(None, None)  # 12 % 8 != 0
