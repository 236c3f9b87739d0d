"""Small layers shared by the SAM2 modules: buffers, `MLP`, `LayerNorm2d` (channels-last).

Ports of `sam2/modeling/sam2_utils.py::{MLP, LayerNorm2d}` (sam2 1.1.0). Attribute names equal
the PyTorch ones so `weights/sam2_torch.py` maps weights by path.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float


class Buffer(nnx.Variable):
    """A non-trainable tensor that lives in the PyTorch state dict (`register_buffer`)."""


# Eigen's float32 rational approximation of erf on [-4, 4] (|error| < 5e-7 against lax.erf).
_ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
          -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
          -1.60960333262415e-02)  # fmt: skip
_ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
          -7.37332916720468e-03, -1.42647390514189e-02)  # fmt: skip


def _erf(x: jax.Array) -> jax.Array:
    x = jnp.clip(x, -4.0, 4.0)
    x2 = x * x
    p = jnp.full_like(x, _ERF_P[0])
    for c in _ERF_P[1:]:
        p = p * x2 + c
    q = jnp.full_like(x, _ERF_Q[0])
    for c in _ERF_Q[1:]:
        q = q * x2 + c
    return x * p / q


def gelu(x: jax.Array) -> jax.Array:
    """torch.nn.GELU(): the exact erf form (jax.nn.gelu defaults to the tanh approximation).

    DEVIATION(sam2): erf is evaluated with a fused polynomial instead of `lax.erf`; both are
    float32 approximations (they agree with torch's to 1.5e-6 absolute on [-8, 8]), but XLA:CPU
    runs `lax.erf` 4x slower, and Hiera spends a tenth of its time in GELU.
    """
    dtype = x.dtype
    x = x.astype(jnp.float32) if dtype != jnp.float64 else x
    out = 0.5 * x * (1.0 + _erf(x * 0.7071067811865476))
    return out.astype(dtype)


def in_row_chunks(fn, x: jax.Array, *, max_bytes: int = 4 * 2**20, axis_rows: int = 1):
    """`fn(x)` for a row-wise `fn`, applied to row chunks of about `max_bytes` each (lax.map).

    Rows are the leading `axis_rows` axes flattened. Position-wise layers (MLPs, projections,
    per-window attention) on large maps are memory-bound on CPU: their hidden activations do not
    fit in cache. Chunking keeps them there; the result is identical because rows are independent.
    """
    lead = x.shape[:axis_rows]
    rows = math.prod(lead)
    row_bytes = x[(0,) * axis_rows].size * 4
    per_chunk = max(1, max_bytes // max(row_bytes, 1))
    if rows <= per_chunk:
        return fn(x)
    chunks = math.ceil(rows / per_chunk)
    # Prefer a chunk count that divides the rows (up to 1.5x more chunks): padding costs a
    # full copy of the input and of the output on XLA:CPU.
    chunks = next((c for c in range(chunks, chunks + chunks // 2 + 1) if rows % c == 0), chunks)
    per_chunk = math.ceil(rows / chunks)
    flat = x.reshape((rows,) + x.shape[axis_rows:])
    flat = jnp.pad(flat, [(0, chunks * per_chunk - rows)] + [(0, 0)] * (flat.ndim - 1))
    out = jax.lax.map(fn, flat.reshape((chunks, per_chunk) + flat.shape[1:]))
    out = out.reshape((chunks * per_chunk,) + out.shape[2:])[:rows]
    return out.reshape(lead + out.shape[1:])


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
