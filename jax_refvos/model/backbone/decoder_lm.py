"""Decoder-only causal LM of the Qwen2 and LLaMA families in Flax NNX.

Port of transformers/models/llama/modeling_llama.py (LlamaForCausalLM) and
transformers/models/qwen2/modeling_qwen2.py (Qwen2ForCausalLM, full attention only). Attribute
paths mirror HF (`model.layers.0.self_attn.q_proj`, `lm_head`) so `weights.hf` is a rename;
q/k/v/o and gate/up/down are plain `nnx.Linear`s so LoRA can wrap them by path (loop layout only:
with `cfg.scan_layers` the layers are one stacked module run by `lax.scan`).
"""

import einops
import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Bool, Float, Int

from jax_refvos import sharding
from jax_refvos.model.backbone import kv_cache as kvc
from jax_refvos.model.backbone import lora, rope
from jax_refvos.model.backbone.kv_cache import KVCache
from jax_refvos.model.backbone.lm_attention import attend
from jax_refvos.model.backbone.lm_config import DecoderConfig

_INIT = nnx.initializers.normal(0.02)  # HF initializer_range


def _linear(cfg: DecoderConfig, d_in, d_out, bias: bool, axes, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(
        d_in,
        d_out,
        use_bias=bias,
        dtype=cfg.dtype,
        param_dtype=cfg.param_dtype,
        kernel_init=nnx.with_partitioning(_INIT, axes),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), axes[1:]),
        rngs=rngs,
    )


class RMSNorm(nnx.Module):
    """x * rsqrt(mean(x^2) + eps) in f32, cast back to x's dtype, times `weight`.

    Port of transformers LlamaRMSNorm (Qwen2RMSNorm is the same).
    """

    def __init__(self, dim: int, *, eps: float, dtype, param_dtype, rngs: nnx.Rngs):
        del rngs  # ones-initialised; kept for the uniform constructor signature
        self.weight = nnx.Param(jnp.ones((dim,), param_dtype), out_sharding=("embed",))
        self.eps = eps
        self.dtype = dtype

    def __call__(self, x: Float[Array, "... d"]) -> Float[Array, "... d"]:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        # DEVIATION(transformers): HF multiplies in the promoted dtype of weight and input (f32
        # for f32 weights); we stay in the compute dtype. Identical when both are f32.
        return self.weight[...].astype(self.dtype) * normed.astype(x.dtype).astype(self.dtype)


class Attention(nnx.Module):
    """Causal self-attention with GQA and RoPE (HF LlamaAttention / Qwen2Attention)."""

    def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs):
        d, n, m, k = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        bias = cfg.attention_bias
        self.q_proj = _linear(cfg, d, n * k, bias, ("embed", "heads"), rngs)
        self.k_proj = _linear(cfg, d, m * k, bias, ("embed", "kv_heads"), rngs)
        self.v_proj = _linear(cfg, d, m * k, bias, ("embed", "kv_heads"), rngs)
        self.o_proj = _linear(cfg, n * k, d, cfg.o_proj_bias, ("heads", "embed"), rngs)
        self.num_kv_heads, self.head_dim = m, k

    def __call__(
        self,
        x: Float[Array, "b l d"],
        cos: Float[Array, "b l k"],
        sin: Float[Array, "b l k"],
        mask: Bool[Array, "b l s"],
        kv: tuple[Array, Array] | None = None,
        index: Int[Array, ""] | None = None,
        rngs: nnx.Rngs | None = None,
    ) -> tuple[Float[Array, "b l d"], tuple[Array, Array] | None]:
        """Attends the l tokens of `x` to themselves, or (with `kv`, one layer's cache buffers
        [b, s, m, k]) to the cache with their own keys/values written at slot `index`.

        Returns (out [b, l, d], the new (keys, values) [b, l, m, k] to store in the cache).
        `rngs` reaches LoRA dropout of wrapped projections."""
        k = self.head_dim
        proj = lambda layer, y: lora.call_linear(layer, y, rngs=rngs)
        q = einops.rearrange(proj(self.q_proj, x), "b l (n k) -> b l n k", k=k)
        keys = einops.rearrange(proj(self.k_proj, x), "b l (m k) -> b l m k", k=k)
        values = einops.rearrange(proj(self.v_proj, x), "b l (m k) -> b l m k", k=k)
        q, keys = rope.apply_rope(q, cos, sin), rope.apply_rope(keys, cos, sin)
        new = (keys, values)
        if kv is not None:
            keys = kvc.write(kv[0], keys, index).astype(q.dtype)
            values = kvc.write(kv[1], values, index).astype(q.dtype)
        out = attend(q, keys, values, mask, causal=kv is None)
        return proj(self.o_proj, out), new


class MLP(nnx.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs):
        d, f, bias = cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias
        self.gate_proj = _linear(cfg, d, f, bias, ("embed", "mlp"), rngs)
        self.up_proj = _linear(cfg, d, f, bias, ("embed", "mlp"), rngs)
        self.down_proj = _linear(cfg, f, d, bias, ("mlp", "embed"), rngs)

    def __call__(
        self, x: Float[Array, "b l d"], rngs: nnx.Rngs | None = None
    ) -> Float[Array, "b l d"]:
        proj = lambda layer, y: lora.call_linear(layer, y, rngs=rngs)
        return proj(self.down_proj, jax.nn.silu(proj(self.gate_proj, x)) * proj(self.up_proj, x))


class DecoderLayer(nnx.Module):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs):
        norm = dict(eps=cfg.rms_norm_eps, dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)
        self.self_attn = Attention(cfg, rngs=rngs)
        self.mlp = MLP(cfg, rngs=rngs)
        self.input_layernorm = RMSNorm(cfg.hidden_size, **norm)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, **norm)

    def __call__(self, x, cos, sin, mask, kv=None, index=None, rngs=None):
        h, new = self.self_attn(self.input_layernorm(x), cos, sin, mask, kv, index, rngs)
        x = x + h
        x = x + self.mlp(self.post_attention_layernorm(x), rngs)
        return sharding.shard(x, "batch", "tokens", "embed"), new


def _remat_call(layer: DecoderLayer, rngs: nnx.Rngs | None, *args):
    """`layer(*args, rngs)` under `jax.checkpoint`, as a pure function of the layer's state.

    Pure split/merge instead of `nnx.remat`, so it also works inside plain `jax.grad`/`jax.jit`
    over a module built outside them; the advanced RNG counters (LoRA dropout) are copied back.
    """
    graphdef, state = nnx.split((layer, rngs))

    def run(state, *args):
        layer, rngs = nnx.merge(graphdef, state)
        out = layer(*args, rngs)
        return out, (None if rngs is None else nnx.state(rngs))

    out, rng_state = jax.checkpoint(run)(state, *args)
    if rngs is not None:
        nnx.update(rngs, rng_state)
    return out


class DecoderModel(nnx.Module):
    """Embedding, layers, final norm (HF LlamaModel / Qwen2Model)."""

    def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs):
        self.embed_tokens = nnx.Embed(
            cfg.vocab_size,
            cfg.hidden_size,
            dtype=cfg.dtype,
            param_dtype=cfg.param_dtype,
            embedding_init=nnx.with_partitioning(_INIT, ("vocab", "embed")),
            rngs=rngs,
        )
        if cfg.scan_layers:

            @nnx.split_rngs(splits=cfg.num_hidden_layers)
            @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: None})
            def stacked(rngs):
                return DecoderLayer(cfg, rngs=rngs)

            self.layers = stacked(rngs)
        else:
            self.layers = nnx.List(
                [DecoderLayer(cfg, rngs=rngs) for _ in range(cfg.num_hidden_layers)]
            )
        self.norm = RMSNorm(
            cfg.hidden_size,
            eps=cfg.rms_norm_eps,
            dtype=cfg.dtype,
            param_dtype=cfg.param_dtype,
            rngs=rngs,
        )
        self.cfg = cfg

    def __call__(self, x, cos, sin, mask, cache: KVCache | None, index, keep_all: bool, rngs):
        """Runs the layers; returns (final-normed h, per-layer outputs or None, the new keys
        and values [layers, b, l, m, k] or None)."""
        cfg = self.cfg
        if cfg.scan_layers:
            if rngs is not None:
                raise ValueError("rngs (LoRA dropout) is not supported with scan_layers")
            return self._scan(x, cos, sin, mask, cache, index, keep_all)
        outs, ks, vs = [], [], []
        for i, layer in enumerate(self.layers):
            kv = None if cache is None else (cache.k[i], cache.v[i])
            if cfg.remat:
                x, new = _remat_call(layer, rngs, x, cos, sin, mask, kv, index)
            else:
                x, new = layer(x, cos, sin, mask, kv, index, rngs)
            outs.append(x)
            ks.append(new[0])
            vs.append(new[1])
        new_kv = (jnp.stack(ks), jnp.stack(vs)) if cache is not None else None
        return self.norm(x), (tuple(outs) if keep_all else None), new_kv

    def _scan(self, x, cos, sin, mask, cache, index, keep_all):
        graphdef, state = nnx.split(self.layers)

        def body(x, xs):
            layer_state, kv = xs
            x, new = nnx.merge(graphdef, layer_state)(x, cos, sin, mask, kv, index)
            return x, ((x if keep_all else None), (None if kv is None else new))

        if self.cfg.remat:
            body = jax.checkpoint(body, prevent_cse=False)
        kv = None if cache is None else (cache.k, cache.v)
        x, (outs, new_kv) = jax.lax.scan(body, x, (state, kv))
        outs = tuple(outs[i] for i in range(outs.shape[0])) if keep_all else None
        return self.norm(x), outs, new_kv


@flax.struct.dataclass
class DecoderOutput:
    """Output of `DecoderLM`.

    Attributes:
        logits: float32[b, l, vocab] (None from `DecoderLM.forward`).
        last_hidden_state: [b, l, d] after the final norm.
        hidden_states: like HF's `output_hidden_states` (embeddings, outputs of layers
            0 .. L-2, final-normed output: L + 1 entries), or None.
        cache: the extended `KVCache`, or None.
    """

    logits: Float[Array, "b l v"] | None
    last_hidden_state: Float[Array, "b l d"]
    hidden_states: tuple[Float[Array, "b l d"], ...] | None
    cache: KVCache | None


class DecoderLM(nnx.Module):
    """Causal LM: `model` (embed_tokens, layers, norm) and `lm_head` (absent when tied).

    Port of transformers LlamaForCausalLM / Qwen2ForCausalLM. Params carry logical axes as
    metadata; place them on a mesh with `sharding.place_state(model, mesh)`.
    """

    def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.model = DecoderModel(cfg, rngs=rngs)
        if not cfg.tie_word_embeddings:
            self.lm_head = _linear(
                cfg, cfg.hidden_size, cfg.vocab_size, False, ("embed", "vocab"), rngs
            )

    def __call__(
        self,
        input_ids: Int[Array, "b l"] | None = None,
        *,
        inputs_embeds: Float[Array, "b l d"] | None = None,
        positions: Int[Array, "b l"] | None = None,
        attention_mask: Bool[Array, "b l"] | None = None,
        cache: KVCache | None = None,
        output_hidden_states: bool = False,
        rngs: nnx.Rngs | None = None,
    ) -> DecoderOutput:
        """Logits of every position (`forward` then `head`; arguments as `forward`)."""
        out = self.forward(
            input_ids,
            inputs_embeds=inputs_embeds,
            positions=positions,
            attention_mask=attention_mask,
            cache=cache,
            output_hidden_states=output_hidden_states,
            rngs=rngs,
        )
        return out.replace(logits=self.head(out.last_hidden_state))

    def head(self, h: Float[Array, "b l d"]) -> Float[Array, "b l v"]:
        """Logits float32 of final-normed hidden states (lm_head, or embedding^T when tied)."""
        if self.cfg.tie_word_embeddings:
            logits = self.model.embed_tokens.attend(h)
        else:
            logits = self.lm_head(h)
        return sharding.shard(logits.astype(jnp.float32), "batch", "tokens", "vocab")

    def hidden(
        self,
        input_ids: Int[Array, "b l"] | None = None,
        *,
        inputs_embeds: Float[Array, "b l d"] | None = None,
        positions: Int[Array, "b l"] | None = None,
        attention_mask: Bool[Array, "b l"] | None = None,
        rngs: nnx.Rngs | None = None,
    ) -> Float[Array, "b l d"]:
        """Final-normed hidden states [b, l, d], no logits (what VIRST/GLUS read at [SEG])."""
        return self.forward(
            input_ids,
            inputs_embeds=inputs_embeds,
            positions=positions,
            attention_mask=attention_mask,
            rngs=rngs,
        ).last_hidden_state

    def forward(
        self,
        input_ids: Int[Array, "b l"] | None = None,
        *,
        inputs_embeds: Float[Array, "b l d"] | None = None,
        positions: Int[Array, "b l"] | None = None,
        attention_mask: Bool[Array, "b l"] | None = None,
        cache: KVCache | None = None,
        output_hidden_states: bool = False,
        rngs: nnx.Rngs | None = None,
    ) -> DecoderOutput:
        """The decoder without the LM head (`logits` is None).

        Args:
            input_ids: int[b, l] token ids, or
            inputs_embeds: [b, l, d] embeddings (e.g. with spliced vision tokens).
            positions: int[b, l] RoPE positions; default: cumsum of `attention_mask` minus one
                (plus `cache.next_pos` with a cache).
            attention_mask: bool/int[b, l], 1 for real tokens, 0 for padding (masks keys only:
                padded queries produce finite garbage).
            cache: a `KVCache` to extend; the l tokens go to slots cache.index .. + l - 1.
            output_hidden_states: also return HF-style hidden states.
            rngs: enables LoRA dropout (None: deterministic).
        """
        h, hidden, cache = self._forward(
            input_ids, inputs_embeds, positions, attention_mask, cache, output_hidden_states, rngs
        )
        return DecoderOutput(logits=None, last_hidden_state=h, hidden_states=hidden, cache=cache)

    def _forward(self, input_ids, inputs_embeds, positions, attention_mask, cache, keep_all, rngs):
        cfg = self.cfg
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            x = self.model.embed_tokens(input_ids)
        else:
            x = inputs_embeds.astype(cfg.dtype)
        b, n_new = x.shape[:2]
        x = sharding.shard(x, "batch", "tokens", "embed")
        if attention_mask is None:
            attention_mask = jnp.ones((b, n_new), bool)
        attention_mask = attention_mask.astype(bool)
        if cache is None:
            mask, index, new_cache = kvc.causal_mask(attention_mask), None, None
            start = None
        else:
            index, start = cache.index, cache.next_pos
            new_cache, mask = kvc.advance(cache, attention_mask)
        if positions is None:
            positions = kvc.default_positions(attention_mask, start)
        elif new_cache is not None:
            # Explicit positions: the next token follows the largest real one.
            last = jnp.max(jnp.where(attention_mask, positions, -1), axis=1) + 1
            new_cache = new_cache.replace(next_pos=jnp.maximum(cache.next_pos, last))
        cos, sin = rope.cos_sin(cfg, positions)
        h, outs, kv = self.model(x, cos, sin, mask, cache, index, keep_all, rngs)
        if new_cache is not None:
            # One in-place write of every layer's new entries (no per-layer copy of the cache).
            new_cache = new_cache.replace(
                k=kvc.write_layers(cache.k, kv[0], index), v=kvc.write_layers(cache.v, kv[1], index)
            )
        hidden = None
        if keep_all:
            # HF replaces the last layer's output with the final-normed one.
            hidden = (x, *outs[:-1], h)
        return h, hidden, new_cache
