"""2-D axial rotary position encoding (RoPE) of SAM2's memory attention, in real arithmetic.

Port of `sam2/modeling/position_encoding.py::{init_t_xy, compute_axial_cis, apply_rotary_enc}`
(sam2 1.1.0), and `sam2/modeling/sam/transformer.py::RoPEAttention`. The reference multiplies
complex numbers: channel pairs (x[2i], x[2i+1]) of a head are rotated by an angle that depends on
the token's grid column (first k/4 pairs) or grid row (last k/4 pairs). We store the angles as
cos/sin tables, computed in numpy from the static shapes (trace-time constants), and rotate the
pairs with real multiplies.
"""

import functools
import math

import einops
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Bool, Float

from jax_refvos.model.sam2.attention import Attention, attend, attend_shared_values


@functools.lru_cache(maxsize=32)
def _tables(h: int, w: int, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    # float32 like the reference (`torch.outer` of float32 positions and frequencies), so the
    # angles round the same way; cos/sin of those float32 angles are then correctly rounded.
    quarter = head_dim // 4
    exponent = np.arange(0, head_dim, 4, dtype=np.float32)[:quarter] / np.float32(head_dim)
    freqs = (np.float32(1.0) / np.power(np.float32(theta), exponent)).astype(np.float32)
    t = np.arange(h * w)
    t_x = (t % w).astype(np.float32)  # column of token t in the row-major h x w grid
    t_y = (t // w).astype(np.float32)  # row
    angles = np.concatenate([np.outer(t_x, freqs), np.outer(t_y, freqs)], -1)  # [s, k/2]
    angles = angles.astype(np.float32).astype(np.float64)
    cos = np.cos(angles).astype(np.float32)
    sin = np.sin(angles).astype(np.float32)
    cos.setflags(write=False)
    sin.setflags(write=False)
    return cos, sin


def rope_tables(
    h: int, w: int, head_dim: int, theta: float = 10000.0
) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of the axial RoPE angles, each float32[h*w, head_dim // 2] (numpy constants).

    Row t (row-major token index, x = t % w, y = t // w) holds the angles of the k/2 channel
    pairs: x * f_j for the first k/4 pairs and y * f_j for the last k/4, f_j = θ^(-4j/k).

    Raises:
        ValueError: `head_dim` is not a multiple of 4 (the reference fails on it too).
    """
    if head_dim % 4:
        raise ValueError(f"axial RoPE needs a head dim divisible by 4, got {head_dim}")
    return _tables(int(h), int(w), int(head_dim), float(theta))


def apply_rope(
    x: Float[Array, "b n s k"], h: int, w: int, theta: float = 10000.0, repeat: int = 1
) -> Float[Array, "b n s k"]:
    """Rotate channel pairs (x[2i], x[2i+1]) of every token by its axial RoPE angles.

    Args:
        x: queries or keys split into heads; s must equal `repeat * h * w`.
        h, w: the token grid (row-major). SAM2 always uses a square grid.
        theta: RoPE base.
        repeat: how many consecutive h*w grids x holds; each gets the same table (the reference's
            `repeat_freqs_k`, used for keys that are several memory frames).

    Returns:
        x rotated, computed in float32 and cast back to x.dtype (as the reference does).

    Raises:
        ValueError: s != repeat * h * w, or the head dim is not a multiple of 4.
    """
    s = x.shape[-2]
    if s != repeat * h * w:
        raise ValueError(
            f"RoPE over {repeat} x {h}x{w} grid(s) needs {repeat * h * w} tokens, got {s}"
        )
    cos, sin = rope_tables(h, w, x.shape[-1], theta)  # [h*w, k/2], shared by the r grids
    pairs = einops.rearrange(
        x.astype(jnp.float32), "b n (r s) (k two) -> b n r s k two", r=repeat, two=2
    )
    re, im = pairs[..., 0], pairs[..., 1]
    # (re + i im) * (cos + i sin)
    out = jnp.stack([re * cos - im * sin, re * sin + im * cos], axis=-1)
    return einops.rearrange(out, "b n r s k two -> b n (r s) (k two)").astype(x.dtype)


class RoPEAttention(Attention):
    """`Attention` whose queries and keys are rotated by axial RoPE over a square token grid.

    Queries are s = h*h tokens of one frame (the reference takes h = w = √s). Keys are r frames of
    s tokens each (r > 1 needs `rope_k_repeat`, as in the reference's cross-attention), followed
    by `num_k_exclude_rope` tokens that get no rotation (SAM2's object pointers).
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        *,
        downsample_rate: int = 1,
        dropout: float = 0.0,
        kv_in_dim: int | None = None,
        rope_theta: float = 10000.0,
        rope_k_repeat: bool = False,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        super().__init__(
            embedding_dim,
            num_heads,
            downsample_rate=downsample_rate,
            dropout=dropout,
            kv_in_dim=kv_in_dim,
            dtype=dtype,
            rngs=rngs,
        )
        head_dim = self.internal_dim // num_heads
        if head_dim % 4:
            raise ValueError(f"axial RoPE needs a head dim divisible by 4, got {head_dim}")
        self.rope_theta = rope_theta
        self.rope_k_repeat = rope_k_repeat
        # DEVIATION(sam2): no `feat_sizes` / cached `freqs_cis`: the tables follow the input's
        # static shape (the reference recomputes them whenever the length changes anyway).

    def __call__(
        self,
        q: Float[Array, "b s d"],
        k: Float[Array, "b m e"],
        v: Float[Array, "b m e"],
        *,
        num_k_exclude_rope: int = 0,
        kv_valid: Bool[Array, "b m"] | None = None,
    ) -> Float[Array, "b s d"]:
        """Attend from q to k/v; `kv_valid` False keys get zero weight.

        Raises:
            ValueError: s is not a square number, or the m - num_k_exclude_rope rotated keys are
                not a whole number of s-token frames (or more than one without `rope_k_repeat`).
        """
        s, m = q.shape[1], k.shape[1]
        side = math.isqrt(s)
        if side * side != s:
            raise ValueError(f"RoPE attention needs a square token grid, got {s} query tokens")
        num_k_rope = m - num_k_exclude_rope
        if not 0 <= num_k_exclude_rope <= m:
            raise ValueError(f"num_k_exclude_rope={num_k_exclude_rope} out of range for {m} keys")
        repeat, rest = divmod(num_k_rope, s)
        if rest or (repeat != 1 and not self.rope_k_repeat):
            raise ValueError(
                f"{num_k_rope} rotated keys are not "
                f"{'a whole number of' if self.rope_k_repeat else 'one'} {s}-token grid(s) "
                f"(rope_k_repeat={self.rope_k_repeat})"
            )
        q = self.split_heads(self.q_proj(q))
        k = self.split_heads(self.k_proj(k))
        q = apply_rope(q, side, side, self.rope_theta)
        if repeat:
            k_rope = apply_rope(k[:, :, :num_k_rope], side, side, self.rope_theta, repeat)
            k = jnp.concatenate([k_rope, k[:, :, num_k_rope:]], axis=2)
        if v.shape[-1] < self.internal_dim // self.num_heads:
            # DEVIATION(sam2): same math, reassociated: values are mixed in the 64-d memory space
            # before their projection (a quarter of the FLOPs of SAM2's cross-attention).
            out = attend_shared_values(q, k, v, self.v_proj, kv_valid)
        else:
            out = attend(q, k, self.split_heads(self.v_proj(v)), kv_valid)
        return self.out_proj(self.merge_heads(out))
