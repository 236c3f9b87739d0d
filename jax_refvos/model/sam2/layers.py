"""Small layers shared by the SAM2 modules: buffers, `MLP`, `LayerNorm2d` (channels-last).

Ports of `sam2/modeling/sam2_utils.py::{MLP, LayerNorm2d}` (sam2 1.1.0). Attribute names equal
the PyTorch ones so `convert/sam2_torch.py` maps weights by path.
"""

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float


class Buffer(nnx.Variable):
    """A non-trainable tensor that lives in the PyTorch state dict (`register_buffer`)."""


def gelu(x: jax.Array) -> jax.Array:
    """torch.nn.GELU() (exact erf form; jax.nn.gelu defaults to the tanh approximation)."""
    return jax.nn.gelu(x, approximate=False)


class GELU(nnx.Module):
    """Parameter-free exact GELU as a module, so it can hold its torch `nn.Sequential` index."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return gelu(x)


class MLP(nnx.Module):
    """`num_layers` Linear layers with ReLU between them, optional sigmoid on the output."""

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        *,
        sigmoid_output: bool = False,
        activation=jax.nn.relu,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nnx.List(
            [
                nnx.Linear(i, o, dtype=dtype, rngs=rngs)
                for i, o in zip(dims_in, dims_out, strict=True)
            ]
        )
        self.sigmoid_output = sigmoid_output
        self.activation = activation

    def __call__(self, x: Float[Array, "... d"]) -> Float[Array, "... d"]:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self.activation(x)
        return jax.nn.sigmoid(x) if self.sigmoid_output else x


class LayerNorm2d(nnx.Module):
    """LayerNorm over channels of an NHWC map (eps 1e-6); torch's is over dim 1 of NCHW."""

    def __init__(self, num_channels: int, eps: float = 1e-6, *, rngs: nnx.Rngs | None = None):
        del rngs  # deterministic init (ones / zeros), as in the reference
        self.weight = nnx.Param(jnp.ones((num_channels,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((num_channels,), jnp.float32))
        self.eps = eps

    def __call__(self, x: Float[Array, "b h w c"]) -> Float[Array, "b h w c"]:
        mean = x.mean(-1, keepdims=True)
        var = jnp.square(x - mean).mean(-1, keepdims=True)
        x = (x - mean) / jnp.sqrt(var + self.eps)
        return x * self.weight[...].astype(x.dtype) + self.bias[...].astype(x.dtype)
