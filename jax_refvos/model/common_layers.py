"""Small layer builders shared by the ported towers (UMT, CLIP ViT, VIRST's fusion modules)."""

import jax.numpy as jnp
from flax import nnx

from jax_refvos import sharding


def layer_norm(d: int, eps: float, *, dtype, param_dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """`torch.nn.LayerNorm(d, eps)`: scale 1, bias 0, both annotated with the `embed` axis."""
    return nnx.LayerNorm(
        d,
        epsilon=eps,
        scale_init=sharding.annotated(nnx.initializers.ones_init(), ("embed",)),
        bias_init=sharding.annotated(nnx.initializers.zeros_init(), ("embed",)),
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )


def linear(
    d_in: int,
    d_out: int,
    axes: tuple[str | None, str | None],
    *,
    bias: bool = True,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    rngs: nnx.Rngs,
) -> nnx.Linear:
    """nnx.Linear with logical axes on the kernel (and on the bias, from the output axis)."""
    return nnx.Linear(
        d_in,
        d_out,
        use_bias=bias,
        kernel_init=sharding.annotated(nnx.initializers.lecun_normal(), axes),
        bias_init=sharding.annotated(nnx.initializers.zeros_init(), (axes[1],)),
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )
