"""The training loop of every method: config -> method (registry) -> model on a mesh -> Grain
batches -> sharded steps -> workdir.

The workdir explains itself: `config.json` (the resolved config, with its `method` and the
record of the model: every component's config, `Method.model_record`), `metrics.jsonl` (one JSON
object per logged step), `tensorboard/`, `checkpoints/<step>/` (the train state of
`training/step.py` and the Grain iterator's position), and what the method keeps there (VIRST:
`tokenizer/`). Rerunning the same command resumes from the newest checkpoint; SIGTERM or Ctrl-C
saves a checkpoint at the current step and exits cleanly. This module imports no method: it
reaches the config's method through `methods.registry`.
"""

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from jax_refvos import config_lib, distributed, sharding
from jax_refvos.checkpoint import Checkpointer, PreemptionGuard, abstract_like
from jax_refvos.errors import InputError
from jax_refvos.methods import registry
from jax_refvos.methods.base import Method
from jax_refvos.training import optim, run_config, trainable
from jax_refvos.training import step as train_step
from jax_refvos.training.mesh import batch_sharding, make_mesh
from jax_refvos.training.metrics import CONFIG_FILE, MetricsLogger, write_config
from jax_refvos.training.throughput import (
    ThroughputMeter,
    cost_flops,
    matmul_peak,
    peak_flops_per_device,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Run:
    """A config's method, mesh and placed modules (what `train` and the benchmarks start from)."""

    c: ml_collections.ConfigDict
    method: Method
    mesh: jax.sharding.Mesh
    record: dict[str, Any]
    model: nnx.Module
    optimizer: nnx.Optimizer
    spec: trainable.TrainableSpec
    method_state: Any

    def state(self) -> train_step.TrainState:
        return train_step.init_state(self.model, self.optimizer, self.method_state)

    def loss_fn(self):
        return self.method.loss(self.c, self.model)

    def data(self, *, process_index: int = 0, process_count: int = 1):
        """This process's Grain dataset of the run's batches."""
        return self.method.train_data(
            self.c, self.model, process_index=process_index, process_count=process_count
        )


class NonFiniteError(InputError):
    """A step's loss or gradient norm is NaN/Inf (the run stops; nothing of it is saved)."""


def check_config(c: ml_collections.ConfigDict) -> tuple[Method, jax.sharding.Mesh]:
    """(method, mesh) of a config after every cheap check; InputError naming the problem.
    Nothing is written before these pass."""
    if "method" not in c:
        raise InputError(f"config: no 'method' key (one of {', '.join(registry.names())})")
    method = registry.get(c.method)
    run_config.validate(c, method)
    mesh = make_mesh(c)
    method.check(c)
    return method, mesh


def build_run(
    c: ml_collections.ConfigDict,
    workdir: Path,
    *,
    method: Method | None = None,
    mesh: jax.sharding.Mesh | None = None,
    record: dict[str, Any] | None = None,
) -> Run:
    """The run's modules, built unsharded and placed on the mesh (`sharding.place_state`):
    the method's model of `record` (default: `method.model_record(c, workdir)`), the optimizer
    over its trainable parameters, the method's state."""
    if method is None or mesh is None:
        method, mesh = check_config(c)
    record = method.model_record(c, workdir) if record is None else record
    model = method.build(c, record, workdir)
    sharding.place_state(model, mesh)
    spec = method.trainable(c)
    ocfg = config_lib.to_dataclass(
        optim.OptimConfig, {**c.optim.to_dict(), "total_steps": c.steps}, where="config: optim"
    )
    optimizer = nnx.Optimizer(model, optim.make_optimizer(ocfg), wrt=spec.filter())
    # Moments carry their parameter's axis names; without this they would sit on one device
    # (zeros_like has no data dependence) and the second step would compile again.
    sharding.place_state(optimizer, mesh)
    method_state = method.init_method_state(c, model)
    return Run(c, method, mesh, record, model, optimizer, spec, method_state)


def check_resumable(workdir: Path, c: ml_collections.ConfigDict, record: dict) -> None:
    """InputError unless `workdir` is new or was written for this method and model: a workdir
    of an older jax_refvos (no recorded method; another checkpoint layout) or of another model
    is not resumed (nor its config.json overwritten)."""
    import json

    path = workdir / CONFIG_FILE
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: cannot read ({e}); use a new --workdir") from None
    if old.get("method") != c.method:
        raise InputError(
            f"{path}: written for method {old.get('method')!r}"
            + (" by an older jax_refvos (no recorded model)" if "method" not in old else "")
            + f", not {c.method!r}; use a new --workdir (or delete this one)"
        )
    changed = sorted(k for k in record if old.get(k) != json.loads(json.dumps(record[k])))
    if changed:
        raise InputError(
            f"{path}: the workdir trained another model ({', '.join(changed)} differ from this "
            "config's); use a new --workdir (or delete this one)"
        )


def _global_batch(local: dict, put: jax.sharding.NamedSharding) -> dict:
    """One global array per key from every process's rows (one process: a `device_put`)."""
    return {k: jax.make_array_from_process_local_data(put, np.asarray(v)) for k, v in local.items()}


def train(c: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Runs (or resumes) training; returns the last logged metrics ({} when already done).

    Every process of a multi-process run calls this with the same config and workdir (one
    directory they all reach). Process 0 writes config.json, metrics and TensorBoard; the
    checkpoints are written collectively.

    Raises:
        InputError: a bad config, mesh or missing data (before anything is written).
        NonFiniteError: a non-finite loss or gradient norm (unless `skip_nonfinite`), naming the
            step and the last good checkpoint.
    """
    workdir = Path(workdir)
    method, mesh = check_config(c)
    record = method.model_record(c, workdir)  # before anything is written: it may fail
    check_resumable(workdir, c, record)
    main = distributed.is_main_process()
    if main:
        workdir.mkdir(parents=True, exist_ok=True)
        method.prepare(c, workdir)
        write_config(workdir, {**c.to_dict(), **record})
    distributed.barrier("jax_refvos: workdir and data ready")
    run = build_run(c, workdir, method=method, mesh=mesh, record=record)
    n_train, n_total = trainable.param_counts(run.model, run.spec)
    log.info("%s: %d trainable parameters of %d", method.name, n_train, n_total)
    data_iter = iter(run.data(process_index=jax.process_index(), process_count=jax.process_count()))
    ckpt = Checkpointer(workdir / "checkpoints", keep=c.keep_checkpoints, save_every=c.ckpt_every)
    state = run.state()
    start = ckpt.latest_step() or 0
    if start:
        state = ckpt.restore(abstract_like(state), data_iter)
        log.info("resumed from step %d", start)
    put = batch_sharding(mesh)
    last: dict = {}
    logger = MetricsLogger(workdir, total_steps=c.steps, start_step=start, enable=main)
    try:
        with PreemptionGuard() as guard, jax.set_mesh(mesh):
            if start >= c.steps:
                return last
            t0 = time.perf_counter()
            batch = _global_batch(next(data_iter), put)
            data_s = time.perf_counter() - t0
            step_fn, lower_s, xla_s = train_step.compile_step(
                run.loss_fn(),
                run.spec,
                run.model,
                run.optimizer,
                state,
                batch,
                skip_nonfinite=bool(c.get("skip_nonfinite", False)),
            )
            log.info("train step compiled in %.1f s", lower_s + xla_s)
            meter, counts_fn = _meter(run, step_fn, batch)
            extra = {"compile_s": lower_s + xla_s}
            for step in range(start + 1, c.steps + 1):
                if batch is None:
                    t0 = time.perf_counter()
                    batch = _global_batch(next(data_iter), put)
                    data_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                counts = counts_fn(batch)
                state, metrics = step_fn(state, batch)
                host = jax.device_get((metrics, counts))
                meter.add(data_s=data_s, compute_s=time.perf_counter() - t0, **host[1])
                batch = None
                _check_finite(c, step, host[0], ckpt)
                logger.advance()
                stop = guard.stop_requested()
                if step % c.log_every == 0 or step == c.steps or stop:
                    last = {"step": step, **{k: float(v) for k, v in host[0].items()}}
                    logger.log(step, {**host[0], **meter.window(), **extra})
                    extra = {}
                ckpt.save(step, state, data_iter, force=step == c.steps or stop)
                if stop:
                    log.warning("stop requested: saved step %d", step)
                    break
    finally:
        ckpt.wait()
        ckpt.close()
        logger.close()
    return last


def _meter(run: Run, step_fn, batch):
    """(throughput meter of the compiled step (FLOPs, the device's peak), batch counter)."""
    peak = peak_flops_per_device(jax.devices()[0].device_kind, run.c.get("peak_flops", 0.0))
    if peak is None:
        peak = matmul_peak()
        log.info("peak FLOP/s per device (measured float32 matmul): %.3g", peak)
    flops = cost_flops(step_fn)
    log.info("FLOPs per step and device (XLA cost analysis, loops counted once): %.4g", flops or 0)
    meter = ThroughputMeter(flops_per_step=flops, peak_flops=peak)
    return meter, run.method.batch_counts(run.c, run.model, batch)


def _check_finite(c, step: int, metrics: dict, ckpt: Checkpointer) -> None:
    bad = {k: float(metrics[k]) for k in ("loss", "grad_norm") if not np.isfinite(metrics[k])}
    if not bad:
        return
    what = ", ".join(f"{k} {v}" for k, v in bad.items())
    if c.get("skip_nonfinite", False):
        log.warning("step %d: %s; the update was skipped (skip_nonfinite)", step, what)
        return
    ckpt.wait()
    good = ckpt.latest_step()
    where = f"{ckpt.directory / str(good)}" if good is not None else "none (nothing was saved)"
    raise NonFiniteError(
        f"step {step}: {what}; training stopped and this step was not saved. Last good "
        f"checkpoint: {where}. Rerunning resumes from it (lower optim.lr, or set "
        "skip_nonfinite=True to skip such steps)"
    )


def restore_checkpoint(workdir: str | Path, *, step: int | None = None):
    """(Run, train state) of a training workdir at checkpoint `step` (default the newest), on
    one device: the run is built from config.json's config and recorded model as training built
    it (a method that starts from weights, e.g. VIRST's `model.init`, reads them again, so they
    must still exist), then the whole state is read (model, optimizer, method state, step): the
    check that a checkpoint is whole. No data is read. Inference reads only the model, from the
    record alone (`Method.load`)."""
    import json

    workdir = Path(workdir)
    data = json.loads((workdir / "config.json").read_text())
    method = registry.get(data.get("method", "?"))
    keys = run_config.SCALARS | set(run_config.SECTIONS) | method.scalars | set(method.sections)
    c = ml_collections.ConfigDict({k: v for k, v in data.items() if k in keys})
    c.mesh = {"data": 1, "fsdp": 1, "model": 1}
    mesh = make_mesh(c)
    run = build_run(c, workdir, method=method, mesh=mesh, record=data)
    ckpt = Checkpointer(workdir / "checkpoints", keep=c.keep_checkpoints, save_every=c.ckpt_every)
    try:
        state = ckpt.restore(abstract_like(run.state()), step=step)
    finally:
        ckpt.close()
    return run, state
