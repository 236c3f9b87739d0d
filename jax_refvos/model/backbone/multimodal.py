"""Multimodal splicing with static shapes: `<image>` placeholders -> blocks of visual tokens.

Follows `prepare_inputs_labels_for_multimodal` of the LLaVA family as VideoChat-Flash (VIRST) and
LISA (GLUS) use it: every `<image>` id (-200) in a text row is replaced by that image's (or clip's)
visual embeddings, their labels become IGNORE (-100), the row is right-padded, the attention mask
marks the real tokens and position ids count 0 .. n-1. The reference concatenates Python lists per
row; here every row is written into a fixed `out_len` with scatters, so the result is one compiled
program for any mix of placeholder counts and visual lengths.

Shapes: `b` rows, `l` text ids, `p` placeholder slots, `v` visual tokens per slot, `d` width,
`L` = `out_len` spliced tokens, `q` gathered positions.
"""

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from jax_refvos.token_ids import IGNORE_INDEX, IMAGE_TOKEN_INDEX


@flax.struct.dataclass
class SplicedSequence:
    """The LM's input after splicing.

    Attributes:
        embeds: float[b, L, d], text and visual embeddings; zeros past `valid`.
        valid: bool[b, L], the attention mask (a prefix of each row).
        positions: int32[b, L], position ids 0 .. L-1 (the reference's for right padding).
        labels: int32[b, L], text labels moved with their tokens, IGNORE on visual tokens and
            padding (only when labels were given, else all IGNORE).
        text_to_out: int32[b, l], where each text id landed; `L` for placeholders and padding.
    """

    embeds: Float[Array, "b L d"]
    valid: Bool[Array, "b L"]
    positions: Int[Array, "b L"]
    labels: Int[Array, "b L"]
    text_to_out: Int[Array, "b l"]


def spliced_length(text_len: int, num_slots: int, tokens_per_slot: int) -> int:
    """Static output length that holds any row: text minus placeholders plus every visual token."""
    return text_len - num_slots + num_slots * tokens_per_slot


def splice_visual_tokens(
    text_embeds: Float[Array, "b l d"],
    input_ids: Int[Array, "b l"],
    text_valid: Bool[Array, "b l"],
    visual: Float[Array, "b p v d"],
    visual_valid: Bool[Array, "b p v"],
    *,
    out_len: int,
    labels: Int[Array, "b l"] | None = None,
) -> SplicedSequence:
    """Replace the k-th `<image>` of each row by the valid tokens of `visual[:, k]`.

    Args:
        text_embeds: the embedded text ids (placeholder rows hold anything; they are dropped).
        input_ids: text ids with `IMAGE_TOKEN_INDEX` (-200) placeholders; `text_valid` a prefix.
        visual: the visual embeddings per placeholder slot, in placeholder order.
        visual_valid: which of a slot's `v` tokens are real; a prefix of each slot (a video with
            fewer frames than the capacity yields fewer tokens).
        out_len: the static output length (see `spliced_length`); longer rows are truncated at
            `out_len` like the reference's `tokenizer_model_max_length`.
        labels: optional text labels to carry along.

    A row with more than `p` placeholders keeps its extra placeholders' positions empty (the
    host-side `check_placeholders` rejects such rows before they reach the device).
    """
    b, n_text, _ = text_embeds.shape
    p = visual.shape[1]
    rows = jnp.arange(b)[:, None]
    is_image = (input_ids == IMAGE_TOKEN_INDEX) & text_valid
    slot = jnp.clip(jnp.cumsum(is_image, axis=1) - 1, 0, p - 1)  # slot of each placeholder
    vis_len = jnp.sum(visual_valid, axis=-1).astype(jnp.int32)  # [b, p]
    grow = jnp.where(is_image, jnp.take_along_axis(vis_len, slot, 1) - 1, 0)
    # Output position of text token i: i plus the growth of the placeholders before it.
    shift = jnp.cumsum(grow, axis=1) - grow
    out_pos = jnp.arange(n_text)[None, :] + shift
    keep = text_valid & ~is_image
    text_to_out = jnp.where(keep & (out_pos < out_len), out_pos, out_len).astype(jnp.int32)

    # Where each slot's block starts: the output position of its placeholder.
    start = jnp.full((b, p), out_len, jnp.int32)
    start = start.at[rows, slot].min(jnp.where(is_image, out_pos, out_len).astype(jnp.int32))
    used = start < out_len
    vis_pos = start[..., None] + jnp.arange(visual.shape[2])[None, None, :]
    vis_pos = jnp.where(visual_valid & used[..., None] & (vis_pos < out_len), vis_pos, out_len)

    d = text_embeds.shape[-1]
    dtype = jnp.result_type(text_embeds.dtype, visual.dtype)
    embeds = jnp.zeros((b, out_len, d), dtype)
    embeds = embeds.at[rows, text_to_out].set(text_embeds.astype(dtype), mode="drop")
    flat_pos = vis_pos.reshape(b, -1)
    embeds = embeds.at[rows, flat_pos].set(visual.reshape(b, -1, d).astype(dtype), mode="drop")

    written = jnp.zeros((b, out_len), bool)
    written = written.at[rows, text_to_out].set(True, mode="drop")
    written = written.at[rows, flat_pos].set(True, mode="drop")
    out_labels = jnp.full((b, out_len), IGNORE_INDEX, jnp.int32)
    if labels is not None:
        out_labels = out_labels.at[rows, text_to_out].set(labels.astype(jnp.int32), mode="drop")
    positions = jnp.broadcast_to(jnp.arange(out_len, dtype=jnp.int32), (b, out_len))
    return SplicedSequence(
        embeds=embeds,
        valid=written,
        positions=positions,
        labels=out_labels,
        text_to_out=text_to_out,
    )


def seg_token_index(
    input_ids: Int[Array, "b l"], seg_token_id: int, count: int
) -> Int[Array, "b q"]:
    """Text indices of the first `count` `seg_token_id` ids of each row, in order (q = count).

    The `[SEG]` read-out shared by the methods: `gather_tokens(hidden, text_to_out,
    seg_token_index(...))` gives the LLM states at (VIRST) or before (GLUS, `offset=-1`) them.
    Rows with fewer than `count` such ids get other positions after them (mask those rows).
    """
    not_seg = (input_ids != seg_token_id).astype(jnp.int32)
    return jnp.argsort(not_seg, axis=1, stable=True)[:, :count]


def gather_tokens(
    hidden: Float[Array, "b L d"],
    text_to_out: Int[Array, "b l"],
    index: Int[Array, "b q"],
    *,
    offset: int = 0,
) -> Float[Array, "b q d"]:
    """Hidden states at spliced positions of text tokens `index` (e.g. the `[SEG]` tokens).

    `offset` shifts in the spliced sequence: VIRST reads the `[SEG]` position itself (0), GLUS
    the position before it (-1, the hidden state that predicts `[SEG]`).
    """
    pos = jnp.take_along_axis(text_to_out, index, axis=1) + offset
    pos = jnp.clip(pos, 0, hidden.shape[1] - 1)
    return jnp.take_along_axis(hidden, pos[..., None], axis=1)


def check_placeholders(input_ids: np.ndarray, text_valid: np.ndarray, num_slots: int) -> None:
    """Host-side check that no row has more `<image>` placeholders than visual slots."""
    counts = np.sum((np.asarray(input_ids) == IMAGE_TOKEN_INDEX) & np.asarray(text_valid), -1)
    bad = np.flatnonzero(counts > num_slots)
    if bad.size:
        raise ValueError(
            f"rows {bad.tolist()} have {counts[bad].tolist()} <image> placeholders; "
            f"the batch has {num_slots} visual slots per row"
        )


def embed_text_ids(embedding: jax.Array, input_ids: Int[Array, "b l"]) -> Float[Array, "b l d"]:
    """Embedding lookup that tolerates placeholder ids (-200 reads row 0; splicing drops it)."""
    return jnp.take(embedding, jnp.maximum(input_ids, 0), axis=0)
