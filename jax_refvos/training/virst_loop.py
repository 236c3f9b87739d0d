"""The VIRST training loop: config -> model on a mesh -> Grain batches -> sharded steps -> workdir.

The workdir explains itself: `config.json` (the resolved config), `metrics.jsonl` (one JSON object
per logged step), `tensorboard/`, `checkpoints/<step>/` (model, optimizer and the Grain
iterator's position). Rerunning the same command resumes from the newest checkpoint; SIGTERM or
Ctrl-C saves a checkpoint at the current step and exits cleanly.
"""

import logging
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jax_refvos import config_lib, distributed, losses, sharding
from jax_refvos.checkpoint import Checkpointer, PreemptionGuard, abstract_like
from jax_refvos.errors import InputError
from jax_refvos.model import anchor_updater as au
from jax_refvos.model import virst, virst_presets
from jax_refvos.model.backbone import lora
from jax_refvos.pipeline.config import SYNTH_TOKENIZER, PipelineConfig
from jax_refvos.pipeline.dataset import make_dataset
from jax_refvos.pipeline.tokenizer import load_tokenizer
from jax_refvos.training import optim, run_config, trainable, virst_step
from jax_refvos.training.metrics import MetricsLogger, write_config
from jax_refvos.training.throughput import (
    ThroughputMeter,
    cost_flops,
    make_batch_counts,
    matmul_peak,
    peak_flops_per_device,
)

log = logging.getLogger(__name__)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
TRAINABLE = {"everything": trainable.EVERYTHING, "virst_paper": trainable.VIRST_PAPER}


def ensure_synthetic_records(c: ml_collections.ConfigDict) -> None:
    """The tiny preset's data: generate `data/synth` and convert its train split if missing."""
    records = Path(c.data.train_records)
    if (records / "manifest.json").is_file() or not c.data.synth_root:
        return
    from jax_refvos.datasets.convert import convert_dataset
    from jax_refvos.datasets.synthetic import SynthConfig, generate_benchmark

    root = Path(c.data.synth_root)
    if not (root / "train").is_dir():
        log.info("creating the synthetic benchmark in %s", root)
        generate_benchmark(root, config_lib.to_dataclass(SynthConfig, c.synth, where="synth"))
    log.info("converting %s/train to %s", root, records)
    convert_dataset("synth", root, "train", records)


def model_config(c: ml_collections.ConfigDict, tok) -> virst.VirstConfig:
    anchors = au.AnchorConfig(
        use_cond_frames=c.anchors.use_cond_frames, dynamic_update=c.anchors.dynamic_update
    )
    common = dict(initial_seg_fusion=c.model.initial_seg_fusion, anchors=anchors)
    if c.model.preset == "tiny":
        return virst_presets.virst_tiny(
            vocab_size=tok.vocab_size,
            seg_token_id=tok.seg_id,
            image_size=c.model.image_size,
            vlm_size=c.model.vlm_size,
            llm_width=c.model.llm_width,
            # .get: workdirs written before these settings existed
            sam_width=c.model.get("sam_width", 256),
            fusion_grid=c.model.get("fusion_grid", 0) or None,
            **common,
        )
    return virst_presets.virst_7b(vocab_size=tok.vocab_size, seg_token_id=tok.seg_id, **common)


def pipeline_settings(c: ml_collections.ConfigDict) -> dict:
    """The config's batch, view and text settings as `PipelineConfig.virst` keywords."""
    return dict(
        batch_size=c.data.batch_size,
        vlm_size=c.model.vlm_size,
        sam_size=c.model.image_size,
        mask_size=c.model.image_size,
        vlm_frames=c.data.vlm_frames,
        sam_frames=c.data.sam_frames,
        max_expressions=c.data.max_expressions,
        max_text_len=c.data.max_text_len,
    )


def pipeline_config(c: ml_collections.ConfigDict, tokenizer_dir: str) -> PipelineConfig:
    if not c.data.train_records:
        raise InputError("config: data.train_records is empty (the 7b preset needs your records)")
    return PipelineConfig.virst(
        mixture={"train": (c.data.train_records, 1.0)},
        **pipeline_settings(c),
        tokenizer_dir=tokenizer_dir,
        seed=c.seed,
        num_workers=c.data.num_workers,
    )


def _tokenizer_dir(c: ml_collections.ConfigDict) -> str:
    if not c.data.tokenizer_dir:
        return SYNTH_TOKENIZER
    if c.model.init and not Path(c.data.tokenizer_dir).is_absolute():
        return str(Path(c.model.init) / c.data.tokenizer_dir)
    return c.data.tokenizer_dir


def make_mesh(c: ml_collections.ConfigDict) -> jax.sharding.Mesh:
    """The config's mesh; fixed sizes use the first that many devices, -1 takes the rest.

    The automatic mesh (all sizes 0, `mesh=auto`) puts gcd(global batch, devices) on "data"
    and the remaining devices on "model", so one config runs on 1, 2, 8, ... devices and any
    number of processes. The global batch (videos) must divide over ("data", "fsdp").
    """
    axes = dict(c.mesh)
    devices = jax.devices()
    global_batch = c.data.batch_size * jax.process_count()
    if not any(axes.values()):
        data = math.gcd(global_batch, len(devices))
        axes = {"data": data, "fsdp": 1, "model": len(devices) // data}
    elif -1 not in axes.values():
        devices = devices[: int(np.prod(list(axes.values())))]
    mesh = sharding.make_mesh(axes, devices=devices)
    split = mesh.shape["data"] * mesh.shape["fsdp"]
    if global_batch % split:
        raise InputError(
            f"config: batch {c.data.batch_size} x {jax.process_count()} processes does not "
            f"divide over data x fsdp = {split} devices (set batch= or mesh=)"
        )
    return mesh


def build(c: ml_collections.ConfigDict, mesh, *, model_cfg: virst.VirstConfig | None = None):
    """(model, optimizer, spec, tokenizer) on `mesh`: random init (of `model_cfg`, default the
    config's), or the `model.init` weights dir."""
    tok = load_tokenizer(_tokenizer_dir(c), "virst")
    cfg = model_cfg or model_config(c, tok)
    if c.model.init:
        from jax_refvos.main.virst_workdir import assemble_from_weights

        model = assemble_from_weights(
            Path(c.model.init),
            initial_seg_fusion=c.model.initial_seg_fusion,
            seg_token_id=tok.seg_id,
            dynamic_anchors=c.anchors.dynamic_update,
        )
    else:
        model = virst.Virst(cfg, rngs=nnx.Rngs(c.seed))
    if c.model.get("lora_rank", 0):
        # reference/virst.md §2.3: r 64, alpha 16 on every projection of the decoder layers.
        # DEVIATION(VIRST): adapter dropout 0.05 -> 0: the train step is dropout-free.
        lora_cfg = lora.LoraConfig(
            rank=c.model.lora_rank,
            alpha=c.model.lora_alpha,
            target_modules=LORA_TARGETS,
            include=(r"layers",),
        )
        lora.apply_lora(model.lm, lora_cfg, rngs=nnx.Rngs(c.seed + 1))
    sharding.place_state(model, mesh)
    spec = TRAINABLE[c.trainable]
    ocfg = config_lib.to_dataclass(
        optim.OptimConfig, {**c.optim.to_dict(), "total_steps": c.steps}, where="config: optim"
    )
    optimizer = nnx.Optimizer(model, optim.make_optimizer(ocfg), wrt=spec.filter())
    # Moments carry their parameter's axis names; without this they would sit on one device
    # (zeros_like has no data dependence) and the second step would compile again.
    sharding.place_state(optimizer, mesh)
    return model, optimizer, spec, tok


def make_step(c: ml_collections.ConfigDict, model, spec):
    """The jitted train step of `model` with the config's losses and the model's anchors."""
    loss_cfg = config_lib.to_dataclass(losses.VirstLossConfig, c.loss, where="config: loss")
    return virst_step.make_train_step(spec, anchor_cfg=model.cfg.anchors, loss_cfg=loss_cfg)


class NonFiniteError(InputError):
    """A step's loss or gradient norm is NaN/Inf (the run stops; nothing of it is saved)."""


def _global_batch(local: dict, put: jax.sharding.NamedSharding) -> dict:
    """One global array per key from every process's rows (one process: a `device_put`)."""
    return {k: jax.make_array_from_process_local_data(put, np.asarray(v)) for k, v in local.items()}


def compile_step(c, model, optimizer, spec, first_batch):
    """(compiled step, train state (model, optimizer), seconds to lower, seconds to compile).

    The program `refvos train` runs (and `benchmarks/train_step.py` times):
    `step(state, batch) -> (state, metrics)` with the state donated; with `skip_nonfinite` a
    step whose loss or gradient norm is not finite leaves the state as it was. Each call traces
    afresh (a new `make_step`), so module-level switches such as `ROLLOUT_UNROLL` apply.
    """
    nnx_step = make_step(c, model, spec)
    (model_def, model_state), (opt_def, opt_state) = nnx.split(model), nnx.split(optimizer)
    state = (model_state, opt_state)
    skip = bool(c.get("skip_nonfinite", False))

    def pure(state, batch):
        m, o = nnx.merge(model_def, state[0]), nnx.merge(opt_def, state[1])
        metrics = nnx_step(m, o, batch)
        new = (nnx.state(m), nnx.state(o))
        if skip:
            ok = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
            new = jax.tree.map(lambda n, old: jnp.where(ok, n, old), new, state)
        return new, metrics

    start = time.perf_counter()
    lowered = jax.jit(pure, donate_argnums=0).lower(state, first_batch)
    lower_s = time.perf_counter() - start
    start = time.perf_counter()
    compiled = lowered.compile()
    return compiled, state, lower_s, time.perf_counter() - start


def train(c: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Runs (or resumes) training; returns the last logged metrics.

    Every process of a multi-process run calls this with the same config and workdir (one
    directory they all reach). Process 0 writes config.json, metrics and TensorBoard; the
    checkpoints are written collectively.

    Raises:
        NonFiniteError: a non-finite loss or gradient norm (unless `skip_nonfinite`), naming the
            step and the last good checkpoint.
    """
    workdir = Path(workdir)
    run_config.validate(c)
    main = distributed.is_main_process()
    if main:
        workdir.mkdir(parents=True, exist_ok=True)
        write_config(workdir, c)
        ensure_synthetic_records(c)
    distributed.barrier("jax_refvos: workdir and data ready")
    mesh = make_mesh(c)
    model, optimizer, spec, tok = build(c, mesh)  # built unsharded, then placed (`sharding.py`)
    n_train, n_total = trainable.param_counts(model, spec)
    log.info("parameters: %d trainable of %d", n_train, n_total)
    data_iter = iter(
        make_dataset(
            pipeline_config(c, _tokenizer_dir(c)),
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
    )
    ckpt = Checkpointer(workdir / "checkpoints", keep=c.keep_checkpoints, save_every=c.ckpt_every)
    start = ckpt.latest_step() or 0
    if start:
        target = {"model": nnx.state(model), "opt": nnx.state(optimizer)}
        restored = ckpt.restore(abstract_like(target), data_iter)
        nnx.update(model, restored["model"])
        nnx.update(optimizer, restored["opt"])
        log.info("resumed from step %d", start)
    put = virst_step.batch_sharding(mesh)
    last: dict = {}
    logger = MetricsLogger(workdir, total_steps=c.steps, start_step=start, enable=main)
    try:
        with PreemptionGuard() as guard, jax.set_mesh(mesh):
            if start >= c.steps:
                return last
            t0 = time.perf_counter()
            batch = _global_batch(next(data_iter), put)
            data_s = time.perf_counter() - t0
            step_fn, state, lower_s, xla_s = compile_step(c, model, optimizer, spec, batch)
            compile_s = lower_s + xla_s
            log.info("train step compiled in %.1f s", compile_s)
            meter, counts_fn = _meter(c, step_fn, model, batch)
            extra = {"compile_s": compile_s}
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
                ckpt.save(
                    step,
                    {"model": state[0], "opt": state[1]},
                    data_iter,
                    force=step == c.steps or stop,
                )
                if stop:
                    log.warning("stop requested: saved step %d", step)
                    break
            nnx.update(model, state[0])
            nnx.update(optimizer, state[1])
    finally:
        ckpt.wait()
        ckpt.close()
        logger.close()
    return last


def _meter(c, step_fn, model, batch):
    """(throughput meter of the compiled step (FLOPs, the device's peak), batch counter)."""
    v = jax.eval_shape(model.visual_tokens, batch["vlm_frames"].astype(jnp.float32)).shape[1]
    peak = peak_flops_per_device(jax.devices()[0].device_kind, c.get("peak_flops", 0.0))
    if peak is None:
        peak = matmul_peak()
        log.info("peak FLOP/s per device (measured float32 matmul): %.3g", peak)
    flops = cost_flops(step_fn)
    log.info("FLOPs per step and device (XLA cost analysis, loops counted once): %.4g", flops or 0)
    meter = ThroughputMeter(flops_per_step=flops, peak_flops=peak)
    return meter, make_batch_counts(model.cfg.umt.clip_frames, v)


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


def is_training_workdir(workdir: str | Path) -> bool:
    return (Path(workdir) / "checkpoints").is_dir() and (Path(workdir) / "config.json").is_file()


def load_trained(workdir: str | Path, *, step: int | None = None):
    """(Virst, tokenizer) of a training workdir: its config.json and newest (or `step`)
    checkpoint, on one device (evaluation runs one video at a time)."""
    import json

    workdir = Path(workdir)
    c = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
    c.mesh = {"data": 1, "fsdp": 1, "model": 1}
    c.model.init = ""  # the checkpoint holds every weight
    model, optimizer, _, tok = build(c, make_mesh(c))
    ckpt = Checkpointer(workdir / "checkpoints", keep=c.keep_checkpoints, save_every=c.ckpt_every)
    try:
        target = {"model": nnx.state(model), "opt": nnx.state(optimizer)}
        restored = ckpt.restore(abstract_like(target), step=step)
    finally:
        ckpt.close()
    nnx.update(model, restored["model"])
    return model, tok
