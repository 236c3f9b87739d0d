"""VIRST inference: UMT + ToMe -> Qwen2 `[SEG]` states -> ST-Fusion prompts -> SAM2 propagation.

Port of `model/VIRST.py::VirstForCausalLM.forward(..., seg_evaluate=True)` (AIDASLab/VIRST @
954276f; shared/reference/virst.md), assembled from the verified pieces:

1. `vision_tower` (UMT, 4-frame clips) and `mm_projector` (ToMe16 -> 64 tokens per clip, MLP):
   the VLM frames become `t / 4 * 64` visual tokens, spliced at the `<image>` placeholder.
2. Optionally (`initial_seg_fusion`, on in the paper, off in the released eval) the Initial
   ST-Fusion replaces the `[SEG]` input embeddings using SAM2 features of the STF frames.
3. `lm` (Qwen2): the final-normed hidden states at the first `num_seg_tokens` `[SEG]` positions.
4. `seg_prompter` on the SAM2 stride-16 `vision_features` of the STF frames: prompts [b, q, t, 256].
5. `predict` (host): eval anchors `round(linspace(0, t - 1, t // 4))`, then
   `propagation.propagate_with_anchors` over the propagation frames.

Attribute names follow the official top-level keys: `model.vision_tower.vision_tower.encoder.` ->
`vision_tower`, `model.mm_projector.` -> `mm_projector`, `model.{embed_tokens,layers,norm}` +
`lm_head` -> `lm`, `model.initial_seg_fusion_module.`, `model.seg_prompter.`, `model.seg_model.`
(`load_official_state`). `model.occ_predictor` is training-only and not built.

Three image views (fixture README "Dataset path"): `vlm_frames` [b, t, 448, 448, 3] and
`stf_frames` [b, t, 1024, 1024, 3] ImageNet-normalised floats, and `prop_frames` uint8
[t, 1024, 1024, 3] (normalised inside the propagation).
"""

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import einops
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Bool, Float, Int

from jax_refvos.errors import InputError
from jax_refvos.methods.virst import anchor_updater as au
from jax_refvos.methods.virst import fusion
from jax_refvos.methods.virst import propagation as vp
from jax_refvos.model.backbone import multimodal
from jax_refvos.model.backbone.decoder_lm import DecoderLM
from jax_refvos.model.backbone.lm_config import DecoderConfig
from jax_refvos.model.backbone.tome import Tome16Config, Tome16Projector
from jax_refvos.model.backbone.umt import UmtConfig, UmtVisionTower
from jax_refvos.model.sam2.config import Sam2Config
from jax_refvos.model.sam2.sam2_model import Sam2Model
from jax_refvos.weights import hf
from jax_refvos.weights.torch_names import load_torch_state

SEG_TOKEN_ID = 151646  # `tokenizer.add_tokens(["[SEG]"])` on the Qwen2 vocabulary
NUM_SEG_TOKENS = 10
SAM_FRAMES = 32  # `seg_image_length`: STF frames = min(32, T_vlm)
SAM2_CHUNK = 4  # STF frames per SAM2 image-encoder call (bounds the global-attention memory)


class VirstInputError(InputError):
    """Inputs that do not fit the configured VIRST model."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class VirstConfig:
    """The components' configs and VIRST's own switches."""

    umt: UmtConfig
    tome: Tome16Config
    lm: DecoderConfig
    sam2: Sam2Config
    isf: fusion.InitialSegFusionConfig
    segprompter: fusion.SegPrompterConfig
    # The paper's Initial ST-Fusion; DEVIATION(VIRST eval.py): the released eval turns it off.
    initial_seg_fusion: bool = True
    # TDAU settings; `anchors.dynamic_update` is the paper's dynamic anchor update (off: released).
    anchors: au.AnchorConfig = au.AnchorConfig()
    seg_token_id: int = SEG_TOKEN_ID
    num_seg_tokens: int = NUM_SEG_TOKENS

    @classmethod
    def from_official(
        cls,
        config: Mapping[str, Any],
        *,
        umt: UmtConfig,
        sam2: Sam2Config,
        vocab_size: int,
        source: str = "config.json",
        **overrides,
    ) -> "VirstConfig":
        """From a VIRST `config.json` dict (LLM, fusion widths); UMT and SAM2 given separately.

        `vocab_size` is the resized embedding's row count (the config keeps the pre-resize one).
        """
        lm = DecoderConfig.from_hf(
            {**config, "model_type": "qwen2"}, source=source, vocab_size=vocab_size
        )
        tome = Tome16Config(
            vision_dim=umt.embed_dim,
            llm_dim=lm.hidden_size,
            metric_heads=umt.num_heads,
            clip_frames=umt.clip_frames,
        )
        return cls(
            umt=umt,
            tome=tome,
            lm=lm,
            sam2=sam2,
            isf=fusion.InitialSegFusionConfig.from_virst_config(config),
            segprompter=fusion.SegPrompterConfig.from_virst_config(config),
            **overrides,
        )


class Virst(nnx.Module):
    """VIRST's inference modules (see the module docstring)."""

    def __init__(
        self, cfg: VirstConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs
    ):
        self.cfg = cfg
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.vision_tower = UmtVisionTower(cfg.umt, **kw)
        self.mm_projector = Tome16Projector(cfg.tome, **kw)
        self.lm = DecoderLM(cfg.lm, rngs=rngs)
        self.initial_seg_fusion_module = fusion.InitialSegFusion(cfg.isf, **kw)
        self.seg_prompter = fusion.SegPrompter(cfg.segprompter, **kw)
        self.seg_model = Sam2Model(cfg.sam2, dtype=dtype, rngs=rngs)

    # ----------------------------------------------------------------- pieces
    def visual_tokens(self, vlm_frames: Float[Array, "b t H W 3"]) -> Float[Array, "b v D"]:
        """UMT per 4-frame clip -> ToMe16 + MLP -> [b, t / 4 * 64, D], clip-major."""
        b = vlm_frames.shape[0]
        tokens = self.mm_projector(self.vision_tower(vlm_frames))  # [(b k), 64, D]
        return einops.rearrange(tokens, "(b k) s d -> b (k s) d", b=b)

    def stf_features(self, stf_frames: Float[Array, "b t S S 3"]) -> Float[Array, "b t h w c"]:
        """SAM2 stride-16 `vision_features` of the STF frames (no `no_mem_embed`)."""
        b, t = stf_frames.shape[:2]
        flat = einops.rearrange(stf_frames, "b t H W c -> (b t) H W c")
        feats = [
            self.seg_model.forward_image(flat[i : i + SAM2_CHUNK]).pix
            for i in range(0, b * t, SAM2_CHUNK)
        ]
        return einops.rearrange(jnp.concatenate(feats), "(b t) h w c -> b t h w c", b=b)

    def seg_index(self, input_ids: Int[Array, "b l"]) -> Int[Array, "b q"]:
        """Text indices of the first `num_seg_tokens` `[SEG]` ids of each row (stable order)."""
        return multimodal.seg_token_index(input_ids, self.cfg.seg_token_id, self.cfg.num_seg_tokens)

    def lm_forward(
        self,
        vlm_frames: Float[Array, "b t H W 3"],
        input_ids: Int[Array, "b l"],
        text_valid: Bool[Array, "b l"] | None = None,
        stf_feats: Float[Array, "b t h w c"] | None = None,
        *,
        visual: Float[Array, "b v D"] | None = None,
        visual_valid: Bool[Array, "b v"] | None = None,
        stf_valid: Bool[Array, "b t"] | None = None,
    ) -> tuple[Float[Array, "b n D"], multimodal.SplicedSequence, Int[Array, "b q"]]:
        """Splice the visual tokens, (ISF,) run the LLM: final-normed hidden states of the whole
        spliced sequence, the splice bookkeeping and the `[SEG]` text indices (`seg_index`).

        Args:
            vlm_frames: ImageNet-normalised 448 px frames (bf16-rounded in the reference).
            input_ids: text ids with one `<image>` (-200) placeholder and `num_seg_tokens`
                `[SEG]` ids; `text_valid` marks the real ids (a prefix; None: all).
            stf_feats: `stf_features` of the STF frames; required when `initial_seg_fusion`.
            visual, visual_valid: `visual_tokens(vlm_frames)` when already computed (then
                `vlm_frames` is not read) and which of them are real (padded clips: False).
            stf_valid: which STF frames are real (None: all).
        """
        cfg = self.cfg
        if cfg.initial_seg_fusion and stf_feats is None:
            raise VirstInputError("Virst: initial_seg_fusion needs the STF features")
        if text_valid is None:
            text_valid = jnp.ones(input_ids.shape, bool)
        if visual is None:
            visual = self.visual_tokens(vlm_frames)
        b, v, _ = visual.shape
        if visual_valid is None:
            visual_valid = jnp.ones((b, v), bool)
        embeds = multimodal.embed_text_ids(self.lm.model.embed_tokens.embedding[...], input_ids)
        spliced = multimodal.splice_visual_tokens(
            embeds,
            input_ids,
            text_valid,
            visual[:, None],
            visual_valid[:, None],
            out_len=multimodal.spliced_length(input_ids.shape[1], 1, v),
        )
        index = self.seg_index(input_ids)
        x = spliced.embeds
        if cfg.initial_seg_fusion:
            seg_embeds = multimodal.gather_tokens(x, spliced.text_to_out, index)
            fused = self.initial_seg_fusion_module(seg_embeds, stf_feats, stf_valid)
            pos = jnp.take_along_axis(spliced.text_to_out, index, axis=1)
            x = x.at[jnp.arange(b)[:, None], pos].set(fused.astype(x.dtype), mode="drop")
        hidden = self.lm.hidden(
            inputs_embeds=x, positions=spliced.positions, attention_mask=spliced.valid
        )
        return hidden, spliced, index

    def seg_hidden(
        self,
        vlm_frames: Float[Array, "b t H W 3"],
        input_ids: Int[Array, "b l"],
        text_valid: Bool[Array, "b l"] | None = None,
        stf_feats: Float[Array, "b t h w c"] | None = None,
    ) -> Float[Array, "b q D"]:
        """Final-normed LLM hidden states at the `[SEG]` positions (arguments: `lm_forward`)."""
        hidden, spliced, index = self.lm_forward(vlm_frames, input_ids, text_valid, stf_feats)
        return multimodal.gather_tokens(hidden, spliced.text_to_out, index)

    def seg_prompts(
        self, seg_hidden: Float[Array, "b q D"], stf_feats: Float[Array, "b t h w c"]
    ) -> Float[Array, "b q t d"]:
        """SegPrompter: SAM2 prompt tokens per `[SEG]` and STF frame."""
        return self.seg_prompter(seg_hidden, stf_feats).prompts

    def __call__(
        self,
        vlm_frames: Float[Array, "b t H W 3"],
        stf_frames: Float[Array, "b t S S 3"],
        input_ids: Int[Array, "b l"],
        text_valid: Bool[Array, "b l"] | None = None,
    ) -> Float[Array, "b q t d"]:
        """Everything before propagation: prompts [b, q, t, 256] for every STF frame."""
        stf = self.stf_features(stf_frames)
        hidden = self.seg_hidden(vlm_frames, input_ids, text_valid, stf)
        return self.seg_prompts(hidden, stf)

    # ----------------------------------------------------------------- host inference
    def predict(
        self,
        vlm_frames: Float[Array, "tv H W 3"],
        stf_frames: Float[Array, "ts S S 3"],
        prop_frames: vp.FrameSource,
        input_ids: Int[Array, "l"],
        *,
        video_size: tuple[int, int],
        num_frames: int | None = None,
        sam_frame_ids: Int[np.ndarray, "ts"] | None = None,
        chunk_size: int = 8,
        stream: bool = False,
    ) -> np.ndarray | Iterator[tuple[np.ndarray, np.ndarray]]:
        """One video and expression -> mask logits float32[L, H, W] at `video_size`.

        `eval.py` with `video_propagate` (reference/virst.md §1.1): prompts from the T_vlm VLM
        frames and the T_seg STF ("SAM") frames, eval anchors `round(linspace(0, T_seg - 1,
        T_seg // 4))` over the STF frames, mapped to video frames through `sam_frame_ids`,
        then SAM2 propagation over all L video frames.

        Args:
            vlm_frames: the VLM view of the sampled frames (`sampling.virst_vlm_indices`),
                T_vlm a multiple of the UMT clip length.
            stf_frames: the STF view of T_seg = min(32, T_vlm) of them
                (`sampling.virst_sam_positions`), in temporal order.
            prop_frames: all L video frames, uint8 [L, S, S, 3] at the SAM2 size (PIL bicubic),
                or a loader `frames(indices) -> [n, S, S, 3]` (then pass `num_frames`).
            input_ids: the prompt ids, with `num_seg_tokens` `[SEG]` ids.
            video_size: (H, W) of the output logits.
            num_frames: L (default: `len(prop_frames)`).
            sam_frame_ids: the video frame of each STF frame (`frame_ids_for_sam`), increasing;
                default `arange(T_seg)`.
            chunk_size: frames per compiled propagation call.
            stream: return an iterator of (video frame indices int64[n], logits
                float32[n, H, W]) chunks, frames in increasing order, each once, instead of the
                whole array (host memory then stays flat in L).
        """
        t_vlm, t_seg = int(np.shape(vlm_frames)[0]), int(np.shape(stf_frames)[0])
        clip = self.cfg.umt.clip_frames
        if t_vlm < 1 or t_vlm % clip:
            raise VirstInputError(
                f"Virst: {t_vlm} VLM frames, need a positive multiple of {clip} (UMT clips)"
            )
        if t_seg != min(SAM_FRAMES, t_vlm):
            raise VirstInputError(
                f"Virst: {t_vlm} VLM frames need min({SAM_FRAMES}, {t_vlm}) STF frames, "
                f"got {t_seg} STF frames"
            )
        if num_frames is None:
            if callable(prop_frames):
                raise VirstInputError("Virst: pass num_frames with a frame loader")
            num_frames = len(prop_frames)
        n = int(num_frames)
        ids_for_sam = np.arange(t_seg) if sam_frame_ids is None else np.asarray(sam_frame_ids)
        if (
            ids_for_sam.shape != (t_seg,)
            or np.any(np.diff(ids_for_sam) < 0)
            or ids_for_sam.min() < 0
            or ids_for_sam.max() >= n
        ):
            raise VirstInputError(
                f"Virst: sam_frame_ids {ids_for_sam.tolist()} must be {t_seg} "
                f"non-decreasing video frame indices in [0, {n})"
            )
        ids = np.asarray(input_ids)
        if int((ids == self.cfg.seg_token_id).sum()) < self.cfg.num_seg_tokens:
            raise VirstInputError(
                f"Virst: input_ids hold fewer than {self.cfg.num_seg_tokens} [SEG] ids"
            )
        prompts = _prompts_jit(
            self,
            jnp.asarray(vlm_frames)[None],
            jnp.asarray(stf_frames)[None],
            jnp.asarray(ids)[None],
        )
        anchors = au.eval_anchors_np(  # STF-frame indices
            t_seg, frames_per_anchor=self.cfg.anchors.eval_frames_per_anchor
        )
        video_anchors = ids_for_sam[anchors]
        # DEVIATION(VIRST video_propagate): a video frame reached by two anchors (only a 1-frame
        # video, whose padded VLM list repeats it) keeps the later anchor's prompt; the reference
        # re-prompts the frame with the earlier output as an extra mask input.
        last = np.asarray(
            [i for i, f in enumerate(video_anchors) if f not in video_anchors[i + 1 :]]
        )
        anchors, video_anchors = anchors[last], video_anchors[last]
        seg_prompts = np.asarray(prompts)[:, :, anchors].transpose(0, 2, 1, 3)  # [1, k, q, d]
        _, chunks = vp.iter_propagate_with_anchors(
            self.seg_model,
            prop_frames,
            video_anchors,
            np.ones(len(anchors), bool),
            seg_prompts,
            num_frames=n,
            video_size=tuple(video_size),
            chunk_size=chunk_size,
            anchor_cfg=self.cfg.anchors,
            # VIRST decodes with multimask output at eval (§9.2); a SAM2 config without it
            # (the tiny preset) decodes mask token 0, as in training.
            multimask=self.cfg.sam2.multimask_output_in_sam,
        )
        chunks = ((c.frame_index, c.video_res_logits[:, 0]) for c in chunks)
        if stream:
            return chunks
        out = np.zeros((n, *video_size), np.float32)
        for index, logits in chunks:
            out[index] = logits
        return out


@nnx.jit
def _prompts_jit(
    model: Virst,
    vlm_frames: Float[Array, "1 tv H W 3"],
    stf_frames: Float[Array, "1 ts S S 3"],
    input_ids: Int[Array, "1 l"],
) -> Float[Array, "1 q ts d"]:
    """`Virst.__call__`, compiled once per (T_vlm, T_seg, text length)."""
    return model(vlm_frames, stf_frames, input_ids)


# ----------------------------------------------------------------------------- weights
def _sub(state: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


_PARTS = {
    "vision_tower": "model.vision_tower.vision_tower.encoder.",
    "mm_projector": "model.mm_projector.",
    "initial_seg_fusion_module": "model.initial_seg_fusion_module.",
    "seg_prompter": "model.seg_prompter.",
    "seg_model": "model.seg_model.",
}
_LM_KEYS = ("lm_head.weight", "model.embed_tokens.weight", "model.norm.weight")


def load_official_state(
    model: Virst, state: Mapping[str, np.ndarray], *, source: str = "state dict"
) -> None:
    """Fill `model` in place from an official `VirstForCausalLM.state_dict()` (numpy, merged
    LoRA, no wrapper prefix). `model.occ_predictor.*` (training only) is ignored.

    Raises:
        WeightMismatchError: missing, unexpected or mis-shaped keys of a part, naming it.
    """
    for name, prefix in _PARTS.items():
        load_torch_state(getattr(model, name), _sub(state, prefix), source=f"{source} [{prefix}*]")
    lm_state = {k: v for k, v in state.items() if k in _LM_KEYS or k.startswith("model.layers.")}
    hf.load_state(model.lm, lm_state, source=f"{source} [LLM]")


def from_official_state(
    state: Mapping[str, np.ndarray], cfg: VirstConfig, *, source: str = "state dict"
) -> Virst:
    """A `Virst` built abstractly (no random init) and filled by `load_official_state`."""
    model = nnx.eval_shape(lambda: Virst(cfg, rngs=nnx.Rngs(0)))
    load_official_state(model, state, source=source)
    return model
