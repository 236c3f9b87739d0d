"""Checkpointer (Orbax, async, keep-N, Grain iterator, reshard on restore) and PreemptionGuard."""

import os
import signal

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from jax_refvos.checkpoint import Checkpointer, PreemptionGuard, abstract_like
from jax_refvos.errors import InputError


def _mesh(shape, names):
    return jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(shape))


def _train_state(sharding_w, sharding_rest):
    """params + an adamw state after one update (non-zero moments), w sharded as given."""
    params = {
        "w": jnp.arange(8 * 6, dtype=jnp.float32).reshape(8, 6) / 7.0,
        "b": jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float32),
    }
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-2))
    opt_state = tx.init(params)
    grads = jax.tree.map(lambda p: jnp.cos(p) + 0.5, params)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    state = {"params": params, "opt_state": opt_state, "step": jnp.int32(1)}

    def place(path, x):
        is_w = any(getattr(k, "key", None) == "w" for k in path)
        return jax.device_put(x, sharding_w if is_w and x.ndim == 2 else sharding_rest)

    return jax.tree_util.tree_map_with_path(place, state)


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _iterator():
    return iter(grain.MapDataset.range(40).shuffle(seed=3).to_iter_dataset())


def test_save_restore_reshards_adamw_state_and_grain_iterator(tmp_path):
    mesh8 = _mesh((8,), ("data",))
    state = _train_state(NamedSharding(mesh8, P("data")), NamedSharding(mesh8, P()))
    it = _iterator()
    for _ in range(5):
        next(it)
    with Checkpointer(tmp_path / "checkpoints", save_every=5) as ckpt:
        assert ckpt.save(5, state, it)
        # The iterator state was captured inside save(): advancing now must not leak into it.
        want_next = [next(it) for _ in range(3)]

    # Restore onto another mesh: w column-sharded over "model" of a (4, 2) mesh, rest replicated.
    mesh42 = _mesh((4, 2), ("data", "model"))
    col, rep = NamedSharding(mesh42, P(None, "model")), NamedSharding(mesh42, P())
    target = jax.tree_util.tree_map_with_path(
        lambda path, x: jax.ShapeDtypeStruct(
            x.shape,
            x.dtype,
            sharding=col if x.ndim == 2 and getattr(path[-1], "key", None) == "w" else rep,
        ),
        jax.eval_shape(lambda: state),
    )
    fresh_it = _iterator()
    with Checkpointer(tmp_path / "checkpoints", save_every=5) as ckpt:
        assert ckpt.latest_step() == 5
        restored = ckpt.restore(target, fresh_it)

    _assert_trees_equal(restored, state)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(target), strict=True):
        assert got.sharding == want.sharding
    assert restored["params"]["w"].sharding.spec == P(None, "model")
    # optax NamedTuples survive (the target carries the structure).
    adam = restored["opt_state"][1][0]
    assert type(adam).__name__ == "ScaleByAdamState"
    assert int(adam.count) == 1
    assert [next(fresh_it) for _ in range(3)] == want_next


def test_restore_into_advanced_iterator_rewinds_it(tmp_path):
    state = {"x": jnp.ones(3)}
    it = _iterator()
    next(it), next(it)
    with Checkpointer(tmp_path, save_every=1, async_save=False) as ckpt:
        ckpt.save(2, state, it)
        want = next(it)
        next(it), next(it)
        ckpt.restore(abstract_like(state), it)
    assert next(it) == want


def test_nnx_state_round_trip_into_a_fresh_model(tmp_path):
    """nnx.state(...) of a model and its optimizer restore into another instance's state."""
    model = nnx.Linear(5, 3, rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.adamw(1e-3), wrt=nnx.Param)
    grads = nnx.state(model, nnx.Param)
    opt.update(model, jax.tree.map(jnp.ones_like, grads))
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        ckpt.save(1, {"model": nnx.state(model), "opt": nnx.state(opt)})
        other = nnx.Linear(5, 3, rngs=nnx.Rngs(1))
        other_opt = nnx.Optimizer(other, optax.adamw(1e-3), wrt=nnx.Param)
        restored = ckpt.restore(
            abstract_like({"model": nnx.state(other), "opt": nnx.state(other_opt)})
        )
    nnx.update(other, restored["model"])
    nnx.update(other_opt, restored["opt"])
    np.testing.assert_array_equal(other.kernel[...], model.kernel[...])
    assert int(other_opt.step[...]) == 1
    _assert_trees_equal(nnx.state(other_opt), nnx.state(opt))


def test_async_save_survives_deleting_the_arrays_after_save(tmp_path):
    """save() copies to host before returning, so the next step may donate the buffers."""
    x = jax.device_put(jnp.arange(24.0).reshape(8, 3), NamedSharding(_mesh((8,), ("d",)), P("d")))
    target = abstract_like({"x": x})
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        assert ckpt.save(1, {"x": x})
        x.delete()
        ckpt.wait()
        restored = ckpt.restore(target)
    np.testing.assert_array_equal(restored["x"], np.arange(24.0).reshape(8, 3))


def test_save_every_force_and_keep_n(tmp_path):
    state = {"x": jnp.zeros(2)}
    with Checkpointer(tmp_path, keep=2, save_every=3) as ckpt:
        started = [step for step in range(1, 11) if ckpt.save(step, state)]
        assert started == [3, 6, 9]
        assert ckpt.save(10, state, force=True)
        assert not ckpt.save(10, state, force=True)  # in flight or saved: no second write
        ckpt.wait()
        assert ckpt.all_steps() == [9, 10]
        assert ckpt.latest_step() == 10
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["10", "9"]


def test_restore_a_given_step(tmp_path):
    with Checkpointer(tmp_path, keep=3, save_every=1, async_save=False) as ckpt:
        for step in (1, 2):
            ckpt.save(step, {"x": jnp.full(2, float(step))})
        target = abstract_like({"x": jnp.zeros(2)})
        np.testing.assert_array_equal(ckpt.restore(target, step=1)["x"], [1.0, 1.0])
        np.testing.assert_array_equal(ckpt.restore(target)["x"], [2.0, 2.0])
        with pytest.raises(InputError, match="no checkpoint for step 7"):
            ckpt.restore(target, step=7)


def test_empty_directory_has_no_latest_step_and_restore_names_it(tmp_path):
    ckpt = Checkpointer(tmp_path / "checkpoints", save_every=1)
    assert ckpt.latest_step() is None
    with pytest.raises(InputError, match=f"{tmp_path / 'checkpoints'}: no checkpoint to restore"):
        ckpt.restore({"x": jax.ShapeDtypeStruct((2,), jnp.float32)})
    ckpt.close()


def test_incomplete_or_corrupt_checkpoints_raise_clear_errors(tmp_path):
    state = {"x": jnp.arange(4.0)}
    target = abstract_like(state)
    with Checkpointer(tmp_path, keep=5, save_every=1, async_save=False) as ckpt:
        ckpt.save(1, state)
    # An empty step directory (e.g. a copy interrupted by hand) becomes the latest step.
    (tmp_path / "7").mkdir()
    with (
        Checkpointer(tmp_path, keep=5, save_every=1) as ckpt,
        pytest.raises(InputError, match=f"{tmp_path / '7'}: incomplete checkpoint"),
    ):
        ckpt.restore(target)
    (tmp_path / "7").rmdir()

    (tmp_path / "1" / "state" / "_METADATA").write_text("garbage")
    with (
        Checkpointer(tmp_path, keep=5, save_every=1) as ckpt,
        pytest.raises(InputError, match=f"{tmp_path / '1'}: cannot restore checkpoint"),
    ):
        ckpt.restore(target)


def test_wrong_target_and_missing_iterator_state_raise_clear_errors(tmp_path):
    with Checkpointer(tmp_path, save_every=1, async_save=False) as ckpt:
        ckpt.save(1, {"x": jnp.arange(4.0)})
        with pytest.raises(InputError, match="another model/config"):
            ckpt.restore({"x": jax.ShapeDtypeStruct((5,), jnp.float32)})
        with pytest.raises(InputError, match="no data iterator state"):
            ckpt.restore({"x": jax.ShapeDtypeStruct((4,), jnp.float32)}, _iterator())


def test_preemption_guard_sets_flag_and_restores_handlers():
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    with PreemptionGuard() as guard:
        assert not guard.requested and not guard.stop_requested()
        os.kill(os.getpid(), signal.SIGTERM)
        assert guard.requested and guard.stop_requested()
        assert guard.received == signal.SIGTERM
        # Ctrl-C once more still interrupts a run that does not stop by itself.
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert {s: signal.getsignal(s) for s in before} == before
