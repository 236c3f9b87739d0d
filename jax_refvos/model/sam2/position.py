"""Sine positional encodings of SAM2, computed in numpy from shapes alone (they are constants).

Port of `sam2/modeling/position_encoding.py::PositionEmbeddingSine._pe` and
`sam2/modeling/sam2_utils.py::get_1d_sine_pe` (sam2 1.1.0). Inside `jax.jit` the 2-D encoding is a
trace-time constant, so it costs nothing per frame.
"""

import functools
import math

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float


@functools.lru_cache(maxsize=32)
def _sine_2d(h: int, w: int, num_pos_feats: int, temperature: float) -> np.ndarray:
    half = num_pos_feats // 2
    scale, eps = 2 * math.pi, 1e-6
    y = np.arange(1, h + 1, dtype=np.float32)
    x = np.arange(1, w + 1, dtype=np.float32)
    y = y / (y[-1] + eps) * scale
    x = x / (x[-1] + eps) * scale
    dim_t = np.arange(half, dtype=np.float32)
    dim_t = (temperature ** (2 * (dim_t // 2) / half)).astype(np.float32)
    pos_x = x[:, None] / dim_t  # [w, half]
    pos_y = y[:, None] / dim_t  # [h, half]
    # torch interleaves sin(even) and cos(odd) channels: stack(..., dim=-1).flatten.
    pos_x = np.stack([np.sin(pos_x[:, 0::2]), np.cos(pos_x[:, 1::2])], -1).reshape(w, half)
    pos_y = np.stack([np.sin(pos_y[:, 0::2]), np.cos(pos_y[:, 1::2])], -1).reshape(h, half)
    pos = np.concatenate(
        [np.broadcast_to(pos_y[:, None], (h, w, half)), np.broadcast_to(pos_x[None], (h, w, half))],
        -1,
    )
    pos = np.ascontiguousarray(pos, dtype=np.float32)
    pos.setflags(write=False)
    return pos


def sine_pe_2d(h: int, w: int, num_pos_feats: int, temperature: float = 10000.0) -> np.ndarray:
    """Normalised 2-D sine encoding, float32[h, w, num_pos_feats] (y half, then x half)."""
    return _sine_2d(int(h), int(w), int(num_pos_feats), float(temperature))


def sine_pe_1d(
    pos: Float[Array, "*n"], dim: int, temperature: float = 10000.0
) -> Float[Array, "*n d"]:
    """`get_1d_sine_pe`: [sin(pos/t_i) for i < dim/2, cos(pos/t_i) for i < dim/2]."""
    half = dim // 2
    dim_t = np.arange(half, dtype=np.float32)
    dim_t = jnp.asarray(temperature ** (2 * (dim_t // 2) / half), jnp.float32)
    x = pos.astype(jnp.float32)[..., None] / dim_t
    return jnp.concatenate([jnp.sin(x), jnp.cos(x)], -1)
