r"""Train-step time, compile time and MFU of one or more methods' configs, with the machine's
matmul peak measured in the same run.

    PYTHONPATH=. python benchmarks/train_step.py                       # the tiny VIRST, CPU
    PYTHONPATH=. python benchmarks/train_step.py --config configs/virst.py:variant=tiny \
        --config configs/sam2.py:variant=tiny                          # both, one run
    PYTHONPATH=. python benchmarks/train_step.py --config "configs/virst.py:variant=tiny,batch=4"
    PYTHONPATH=. python benchmarks/train_step.py --config configs/virst.py:variant=7b --lm_layers 4

What it measures, on the config's model, optimizer and compiled step (`training/step.py::
compile_step`, the program `refvos train` runs, built by `training/loop.py::build_run`) fed with
real pipeline batches:

- compile: seconds to lower and compile the step (`jax.jit(...).lower(...).compile()`);
- step: median seconds per step after compilation (host->device copy of the batch included);
- FLOPs per step: XLA's cost analysis of the step. HloCostAnalysis counts a while-loop body
  once, so the FLOPs are those of a second lowering with the method's scans unrolled (VIRST's
  SAM2 rollout `virst_train.ROLLOUT_UNROLL`; SAM 2's tracking and corrective-click scans
  `sam2_train.SCAN_UNROLL`), the same arithmetic without the loops, counted on the lowered
  program (`Lowered.cost_analysis()`, before XLA's optimisations: compiling SAM 2's step fully
  unrolled did not finish within 25 minutes on 2 cores). They include the rematerialisation of
  the checkpointed scan bodies (so strictly this is hardware FLOPs utilisation).
  `--check_flops` compiles the unrolled step as well and prints both counts;
- peak: the best of a few timed float32 (CPU) or bfloat16 (GPU/TPU) square matmuls of
  `--peak_n`, 2 n^3 FLOPs each, on the same device; MFU = FLOPs per step / step time / peak.

Every preset trains here on the synthetic benchmark (at the preset's image sizes); with no
records under `--data_dir` a small synthetic set (`synth=tiny`) is generated there first.
`--lm_layers` cuts the LLM depth of a preset (the 7b one on a single GPU) and `init` is ignored
here: weights are random. With several `--config`s the peak is measured once, after all of them,
and a table compares the steps.
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


def _unroll_switch(method: str):
    """(module, attribute) of the method's scan-unroll switch (see the module docstring)."""
    if method == "virst":
        from jax_refvos.methods.virst import train_forward as virst_train

        return virst_train, "ROLLOUT_UNROLL"
    if method == "sam2":
        from jax_refvos.methods.sam2 import train_forward as sam2_train

        return sam2_train, "SCAN_UNROLL"
    raise SystemExit(f"error: benchmarks/train_step.py has no scan-unroll switch for {method!r}")


def measure(
    config: str, data_dir: str | None, steps: int, lm_layers: int, check_flops: bool = False
) -> dict:
    """Compile and time one config's train step (module docstring)."""
    import jax

    from jax_refvos import config_lib
    from jax_refvos.training import loop, trainable
    from jax_refvos.training import step as train_step
    from jax_refvos.training.mesh import batch_sharding
    from jax_refvos.training.throughput import cost_flops

    path, _, arg = config.partition(".py:")
    data_dir = data_dir or tempfile.mkdtemp(prefix="train_step_bench_")
    extra = f"data_dir={data_dir}" + ("" if os.path.isdir(f"{data_dir}/records") else ",synth=tiny")
    c = config_lib.load(path + ".py", ",".join(filter(None, [arg, extra])), lock=False)
    c.model.init = ""
    c.data.synth_root = f"{data_dir}/synth"  # every preset: the synthetic benchmark
    c.data.train_records = f"{data_dir}/records/synth_train"
    if "tokenizer_dir" in c.data:
        c.data.tokenizer_dir = c.data.tokenizer_dir if c.model.preset == "tiny" else ""
    method, mesh = loop.check_config(c)
    workdir = Path(tempfile.mkdtemp(prefix="train_step_workdir_"))  # what prepare() writes
    method.prepare(c, workdir)
    record = method.model_record(c, workdir)
    if lm_layers:
        if "lm" not in record["components"]:
            raise SystemExit(f"error: --lm_layers: {config} has no LLM")
        record["components"]["lm"]["config"]["num_hidden_layers"] = lm_layers
    run = loop.build_run(c, workdir, method=method, mesh=mesh, record=record)
    n_train, n_total = trainable.param_counts(run.model, run.spec)
    put = batch_sharding(mesh)
    it = iter(run.data())
    batches = [{k: np.asarray(v) for k, v in next(it).items()} for _ in range(steps)]
    lm = record["components"].get("lm")
    module, switch = _unroll_switch(c.method)

    def compile_step(first, compile=True):
        return train_step.compile_step(
            run.loss_fn(), run.spec, run.model, run.optimizer, run.state(), first, compile=compile
        )

    with jax.set_mesh(mesh):
        first = jax.device_put(batches[0], put)
        # The program `refvos train` runs (its compile time is the loop's too).
        compiled, lower_s, compile_s = compile_step(first)
        state = run.state()
        setattr(module, switch, True)
        try:
            flops = cost_flops(compile_step(first, compile=False)[0])
            compiled_flops = cost_flops(compile_step(first)[0]) if check_flops else None
        finally:
            setattr(module, switch, 1)
        looped_flops = cost_flops(compiled)
        times = []
        for b in batches:
            start = time.perf_counter()
            state, metrics = compiled(state, jax.device_put(b, put))
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - start)
    step_s = float(np.median(times[1:] if len(times) > 1 else times))
    return {
        "config": config,
        "method": c.method,
        "lm_layers": lm["config"]["num_hidden_layers"] if lm else None,
        "device": f"{jax.devices()[0].device_kind} x{jax.device_count()}",
        "cpu_cores": os.cpu_count(),
        "params": {"trainable": n_train, "total": n_total},
        "batch": {
            k: list(v.shape)
            for k, v in batches[0].items()
            if k in ("vlm_frames", "sam_frames", "frames", "input_ids", "masks")
        },
        "lower_s": lower_s,
        "compile_s": compile_s,
        "step_s": step_s,
        "step_times_s": times,
        "flops_per_step": flops,
        "flops_per_step_loop_counted_once": looped_flops,
        "flops_per_step_compiled_unrolled": compiled_flops,
        "achieved_flops_per_s": flops / step_s,
        "loss": float(metrics["loss"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", action="append", help="a training config (repeat it to compare)")
    ap.add_argument("--data_dir", default=None, help="synth/ + records/ (default: a temp dir)")
    ap.add_argument("--steps", type=int, default=8, help="timed steps after compilation")
    ap.add_argument("--lm_layers", type=int, default=0, help="cut the LLM to this many layers")
    ap.add_argument("--peak_n", type=int, default=2048)
    ap.add_argument("--out", default=None, help="write the results as JSON")
    ap.add_argument(
        "--check_flops",
        action="store_true",
        help="also compile the unrolled step and report its FLOPs (slow for SAM 2)",
    )
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    import jax

    configs = args.config or ["configs/virst.py:variant=tiny"]
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="train_step_bench_")
    results = [
        measure(cfg, data_dir, args.steps, args.lm_layers, args.check_flops) for cfg in configs
    ]
    platform = jax.devices()[0].platform
    peak = matmul_peak(args.peak_n, "float32" if platform == "cpu" else "bfloat16")
    for res in results:
        res["peak"] = peak
        res["mfu"] = res["achieved_flops_per_s"] / peak["flops_per_s"]
    out = results[0] if len(results) == 1 else {"runs": results, "peak": peak}
    print(json.dumps(out, indent=2))
    print(f"peak: {peak['flops_per_s'] / 1e9:.1f} GFLOP/s ({peak['dtype']} matmul n={peak['n']})")
    for res in results:
        print(
            f"{res['config']}: step {res['step_s']:.3f} s"
            f" | compile {res['lower_s'] + res['compile_s']:.1f} s"
            f" | {res['flops_per_step'] / 1e9:.1f} GFLOP/step"
            f" | {res['achieved_flops_per_s'] / 1e9:.1f} GFLOP/s -> MFU {100 * res['mfu']:.1f}%"
        )
        if res["flops_per_step_compiled_unrolled"]:
            print(f"  compiled unrolled: {res['flops_per_step_compiled_unrolled'] / 1e9:.2f} GFLOP")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
