"""LoRA parity with a peft-style torch reference (float32, CPU).

peft is not a dependency, so the reference is a hand-written torch layer with peft's module
layout (peft/tuners/lora/layer.py::Linear: `base_layer`, `lora_A` / `lora_B` / `lora_dropout`
as ModuleDicts keyed by adapter name, `scaling = alpha / r`, A kaiming-uniform(a=sqrt(5)),
B zeros), injected into a torch toy and wrapped like `PeftModel` (`base_model.model.`), so its
`state_dict()` has peft's key names. Tolerance: max|Δ| / max|ref| <= 1e-5.
"""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from jax_refvos.model.backbone import lora  # noqa: E402
from jax_refvos.weights import peft  # noqa: E402
from jax_refvos.weights.torch_names import WeightMismatchError, load_torch_state  # noqa: E402

pytestmark = pytest.mark.parity

D, Q, KV = 12, 8, 4
TOL = 1e-5
GLUS = lora.LoraConfig(
    rank=8, alpha=16, dropout=0.05, target_modules=("q_proj", "v_proj"), exclude=("vision_tower",)
)
VIRST = lora.LoraConfig(
    rank=5,
    alpha=16,
    dropout=0.05,
    target_modules=("q_proj", "k_proj", "v_proj", "o_proj"),
    include=(r"layers",),
)
CONFIGS = {
    "glus": GLUS,
    "virst": VIRST,
    "rslora": lora.LoraConfig(**{**vars(VIRST), "use_rslora": True}),
}


class TorchLora(torch.nn.Module):
    """peft's LoRA Linear, single adapter "default", written out."""

    def __init__(self, base, r, alpha, dropout, rslora=False):
        super().__init__()
        self.base_layer = base
        self.lora_A = torch.nn.ModuleDict({"default": torch.nn.Linear(base.in_features, r, False)})
        self.lora_B = torch.nn.ModuleDict({"default": torch.nn.Linear(r, base.out_features, False)})
        self.lora_dropout = torch.nn.ModuleDict({"default": torch.nn.Dropout(dropout)})
        self.scaling = alpha / (math.sqrt(r) if rslora else r)
        torch.nn.init.kaiming_uniform_(self.lora_A["default"].weight, a=math.sqrt(5))
        torch.nn.init.zeros_(self.lora_B["default"].weight)

    def forward(self, x):
        a, b = self.lora_A["default"], self.lora_B["default"]
        return self.base_layer(x) + b(a(self.lora_dropout["default"](x))) * self.scaling

    def merged_weight(self):
        a, b = self.lora_A["default"].weight, self.lora_B["default"].weight
        return self.base_layer.weight + self.scaling * (b @ a)


def _torch_attn():
    m = torch.nn.Module()
    for name, o in (("q_proj", Q), ("k_proj", KV), ("v_proj", KV)):
        setattr(m, name, torch.nn.Linear(D, o))
    m.o_proj = torch.nn.Linear(Q, D)
    return m


class TorchToy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList()
        for _ in range(2):
            block = torch.nn.Module()
            block.self_attn, block.other = _torch_attn(), torch.nn.Linear(D, D)
            self.layers.append(block)
        self.vision_tower = _torch_attn()

    def forward(self, x):
        for blk in self.layers:
            a = blk.self_attn
            h = x + a.o_proj(a.q_proj(x) + torch.cat([a.k_proj(x), a.v_proj(x)], -1))
            x = h + blk.other(h)
        return x + self.vision_tower.o_proj(self.vision_tower.q_proj(x))


class Attn(nnx.Module):
    def __init__(self, *, rngs):
        self.q_proj = nnx.Linear(D, Q, rngs=rngs)
        self.k_proj = nnx.Linear(D, KV, rngs=rngs)
        self.v_proj = nnx.Linear(D, KV, rngs=rngs)
        self.o_proj = nnx.Linear(Q, D, rngs=rngs)


class Block(nnx.Module):
    def __init__(self, *, rngs):
        self.self_attn, self.other = Attn(rngs=rngs), nnx.Linear(D, D, rngs=rngs)


class Toy(nnx.Module):
    def __init__(self, *, rngs):
        self.layers = nnx.List([Block(rngs=rngs) for _ in range(2)])
        self.vision_tower = Attn(rngs=rngs)

    def __call__(self, x):
        for blk in self.layers:
            a = blk.self_attn
            h = x + a.o_proj(a.q_proj(x) + jnp.concatenate([a.k_proj(x), a.v_proj(x)], -1))
            x = h + blk.other(h)
        return x + self.vision_tower.o_proj(self.vision_tower.q_proj(x))


def _peft_model(cfg: lora.LoraConfig, seed=0):
    """TorchToy with peft-style adapters on `cfg`'s targets, B randomised, wrapped like peft."""
    torch.manual_seed(seed)
    toy = TorchToy()
    for name, module in list(toy.named_modules()):
        if isinstance(module, torch.nn.Linear) and cfg.matches(name):
            parent, _, leaf = name.rpartition(".")
            wrapped = TorchLora(module, cfg.rank, cfg.alpha, cfg.dropout, cfg.use_rslora)
            torch.nn.init.normal_(wrapped.lora_B["default"].weight, std=0.1)
            setattr(toy.get_submodule(parent), leaf, wrapped)
    peft = torch.nn.Module()
    peft.base_model = torch.nn.Module()
    peft.base_model.model = toy
    return peft.eval()


def _state(module):
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def _rel(got, want):
    got, want = np.asarray(got), np.asarray(want)
    return np.abs(got - want).max() / np.abs(want).max()


def _ours(cfg):
    model = Toy(rngs=nnx.Rngs(0))
    lora.apply_lora(model, cfg, rngs=nnx.Rngs(1))
    return model


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_forward_and_merge_match_peft_layout(name):
    cfg = CONFIGS[name]
    ref = _peft_model(cfg)
    state = _state(ref)
    assert "base_model.model.layers.0.self_attn.q_proj.lora_A.default.weight" in state
    model = _ours(cfg)
    load_torch_state(model, peft.peft_to_ours(state))
    x = np.random.default_rng(0).normal(size=(2, 5, D)).astype(np.float32)
    with torch.no_grad():
        want = ref.base_model.model(torch.from_numpy(x)).numpy()
    assert _rel(model(x), want) <= TOL
    lora.merge_lora(model)
    assert _rel(model(x), want) <= TOL
    q_ref = ref.base_model.model.layers[1].self_attn.q_proj
    q = model.layers[1].self_attn.q_proj
    merged = q_ref.merged_weight().detach().numpy().T
    assert _rel(q.base_layer.kernel.get_value(), merged) <= TOL


def test_old_peft_layout_and_adapter_only_file():
    ref = _peft_model(GLUS)
    x = np.random.default_rng(1).normal(size=(3, D)).astype(np.float32)
    with torch.no_grad():
        want = ref.base_model.model(torch.from_numpy(x)).numpy()
    # peft < 0.7: the LoRA layer *is* the Linear, base weight at `q_proj.weight`.
    old = {k.replace(".base_layer.", "."): v for k, v in _state(ref).items()}
    assert "base_model.model.layers.0.self_attn.q_proj.weight" in old
    model = _ours(GLUS)
    load_torch_state(model, peft.peft_to_ours(old))
    assert _rel(model(x), want) <= TOL
    # Usual flow: HF base checkpoint into the plain model, then adapters, then
    # adapter_model.safetensors (LoRA tensors only, no adapter name).
    adapter = {k.replace(".default.", "."): v for k, v in _state(ref).items() if ".lora_" in k}
    model = Toy(rngs=nnx.Rngs(0))
    load_torch_state(
        model, {k.removeprefix("base_model.model."): v for k, v in old.items() if ".lora_" not in k}
    )
    lora.apply_lora(model, GLUS, rngs=nnx.Rngs(1))
    peft.load_peft_adapter(model, adapter)
    assert _rel(model(x), want) <= TOL
    with pytest.raises(WeightMismatchError, match="missing keys"):
        peft.load_peft_adapter(model, dict(list(adapter.items())[1:]))


def test_unmappable_peft_keys_are_errors():
    key = "base_model.model.layers.0.self_attn.q_proj"
    with pytest.raises(lora.LoraError, match="cannot map"):
        peft.peft_to_ours({f"{key}.lora_A.other.weight": np.zeros((2, D))})
    with pytest.raises(lora.LoraError, match="cannot map"):
        peft.peft_to_ours({f"{key}.lora_magnitude_vector.default.weight": np.zeros(Q)})
    got = peft.peft_to_ours({f"{key}.lora_A.other.weight": np.zeros(1)}, adapter_name="other")
    assert list(got) == ["layers.0.self_attn.q_proj.lora_A.weight"]


def test_init_distribution_matches_torch():
    """lora_A ~ U(-1/sqrt(in), 1/sqrt(in)) as torch's kaiming_uniform_(a=sqrt(5)); B = 0."""
    d_in, r = 64, 64
    ours = lora.LoraLinear(
        nnx.Linear(d_in, 7, rngs=nnx.Rngs(0)), rank=r, alpha=16, rngs=nnx.Rngs(1)
    )
    theirs = TorchLora(torch.nn.Linear(d_in, 7), r, 16, 0.0).lora_A["default"].weight.detach()
    bound = 1 / math.sqrt(d_in)
    for a in (np.asarray(ours.lora_A.kernel.get_value()), theirs.numpy()):
        assert np.abs(a).max() <= bound and np.abs(a).max() > 0.98 * bound
        assert abs(a.std() - bound / math.sqrt(3)) < 0.05 * bound  # uniform std
    assert not np.any(ours.lora_B.kernel.get_value())
