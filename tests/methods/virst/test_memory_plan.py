"""jax_refvos/methods/virst/memory_plan.py on the tiny preset: exact state bytes split by the rule
table, the activation estimate's remat saving, and the mesh choice."""

import math

from jax_refvos.methods.virst import memory_plan as mp
from jax_refvos.methods.virst import presets as virst_presets
from jax_refvos.methods.virst.config import VIRST_PAPER

ONE = {"data": 1, "fsdp": 1, "model": 1}


def _tiny():
    cfg = virst_presets.virst_tiny(vocab_size=1024, seg_token_id=5)
    return cfg, mp.param_table(mp.abstract_state(cfg, lora_rank=4), VIRST_PAPER)


def test_state_bytes_follow_the_rule_table():
    cfg, table = _tiny()
    one = mp.state_bytes(table, ONE)
    assert one["params"] == sum(math.prod(s) * b for _, s, b, _, _ in table)
    trained = sum(math.prod(s) * b for _, s, b, _, t in table if t)
    assert one["gradients"] == trained > 0 and one["optimizer"] == 2 * trained
    assert any("lora_A" in "/".join(map(str, p)) for p, *_, t in table if t)
    # data parallelism replicates; fsdp splits the "embed" axes (not everything has one)
    assert mp.state_bytes(table, {**ONE, "data": 8}) == one
    fsdp = mp.state_bytes(table, {**ONE, "fsdp": 2})
    assert one["params"] / 2 <= fsdp["params"] < one["params"]


def test_remat_keeps_less_and_the_mesh_grows_fsdp_until_it_fits():
    cfg, _ = _tiny()
    work = mp.Workload(vlm_frames=8, text_len=128, sam_frames=8, rows_per_video=2)
    remat = mp.activation_bytes(cfg, work, ONE, remat=True)
    assert 0 < remat < mp.activation_bytes(cfg, work, ONE, remat=False)
    assert mp.auto_mesh(64, lambda m: m["fsdp"] >= 8) == ({"data": 8, "fsdp": 8, "model": 1}, True)
    assert mp.auto_mesh(8, lambda m: True) == ({"data": 8, "fsdp": 1, "model": 1}, True)
    assert mp.auto_mesh(16, lambda m: m["model"] == 4) == ({"data": 4, "fsdp": 1, "model": 4}, True)
    assert mp.auto_mesh(8, lambda m: False) == ({"data": 1, "fsdp": 1, "model": 8}, False)
