"""Throughput accounting for the training loop: clips/s, frames/s, tokens/s, step time split into
data wait and compute, and MFU.

Per step the loop measures `data_s` (blocked on the input pipeline and placing the batch) and
`compute_s` (dispatch until the step's metrics are ready on the host). Every `log_every` steps it
logs the means over the window since the last log:

    step_s, data_s, compute_s       seconds per step (step_s = data_s + compute_s)
    clips_per_s, frames_per_s       global videos and real SAM frames per second
    tokens_per_s                    global real LLM tokens per second (text + visual)
    mfu                             flops_per_step / step_s / (peak per device)

The counts come from the method (`Method.batch_counts`: what a clip, a frame and a token are is
the method's). FLOPs come from XLA's cost analysis of the compiled (SPMD-partitioned, so
per-device) step, which counts a while-loop body once: a scan over frames (VIRST's SAM2
rollout) is counted for one frame, so MFU here is a lower bound (`benchmarks/train_step.py`
unrolls VIRST's scan to count it fully; for the tiny preset the full count is 2.0x, for the 7b
preset the LLM dominates). The peak is `peak_flops` (config, per device) when set, else the
vendor's dense bf16 figure for known accelerators, else (CPU and unknown devices) a float32
matmul peak measured at start-up (`matmul_peak`, about a second).
"""

import jax
import jax.numpy as jnp

# Dense bf16 FLOP/s per chip (vendor data sheets), matched by substring of `device_kind`.
PEAK_BF16 = (
    ("H200", 989e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("L4", 121e12),
    ("TPU v6", 918e12),
    ("TPU v5p", 459e12),
    ("TPU v5", 197e12),  # v5e ("TPU v5 lite")
    ("TPU v4", 275e12),
)


def peak_flops_per_device(device_kind: str, override: float = 0.0) -> float | None:
    """FLOP/s of one device: `override` when > 0, else the table's entry, else None."""
    if override > 0:
        return float(override)
    for name, flops in PEAK_BF16:
        if name.lower() in device_kind.lower():
            return flops
    return None


def matmul_peak(n: int = 2048, dtype: str | None = None, repeats: int = 10) -> float:
    """Measured FLOP/s of the default device: the best of `repeats` timed square matmuls
    (float32 on CPU, bfloat16 elsewhere), 2 n^3 FLOPs each."""
    import time

    dtype = dtype or ("float32" if jax.devices()[0].platform == "cpu" else "bfloat16")
    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x: x @ x)
    jax.block_until_ready(f(a))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(f(a))
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def cost_flops(compiled) -> float | None:
    """FLOPs of a compiled program per device (XLA cost analysis), None when unavailable."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # some backends do not implement it
        return None
    cost = cost[0] if isinstance(cost, list) else cost
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


class ThroughputMeter:
    """Accumulates per-step timings and counts; `window()` returns the means and resets.

    Args:
        flops_per_step: per-device FLOPs of one step (None: no MFU).
        peak_flops: per-device peak FLOP/s (None: no MFU).
    """

    def __init__(self, *, flops_per_step: float | None, peak_flops: float | None):
        self.flops_per_step = flops_per_step
        self.peak_flops = peak_flops
        self._reset()

    def _reset(self) -> None:
        self._n = 0
        self._data = self._compute = 0.0
        self._clips = self._frames = self._tokens = 0.0

    def add(self, *, data_s: float, compute_s: float, clips: float, frames: float, tokens: float):
        self._n += 1
        self._data += data_s
        self._compute += compute_s
        self._clips += clips
        self._frames += frames
        self._tokens += tokens

    def window(self) -> dict[str, float]:
        """The means since the last call (empty when no step was added)."""
        if not self._n:
            return {}
        total = self._data + self._compute
        out = {
            "step_s": total / self._n,
            "data_s": self._data / self._n,
            "compute_s": self._compute / self._n,
            "clips_per_s": self._clips / total,
            "frames_per_s": self._frames / total,
            "tokens_per_s": self._tokens / total,
        }
        if self.flops_per_step and self.peak_flops:
            out["mfu"] = self.flops_per_step / out["step_s"] / self.peak_flops
        self._reset()
        return out
