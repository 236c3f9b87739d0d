r"""Speed of `refvos score` against the official per-frame scoring loop, measured in one run.

Builds a MeViS-layout split of moving ellipses at a benchmark-like resolution (default 720x1280,
MeViS' most common size), predictions perturbed from the ground truth, then times:

  official  the official loop: per frame pycocotools decode, cv2.imread, DAVIS J and boundary F
            (cv2.dilate + skimage disk, via the `vos_benchmark` package), one process
            (tests/eval/davis_reference.py; needs the [test] extra)
  ours x1   jax_refvos.eval.score, one process (vectorised over frames, cropped, prefix sums)
  ours xN   the same over N worker processes (parallel over expressions)

and checks that all three give the same J and F. Ratios are what to compare across machines.

  python benchmarks/score_speed.py                       # 8 videos x 3 expressions x 30 frames
  python benchmarks/score_speed.py --height 480 --width 854 --videos 16 --workers 2
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from jax_refvos.datasets import rle
from jax_refvos.eval import score

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "eval"))


def build_split(root: Path, videos: int, exps: int, frames: int, h: int, w: int, seed: int) -> Path:
    """Writes <root>/valid_u and <root>/pred; returns the prediction folder."""
    rng = np.random.default_rng(seed)
    base, pred = root / "valid_u", root / "pred"
    yy, xx = np.mgrid[:h, :w]
    meta, masks, anno = {"videos": {}}, {}, 0
    for v in range(videos):
        vid = f"v{v:03d}"
        names = [f"{i:05d}" for i in range(frames)]
        (base / "JPEGImages" / vid).mkdir(parents=True)
        for name in names:  # tiny stand-in JPEGs: the scorers only read their size
            Image.new("RGB", (w, h)).save(base / "JPEGImages" / vid / f"{name}.jpg")
        exps_meta = {}
        for e in range(exps):
            cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.2, 0.5) * w
            ry, rx = rng.uniform(0.08, 0.25) * h, rng.uniform(0.08, 0.25) * w
            vx = rng.uniform(-0.01, 0.01) * w
            track = [
                ((yy - cy) / ry) ** 2 + ((xx - cx - vx * i) / rx) ** 2 < 1 for i in range(frames)
            ]
            masks[str(anno)] = [rle.encode(m) if m.any() else None for m in track]
            exps_meta[str(e)] = {"exp": f"object {e}", "obj_id": [e], "anno_id": [anno]}
            shift = (int(rng.integers(-6, 7)), int(rng.integers(-6, 7)))
            for name, m in zip(names, track, strict=True):
                p = np.roll(m, shift, axis=(0, 1))
                out = pred / vid / str(e) / f"{name}.png"
                out.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(p.astype(np.uint8) * 255).save(out)
            anno += 1
        meta["videos"][vid] = {"frames": names, "expressions": exps_meta}
    (base / "meta_expressions.json").write_text(json.dumps(meta))
    (base / "mask_dict.json").write_text(json.dumps(masks))
    return pred


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--expressions", type=int, default=3)
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="also write the results as JSON here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pred = build_split(
            root, args.videos, args.expressions, args.frames, args.height, args.width, args.seed
        )
        n_frames = args.videos * args.expressions * args.frames
        run = lambda n: score.score_split(root, "valid_u", pred, num_workers=n, progress=False)
        ours1, t1 = timed(lambda: run(1))
        oursn, tn = timed(lambda: run(args.workers))
        rows = {"ours x1": t1, f"ours x{args.workers}": tn}
        try:
            import davis_reference

            ref, t_ref = timed(lambda: davis_reference.expression_scores(root, "valid_u", pred))
            j_ref, f_ref, _ = davis_reference.split_scores(ref)
            assert abs(j_ref - ours1.j) < 1e-6 and abs(f_ref - ours1.f) < 1e-6, "scores differ"
            rows = {"official": t_ref, **rows}
        except ImportError as e:
            print(
                f"(official reference unavailable, install the [test] extra: {e})", file=sys.stderr
            )
        assert abs(ours1.j - oursn.j) < 1e-9 and abs(ours1.f - oursn.f) < 1e-9

    ref_t = rows.get("official")
    print(
        f"{args.videos} videos x {args.expressions} expressions x {args.frames} frames "
        f"at {args.height}x{args.width} = {n_frames} frame pairs; J&F = {ours1.jf:.2f}"
    )
    print(f"{'scorer':<12} {'seconds':>8} {'frames/s':>9} {'speed-up':>9}")
    for name, t in rows.items():
        ratio = f"{ref_t / t:8.1f}x" if ref_t else "      n/a"
        print(f"{name:<12} {t:8.2f} {n_frames / t:9.0f} {ratio}")
    if args.out:
        Path(args.out).write_text(
            json.dumps({"args": vars(args), "seconds": rows, "frames": n_frames}, indent=2)
        )


if __name__ == "__main__":
    main()
