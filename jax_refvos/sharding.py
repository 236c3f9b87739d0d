"""Logical-axis sharding: the two rule tables, the mesh, and the one activation helper (STYLE R7).

Parameters are annotated at creation with logical axis names
(`nnx.with_partitioning(init, ("embed", "mlp"))`) and resolved with `PARAM_RULES`; activations are
constrained at block boundaries with `shard(x, "batch", "tokens", "embed")`, resolved with
`ACT_RULES`. Two tables, because under FSDP the weight dim `embed` is stored sharded over `fsdp`
while activations use `fsdp` for `batch`: one table would map an activation to
`P(("data", "fsdp"), "fsdp")`, which JAX rejects (DuplicateSpecError).

Logical axes: batch, frames, tokens, embed, mlp, heads, kv_heads, vocab, mem. Mesh axes:
("data", "fsdp", "model"). A config may override single rules (`with_overrides`); it never
restates a table. An unknown logical name is a KeyError, never silent replication.
"""

import math
from collections.abc import Mapping, Sequence

import jax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "model")

Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

PARAM_RULES: Rules = (
    ("batch", None),
    ("frames", None),
    ("tokens", None),
    ("embed", "fsdp"),
    ("mlp", "model"),
    ("heads", "model"),
    ("kv_heads", "model"),
    ("vocab", "model"),
    ("mem", None),
)
ACT_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("frames", None),
    ("tokens", None),
    ("embed", None),
    ("mlp", "model"),
    ("heads", "model"),
    ("kv_heads", "model"),
    ("vocab", "model"),
    ("mem", None),
)


def with_overrides(rules: Rules, overrides: Mapping[str, str | tuple[str, ...] | None]) -> Rules:
    """`rules` with some logical names mapped elsewhere; unknown names are an error."""
    table = dict(rules)
    unknown = set(overrides) - set(table)
    if unknown:
        raise KeyError(f"unknown logical axes {sorted(unknown)}; known: {sorted(table)}")
    table.update(overrides)
    return tuple(table.items())


def make_mesh(axes: Mapping[str, int] | None = None, devices=None) -> jax.sharding.Mesh:
    """Mesh over `axes` like {"data": -1, "fsdp": 4, "model": 2} (at most one -1: the rest).

    Missing axes get size 1; the product must equal the number of devices.
    """
    axes = dict(axes or {"data": -1})
    unknown = set(axes) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"unknown mesh axes {sorted(unknown)}; use {MESH_AXES}")
    sizes = [int(axes.get(name, 1)) for name in MESH_AXES]
    devices = list(jax.devices() if devices is None else devices)
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {axes}")
    if -1 in sizes:
        rest = -math.prod(sizes)
        if len(devices) % rest:
            raise ValueError(f"{len(devices)} devices do not divide into {axes}")
        sizes[sizes.index(-1)] = len(devices) // rest
    if math.prod(sizes) != len(devices):
        shape = dict(zip(MESH_AXES, sizes, strict=True))
        raise ValueError(f"mesh {shape} needs {math.prod(sizes)} devices, have {len(devices)}")
    return jax.make_mesh(
        tuple(sizes), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices
    )


def logical_to_pspec(axes: Sequence[str | None], rules: Rules = ACT_RULES) -> P:
    """PartitionSpec of logical `axes` under `rules` (None stays replicated)."""
    table = dict(rules)
    return P(*(None if a is None else table[a] for a in axes))


def shard(x: jax.Array, *axes: str | None, rules: Rules = ACT_RULES) -> jax.Array:
    """Constrain an activation's sharding by logical names (no-op outside a mesh context)."""
    if len(axes) != x.ndim:
        raise ValueError(f"shard: {len(axes)} axis names for an array of rank {x.ndim}")
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_pspec(axes, rules))


def named_sharding(
    mesh: jax.sharding.Mesh, axes: Sequence[str | None], rules: Rules
) -> NamedSharding:
    """NamedSharding of logical `axes` on `mesh` under `rules`."""
    return NamedSharding(mesh, logical_to_pspec(axes, rules))


def divisible(sharding: NamedSharding, shape: Sequence[int]) -> NamedSharding:
    """`sharding` with every dimension that its mesh axes do not divide evenly replicated.

    A rule table maps e.g. "vocab" to "model"; a vocabulary of 694 on model = 4 cannot be split
    (jax requires even shards), so that dimension stays whole while the others stay split.
    """
    spec = list(sharding.spec) + [None] * (len(shape) - len(sharding.spec))
    mesh_shape = sharding.mesh.shape
    for i, axes in enumerate(spec[: len(shape)]):
        names = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
        if names and shape[i] % math.prod(mesh_shape[a] for a in names):
            spec[i] = None
    return NamedSharding(sharding.mesh, P(*spec[: len(shape)]))


def place_state(model, mesh: jax.sharding.Mesh, rules: Rules = PARAM_RULES) -> None:
    """Move a model's variables onto `mesh` with the shardings of their logical axes, in place.

    Dimensions the mesh does not divide evenly are replicated (`divisible`)."""
    from flax import nnx

    state = nnx.state(model)
    with nnx.logical_axis_rules(rules):
        shardings = nnx.get_named_sharding(state, mesh)
    shardings = jax.tree.map(
        lambda sh, x: divisible(sh, x.shape) if hasattr(x, "shape") else sh, shardings, state
    )
    nnx.update(model, jax.device_put(state, shardings))


def annotated(init, axes: tuple[str | None, ...]):
    """`init` carrying logical axis names (R7): sharded at creation only when a mesh is active,
    otherwise the names stay metadata (models build without a mesh; see `place_state`)."""
    from flax import nnx

    eager = not jax.sharding.get_abstract_mesh().empty
    return nnx.with_partitioning(init, axes, eager_sharding=eager)
