"""The training mesh from a config's `mesh` section and the global batch."""

import math

import jax
import ml_collections
import numpy as np

from jax_refvos import sharding
from jax_refvos.errors import InputError


def make_mesh(c: ml_collections.ConfigDict) -> jax.sharding.Mesh:
    """The config's mesh; fixed sizes use the first that many devices, -1 takes the rest.

    The automatic mesh (all sizes 0, `mesh=auto`) puts gcd(global batch, devices) on "data"
    and the remaining devices on "model", so one config runs on 1, 2, 8, ... devices and any
    number of processes. The global batch (videos) must divide over ("data", "fsdp").
    InputError when the mesh does not fit the devices or the batch.
    """
    axes = dict(c.mesh)
    devices = jax.devices()
    global_batch = c.data.batch_size * jax.process_count()
    if not any(axes.values()):
        data = math.gcd(global_batch, len(devices))
        axes = {"data": data, "fsdp": 1, "model": len(devices) // data}
    elif -1 not in axes.values():
        need = int(np.prod(list(axes.values())))
        if need > len(devices):
            raise InputError(
                f"config: mesh {axes} needs {need} devices, this run has {len(devices)}"
            )
        devices = devices[:need]
    try:
        mesh = sharding.make_mesh(axes, devices=devices)
    except ValueError as e:
        raise InputError(f"config: mesh {axes}: {e}") from None
    split = mesh.shape["data"] * mesh.shape["fsdp"]
    if global_batch % split:
        raise InputError(
            f"config: batch {c.data.batch_size} x {jax.process_count()} processes does not "
            f"divide over data x fsdp = {split} devices (set batch= or mesh=)"
        )
    return mesh


def batch_sharding(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
    """Every batch array sharded over ("data", "fsdp") on its leading (video) axis."""
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
