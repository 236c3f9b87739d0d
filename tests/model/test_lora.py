"""LoRA wrapping, forward, merge/unmerge/strip, filters and sharding on a toy NNX model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from jax_refvos import sharding
from jax_refvos.model.backbone import lora
from jax_refvos.weights import torch_names

D, Q, KV, F = 12, 8, 4, 20  # distinct widths so a wrong axis cannot broadcast


def _init(axes):
    init = nnx.initializers.lecun_normal()
    return nnx.with_partitioning(init, axes) if axes else init


class Attn(nnx.Module):
    def __init__(self, *, annotate: bool, rngs: nnx.Rngs):
        def lin(i, o, axes):
            return nnx.Linear(i, o, kernel_init=_init(axes if annotate else None), rngs=rngs)

        self.q_proj = lin(D, Q, ("embed", "heads"))
        self.k_proj = lin(D, KV, ("embed", "kv_heads"))
        self.v_proj = lin(D, KV, ("embed", "kv_heads"))
        self.o_proj = lin(Q, D, ("heads", "embed"))

    def __call__(self, x, rngs=None):
        kv = jnp.concatenate([self.k_proj(x), lora.call_linear(self.v_proj, x, rngs=rngs)], -1)
        return self.o_proj(lora.call_linear(self.q_proj, x, rngs=rngs) + kv)


class Block(nnx.Module):
    def __init__(self, *, annotate: bool = False, rngs: nnx.Rngs):
        self.self_attn = Attn(annotate=annotate, rngs=rngs)
        self.gate_proj = nnx.Linear(D, F, rngs=rngs)
        self.down_proj = nnx.Linear(F, D, rngs=rngs)
        self.other = nnx.Linear(D, D, rngs=rngs)

    def __call__(self, x, rngs=None):
        h = x + self.self_attn(x, rngs)
        return h + self.down_proj(jax.nn.silu(self.gate_proj(h))) + self.other(h)


class SegModel(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.layers = nnx.List([Block(rngs=rngs)])


class Toy(nnx.Module):
    def __init__(self, *, annotate: bool = False, rngs: nnx.Rngs):
        self.layers = nnx.List([Block(annotate=annotate, rngs=rngs) for _ in range(2)])
        self.seg_model = SegModel(rngs=rngs)
        self.q_proj = nnx.Linear(D, D, rngs=rngs)  # matches the suffix but not include="layers"

    def __call__(self, x, rngs=None):
        for layer in self.layers:
            x = layer(x, rngs)
        return self.q_proj(x) + self.seg_model.layers[0](x)


CFG = lora.LoraConfig(
    rank=3,
    alpha=16.0,
    dropout=0.0,
    target_modules=lora.QWEN2_TARGETS,
    include=(r"layers",),
    exclude=(r"seg_model",),
)


def _x(seed=0):
    return jax.random.normal(jax.random.key(seed), (2, 5, D))


def _randomize(model, seed=1):
    """Give every adapter random A and B (B is zero at init)."""
    rng = np.random.default_rng(seed)
    for _, var in nnx.iter_graph(model):
        if isinstance(var, lora.LoraParam):
            value = var.get_value()
            var.set_value(jnp.asarray(rng.normal(size=value.shape) * 0.1, value.dtype))


def _assert_close(got, want, tol=1e-6):
    """max|got - want| / max|want| <= tol (the toy's outputs reach ~1e2, so f32 atol is moot)."""
    got, want = np.asarray(got), np.asarray(want)
    err = np.abs(got - want).max() / np.abs(want).max()
    assert err <= tol, f"relative error {err:.2e} > {tol:.0e}"


def _kernels(model):
    return {
        p: np.asarray(v.get_value())
        for p, v in nnx.iter_graph(model)
        if isinstance(v, nnx.Param) and not isinstance(v, lora.LoraParam)
    }


def test_apply_wraps_exactly_the_targets():
    model = Toy(rngs=nnx.Rngs(0))
    paths = lora.apply_lora(model, CFG, rngs=nnx.Rngs(1))
    want = [
        f"layers.{i}.{m}"
        for i in range(2)
        for m in ("down_proj", "gate_proj", "self_attn.k_proj", "self_attn.o_proj")
        + ("self_attn.q_proj", "self_attn.v_proj")
    ]
    assert paths == sorted(want)
    assert isinstance(model.layers[1].self_attn.q_proj, lora.LoraLinear)
    assert type(model.layers[0].other) is nnx.Linear
    assert type(model.q_proj) is nnx.Linear
    assert type(model.seg_model.layers[0].self_attn.q_proj) is nnx.Linear
    with pytest.raises(lora.LoraError, match="already applied"):
        lora.apply_lora(model, CFG, rngs=nnx.Rngs(1))


def test_config_forms_and_errors():
    cfg = lora.LoraConfig(rank=4, alpha=16, target_regex=r".*\.self_attn\.(q|v)_proj")
    assert cfg.matches("layers.0.self_attn.q_proj") and not cfg.matches("layers.0.self_attn.k_proj")
    assert lora.LoraConfig(rank=64, alpha=16, target_modules=("q_proj",)).scale == 0.25
    rs = lora.LoraConfig(rank=64, alpha=16, target_modules=("q_proj",), use_rslora=True)
    assert rs.scale == 2.0
    with pytest.raises(lora.LoraError, match="exactly one"):
        lora.LoraConfig(rank=4, alpha=1)
    with pytest.raises(lora.LoraError, match="no nnx.Linear matches"):
        lora.apply_lora(
            Toy(rngs=nnx.Rngs(0)),
            lora.LoraConfig(rank=2, alpha=1, target_modules=("nope",)),
            rngs=nnx.Rngs(0),
        )


def test_fresh_adapter_is_identity_and_init_follows_peft():
    model = Toy(rngs=nnx.Rngs(0))
    x = _x()
    before = model(x)
    lora.apply_lora(model, CFG, rngs=nnx.Rngs(1))
    np.testing.assert_array_equal(model(x), before)
    layer = model.layers[0].gate_proj
    a = np.asarray(layer.lora_A.kernel.get_value())
    assert a.shape == (D, 3) and np.abs(a).max() <= 1 / np.sqrt(D) and np.abs(a).min() > 0
    assert not np.any(layer.lora_B.kernel.get_value())


def test_forward_is_base_plus_scaled_low_rank():
    base = nnx.Linear(D, Q, rngs=nnx.Rngs(0))
    w0 = np.asarray(base.kernel.get_value())
    b0 = np.asarray(base.bias.get_value())
    layer = lora.LoraLinear(base, rank=3, alpha=16.0, rngs=nnx.Rngs(1))
    _randomize(layer)
    x = np.asarray(_x())
    a, b = (np.asarray(m.kernel.get_value()) for m in (layer.lora_A, layer.lora_B))
    want = x @ w0 + b0 + (16.0 / 3) * (x @ a @ b)
    np.testing.assert_allclose(layer(x), want, rtol=1e-5, atol=1e-5)


def test_merge_unmerge_strip():
    model = Toy(rngs=nnx.Rngs(0))
    lora.apply_lora(model, CFG, rngs=nnx.Rngs(1))
    _randomize(model)
    x = _x()
    kernels = _kernels(model)
    want = np.asarray(model(x))
    assert not np.allclose(want, Toy(rngs=nnx.Rngs(0))(x), atol=1e-3)  # adapters matter
    merged = lora.merge_lora(model)
    assert len(merged) == 12 and lora.merge_lora(model) == []  # idempotent
    _assert_close(model(x), want)
    q = model.layers[0].self_attn.q_proj
    np.testing.assert_allclose(
        q.base_layer.kernel.get_value(),
        kernels[("layers", 0, "self_attn", "q_proj", "base_layer", "kernel")]
        + np.asarray(q.delta()),
        atol=1e-6,
    )
    assert len(lora.unmerge_lora(model)) == 12 and lora.unmerge_lora(model) == []
    for path, kernel in _kernels(model).items():
        np.testing.assert_allclose(kernel, kernels[path], atol=1e-6, err_msg=str(path))
    lora.strip_lora(model)
    assert not any(isinstance(n, lora.LoraLinear) for _, n in nnx.iter_graph(model))
    assert type(model.layers[0].self_attn.q_proj) is nnx.Linear
    assert not nnx.state(model, lora.LoraParam)
    _assert_close(model(x), want)


def test_filter_splits_only_lora_and_grads_flow_only_there():
    model = Toy(rngs=nnx.Rngs(0))
    lora.apply_lora(model, CFG, rngs=nnx.Rngs(1))
    _randomize(model)
    graphdef, params, rest = lora.split_lora(model)
    flat = nnx.to_flat_state(params)
    assert len(flat) == 24 and {path[-2:] for path, _ in flat} == {
        ("lora_A", "kernel"),
        ("lora_B", "kernel"),
    }
    assert not any("lora_A" in path or "lora_B" in path for path, _ in nnx.to_flat_state(rest))
    x = _x()

    def loss(p):
        return jnp.sum(nnx.merge(graphdef, p, rest)(x) ** 2)

    grads = jax.grad(loss)(params)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    assert all(np.abs(g).max() > 0 for g in jax.tree.leaves(grads))
    before = _kernels(model)
    nnx.update(model, jax.tree.map(lambda p, g: p - 0.1 * g, params, grads))
    after = _kernels(model)
    assert all(np.array_equal(before[k], after[k]) for k in before)  # base untouched


def test_dropout_only_with_rngs():
    cfg = lora.LoraConfig(rank=3, alpha=16, dropout=0.5, target_modules=("q_proj", "v_proj"))
    model = Toy(rngs=nnx.Rngs(0))
    lora.apply_lora(model, cfg, rngs=nnx.Rngs(1))
    _randomize(model)
    x = _x()
    det = np.asarray(model(x))
    np.testing.assert_array_equal(model(x), det)
    drop1 = np.asarray(model(x, rngs=nnx.Rngs(dropout=1)))
    drop2 = np.asarray(model(x, rngs=nnx.Rngs(dropout=2)))
    assert not np.allclose(drop1, det, atol=1e-3) and not np.allclose(drop1, drop2, atol=1e-3)
    lora.merge_lora(model)  # merged: the adapter path (and its dropout) is not run
    _assert_close(model(x, rngs=nnx.Rngs(dropout=1)), det)


def test_torch_keys_mirror_peft():
    model = Toy(rngs=nnx.Rngs(0))
    lora.apply_lora(model, CFG, rngs=nnx.Rngs(1))
    keys = set(torch_names.torch_key_map(model))
    prefix = "layers.0.self_attn.q_proj"
    assert {f"{prefix}.base_layer.weight", f"{prefix}.base_layer.bias"} <= keys
    assert {f"{prefix}.lora_A.weight", f"{prefix}.lora_B.weight"} <= keys
    assert "layers.0.other.weight" in keys and not any("dropout" in k for k in keys)


def test_adapter_sharding_follows_base_kernel():
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "model": 2})
    model = Toy(annotate=True, rngs=nnx.Rngs(0))  # logical axes as metadata, no mesh needed
    lora.apply_lora(model, CFG, rngs=nnx.Rngs(1))
    q = model.layers[0].self_attn.q_proj
    assert q.lora_A.kernel.get_metadata()["out_sharding"] == ("embed", None)
    assert q.lora_B.kernel.get_metadata()["out_sharding"] == (None, "heads")
    o = model.layers[0].self_attn.o_proj
    assert o.lora_B.kernel.get_metadata()["out_sharding"] == (None, "embed")
    gate = model.layers[0].gate_proj  # unannotated base: unannotated adapter
    assert "out_sharding" not in gate.lora_A.kernel.get_metadata()
    sharding.place_state(model, mesh)
    assert q.lora_A.kernel.get_value().sharding.spec == P("fsdp", None)
    assert q.lora_B.kernel.get_value().sharding.spec == P(None, "model")

    placed_first = Toy(annotate=True, rngs=nnx.Rngs(0))
    sharding.place_state(placed_first, mesh)
    lora.apply_lora(placed_first, CFG, rngs=nnx.Rngs(1))  # adapters copy the base's placement
    k = placed_first.layers[0].self_attn.k_proj
    assert k.lora_A.kernel.get_value().sharding.spec == P("fsdp", None)
    assert k.lora_B.kernel.get_value().sharding.spec == P(None, "model")
    _assert_close(placed_first(_x()), model(_x()))


class AttnStack(nnx.Module):
    """Two residual `Attn` layers, as an nnx.List or stacked on a leading axis and scanned
    (like DecoderModel with scan_layers)."""

    def __init__(self, *, stacked: bool, rngs: nnx.Rngs):
        if stacked:

            @nnx.split_rngs(splits=2)
            @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: None})
            def make(rngs):
                return Attn(annotate=True, rngs=rngs)

            self.layers = make(rngs)
        else:
            self.layers = nnx.List([Attn(annotate=True, rngs=rngs) for _ in range(2)])

    def __call__(self, x):
        if isinstance(self.layers, nnx.List):
            for layer in self.layers:
                x = x + layer(x)
            return x
        graphdef, state = nnx.split(self.layers)
        body = lambda h, s: (h + nnx.merge(graphdef, s)(h), None)
        return jax.lax.scan(body, x, state)[0]


def test_stacked_layers_get_stacked_adapters():
    unstacked = AttnStack(stacked=False, rngs=nnx.Rngs(0))
    lora.apply_lora(unstacked, CFG, rngs=nnx.Rngs(1))
    _randomize(unstacked)
    model = AttnStack(stacked=True, rngs=nnx.Rngs(2))
    paths = lora.apply_lora(model, CFG, rngs=nnx.Rngs(3))
    assert paths == [f"layers.{m}_proj" for m in "koqv"]
    q = model.layers.q_proj
    assert q.lora_A.kernel.get_value().shape == (2, D, 3)
    assert q.lora_B.kernel.get_value().shape == (2, 3, Q)
    assert q.lora_A.kernel.get_metadata()["out_sharding"] == (None, "embed", None)
    assert q.lora_B.kernel.get_metadata()["out_sharding"] == (None, None, "heads")
    per_layer = [nnx.state(layer) for layer in unstacked.layers]
    nnx.update(model.layers, jax.tree.map(lambda *xs: jnp.stack(xs), *per_layer))
    x = _x()
    want = unstacked(x)
    _assert_close(model(x), want)
    lora.merge_lora(model)
    _assert_close(model(x), want)
