"""Our weights format: what `refvos import-weights` writes and training / prediction start from.

    <out_dir>/
      config.json   {"format": "jax_refvos.weights", "version": 1, "method": ..., "kind": ...,
                     "source": ..., "components": {name: {"config": {...}, "num_params": n}}, ...}
      params/       one Orbax (OCDBT) checkpoint of {component name: that module's nnx.State}

`method` names the method whose whole model the directory holds ("virst"; the method registry,
`methods/registry.py`, loads it), or is null for a backbone-only import (an LM, a vision tower:
parts a method starts from, loaded with `weights/backbones.py`); `kind` says what was imported.
Components are independent modules (e.g. "lm", "vision", "projector"); each is rebuilt from its
`config` by the caller and restored into an abstract (optionally sharded) target, so loading is
also resharding (STYLE R10). The directory is written to a temporary sibling and renamed into
place only when complete: an interrupted import leaves nothing behind.
"""

import dataclasses
import json
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from jax_refvos import fileio
from jax_refvos.errors import InputError

FORMAT = "jax_refvos.weights"
VERSION = 1


def config_dict(cfg: Any) -> Any:
    """A (nested) config dataclass as JSON-ready values (tuples -> lists, dtypes -> names)."""
    if dataclasses.is_dataclass(cfg):
        return {k: config_dict(v) for k, v in dataclasses.asdict(cfg).items()}
    if isinstance(cfg, Mapping):
        return {k: config_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, tuple | list):
        return [config_dict(v) for v in cfg]
    if cfg is None or isinstance(cfg, str | int | float | bool):
        return cfg
    try:  # dtypes (jnp.float32, np.dtype("bfloat16"), ...) by name
        return np.dtype(cfg).name
    except TypeError:
        return str(cfg)


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def dataclass_from_config(cls: type, d: Mapping[str, Any]) -> Any:
    """The inverse of `config_dict`: a (nested) frozen config dataclass from its JSON form
    (lists -> tuples, dataclass-typed fields recursively). Keys the class lacks are an
    InputError (a record written for another version)."""
    if not isinstance(d, Mapping):
        raise InputError(f"{cls.__name__}: expected a JSON object, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise InputError(f"{cls.__name__}: unknown config keys {unknown}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        value, hint = d[f.name], hints.get(f.name)
        if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
            kwargs[f.name] = dataclass_from_config(hint, value)
        else:
            kwargs[f.name] = _tuples(value)
    return cls(**kwargs)


def num_params(module: nnx.Module) -> int:
    """The number of `nnx.Param` elements of a module (abstract modules too)."""
    return int(sum(np.size(x) for x in jax.tree.leaves(nnx.state(module, nnx.Param))))


def save_weights(
    out_dir: str | Path,
    components: Mapping[str, tuple[nnx.Module, Any]],
    *,
    method: str | None,
    kind: str,
    source: str,
    extra: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    add_files: Callable[[Path], None] | None = None,
) -> Path:
    """Write `components` ({name: (module, its config dataclass or dict)}) as a weights dir.

    `method` is the method whose whole model this is (None: backbone parts, see the module
    docstring); `kind` what was imported.

    `add_files(tmp_dir)` may write more files (e.g. a tokenizer) before the directory is
    renamed into place, so they are part of the same all-or-nothing write.
    """
    out_dir = Path(out_dir).absolute()
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "method": method,
        "kind": kind,
        "source": source,
        "components": {
            name: {
                "config": config_dict(cfg),
                "num_params": num_params(module),
            }
            for name, (module, cfg) in components.items()
        },
        **dict(extra or {}),
    }
    state = {name: nnx.to_pure_dict(nnx.state(module)) for name, (module, _) in components.items()}
    with fileio.atomic_directory(out_dir, overwrite=overwrite) as tmp:
        with ocp.StandardCheckpointer() as ckpt:
            ckpt.save(Path(tmp).absolute() / "params", state)
            ckpt.wait_until_finished()
        if add_files is not None:
            add_files(Path(tmp))
        fileio.atomic_write_json(Path(tmp) / "config.json", meta)
    return out_dir


def read_meta(path: str | Path) -> dict:
    """The weights dir's config.json, validated; InputError naming the problem otherwise."""
    path = Path(path)
    meta = fileio.load_json(path / "config.json")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"{path}: not a jax_refvos weights directory (config.json format)")
    if meta.get("version") != VERSION:
        raise InputError(
            f"{path}: weights format version {meta.get('version')}, expected {VERSION}"
        )
    if not (path / "params").is_dir():
        raise InputError(f"{path}: params/ is missing")
    return meta


def load_weights(
    path: str | Path,
    build: Mapping[str, Callable[[Mapping[str, Any]], nnx.Module]],
    *,
    mesh: jax.sharding.Mesh | None = None,
) -> dict[str, nnx.Module]:
    """Rebuild each component with `build[name](config)` and restore its weights into it.

    `build` functions create the module (abstractly is fine: they run under `nnx.eval_shape`);
    with a `mesh`, parameters are placed with the shardings their logical axes give under the
    active `nnx.logical_axis_rules` (call this inside them).
    """
    path = Path(path).absolute()
    meta = read_meta(path)
    missing = set(build) - set(meta["components"])
    if missing:
        raise InputError(
            f"{path}: no components {sorted(missing)} (has {sorted(meta['components'])})"
        )
    modules = {
        name: nnx.eval_shape(lambda fn=fn, name=name: fn(meta["components"][name]["config"]))
        for name, fn in build.items()
    }
    target = {}
    for name, module in modules.items():
        abstract = nnx.state(module)
        if mesh is not None:
            shardings = nnx.get_named_sharding(abstract, mesh)
            abstract = jax.tree.map(
                lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
            )
        target[name] = nnx.to_pure_dict(abstract)
    with ocp.StandardCheckpointer() as ckpt:
        try:
            restored = ckpt.restore(path / "params", target)
        except (ValueError, KeyError, FileNotFoundError) as e:
            raise InputError(f"{path}: weights do not fit the model: {e}") from None
    for name, module in modules.items():
        state = nnx.state(module)
        nnx.replace_by_pure_dict(state, restored[name])
        nnx.update(module, state)
    return modules


def describe(path: str | Path) -> str:
    """One line per component: name, parameter count."""
    meta = read_meta(path)
    return "\n".join(
        f"{name}: {c['num_params']:,} params" for name, c in meta["components"].items()
    ) or json.dumps(meta)
