"""Copy a PyTorch-named state dict into an NNX module whose attribute paths mirror it (R6, R10).

The mapping is mechanical: the NNX path `a/b/0/kernel` of an `nnx.Linear` is the torch key
`a.b.0.weight`, transposed. Per parent-module type:

| NNX module     | our name    | torch name | layout change            |
| ---            | ---         | ---        | ---                      |
| `nnx.Linear`   | `kernel`    | `weight`   | [out, in] -> [in, out]   |
| `nnx.Conv`     | `kernel`    | `weight`   | OIHW -> HWIO             |
| `nnx.LayerNorm`| `scale`     | `weight`   | none                     |
| `nnx.Embed`    | `embedding` | `weight`   | none                     |
| anything else  | same name   | same name  | `TORCH_LAYOUT[name]` of the module class, else none |

A module class may declare `TORCH_LAYOUT = {"pos_embed": fn}` where `fn(torch_array) -> ours`
(e.g. NCHW -> NHWC). Every variable must receive exactly one tensor and every tensor must be used;
anything else is an error listing the keys.
"""

from collections.abc import Callable, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jax_refvos.errors import InputError

_RENAMES: dict[type, dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]]] = {
    nnx.Linear: {"kernel": ("weight", lambda w: w.T)},
    nnx.Conv: {"kernel": ("weight", lambda w: w.transpose(2, 3, 1, 0))},
    nnx.LayerNorm: {"scale": ("weight", lambda w: w)},
    nnx.Embed: {"embedding": ("weight", lambda w: w)},
}


class WeightMismatchError(InputError):
    """The checkpoint's tensors do not fit the model (missing, unexpected or mis-shaped keys)."""


def torch_key_map(module: nnx.Module) -> dict[str, tuple[nnx.Variable, Callable]]:
    """torch key -> (our variable, layout function) for every variable under `module`."""
    nodes = dict(nnx.iter_graph(module))
    out: dict[str, tuple[nnx.Variable, Callable]] = {}
    for path, node in nodes.items():
        if not isinstance(node, nnx.Variable) or not path:
            continue
        parent, name = nodes[path[:-1]], str(path[-1])
        torch_name, fn = name, None
        for cls, renames in _RENAMES.items():
            if isinstance(parent, cls) and name in renames:
                torch_name, fn = renames[name]
                break
        if fn is None:
            fn = getattr(type(parent), "TORCH_LAYOUT", {}).get(name, lambda w: w)
        key = ".".join([str(p) for p in path[:-1]] + [torch_name])
        out[key] = (node, fn)
    return out


def load_torch_state(
    module: nnx.Module,
    state: Mapping[str, np.ndarray],
    *,
    source: str = "state dict",
    ignore: Callable[[str], bool] = lambda key: False,
) -> None:
    """Copy `state` (torch key -> array) into `module` in place, casting to each variable's dtype.

    Args:
        module: an NNX module whose attribute paths mirror the torch module's.
        state: the torch state dict as numpy arrays (keys relative to `module`).
        source: named in error messages (e.g. the checkpoint path).
        ignore: torch keys the model deliberately has no variable for.

    Raises:
        WeightMismatchError: missing or unexpected keys, or a shape that does not fit.
    """
    targets = torch_key_map(module)
    given = {k: v for k, v in state.items() if not ignore(k)}
    missing = sorted(set(targets) - set(given))
    unexpected = sorted(set(given) - set(targets))
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
    updates = {}
    for key in sorted(set(targets) & set(given)):
        var, fn = targets[key]
        value = fn(np.asarray(given[key]))
        want = var.get_value()
        if value.shape != want.shape:
            problems.append(
                f"{key}: checkpoint shape {np.shape(given[key])} -> {value.shape}, "
                f"model expects {want.shape}"
            )
            continue
        updates[key] = (var, value)
    if problems:
        raise WeightMismatchError(f"{source}: weights do not fit the model; " + "; ".join(problems))
    for var, value in updates.values():
        var.set_value(jnp.asarray(value, dtype=var.get_value().dtype))


def export_torch_state(module: nnx.Module) -> dict[str, np.ndarray]:
    """Our variables under their torch keys, in our layout (for inspection and tests)."""
    return {k: np.asarray(var.get_value()) for k, (var, _) in torch_key_map(module).items()}
