"""Prefill, one-token decode steps and jitted generation with the static `KVCache`.

Replaces transformers' `GenerationMixin.generate` (greedy / temperature + top-k sampling, eos
stopping) for `DecoderLM`. Prompts may be left- or right-padded: padding slots are masked in the
cache and each row continues from its own last real token.
"""

import functools

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Bool, Float, Int

from jax_refvos.model.backbone.decoder_lm import DecoderLM
from jax_refvos.model.backbone.kv_cache import KVCache


def prefill(
    model: DecoderLM,
    input_ids: Int[Array, "b l"] | None = None,
    attention_mask: Bool[Array, "b l"] | None = None,
    *,
    max_len: int,
    inputs_embeds: Float[Array, "b l d"] | None = None,
) -> tuple[Float[Array, "b v"], KVCache]:
    """Runs the prompt into a fresh cache of `max_len` slots.

    Returns:
        (logits float32[b, vocab] at each row's last real token, cache).
    """
    x = input_ids if input_ids is not None else inputs_embeds
    b, n = x.shape[:2]
    if attention_mask is None:
        attention_mask = jnp.ones((b, n), bool)
    cache = KVCache.init(model.cfg, b, max_len)
    out = model.forward(
        input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask, cache=cache
    )
    last = jnp.max(jnp.where(attention_mask.astype(bool), jnp.arange(n), 0), axis=1)
    h = jnp.take_along_axis(out.last_hidden_state, last[:, None, None], axis=1)
    return model.head(h)[:, 0], out.cache


def decode_step(
    model: DecoderLM, tokens: Int[Array, "b"], cache: KVCache
) -> tuple[Float[Array, "b v"], KVCache]:
    """Feeds one token per row; returns (logits float32[b, vocab], extended cache)."""
    out = model(tokens[:, None], cache=cache)
    return out.logits[:, 0], out.cache


def _pick(logits, key, greedy: bool, temperature: float, top_k: int | None):
    if greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / temperature
    if top_k is not None:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


@functools.partial(
    jax.jit, static_argnames=("graphdef", "max_new_tokens", "greedy", "temperature", "top_k")
)
def _generate(
    graphdef,
    state,
    input_ids,
    attention_mask,
    rng,
    eos_id,
    pad_id,
    *,
    max_new_tokens: int,
    greedy: bool,
    temperature: float,
    top_k: int | None,
):
    model = nnx.merge(graphdef, state)
    max_new = max_new_tokens
    pick = functools.partial(_pick, greedy=greedy, temperature=temperature, top_k=top_k)
    b, n = input_ids.shape
    logits, cache = prefill(model, input_ids, attention_mask, max_len=n + max_new)
    tokens = jnp.full((b, max_new), pad_id, jnp.int32)

    def cond(carry):
        step, _, _, _, done = carry
        return (step < max_new) & ~jnp.all(done)

    def body(carry):
        step, logits, cache, tokens, done = carry
        tok = jnp.where(done, pad_id, pick(logits, jax.random.fold_in(rng, step)))
        tokens = tokens.at[:, step].set(tok)
        done = done | ((tok == eos_id) & (eos_id >= 0))
        logits, cache = decode_step(model, tok, cache)
        return step + 1, logits, cache, tokens, done

    done = jnp.zeros((b,), bool)
    carry = (jnp.zeros((), jnp.int32), logits, cache, tokens, done)
    return jax.lax.while_loop(cond, body, carry)[3]


def generate(
    model: DecoderLM,
    input_ids: Int[Array, "b l"],
    attention_mask: Bool[Array, "b l"] | None = None,
    max_new_tokens: int = 32,
    *,
    greedy: bool = True,
    temperature: float = 1.0,
    top_k: int | None = None,
    rng: jax.Array | None = None,
    eos_id: int | None = None,
    pad_id: int = 0,
) -> Int[Array, "b n"]:
    """New tokens int32[b, max_new_tokens] after the (left- or right-padded) prompts.

    Greedy (argmax) or sampled (`greedy=False`: softmax(logits / temperature) over the `top_k`
    best, with `rng`). A row stops after emitting `eos_id` (kept) and is filled with `pad_id`;
    the loop ends early when every row has stopped. Compiled once per shape and setting.
    """
    if not greedy and rng is None:
        raise ValueError("sampling (greedy=False) needs an rng key")
    rng = jax.random.key(0) if rng is None else rng  # unused when greedy
    if attention_mask is None:
        attention_mask = jnp.ones(input_ids.shape, bool)
    graphdef, state = nnx.split(model)
    return _generate(
        graphdef,
        state,
        jnp.asarray(input_ids, jnp.int32),
        jnp.asarray(attention_mask, bool),
        rng,
        jnp.int32(-1 if eos_id is None else eos_id),
        jnp.int32(pad_id),
        max_new_tokens=max_new_tokens,
        greedy=greedy,
        temperature=float(temperature),
        top_k=top_k,
    )
