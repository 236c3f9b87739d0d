r"""Input pipeline throughput against what VIRST training consumes, and against a naive reader.

Builds two synthetic datasets (MeViS layout, converted to ArrayRecord and TFRecord) and times,
in one run:

  grain xW   jax_refvos.pipeline.make_dataset (records -> VIRST batches), W = 0, 1, 2 workers
             (0 = in-process with Grain's prefetch threads)
  tfrecord   the same from TFRecord shards (sequential, interleaved, shuffle buffer), 0 workers
  naive      the official code's way: meta_expressions.json + mask_dict.json parsed up front,
             then per clip each sampled JPEG opened from its folder and each RLE decoded
             (pycocotools when installed), with the same sampling, resizing and tokenisation

for two data configs:

  tiny   the CPU training config of the quickstart (`configs/virst.py:variant=tiny`: VLM view
         80 px <= 8 frames, SAM view 128 px <= 8 frames, 2 expressions, batch 2) on 240x320
         videos of 12-24 frames
  full   the paper's (VIRST defaults: VLM 448 px <= 64 frames, SAM 1024 px <= 32 frames,
         batch 1) on 720x1280 videos of 64-80 frames (MeViS-like)

"clips/s" counts video samples (each up to 3 expressions); "frames/s" counts the frames a clip
delivers (valid VLM frames + valid SAM frames). Consumption:

  tiny   the tiny VIRST's train step itself, measured here on the same batches: the model,
         optimizer and jitted step of `refvos train --config configs/virst.py:variant=tiny`
         (median of the steps after compilation, host->device copy included).
  full   0.39 clips/s per accelerator: the released recipe's 100 epochs x 1000 steps of one clip
         per GPU on 8 H100 in 3 days (reference/anchors.md: 576 H100-hours) -> 2.6 s per step.

  python benchmarks/pipeline_speed.py                 # both configs (about 5 minutes on 2 cores)
  python benchmarks/pipeline_speed.py --configs tiny --batches 20
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# 100 epochs x 1000 steps, one clip per GPU per step, in 3 days (reference/virst.md 6.2,
# reference/anchors.md "8x H100 x 3 days").
FULL_CLIPS_PER_S_PER_GPU = (100 * 1000) / (3 * 86400)


def _tiny_train_config():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from configs import virst as virst_config

    return virst_config.get_config("variant=tiny")


def _tiny_train_pipe() -> dict:
    """The data settings of the tiny training config (configs/virst.py)."""
    from jax_refvos.methods.virst import train_setup

    c = _tiny_train_config()
    return train_setup.pipeline_settings(
        c, train_setup.model_config(c, train_setup.run_tokenizer(c))
    )


def _configs(root: Path):
    from jax_refvos.pipeline import PipelineConfig

    return {
        "tiny": dict(
            synth=dict(num_videos=24, height=240, width=320, num_frames=24, min_frames=12),
            pipe=_tiny_train_pipe(),
        ),
        "full": dict(
            synth=dict(num_videos=4, height=720, width=1280, num_frames=80, min_frames=64),
            pipe=dict(batch_size=1),
        ),
        "_cls": PipelineConfig,
    }


def build_data(root: Path, name: str, synth: dict) -> dict:
    from jax_refvos.datasets.convert import convert_dataset
    from jax_refvos.datasets.synthetic import SynthConfig, generate_benchmark

    raw = root / f"{name}_raw"
    generate_benchmark(raw, SynthConfig(**synth), num_workers=2, progress=False)
    out = {"raw": raw}
    for fmt in ("arrayrecord", "tfrecord"):
        out[fmt] = root / f"{name}_{fmt}"
        convert_dataset("synth", raw, "train", out[fmt], fmt=fmt, num_shards=2, progress=False)
    return out


def _frames_in(batch: dict) -> int:
    return int(batch["vlm_frame_valid"].sum() + batch["sam_frame_valid"].sum())


def time_loader(cfg, batches: int, warmup: int = 2) -> dict:
    from jax_refvos.pipeline import make_dataset

    it = iter(make_dataset(cfg))
    for _ in range(warmup):
        next(it)
    frames, start = 0, time.perf_counter()
    for _ in range(batches):
        frames += _frames_in(next(it))
    dt = time.perf_counter() - start
    if hasattr(it, "close"):
        it.close()
    clips = batches * cfg.batch_size
    return {"clips_per_s": clips / dt, "frames_per_s": frames / dt, "s_per_batch": dt / batches}


class NaiveReader:
    """Folders + JSON, as `data/rvos_dataset.py` reads them; the same sample as the pipeline."""

    def __init__(self, split_dir: Path, cfg):
        from jax_refvos.pipeline import load_tokenizer

        start = time.perf_counter()
        self.dir = split_dir
        self.meta = json.loads((split_dir / "meta_expressions.json").read_text())["videos"]
        self.masks = json.loads((split_dir / "mask_dict.json").read_text())
        self.init_s = time.perf_counter() - start
        self.vids = sorted(self.meta)
        self.cfg = cfg
        self.tok = load_tokenizer(cfg.tokenizer_dir, "virst")
        try:
            from pycocotools import mask as coco

            self.decode = lambda r: coco.decode({"size": r["size"], "counts": r["counts"].encode()})
        except ImportError:  # the [test] extra is not installed
            from jax_refvos.datasets import rle

            self.decode = rle.decode

    def clip(self, rng: np.random.Generator) -> int:
        from PIL import Image

        from jax_refvos.pipeline import image_ops, prompts, sampling

        cfg = self.cfg
        vid = self.vids[rng.integers(len(self.vids))]
        v = self.meta[vid]
        names = v["frames"]
        vlm_idx = sampling.virst_vlm_indices(
            len(names), rng, max_frames=cfg.vlm_frames, min_frames=cfg.vlm_min_frames
        )
        sam_pos = sampling.virst_sam_positions(len(vlm_idx), rng, max_frames=cfg.sam_frames)
        images = {}
        for i in sorted({int(i) for i in vlm_idx}):
            with Image.open(self.dir / "JPEGImages" / vid / f"{names[i]}.jpg") as im:
                images[i] = im.convert("RGB")
        vlm = [image_ops.vlm_view_virst(images[int(i)], cfg.vlm_size) for i in vlm_idx]
        sam_idx = vlm_idx[sam_pos]
        sam = [image_ops.sam_view(images[int(i)], cfg.sam_size) for i in sam_idx]
        exp_ids = list(v["expressions"])
        picks = rng.permutation(len(exp_ids))[: cfg.max_expressions]
        for p in picks:
            e = v["expressions"][exp_ids[p]]
            for i in sam_idx:
                union = None
                for a in e["anno_id"]:
                    r = self.masks[str(a)][int(i)]
                    if r is not None:
                        m = self.decode(r) > 0
                        union = m if union is None else union | m
                if union is not None:
                    image_ops.resize_mask(union, cfg.mask_size)
            prompts.virst_tokens(self.tok, e["exp"].lower(), rng, cfg.max_text_len)
        return len(vlm) + len(sam)


def time_naive(split_dir: Path, cfg, clips: int) -> dict:
    reader = NaiveReader(split_dir, cfg)
    rng = np.random.default_rng(0)
    reader.clip(rng)
    frames, start = 0, time.perf_counter()
    for _ in range(clips):
        frames += reader.clip(rng)
    dt = time.perf_counter() - start
    return {"clips_per_s": clips / dt, "frames_per_s": frames / dt, "init_s": reader.init_s}


def tiny_train_step_s(records: Path, repeats: int = 6) -> dict:
    """Seconds per tiny VIRST train step on `records` (median after compilation) + compile s."""
    import jax

    from jax_refvos.training import loop
    from jax_refvos.training import step as train_step
    from jax_refvos.training.mesh import batch_sharding

    c = _tiny_train_config()
    c.data.train_records = str(records)
    run = loop.build_run(c, records.parent)
    step = train_step.jit_train_step(run.loss_fn(), run.spec)
    mesh, model, optimizer = run.mesh, run.model, run.optimizer
    put = batch_sharding(mesh)
    it = iter(run.data())
    batches = [{k: np.asarray(v) for k, v in next(it).items()} for _ in range(repeats + 1)]
    times = []
    with jax.set_mesh(mesh):
        for b in batches:
            start = time.perf_counter()
            jax.block_until_ready(step(model, optimizer, {}, jax.device_put(b, put)))
            times.append(time.perf_counter() - start)
    return {"step_s": float(np.median(times[1:])), "first_step_s": times[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--configs", default="tiny,full")
    ap.add_argument("--batches", type=int, default=30, help="timed batches per loader run")
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--work_dir", default=None, help="keep the generated data here")
    ap.add_argument("--out", default=None, help="write the results as JSON")
    args = ap.parse_args()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from absl import flags

    flags.FLAGS(sys.argv[:1], known_only=True)  # Grain's workers read absl flags
    root = Path(args.work_dir or tempfile.mkdtemp(prefix="pipeline_speed_"))
    specs = _configs(root)
    results = {"machine": f"{os.cpu_count()} CPU cores", "configs": {}}
    for name in args.configs.split(","):
        spec = specs[name]
        data = build_data(root, name, spec["synth"])
        base = dict(spec["pipe"], seed=0, train=True)
        mk = specs["_cls"].virst
        res = {}
        for w in (int(x) for x in args.workers.split(",")):
            cfg = mk(mixture={"synth": (str(data["arrayrecord"]), 1.0)}, num_workers=w, **base)
            res[f"grain_x{w}"] = time_loader(cfg, args.batches)
            print(name, f"grain x{w}", res[f"grain_x{w}"], flush=True)
        cfg0 = mk(mixture={"synth": (str(data["tfrecord"]), 1.0)}, num_workers=0, **base)
        res["tfrecord_x0"] = time_loader(cfg0, args.batches)
        print(name, "tfrecord x0", res["tfrecord_x0"], flush=True)
        cfg = mk(mixture={"synth": (str(data["arrayrecord"]), 1.0)}, num_workers=0, **base)
        res["naive"] = time_naive(data["raw"] / "train", cfg, args.batches * cfg.batch_size)
        print(name, "naive", res["naive"], flush=True)
        if name == "tiny":
            measured = tiny_train_step_s(data["arrayrecord"])
            res["consumption"] = {
                **measured,
                "max_clips_per_s": cfg.batch_size / measured["step_s"],
            }
        else:
            res["consumption"] = {
                "step_s": 1 / FULL_CLIPS_PER_S_PER_GPU,
                "max_clips_per_s": FULL_CLIPS_PER_S_PER_GPU,
                "per": "accelerator",
            }
        res["ratios"] = {
            "grain_x0_over_naive": res["grain_x0"]["clips_per_s"] / res["naive"]["clips_per_s"],
            "grain_x0_over_consumption": res["grain_x0"]["clips_per_s"]
            / res["consumption"]["max_clips_per_s"],
        }
        print(name, "ratios", res["ratios"], res["consumption"], flush=True)
        results["configs"][name] = res
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
