r"""Memory per device of VIRST training on a (data, fsdp, model) mesh, from the model's shapes.

    python -m jax_refvos.methods.virst.memory_plan                       # 7b preset, 8..1024 chips
    python -m jax_refvos.methods.virst.memory_plan --chips 8 64 --device_gb 95 --markdown

Parameters, optimizer state and gradients are exact: the preset is built abstractly
(`nnx.eval_shape`, no memory), LoRA applied as `refvos train` does (`record.build_model`), and
every array is split as `sharding.PARAM_RULES` maps its logical axes onto the mesh (ceil for
uneven splits). AdamW keeps two moments per trainable parameter, in its dtype; gradients exist
for trainable parameters.

Activations are an analytic estimate from the shapes, per device (one video per data shard,
`max_expressions` LLM rows per video, padded text + visual tokens per row, compute dtype):

- LLM, per decoder layer and row, the tensors kept for the backward pass: s * (10 h + 2 kv +
  4 i) for the norms, projections, RoPE'd q/k, attention output, residuals and the SwiGLU
  MLP, plus 2 n s^2 for the attention scores and probabilities (our attention materialises
  them). Without remat all L layers keep them; with per-layer remat only each layer's input
  (s h) is kept, plus one layer's set while it is recomputed.
- LM head: logits and their gradient, 2 s V per row.
- SAM2: the frozen image encoder's three feature maps of every SAM frame (inputs of the
  trainable decoder), plus one frame of the (rematerialised) rollout per row: the memory
  attention's self- and cross-attention scores over 64 x 64 tokens and the memory bank.

The frozen UMT and Hiera forward passes keep nothing for the backward pass (no trainable
parameter before them); their transient peak is not counted.
"""

import argparse
import dataclasses
import math

import numpy as np
from flax import nnx

from jax_refvos import sharding
from jax_refvos.methods.virst.config import VIRST_PAPER
from jax_refvos.training import trainable

GB = 1024**3


@dataclasses.dataclass(frozen=True)
class Workload:
    """What one device processes per step (the 7b preset's data settings by default)."""

    videos: int = 1
    rows_per_video: int = 3  # max_expressions
    vlm_frames: int = 64
    text_len: int = 512  # max_text_len (the pipeline pads statically)
    sam_frames: int = 32


def abstract_state(cfg, lora_rank: int = 64, lora_alpha: float = 16.0):
    """The model's `nnx.Param` state as abstract arrays (nothing allocated)."""
    from jax_refvos.methods.virst import record

    lora_cfg = record.lora_config(lora_rank, lora_alpha) if lora_rank else None

    def make():
        return record.build_model(cfg, lora_cfg, 0)

    return nnx.state(nnx.eval_shape(make), nnx.Param)


def param_table(state, spec: trainable.TrainableSpec):
    """[(path, shape, itemsize, mesh PartitionSpec, trains)] of every parameter."""
    with nnx.logical_axis_rules(sharding.PARAM_RULES):
        pspecs = nnx.get_partition_spec(state)
    rows = []
    flat_specs = dict(nnx.to_flat_state(pspecs))
    for path, var in nnx.to_flat_state(state):
        value = var.get_value() if hasattr(var, "get_value") else var.value
        ps = flat_specs[path]
        ps = ps.get_value() if hasattr(ps, "get_value") else getattr(ps, "value", ps)
        rows.append(
            (path, tuple(value.shape), np.dtype(value.dtype).itemsize, ps, spec.matches(path))
        )
    return rows


def _per_device_elems(shape, pspec, mesh: dict) -> int:
    n = 1
    for i, dim in enumerate(shape):
        axes = pspec[i] if pspec is not None and i < len(pspec) else None
        axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
        n *= math.ceil(dim / math.prod(mesh[a] for a in axes))
    return n


def state_bytes(table, mesh: dict) -> dict[str, float]:
    """Bytes per device: all parameters, AdamW moments and gradients of the trainable ones."""
    params = sum(_per_device_elems(s, p, mesh) * b for _, s, b, p, _ in table)
    train = sum(_per_device_elems(s, p, mesh) * b for _, s, b, p, t in table if t)
    return {"params": params, "optimizer": 2 * train, "gradients": train}


def activation_bytes(cfg, work: Workload, mesh: dict, *, remat: bool) -> float:
    """The analytic estimate of the module docstring, bytes per device."""
    lm = cfg.lm
    e = np.dtype(lm.dtype).itemsize
    videos = work.videos  # per (data, fsdp) shard: both split the batch (ACT_RULES)
    rows = videos * work.rows_per_video
    s = work.text_len + work.vlm_frames * cfg.tome.tokens_per_frame
    h, kv = lm.hidden_size, lm.num_key_value_heads * lm.head_dim
    i, n, layers = lm.intermediate_size, lm.num_attention_heads, lm.num_hidden_layers
    tp = mesh["model"]  # heads, mlp and vocab split over "model"
    per_layer = s * (10 * h + 2 * kv + 4 * i / tp) + 2 * (n / tp) * s * s
    kept = layers * s * h + per_layer if remat else layers * per_layer
    lm_bytes = rows * e * kept
    head = rows * e * 2 * s * lm.vocab_size / tp
    sam = cfg.sam2
    d, side = sam.hidden_dim, sam.image_size // 16
    feats = work.sam_frames * (d // 8 * (4 * side) ** 2 + d // 4 * (2 * side) ** 2 + d * side**2)
    tokens = side * side
    mem_tokens = cfg.sam2.num_maskmem * tokens
    frame = 2 * tokens * (tokens + mem_tokens) * cfg.sam2.memory_attention.num_layers
    sam_bytes = videos * e * feats + rows * e * (frame + mem_tokens * d)
    return lm_bytes + head + sam_bytes


def auto_mesh(chips: int, fits) -> tuple[dict, bool]:
    """(mesh, fits): the most data parallelism that fits. Tries "model" 1, 2, 4, 8 and, for
    each, "fsdp" powers of two; the first mesh with the fewest non-data chips per replica for
    which `fits(mesh)` wins. None fitting: the most sharded mesh tried, and False."""
    candidates = []
    model = 1
    while model <= min(8, chips):
        fsdp = 1
        while fsdp * model <= chips:
            candidates.append({"data": chips // (fsdp * model), "fsdp": fsdp, "model": model})
            fsdp *= 2
        model *= 2
    candidates.sort(key=lambda m: (m["fsdp"] * m["model"], m["model"]))
    for mesh in candidates:
        if fits(mesh):
            return mesh, True
    return max(candidates, key=lambda m: (m["fsdp"] * m["model"], m["model"])), False


def plan(cfg, table, chips_list, device_gb: float, work: Workload) -> list[dict]:
    out = []
    for chips in chips_list:

        def total(mesh, remat):
            return sum(state_bytes(table, mesh).values()) + activation_bytes(
                cfg, work, mesh, remat=remat
            )

        mesh, fits = auto_mesh(chips, lambda m: total(m, True) <= 0.9 * device_gb * GB)
        st = state_bytes(table, mesh)
        out.append(
            {
                "chips": chips,
                "mesh": mesh,
                "fits": fits,
                "global_batch": mesh["data"] * mesh["fsdp"] * work.videos,
                **{k: v / GB for k, v in st.items()},
                "act_remat": activation_bytes(cfg, work, mesh, remat=True) / GB,
                "act_no_remat": activation_bytes(cfg, work, mesh, remat=False) / GB,
                "total_remat": total(mesh, True) / GB,
                "total_no_remat": total(mesh, False) / GB,
            }
        )
    return out


def markdown(rows: list[dict], device_gb: float) -> str:
    head = (
        "| chips | mesh (data x fsdp x model) | videos/step | params | AdamW | grads "
        f"| activations remat / none | total remat / none (of {device_gb:g} GB) |\n"
    )
    head += "|---:|---|---:|---:|---:|---:|---:|---:|\n"
    for r in rows:
        m = r["mesh"]
        head += (
            f"| {r['chips']} | {m['data']} x {m['fsdp']} x {m['model']}"
            f"{'' if r['fits'] else ' (does not fit)'} | {r['global_batch']} "
            f"| {r['params']:.1f} | {r['optimizer']:.1f} | {r['gradients']:.1f} "
            f"| {r['act_remat']:.1f} / {r['act_no_remat']:.1f} "
            f"| {r['total_remat']:.1f} / {r['total_no_remat']:.1f} |\n"
        )
    return head + "\n(GB per device)"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--chips", type=int, nargs="+", default=[8, 64, 256, 1024])
    ap.add_argument(
        "--device_gb", type=float, nargs="+", default=[80.0], help="memory per device (H100: 80)"
    )
    ap.add_argument("--lora_rank", type=int, default=64)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    from jax_refvos.methods.virst import presets as virst_presets

    cfg = virst_presets.virst_7b()
    table = param_table(abstract_state(cfg, args.lora_rank), VIRST_PAPER)
    n_all = sum(math.prod(s) for _, s, _, _, _ in table)
    n_train = sum(math.prod(s) for _, s, _, _, t in table if t)
    print(f"VIRST 7b: {n_all / 1e9:.2f} B parameters, {n_train / 1e9:.3f} B trainable")
    for device_gb in args.device_gb:
        rows = plan(cfg, table, args.chips, device_gb, Workload())
        if args.markdown:
            print(f"\n{device_gb:g} GB devices:\n\n" + markdown(rows, device_gb))
        else:
            for r in rows:
                print({k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()})


if __name__ == "__main__":
    main()
