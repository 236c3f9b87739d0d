"""Experiment configs: `configs/X.py:arg` files (big_vision style) -> locked ConfigDicts -> frozen
dataclasses at the component boundary.

- ``load("configs/x.py:variant=tiny,frames=4")`` imports the file, calls ``get_config(arg)`` and
  locks the result (a typo such as ``cfg.optim.lrr = 1`` then raises).
- ``parse_arg(arg, variant="7b", frames=8)`` parses ``"variant=tiny,frames=4"`` with the
  defaults' types; an unknown key is an error, not a silent new option.
- ``to_dataclass(SomeConfig, cfg.section)`` builds a frozen dataclass, recursing into
  dataclass-typed fields, rejecting unknown keys with a "did you mean" hint. Modules never see a
  ConfigDict.
"""

import dataclasses
import difflib
import importlib.util
import json
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import ml_collections

from jax_refvos.errors import InputError

T = TypeVar("T")

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def parse_value(key: str, text: str, default: Any) -> Any:
    """`text` cast to `default`'s type (bool: true/false/1/0/yes/no/on/off); InputError."""
    if isinstance(default, bool):
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise InputError(f"config arg {key}={text!r}: expected a boolean")
    if isinstance(default, int | float) and not isinstance(default, bool):
        try:
            return type(default)(text)
        except ValueError:
            raise InputError(
                f"config arg {key}={text!r}: expected {type(default).__name__}"
            ) from None
    return text


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
    """``"a=1,b=x"`` -> ConfigDict over `defaults`, values cast to each default's type.

    A bare word ``"tiny"`` sets the first default (``get_config("tiny")`` == ``variant=tiny``).
    """
    values = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            if not defaults:
                raise InputError(f"config arg {item!r}: this config takes no arguments")
            key, text = next(iter(defaults)), key
        if key not in defaults:
            raise InputError(f"config arg {key!r} is unknown{_did_you_mean(key, defaults)}")
        values[key] = parse_value(key, text.strip(), defaults[key])
    return ml_collections.ConfigDict(values)


def mesh_arg(text: str) -> dict[str, int]:
    """A config's `mesh=` argument: "auto" (data = gcd(global batch, devices), the rest
    model-parallel; all zeros) or data x fsdp x model, e.g. "1x4x2", "-1x1x1" (-1 = the rest)."""
    if text == "auto":
        return dict(data=0, fsdp=0, model=0)
    sizes = [int(s) for s in str(text).split("x")]
    if len(sizes) != 3:
        raise ValueError(f"mesh must be data x fsdp x model, e.g. 1x4x2 or -1x1x1, got {text!r}")
    return dict(zip(("data", "fsdp", "model"), sizes, strict=True))


def base() -> ml_collections.ConfigDict:
    """Defaults every experiment shares (seed, logging and checkpoint cadence)."""
    return ml_collections.ConfigDict(
        {"seed": 0, "log_every_steps": 50, "checkpoint_every_steps": 1000, "keep_checkpoints": 3}
    )


def _split_spec(spec: str | Path, arg: str | None) -> tuple[Path, str | None]:
    text = str(spec)
    if arg is None and ".py:" in text:  # the argument may itself hold "/" (paths) or ":"
        head, _, arg = text.partition(".py:")
        text = head + ".py"
    elif arg is None and ":" in Path(text).name:
        text, _, arg = text.rpartition(":")
    return Path(text), arg


def load(
    spec: str | Path, arg: str | None = None, *, lock: bool = True
) -> ml_collections.ConfigDict:
    """Loads ``path/to/config.py[:arg]`` by calling its ``get_config(arg)``."""
    path, arg = _split_spec(spec, arg)
    if not path.is_file():
        raise InputError(f"{path}: config file not found")
    module_spec = importlib.util.spec_from_file_location(f"_refvos_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise InputError(f"{path}: a config file must define get_config(arg)")
    try:
        cfg = module.get_config(arg)
    except InputError as e:
        raise InputError(f"{path}: {e}") from None
    except (ValueError, KeyError, TypeError) as e:  # a config's own argument checks
        raise InputError(f"{path}: {e}") from None
    if not isinstance(cfg, ml_collections.ConfigDict):
        raise InputError(f"{path}: get_config must return an ml_collections.ConfigDict")
    if lock:
        cfg.lock()
    return cfg


def _did_you_mean(key: str, options) -> str:
    close = difflib.get_close_matches(key, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _as_dict(section: Any) -> dict[str, Any]:
    if isinstance(section, ml_collections.ConfigDict):
        return section.to_dict()
    if isinstance(section, Mapping):
        return dict(section)
    raise InputError(f"expected a config section (mapping), got {type(section).__name__}")


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(value, Mapping | ml_collections.ConfigDict):
        return to_dataclass(tp, value, where=where)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(tp):
            if dataclasses.is_dataclass(arm) and isinstance(
                value, Mapping | ml_collections.ConfigDict
            ):
                return to_dataclass(arm, value, where=where)
        return value
    if origin is tuple and isinstance(value, list | tuple):
        args = typing.get_args(tp)
        inner = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        return tuple(_convert(inner, v, where) if inner else v for v in value)
    return value


def to_dataclass(cls: type[T], section: Any, *, where: str | None = None) -> T:
    """Builds the frozen dataclass `cls` from a config section; unknown keys raise `InputError`."""
    where = where or cls.__name__
    values = _as_dict(section)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in values if k not in fields]
    if unknown:
        hint = _did_you_mean(unknown[0], fields)
        raise InputError(f"{where}: unknown key(s) {unknown}{hint}; allowed: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _convert(hints.get(k, Any), v, f"{where}.{k}") for k, v in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise InputError(f"{where}: {e}") from None


def to_json(cfg: ml_collections.ConfigDict) -> str:
    """The config as stable, readable JSON (for `<workdir>/config.json`)."""
    return json.dumps(cfg.to_dict(), indent=2, sort_keys=True, default=str)
