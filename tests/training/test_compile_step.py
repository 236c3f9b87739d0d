"""`training/step.py::compile_step`: the compiled program, and the lowered one whose cost
analysis `benchmarks/train_step.py` reads."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jax_refvos.training import step as train_step
from jax_refvos.training.throughput import cost_flops
from jax_refvos.training.trainable import EVERYTHING


def _parts():
    model = nnx.Linear(32, 16, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)

    def loss_fn(model, method_state, batch):
        loss = jnp.mean((model(batch["x"]) - batch["y"]) ** 2)
        return loss, ({"loss": loss}, method_state)

    state = train_step.init_state(model, optimizer, ())
    batch = {"x": jnp.ones((8, 32)), "y": jnp.zeros((8, 16))}
    return loss_fn, model, optimizer, state, batch


def test_lowered_and_compiled_steps_count_the_same_matmul_flops():
    loss_fn, model, optimizer, state, batch = _parts()
    lowered, lower_s, compile_s = train_step.compile_step(
        loss_fn, EVERYTHING, model, optimizer, state, batch, compile=False
    )
    assert isinstance(lowered, jax.stages.Lowered) and compile_s == 0.0 and lower_s > 0
    compiled = train_step.compile_step(loss_fn, EVERYTHING, model, optimizer, state, batch)[0]
    # the forward 8x32x16 matmul and the weight gradient (the data needs none): 2 x 2 x 4096
    low, comp = cost_flops(lowered), cost_flops(compiled)
    assert low >= 2 * 2 * 8 * 32 * 16 and abs(low - comp) <= 0.25 * comp
    new_state, metrics = compiled(state, batch)
    assert int(new_state["step"]) == 1 and np.isfinite(float(metrics["loss"]))
