"""The method registry: the one door from the trainer, the evaluator and the CLI to a method.

`METHODS` maps a method's name (the `method` key of an experiment config, of a training
workdir's config.json and of a weights dir's meta) to the module that defines it; the module is
imported on first use, so nothing here imports a method statically. Adding a method is one line
in `METHODS` (docs/architecture.md has the checklist).
"""

import importlib
import json
from pathlib import Path

from jax_refvos.errors import InputError
from jax_refvos.methods.base import Method, WorkdirKind

# name -> module exposing `METHOD` (a `methods.base.Method`)
METHODS: dict[str, str] = {
    "virst": "jax_refvos.methods.virst.method",
    "sam2": "jax_refvos.methods.sam2.method",
}

WEIGHTS_FORMAT = "jax_refvos.weights"  # = weights.weights_dir.FORMAT (core files, no import)


def names() -> tuple[str, ...]:
    """The registered methods, in registration order."""
    return tuple(METHODS)


def get(name: str) -> Method:
    """The method called `name`; InputError listing the known ones otherwise."""
    if name not in METHODS:
        raise InputError(f"unknown method {name!r} (registered: {', '.join(METHODS)})")
    module = importlib.import_module(METHODS[name])
    method = getattr(module, "METHOD", None)
    if not isinstance(method, Method):
        raise TypeError(f"{METHODS[name]}.METHOD is not a jax_refvos.methods.base.Method")
    return method


def _config(path: Path) -> dict:
    file = path / "config.json"
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise InputError(
            f"{path}: not a weights dir or training workdir (no config.json)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{file}: cannot read ({e})") from None
    if not isinstance(data, dict):
        raise InputError(f"{file}: not a JSON object")
    return data


def is_training_workdir(path: str | Path) -> bool:
    """A `refvos train` workdir: config.json + checkpoints/."""
    return (Path(path) / "checkpoints").is_dir() and (Path(path) / "config.json").is_file()


def open_workdir(path: str | Path) -> tuple[Method, WorkdirKind]:
    """(method, kind) of a weights dir (`refvos import-weights`) or training workdir.

    The method is the directory's recorded `method`; weights dirs written before the key existed
    name it by their `kind`. InputError when the directory is neither, records no method (a
    backbone-only weights dir) or names an unregistered one.
    """
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: directory does not exist")
    data = _config(path)
    if is_training_workdir(path):
        kind: WorkdirKind = "training"
        name = data.get("method")
        if name is None:
            raise InputError(
                f"{path}/config.json: no 'method' key (written by an older jax_refvos, whose "
                "workdirs do not record their model; train again)"
            )
        if not any(p.name.isdigit() for p in (path / "checkpoints").iterdir()):
            raise InputError(f"{path}/checkpoints: no checkpoint yet")
    elif data.get("format") == WEIGHTS_FORMAT:
        kind = "weights"
        name = data.get("method", data.get("kind") if data.get("kind") in METHODS else None)
        if name is None:
            raise InputError(
                f"{path}: a backbone weights dir (kind {data.get('kind')!r}), not a method's "
                f"({', '.join(METHODS)})"
            )
    else:
        raise InputError(f"{path}: not a weights dir or training workdir (no checkpoints/)")
    return get(name), kind
