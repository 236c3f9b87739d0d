"""ToMe16 token-merging projector of VideoChat-Flash (`tome16_mlp_hd64`) in Flax NNX.

Port of `model/videochat/mm_projector_builder.py` (AIDASLab/VIRST @ 954276f:
`bipartite_soft_matching`, `merge_wavg`, `ToMe16_mlp_hd64`). Each 4-frame clip of UMT tokens
(4 * 784) is merged to 64 tokens by repeated bipartite soft matching with size-weighted
averaging, then projected to the LLM width by Linear -> exact GELU -> Linear. Attribute names
equal the torch keys under `model.mm_projector.` (`mlp.0`, `mlp.2`).

All merge counts are Python ints, so every shape is static and the whole merge is jit-able.
"""

import dataclasses

import einops
import flax.struct
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float, Int

from jax_refvos.model.common_layers import linear
from jax_refvos.model.sam2.layers import GELU


@dataclasses.dataclass(frozen=True, kw_only=True)
class Tome16Config:
    """Projector settings: vision width -> LLM width, merge targets, metric "heads"."""

    vision_dim: int = 1024  # `mm_hidden_size`
    llm_dim: int = 3584  # `hidden_size`
    metric_heads: int = 16  # the vision tower's attention heads (metric averages over them)
    clip_frames: int = 4  # `mm_local_num_frames`
    tokens_per_frame: int = 16  # a video clip keeps 16 * clip_frames tokens
    image_tokens: int = 64  # a single image keeps 64 tokens

    def __post_init__(self):
        if self.vision_dim % self.metric_heads:
            raise ValueError(f"vision_dim {self.vision_dim} not divisible by {self.metric_heads}")


def tome16_large() -> Tome16Config:
    """VideoChat-Flash-Qwen2-7B_res448: UMT-L (1024, 16 heads) -> Qwen2-7B (3584)."""
    return Tome16Config()


def tome16_tiny() -> Tome16Config:
    """The VIRST tiny fixture: UMT width 64 with 4 heads -> LLM width 32."""
    return Tome16Config(vision_dim=64, llm_dim=32, metric_heads=4)


def merge_schedule(num_tokens: int, target: int) -> tuple[int, ...]:
    """Tokens removed per step: halve while that stays above `target`, then land on it.

    3136 -> 64: (1568, 784, 392, 196, 98, 34); 784 -> 64: (392, 196, 98, 34).
    """
    if num_tokens <= target:
        raise ValueError(f"merge_schedule: {num_tokens} tokens is not more than target {target}")
    steps, p = [], num_tokens
    while p != target:
        if p - target <= p // 2:
            steps.append(p - target)
            break
        steps.append(p // 2)
        p -= p // 2
    return tuple(steps)


@flax.struct.dataclass
class TomeMatch:
    """The index tensors of one matching step (the reference's `merge` closure).

    unm_idx: A tokens kept, in descending best-score order (indices into A = even tokens).
    src_idx: A tokens merged away, in descending best-score order.
    dst_idx: the B token (index into B = odd tokens) each src token is merged into.
    node_max: each A token's best cosine score (the sort key), in A order.
    """

    unm_idx: Int[Array, "b u"]
    src_idx: Int[Array, "b r"]
    dst_idx: Int[Array, "b r"]
    node_max: Float[Array, "b a"]


def tome_merge(
    x: Float[Array, "b p d"],
    size: Float[Array, "b p 1"] | None,
    r: int,
    *,
    heads: int,
) -> tuple[Float[Array, "b q d"], Float[Array, "b q 1"], TomeMatch]:
    """One bipartite soft-matching step with size-weighted merging (q = p - r tokens).

    The metric is x viewed as (b, p, heads, d / heads), averaged over heads, L2-normalised.
    A = even tokens, B = odd tokens; each A token's best B match by cosine score; the r A
    tokens with the highest scores are merged into their match by a size-weighted average
    (sum of x * size and of size, then divide). Output order: kept A tokens in descending
    score order, then every B token in its original order.

    Args:
        x: tokens float[b, p, d].
        size: how many original tokens each one stands for, float[b, p, 1]; None = ones.
        r: tokens to remove (a Python int; clipped to p // 2 as in the reference).
        heads: metric groups ("heads") to average over.

    Returns:
        (merged tokens float[b, p - r, d], their sizes float[b, p - r, 1], the step's indices).
    """
    b, p, d = x.shape
    r = min(r, p // 2)
    if r <= 0:
        raise ValueError(f"tome_merge: nothing to merge (r = {r}, p = {p})")
    if size is None:
        size = jnp.ones((b, p, 1), x.dtype)
    # DEVIATION(tome): the metric is computed in float32 whatever x's dtype (the reference uses
    # x's dtype); a bf16 metric would make the argmax / sort decisions noisy.
    metric = einops.reduce(x.astype(jnp.float32), "b p (n k) -> b p k", "mean", n=heads)
    metric = metric / jnp.linalg.norm(metric, axis=-1, keepdims=True)
    scores = jnp.einsum("bik,bjk->bij", metric[:, ::2], metric[:, 1::2])
    node_max = scores.max(-1)
    node_idx = jnp.argmax(scores, -1)
    # DEVIATION(tome): a stable descending sort; torch's argsort(descending=True) does not
    # promise an order among ties (the fixture's margins are >= 2e-5, so none occur there).
    edge_idx = jnp.argsort(node_max, axis=-1, descending=True, stable=True)
    unm_idx, src_idx = edge_idx[:, r:], edge_idx[:, :r]
    dst_idx = jnp.take_along_axis(node_idx, src_idx, axis=-1)

    def merge(y: Float[Array, "b p c"]) -> Float[Array, "b q c"]:
        a, bb = y[:, ::2], y[:, 1::2]
        unm = jnp.take_along_axis(a, unm_idx[..., None], axis=1)
        src = jnp.take_along_axis(a, src_idx[..., None], axis=1)
        rows = jnp.arange(b)[:, None]
        dst = bb.at[rows, dst_idx].add(src)
        return jnp.concatenate([unm, dst], axis=1)

    total = merge(x * size)
    size = merge(size)
    return total / size, size, TomeMatch(unm_idx, src_idx, dst_idx, node_max)


def merge_to(
    x: Float[Array, "b p d"], target: int, *, heads: int
) -> tuple[Float[Array, "b q d"], list[TomeMatch]]:
    """Merge each row of tokens down to `target` (ToMe16_mlp_hd64.merge_tokens).

    The metric is recomputed from the current (averaged) tokens at every step; sizes carry
    over. Returns the merged tokens float[b, target, d] and each step's indices.
    """
    size, matches = None, []
    for r in merge_schedule(x.shape[1], target):
        x, size, match = tome_merge(x, size, r, heads=heads)
        matches.append(match)
    return x, matches


class Tome16Projector(nnx.Module):
    """`tome16_mlp_hd64`: ToMe to 64 tokens per clip (or image), then Linear-GELU-Linear.

    Port of `ToMe16_mlp_hd64.forward`. `mlp` mirrors torch's `nn.Sequential` indices (0: Linear,
    1: GELU, 2: Linear).
    """

    def __init__(
        self, cfg: Tome16Config, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs
    ):
        self.cfg = cfg
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.mlp = nnx.List(
            [
                linear(cfg.vision_dim, cfg.llm_dim, ("embed", "mlp"), **kw),
                GELU(),
                linear(cfg.llm_dim, cfg.llm_dim, ("mlp", "embed"), **kw),
            ]
        )

    def num_tokens(self, video: bool) -> int:
        """Tokens per clip (video) or per image after merging."""
        cfg = self.cfg
        return cfg.tokens_per_frame * cfg.clip_frames if video else cfg.image_tokens

    def merge(self, x: Float[Array, "b p d"], *, video: bool = True) -> Float[Array, "b q d"]:
        """The ToMe part alone (the reference's `merge_tokens`; the MLP input)."""
        merged, _ = merge_to(x, self.num_tokens(video), heads=self.cfg.metric_heads)
        return merged

    def __call__(self, x: Float[Array, "b p d"], *, video: bool = True) -> Float[Array, "b q e"]:
        """UMT tokens -> LLM visual tokens.

        Args:
            x: float[b, p, d_vision]; for video one row per clip (p = clip_frames * 784, the
                tower's output), for images one row per image (p = 784).
            video: True for clips (keep 16 per frame), False for images (keep 64).

        Returns:
            float[b, q, d_llm], q = 64 for 4-frame clips and for images.
        """
        y = self.merge(x, video=video)
        for layer in self.mlp:
            y = layer(y)
        return y
