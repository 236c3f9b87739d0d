"""HF checkpoint directories (config.json + safetensors) -> `DecoderLM`, without torch.

Reads `model.safetensors` or a sharded `model.safetensors.index.json` + shards, in f32, f16 or
bf16, by parsing the safetensors header and memory-mapping the data (`safetensors.numpy` cannot
read bf16; ml_dtypes' bfloat16 numpy dtype ships with jax). HF key names equal our NNX paths
(`model.layers.0.self_attn.q_proj.weight` <- `model/layers/0/self_attn/q_proj/kernel`, transposed)
via `torch_names`; with `scan_layers` the per-layer tensors are stacked on a leading axis.
"""

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from jax_refvos.errors import InputError
from jax_refvos.model.backbone.decoder_lm import DecoderLM
from jax_refvos.model.backbone.lm_config import DecoderConfig
from jax_refvos.weights.torch_names import WeightMismatchError, load_torch_state, torch_key_map

_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
_FLOATS = ("F64", "F32", "F16", "BF16")
# Buffers some older checkpoints saved; the model recomputes them.
_IGNORED = re.compile(r"(^|\.)rotary_emb\.inv_freq$")


class CheckpointError(InputError):
    """A checkpoint directory or file that cannot be read."""


def read_safetensors(path: str | Path, dtype=np.float32) -> dict[str, np.ndarray]:
    """All tensors of one .safetensors file (floats cast to `dtype`; `None` keeps them as stored,
    memory-mapped)."""
    path = Path(path)
    try:
        raw = np.memmap(path, dtype=np.uint8, mode="r")
        n = int(np.frombuffer(raw[:8].tobytes(), "<u8")[0])
        header = json.loads(raw[8 : 8 + n].tobytes())
    except (OSError, ValueError, IndexError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _DTYPES:
            raise CheckpointError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        want = (
            int(np.prod(info["shape"], dtype=np.int64)) * np.dtype(_DTYPES[info["dtype"]]).itemsize
        )
        if not 0 <= begin <= end <= raw.size - 8 - n or end - begin != want:
            raise CheckpointError(
                f"{path}: tensor {name} ({info['dtype']}{info['shape']}) has data offsets "
                f"[{begin}, {end}) that do not fit its shape or the file ({raw.size} bytes): "
                "truncated or corrupt"
            )
        arr = raw[8 + n + begin : 8 + n + end].view(_DTYPES[info["dtype"]]).reshape(info["shape"])
        if dtype is not None and info["dtype"] in _FLOATS:
            arr = arr.astype(dtype)
        out[name] = arr
    return out


def _weight_files(path: Path) -> tuple[list[Path], Path]:
    """The safetensors files of an HF dir and the file to name in errors."""
    index = path / "model.safetensors.index.json"
    single = path / "model.safetensors"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"{index}: no readable weight_map ({e})") from None
        files = [path / f for f in sorted(set(weight_map.values()))]
        for f in files:
            if not f.is_file():
                raise CheckpointError(f"{index}: shard {f.name} is missing")
        return files, index
    if single.is_file():
        return [single], single
    raise CheckpointError(f"{path}: no model.safetensors or model.safetensors.index.json")


def read_safetensors_dir(path: str | Path, dtype=np.float32) -> dict[str, np.ndarray]:
    """The flat state dict (HF key -> array) of an HF model dir, single or sharded.

    Args:
        path: directory with `model.safetensors` or `model.safetensors.index.json` + shards.
        dtype: floating tensors are cast to this (default float32); None keeps the stored dtype
            (memory-mapped, no copy).
    """
    files, _ = _weight_files(Path(path))
    state: dict[str, np.ndarray] = {}
    for f in files:
        state.update(read_safetensors(f, dtype))
    return state


def read_config(path: str | Path) -> dict:
    """The parsed `config.json` of an HF model dir."""
    f = Path(path) / "config.json"
    if not f.is_file():
        raise CheckpointError(f"{f}: missing (an HF model dir needs config.json)")
    try:
        return json.loads(f.read_text())
    except ValueError as e:
        raise CheckpointError(f"{f}: not valid JSON ({e})") from None


def _ignore(cfg: DecoderConfig) -> Callable[[str], bool]:
    # A tied checkpoint may still carry lm_head.weight (a copy of the embedding): not a variable.
    tied = cfg.tie_word_embeddings
    return lambda key: bool(_IGNORED.search(key)) or (tied and key == "lm_head.weight")


def _load_stacked(
    model: nnx.Module, state: Mapping[str, np.ndarray], num_layers: int, source: str, ignore
) -> None:
    """`load_torch_state` for a scanned model: `model.layers.<i>.X` stacks into `model.layers.X`."""
    prefix = "model.layers."
    expanded = {}  # HF key -> (variable, layout fn, layer index or None)
    for key, (var, fn) in torch_key_map(model).items():
        if key.startswith(prefix):
            for i in range(num_layers):
                expanded[f"{prefix}{i}.{key[len(prefix) :]}"] = (var, fn, i)
        else:
            expanded[key] = (var, fn, None)
    given = {k for k in state if not ignore(k)}
    problems = []
    if missing := sorted(set(expanded) - given):
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
    if unexpected := sorted(given - set(expanded)):
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
    values: dict[int, tuple[nnx.Variable, dict]] = {}
    for key in sorted(given & set(expanded)):
        var, fn, i = expanded[key]
        value = fn(np.asarray(state[key]))
        want = var.get_value().shape
        want = want if i is None else want[1:]
        if value.shape != tuple(want):
            problems.append(f"{key}: checkpoint shape {np.shape(state[key])}, model expects {want}")
            continue
        values.setdefault(id(var), (var, {}))[1][i] = value
    if problems:
        raise WeightMismatchError(f"{source}: weights do not fit the model; " + "; ".join(problems))
    for var, parts in values.values():
        dtype = var.get_value().dtype
        if None in parts:
            var.set_value(jnp.asarray(parts[None], dtype=dtype))
        else:
            stacked = np.stack([np.asarray(parts[i], dtype=dtype) for i in range(num_layers)])
            var.set_value(jnp.asarray(stacked))


def load_state(
    model: DecoderLM, state: Mapping[str, np.ndarray], *, source: str = "state dict"
) -> None:
    """Copies an HF-named state dict (torch layout) into `model` in place (loop or scanned).

    Raises:
        WeightMismatchError: missing, unexpected or mis-shaped keys, naming `source`.
    """
    cfg = model.cfg
    # Loading replaces each array; keep the sharding of a model built under a mesh.
    placed = {}
    for _, var in nnx.iter_graph(model):
        if isinstance(var, nnx.Variable) and isinstance(var.get_value(), jax.Array):
            placed[id(var)] = var.get_value().sharding
    if cfg.scan_layers:
        _load_stacked(model, state, cfg.num_hidden_layers, source, _ignore(cfg))
    else:
        load_torch_state(model, state, source=source, ignore=_ignore(cfg))
    for _, var in nnx.iter_graph(model):
        if id(var) in placed:
            var.set_value(jax.device_put(var.get_value(), placed[id(var)]))


def load_causal_lm(
    path: str | Path,
    dtype=jnp.float32,
    *,
    param_dtype=None,
    scan_layers: bool = False,
    remat: bool = False,
    **overrides,
) -> DecoderLM:
    """A `DecoderLM` with the weights of an HF Qwen2/LLaMA causal-LM directory.

    Args:
        path: directory with config.json and model.safetensors (or an index + shards), f32/bf16.
        dtype: compute dtype; param_dtype: storage dtype (default: `dtype`).
        scan_layers, remat, overrides: `DecoderConfig` fields.

    Returns:
        the model; `model(input_ids)` (int32[b, l]) returns a `DecoderOutput` whose `.logits`
        are float32[b, l, vocab] (and `.last_hidden_state`, `.hidden_states`, `.cache`).

    Raises:
        CheckpointError: missing/unreadable config or weight files.
        ConfigError: a config we do not support.
        WeightMismatchError: keys or shapes that do not fit, naming the weight file.
    """
    path = Path(path)
    cfg = DecoderConfig.from_hf(
        read_config(path),
        source=str(path / "config.json"),
        dtype=dtype,
        param_dtype=dtype if param_dtype is None else param_dtype,
        scan_layers=scan_layers,
        remat=remat,
        **overrides,
    )
    files, source = _weight_files(path)
    state: dict[str, np.ndarray] = {}
    for f in files:
        state.update(read_safetensors(f, dtype=None))  # memory-mapped, cast per tensor on load
    # Abstract init: no random weights are drawn; every variable is then set from the file.
    model = nnx.eval_shape(lambda: DecoderLM(cfg, rngs=nnx.Rngs(0)))
    load_state(model, state, source=str(source))
    return model
