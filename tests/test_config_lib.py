"""config_lib: arg parsing, loading, locking, dataclass conversion that rejects unknown keys."""

import dataclasses

import ml_collections
import pytest

from jax_refvos import config_lib
from jax_refvos.errors import InputError


@dataclasses.dataclass(frozen=True, kw_only=True)
class Inner:
    width: int = 4
    names: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outer:
    lr: float = 1e-3
    inner: Inner = Inner()
    maybe: Inner | None = None


def test_parse_arg_types_and_errors():
    a = config_lib.parse_arg(
        "variant=tiny,frames=4,lr=3e-4,fast=true", variant="7b", frames=8, lr=1e-4, fast=False
    )
    assert (a.variant, a.frames, a.lr, a.fast) == ("tiny", 4, 3e-4, True)
    assert config_lib.parse_arg("tiny", variant="7b", frames=8).variant == "tiny"
    assert config_lib.parse_arg(None, frames=8).frames == 8
    with pytest.raises(InputError, match="did you mean 'frames'"):
        config_lib.parse_arg("frame=3", frames=8)
    with pytest.raises(InputError, match="expected int"):
        config_lib.parse_arg("frames=x", frames=8)
    with pytest.raises(InputError, match="expected a boolean"):
        config_lib.parse_arg("fast=maybe", fast=False)


def test_to_dataclass_nested_and_strict():
    cfg = ml_collections.ConfigDict(
        {"lr": 0.1, "inner": {"width": 7, "names": ["a", "b"]}, "maybe": {"width": 2}}
    )
    out = config_lib.to_dataclass(Outer, cfg)
    assert out == Outer(lr=0.1, inner=Inner(width=7, names=("a", "b")), maybe=Inner(width=2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        out.lr = 1.0
    with pytest.raises(InputError, match=r"Outer\.inner: unknown key\(s\) \['widht'\].*'width'"):
        config_lib.to_dataclass(Outer, {"inner": {"widht": 3}})


def test_load_locks_and_accepts_colon_arg(tmp_path):
    path = tmp_path / "exp.py"
    path.write_text(
        "from jax_refvos import config_lib\n"
        "def get_config(arg=None):\n"
        "    a = config_lib.parse_arg(arg, frames=8)\n"
        "    c = config_lib.base()\n"
        "    c.data = dict(frames=a.frames)\n"
        "    return c\n"
    )
    cfg = config_lib.load(f"{path}:frames=3")
    assert cfg.data.frames == 3 and cfg.seed == 0
    with pytest.raises(AttributeError):
        cfg.data.framez = 1  # locked: typos fail loudly
    assert '"frames": 3' in config_lib.to_json(cfg)
    with pytest.raises(InputError, match="config file not found"):
        config_lib.load(tmp_path / "nope.py")
