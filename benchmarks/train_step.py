r"""VIRST train-step time, compile time and MFU, with the machine's matmul peak measured in the
same run.

    PYTHONPATH=. python benchmarks/train_step.py                       # the tiny preset, CPU
    PYTHONPATH=. python benchmarks/train_step.py --config "configs/virst.py:variant=tiny,batch=4"
    PYTHONPATH=. python benchmarks/train_step.py --config configs/virst.py:variant=7b --lm_layers 4

What it measures, on the config's model, optimizer and jitted step (`training/virst_step.py`,
the program `refvos train` runs) fed with real pipeline batches:

- compile: seconds to lower and compile the step (`jax.jit(...).lower(...).compile()`);
- step: median seconds per step after compilation (host->device copy of the batch included);
- FLOPs per step: XLA's cost analysis of the compiled step. HloCostAnalysis counts a while-loop
  body once, so the FLOPs are taken from a second compile with the SAM2 rollout `lax.scan`
  unrolled (`virst_train.ROLLOUT_UNROLL`), the same arithmetic without the loop. They include
  the rollout's rematerialisation (so strictly this is hardware FLOPs utilisation);
- peak: the best of a few timed float32 (CPU) or bfloat16 (GPU/TPU) square matmuls of
  `--peak_n`, 2 n^3 FLOPs each, on the same device; MFU = FLOPs per step / step time / peak.

The tiny preset trains on the synthetic benchmark; with no records under `--data_dir` a small
synthetic set (`synth=tiny`) is generated there first. `--lm_layers` cuts the LLM depth of a
preset (the 7b one on a single GPU) and `--init` is ignored here: weights are random.
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


def matmul_peak(n: int, dtype: str, repeats: int = 10) -> dict:
    from jax_refvos.training.throughput import matmul_peak as measure

    flops = measure(n, dtype, repeats)
    return {"n": n, "dtype": dtype, "seconds": 2 * n**3 / flops, "flops_per_s": flops}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", default="configs/virst.py:variant=tiny")
    ap.add_argument("--data_dir", default=None, help="synth/ + records/ (default: a temp dir)")
    ap.add_argument("--steps", type=int, default=8, help="timed steps after compilation")
    ap.add_argument("--lm_layers", type=int, default=0, help="cut the LLM to this many layers")
    ap.add_argument("--peak_n", type=int, default=2048)
    ap.add_argument("--out", default=None, help="write the results as JSON")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    import dataclasses

    import jax

    from jax_refvos import config_lib
    from jax_refvos.model import virst_train
    from jax_refvos.pipeline import make_dataset
    from jax_refvos.training import trainable, virst_loop, virst_step
    from jax_refvos.training.throughput import cost_flops

    path, _, arg = args.config.partition(".py:")
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="train_step_bench_")
    extra = f"data_dir={data_dir}" + ("" if args.data_dir else ",synth=tiny")
    c = config_lib.load(path + ".py", ",".join(filter(None, [arg, extra])), lock=False)
    c.model.init = ""
    if c.model.preset == "tiny":
        virst_loop.ensure_synthetic_records(c)
    mesh = virst_loop.make_mesh(c)
    tok = virst_loop.load_tokenizer(virst_loop._tokenizer_dir(c), "virst")
    cfg = virst_loop.model_config(c, tok)
    if args.lm_layers:
        lm = dataclasses.replace(cfg.lm, num_hidden_layers=args.lm_layers)
        cfg = dataclasses.replace(cfg, lm=lm)
    model, optimizer, spec, _ = virst_loop.build(c, mesh, model_cfg=cfg)
    n_train, n_total = trainable.param_counts(model, spec)
    put = virst_step.batch_sharding(mesh)
    it = iter(make_dataset(virst_loop.pipeline_config(c, virst_loop._tokenizer_dir(c))))
    batches = [{k: np.asarray(v) for k, v in next(it).items()} for _ in range(args.steps)]

    with jax.set_mesh(mesh):
        first = jax.device_put(batches[0], put)
        # The program `refvos train` runs (its compile time is the loop's too).
        compiled, state, lower_s, compile_s = virst_loop.compile_step(
            c, model, optimizer, spec, first
        )
        virst_train.ROLLOUT_UNROLL = True
        try:
            unrolled = virst_loop.compile_step(c, model, optimizer, spec, first)[0]
            flops = cost_flops(unrolled)
        finally:
            virst_train.ROLLOUT_UNROLL = 1
        looped_flops = cost_flops(compiled)
        times = []
        for b in batches:
            start = time.perf_counter()
            state, metrics = compiled(state, jax.device_put(b, put))
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - start)
    step_s = float(np.median(times[1:] if len(times) > 1 else times))
    platform = jax.devices()[0].platform
    peak = matmul_peak(args.peak_n, "float32" if platform == "cpu" else "bfloat16")
    res = {
        "config": args.config,
        "lm_layers": args.lm_layers or cfg.lm.num_hidden_layers,
        "device": f"{jax.devices()[0].device_kind} x{jax.device_count()}",
        "cpu_cores": os.cpu_count(),
        "params": {"trainable": n_train, "total": n_total},
        "batch": {
            k: list(v.shape)
            for k, v in batches[0].items()
            if k in ("vlm_frames", "sam_frames", "input_ids", "masks")
        },
        "lower_s": lower_s,
        "compile_s": compile_s,
        "step_s": step_s,
        "step_times_s": times,
        "flops_per_step": flops,
        "flops_per_step_loop_counted_once": looped_flops,
        "achieved_flops_per_s": flops / step_s,
        "peak": peak,
        "mfu": flops / step_s / peak["flops_per_s"],
        "loss": float(metrics["loss"]),
    }
    print(json.dumps(res, indent=2))
    print(
        f"step {step_s:.3f} s | compile {lower_s + compile_s:.1f} s | {flops / 1e9:.1f} GFLOP/step"
        f" | {res['achieved_flops_per_s'] / 1e9:.1f} GFLOP/s of {peak['flops_per_s'] / 1e9:.1f}"
        f" peak -> MFU {100 * res['mfu']:.1f}%"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
