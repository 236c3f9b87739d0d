r"""SAM2 speed and memory: ours (jit, Flax NNX) against the `sam2` 1.1.0 package, same run.

Both models are built from the same random weights (the official code with seeded weights,
converted to ours), get the same JPEG frames and the same mask prompt on frame 0, and run in
float32. Measured:

  image encoder   frames/s of `forward_image` on one frame at a time (Hiera + FPN + conv_s0/s1)
  propagation     frames/s of `propagate_in_video` over the whole video (prompt excluded,
                  the memory preflight included), warm; our first-call compile time separately
  memory          ours only: peak device memory while propagating 8, 64 and 512 frames at a
                  small size. On GPU: the allocator's peak_bytes_in_use. On CPU, where jax has
                  no allocator statistics, the largest total of live device arrays seen between
                  chunks plus the compiled chunk's temporary buffer size (XLA's own estimate).

  python benchmarks/sam2_vs_torch.py                           # CPU: hiera_t @ 512, 8 frames
  python benchmarks/sam2_vs_torch.py --image_size 1024 --frames 8
  python benchmarks/sam2_vs_torch.py --device cuda --model_cfg sam2.1_hiera_l --image_size 1024 \
      --frames 64 --torch_compile          # on a GPU: also torch.compile'd sam2 (vos_optimized)

Needs the [parity] extra (torch, torchvision, sam2). Prints a markdown table; --out writes JSON.
On a GPU machine both sides need their CUDA builds: `pip install "jax[cuda12]==0.10.2"` and a CUDA
torch matching torchvision 0.28 (the [parity] pin is the CPU wheel).
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "parity"))  # sam2_reference: the torch model builder


def make_video(root: Path, frames: int, height: int = 480, width: int = 640) -> np.ndarray:
    """A textured square moving over a gradient, as JPEGs; returns the frame-0 mask."""
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:height, :width]
    base = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) % 256], -1)
    texture = rng.integers(0, 255, (height // 4, width // 4, 3))
    side_y, side_x = texture.shape[:2]
    for i in range(frames):
        frame = base.copy()
        y0 = (height // 8 + 3 * i) % (height - side_y)
        x0 = (width // 8 + 5 * i) % (width - side_x)
        frame[y0 : y0 + side_y, x0 : x0 + side_x] = texture
        Image.fromarray(frame.astype(np.uint8)).save(root / f"{i:05d}.jpg", quality=95)
    mask = np.zeros((height, width), bool)
    mask[height // 8 : height // 8 + side_y, width // 8 : width // 8 + side_x] = True
    return mask


def same_weights(model_cfg: str, image_size: int, *, video: bool = True):
    """(reference, ours) with the same random weights; the object-score head is biased so the
    object stays present, as in the parity tests."""
    import sam2_reference
    import torch

    from jax_refvos.weights.sam2_torch import abstract_sam2
    from jax_refvos.weights.torch_names import load_torch_state

    ref = sam2_reference.build_reference(model_cfg, image_size=image_size, seed=0, video=video)
    with torch.no_grad():
        ref.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.add_(8.0)
    ours = abstract_sam2(model_cfg, image_size=image_size)
    load_torch_state(ours, sam2_reference.state_dict_numpy(ref))
    return ref, ours


def build(model_cfg: str, image_size: int, device: str, torch_compile: bool):
    import sam2_reference
    import torch

    from jax_refvos.model.sam2.video_predictor import Sam2VideoPredictor

    ref, ours = same_weights(model_cfg, image_size)
    refs = {"sam2": ref.to(device)}
    if torch_compile:
        compiled = sam2_reference.build_reference(model_cfg, image_size=image_size, seed=0)
        compiled.load_state_dict(ref.state_dict())
        compiled = compiled.to(device)
        compiled.image_encoder.forward = torch.compile(compiled.image_encoder.forward)
        compiled.memory_attention.forward = torch.compile(compiled.memory_attention.forward)
        refs["sam2+torch.compile"] = compiled
    return Sam2VideoPredictor(ours, chunk_size=8), refs


def time_ours(pred, video: Path, mask, repeats: int):
    state = pred.init_state(video)
    times = []
    for _ in range(repeats + 1):
        pred.reset_state(state)
        pred.add_new_mask(state, 0, 1, mask)
        start = time.perf_counter()
        outs = {t: m for t, _, m in pred.propagate_in_video(state)}
        times.append(time.perf_counter() - start)
    return times[0] - min(times[1:]), min(times[1:]), outs


def time_ref(ref, video: Path, mask, repeats: int, device: str):
    import torch

    times = []
    with torch.inference_mode():
        state = ref.init_state(video_path=str(video))
        for _ in range(repeats + 1):
            ref.reset_state(state)
            ref.add_new_mask(state, 0, 1, mask)
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            outs = {t: m for t, _, m in ref.propagate_in_video(state)}
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return min(times[1:]), {t: m.float().cpu().numpy() for t, m in outs.items()}


def encoder_speed(pred, refs, image_size: int, n: int, device: str):
    import jax
    import jax.numpy as jnp
    import torch

    frame = jnp.zeros((1, image_size, image_size, 3), jnp.uint8)
    f = pred._jit_features
    start = time.perf_counter()
    jax.block_until_ready(f(pred._params, frame))
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(n):
        out = f(pred._params, frame)
    jax.block_until_ready(out)
    res = {"ours": n / (time.perf_counter() - start)}
    x = torch.zeros(1, 3, image_size, image_size, device=device)
    for name, ref in refs.items():
        with torch.inference_mode():
            ref.forward_image(x)
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(n):
                ref.forward_image(x)
            if device == "cuda":
                torch.cuda.synchronize()
            res[name] = n / (time.perf_counter() - start)
    return res, compile_s


def memory_sweep(model_cfg: str, image_size: int, lengths: list[int], tmp: Path):
    """Peak device memory of our propagation for each video length (same model, same chunks)."""
    import jax

    from jax_refvos.model.sam2 import propagation as prop
    from jax_refvos.model.sam2.video_predictor import Sam2VideoPredictor

    _, model = same_weights(model_cfg, image_size, video=False)
    dev = jax.devices()[0]
    out = {}
    for n in lengths:
        video = tmp / f"mem{n}"
        video.mkdir()
        mask = make_video(video, n, 96, 128)
        pred = Sam2VideoPredictor(model, chunk_size=8)
        state = pred.init_state(video)
        pred.add_new_mask(state, 0, 1, mask)
        base = sum(a.nbytes for a in jax.live_arrays())  # model weights, cached constants
        live_peak, frames = 0, 0
        for _ in pred.propagate_in_video(state):
            frames += 1
            live_peak = max(live_peak, sum(a.nbytes for a in jax.live_arrays()) - base)
        stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
        out[n] = dict(
            frames=frames,
            # device arrays alive between chunks beyond the weights: bank, chunk inputs/outputs
            live_arrays_mb=round(live_peak / 2**20, 2),
            # GPU/TPU allocator peak over the whole process so far (None on CPU)
            allocator_peak_mb=round(stats["peak_bytes_in_use"] / 2**20, 1)
            if stats and "peak_bytes_in_use" in stats
            else None,
            compiled_chunk_programs=prop._propagate_chunk_jit._cache_size(),
        )
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model_cfg", default="sam2.1_hiera_t")
    p.add_argument("--image_size", type=int, default=512)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--encoder_iters", type=int, default=5)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--torch_compile", action="store_true")
    p.add_argument("--memory_lengths", default="8,64,512", help="'' to skip the sweep")
    p.add_argument("--memory_image_size", type=int, default=128)
    p.add_argument("--out", default=None)
    args = p.parse_args()

    import jax
    import torch

    if args.device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    pred, refs = build(args.model_cfg, args.image_size, args.device, args.torch_compile)
    res = dict(
        date=time.strftime("%Y-%m-%d"),
        jax_device=str(jax.devices()[0]),
        torch_threads=torch.get_num_threads(),
        args=vars(args),
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = tmp / "video"
        video.mkdir()
        mask = make_video(video, args.frames)
        enc, enc_compile = encoder_speed(pred, refs, args.image_size, args.encoder_iters,
                                         args.device)  # fmt: skip
        compile_s, ours_s, ours_out = time_ours(pred, video, mask, args.repeats)
        prop = {"ours": args.frames / ours_s}
        for name, ref in refs.items():
            ref_s, ref_out = time_ref(ref, video, mask, args.repeats, args.device)
            prop[name] = args.frames / ref_s
            if name == "sam2":  # same weights, same frames: the outputs must agree
                res["max_rel_logit_diff"] = max(
                    float(np.abs(ours_out[t] - ref_out[t]).max() / np.abs(ref_out[t]).max())
                    for t in ref_out
                )
                res["min_mask_agreement"] = min(
                    float(np.mean((ours_out[t] > 0) == (ref_out[t] > 0))) for t in ref_out
                )
        res.update(encoder_fps=enc, encoder_compile_s=enc_compile, propagation_fps=prop,
                   propagation_compile_s=compile_s)  # fmt: skip
        if args.memory_lengths:
            lengths = [int(x) for x in args.memory_lengths.split(",")]
            res["memory"] = memory_sweep(args.model_cfg, args.memory_image_size, lengths, tmp)

    print(f"\n{args.model_cfg} @ {args.image_size}, {args.frames} frames, {res['jax_device']}")
    print("| | image encoder frames/s | propagation frames/s |\n|---|---|---|")
    for name in prop:
        print(f"| {name} | {enc[name]:.2f} | {prop[name]:.2f} |")
    for name in refs:
        print(f"| ours / {name} | {enc['ours'] / enc[name]:.2f}x | "
              f"{prop['ours'] / prop[name]:.2f}x |")  # fmt: skip
    print(f"compile: encoder {enc_compile:.1f} s, propagation {compile_s:.1f} s")
    print(
        f"ours vs sam2 outputs: max |Δlogit| / max |logit| = {res['max_rel_logit_diff']:.2e}, "
        f"masks agree on >= {res['min_mask_agreement']:.4%} of pixels per frame"
    )
    for n, m in res.get("memory", {}).items():
        print(f"memory @ {args.memory_image_size}, {n} frames: {m}")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
