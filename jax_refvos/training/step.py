"""The train step of any method: its loss -> gradients of the trainable parameters -> update.

The train state is one pytree, `TrainState`:

    {"model": nnx.State, "optimizer": nnx.State, "method_state": the method's pytree,
     "step": int32 scalar (optimizer steps taken; skipped non-finite steps count)}

and the compiled program is `step(state, batch) -> (state, metrics)` with the state donated
(`compile_step`). Only parameters matching the method's `TrainableSpec` are differentiated and
updated (`nnx.Optimizer(..., wrt=spec.filter())`); under a mesh the step is one GSPMD program
(parameters carry their logical shardings, the batch is sharded over ("data", "fsdp")).
"""

import time
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jax_refvos.methods.base import LossFn
from jax_refvos.training.trainable import TrainableSpec

TrainState = dict[str, Any]


def train_step(loss_fn: LossFn, spec: TrainableSpec):
    """`step(model, optimizer, method_state, batch) -> (metrics, method_state)`, updating the
    model and optimizer in place (not compiled: `jit_train_step` / `compile_step` do that).

    Metrics: the loss function's (float32 scalars) plus `grad_norm`.
    """
    diff = nnx.DiffState(0, spec.filter())

    def step(model, optimizer, method_state, batch):
        grad_fn = nnx.value_and_grad(loss_fn, argnums=diff, has_aux=True)
        (_, (metrics, method_state)), grads = grad_fn(model, method_state, batch)
        optimizer.update(model, grads)
        return {**metrics, "grad_norm": optax.global_norm(grads)}, method_state

    return step


def jit_train_step(loss_fn: LossFn, spec: TrainableSpec):
    """`train_step` compiled with `nnx.jit` (tests and benchmarks call it on live modules)."""
    return nnx.jit(train_step(loss_fn, spec))


def init_state(model: nnx.Module, optimizer: nnx.Optimizer, method_state: Any) -> TrainState:
    """The train state of freshly built (placed) modules, at step 0."""
    return {
        "model": nnx.state(model),
        "optimizer": nnx.state(optimizer),
        "method_state": method_state,
        "step": jnp.zeros((), jnp.int32),
    }


def compile_step(
    loss_fn: LossFn,
    spec: TrainableSpec,
    model: nnx.Module,
    optimizer: nnx.Optimizer,
    state: TrainState,
    first_batch: dict,
    *,
    skip_nonfinite: bool = False,
    compile: bool = True,
):
    """(compiled step, seconds to lower, seconds to compile); with `compile=False` the lowered
    program instead (and 0.0), e.g. for its cost analysis.

    The program `refvos train` runs (and `benchmarks/train_step.py` times): `step(state, batch)
    -> (state, metrics)` with the state donated; with `skip_nonfinite` a step whose loss or
    gradient norm is not finite leaves model, optimizer and method state as they were. Each call
    traces `loss_fn` afresh, so module-level switches (e.g. a method's unroll flag) apply.
    """
    step = train_step(loss_fn, spec)
    model_def, opt_def = nnx.graphdef(model), nnx.graphdef(optimizer)

    def pure(state: TrainState, batch: dict):
        m = nnx.merge(model_def, state["model"])
        o = nnx.merge(opt_def, state["optimizer"])
        metrics, method_state = step(m, o, state["method_state"], batch)
        new = {"model": nnx.state(m), "optimizer": nnx.state(o), "method_state": method_state}
        if skip_nonfinite:
            ok = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
            old = {k: state[k] for k in new}
            new = jax.tree.map(lambda n, o_: jnp.where(ok, n, o_), new, old)
        return {**new, "step": state["step"] + 1}, metrics

    start = time.perf_counter()
    lowered = jax.jit(pure, donate_argnums=0).lower(state, first_batch)
    lower_s = time.perf_counter() - start
    if not compile:
        return lowered, lower_s, 0.0
    start = time.perf_counter()
    compiled = lowered.compile()
    return compiled, lower_s, time.perf_counter() - start
