"""Read `torch.save` checkpoints into numpy without torch and without running pickled code.

A `torch.save` file (torch >= 1.6) is a zip archive whose members share one top-level folder:

    <archive>/data.pkl      pickle (protocol 2) of the saved object
    <archive>/data/<key>    raw bytes of storage <key>, in the byte order of <archive>/byteorder
    <archive>/byteorder     b"little" or b"big" (absent in old files: little)

`data.pkl` names storages through persistent ids ("storage", storage_type, key, location, numel)
and rebuilds tensors with `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`.
We unpickle with a `find_class` that maps an explicit allow-list of globals to our own stand-ins
(storages -> flat numpy buffers, tensors -> numpy arrays, parameters -> their data) and rejects
every other global without importing it, so a malicious file cannot run code.

Globals that torch 2.13 writes for state dicts, parameters, optimizer states and plain values:
`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_tensor_v3`
(with `torch.storage.UntypedStorage` and a dtype such as `torch.uint16` or `torch.float8_e4m3fn`
for dtypes that have no legacy storage class), `torch._utils._rebuild_parameter`,
`torch.<Float|Half|BFloat16|Long|Bool|...>Storage`, `torch._tensor._rebuild_from_type_v2` with
`torch.Tensor` (a tensor with Python attributes), `torch.Size` and `torch.<dtype>` values.
"""

import collections
import dataclasses
import io
import math
import os
import pickle
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from jax_refvos.errors import InputError


class CheckpointError(InputError):
    """A checkpoint file that cannot be read safely (corrupt, unsupported or forbidden content)."""


# torch dtype name -> numpy dtype (bfloat16 and float8 come from ml_dtypes, which jax ships).
_DTYPES: dict[str, np.dtype] = {
    name: np.dtype(dt)
    for name, dt in {
        "float64": np.float64,
        "float32": np.float32,
        "float16": np.float16,
        "bfloat16": ml_dtypes.bfloat16,
        "float8_e4m3fn": ml_dtypes.float8_e4m3fn,
        "float8_e5m2": ml_dtypes.float8_e5m2,
        "float8_e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
        "float8_e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
        "complex128": np.complex128,
        "complex64": np.complex64,
        "int64": np.int64,
        "int32": np.int32,
        "int16": np.int16,
        "int8": np.int8,
        "uint64": np.uint64,
        "uint32": np.uint32,
        "uint16": np.uint16,
        "uint8": np.uint8,
        "bool": np.bool_,
    }.items()
}

# Legacy typed storage classes (what torch 2.x still writes for the common dtypes).
_STORAGE_CLASSES = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "ComplexDoubleStorage": "complex128",
    "ComplexFloatStorage": "complex64",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
}


_MAX_EXPANDED_BYTES = 1 << 30  # cap for materialising a zero-stride (expanded) tensor


@dataclasses.dataclass(frozen=True)
class _StorageType:
    """Stand-in for a torch storage class; `dtype` None is an untyped (byte) storage."""

    dtype: np.dtype | None


@dataclasses.dataclass(frozen=True)
class _TensorType:
    """Stand-in for `torch.Tensor` / `torch.nn.Parameter` as a class argument."""

    name: str


@dataclasses.dataclass
class _Storage:
    """One `data/<key>` member: its raw bytes, in the byte order of the archive."""

    key: str
    raw: np.ndarray  # uint8, writable, exactly the member's bytes
    big_endian: bool
    claimed: bool = False  # already handed out, without a copy, as one tensor's memory

    def flat(self, dtype: np.dtype) -> np.ndarray:
        """The bytes as a flat native-endian array of `dtype` (a copy only if byteswapped)."""
        usable = self.raw[: self.raw.size - self.raw.size % dtype.itemsize]
        if not self.big_endian or dtype.itemsize == 1:
            return usable.view(dtype)
        # Swap per scalar (per component for complex) on unsigned views: ml_dtypes types such
        # as bfloat16 do not implement `byteswap` themselves.
        unit = dtype.itemsize // 2 if dtype.kind == "c" else dtype.itemsize
        return usable.view(f"u{unit}").byteswap().view(dtype)


@dataclasses.dataclass(frozen=True)
class _TypedStorage:
    """What a persistent id resolves to: a storage and the dtype its class declared."""

    storage: _Storage
    dtype: np.dtype | None


def _codecs_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Protocol-2 pickles spell `bytes` as `_codecs.encode(str, "latin1")`.
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1")


_PLAIN_GLOBALS: dict[str, Any] = {
    "collections.OrderedDict": collections.OrderedDict,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "builtins.complex": complex,
    "builtins.slice": slice,
    "_codecs.encode": _codecs_encode,
    "torch.Size": tuple,
    "torch.Tensor": _TensorType("torch.Tensor"),
    "torch.nn.parameter.Parameter": _TensorType("torch.nn.parameter.Parameter"),
    "torch.storage.UntypedStorage": _StorageType(None),
    "torch.UntypedStorage": _StorageType(None),
    **{f"torch.{cls}": _StorageType(_DTYPES[dt]) for cls, dt in _STORAGE_CLASSES.items()},
    **{f"torch.{name}": dtype for name, dtype in _DTYPES.items()},
}


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    # A Parameter is its data for us; requires_grad, hooks and Python attributes are dropped.
    if not isinstance(data, np.ndarray):
        raise pickle.UnpicklingError(f"parameter data is a {type(data).__name__}, not a tensor")
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    # A tensor with Python attributes: `func(*args)` rebuilds it, the attributes are dropped.
    if not isinstance(new_type, _TensorType) or not callable(func):
        raise pickle.UnpicklingError("_rebuild_from_type_v2 of a non-tensor type")
    out = func(*args)
    if not isinstance(out, np.ndarray):
        raise pickle.UnpicklingError(f"_rebuild_from_type_v2 built a {type(out).__name__}")
    return out


class _Unpickler(pickle.Unpickler):
    """Unpickles `data.pkl`, resolving only allow-listed globals and storages of `zf`."""

    def __init__(self, data: bytes, zf: zipfile.ZipFile, prefix: str, big_endian: bool, path):
        super().__init__(io.BytesIO(data), encoding="utf-8")
        self._zf, self._prefix, self._big_endian, self._path = zf, prefix, big_endian, path
        self._storages: dict[str, _Storage] = {}
        self._globals = {
            **_PLAIN_GLOBALS,
            "torch._utils._rebuild_tensor": self._rebuild_tensor,
            "torch._utils._rebuild_tensor_v2": self._rebuild_tensor_v2,
            "torch._utils._rebuild_tensor_v3": self._rebuild_tensor_v3,
            "torch._utils._rebuild_parameter": _rebuild_parameter,
            "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
            "torch._tensor._rebuild_from_type_v2": _rebuild_from_type_v2,
        }

    def find_class(self, module: str, name: str) -> Any:
        full = f"{module}.{name}"
        if full not in self._globals:
            raise CheckpointError(
                f"{self._path}: refusing to load: data.pkl references the forbidden global "
                f"{full!r} (only tensors, storages and plain containers are allowed; nothing "
                "was imported or run)"
            )
        return self._globals[full]

    def persistent_load(self, pid: Any) -> _TypedStorage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"malformed storage id {pid!r:.80}")
        key = str(key)
        if key not in self._storages:
            self._storages[key] = self._read_storage(key)
        storage = self._storages[key]
        need = numel * (storage_type.dtype.itemsize if storage_type.dtype else 1)
        if storage.raw.size < need:
            raise CheckpointError(
                f"{self._path}: storage data/{key} has {storage.raw.size} bytes but data.pkl "
                f"declares {need} (truncated or corrupt checkpoint)"
            )
        return _TypedStorage(storage, storage_type.dtype)

    def _read_storage(self, key: str) -> _Storage:
        name = f"{self._prefix}data/{key}"
        try:
            info = self._zf.getinfo(name)
        except KeyError:
            raise CheckpointError(f"{self._path}: storage member {name!r} is missing") from None
        raw = np.empty(info.file_size, np.uint8)
        try:
            with self._zf.open(info) as f:
                got = f.readinto(memoryview(raw))
                if got != info.file_size or f.read(1):
                    raise zipfile.BadZipFile(f"read {got} of {info.file_size} bytes")
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
            raise CheckpointError(
                f"{self._path}: storage member {name!r} is truncated or corrupt ({e})"
            ) from e
        return _Storage(key, raw, self._big_endian)

    def _rebuild_tensor(self, typed, offset, size, stride, dtype=None, metadata=None):
        if not isinstance(typed, _TypedStorage):
            raise pickle.UnpicklingError(f"tensor storage is a {type(typed).__name__}")
        storage, dtype = typed.storage, dtype if dtype is not None else typed.dtype
        if not isinstance(dtype, np.dtype):
            raise pickle.UnpicklingError(f"tensor of data/{storage.key} has no known dtype")
        size, stride = tuple(size), tuple(stride)
        ints = (offset, *size, *stride)
        if not all(isinstance(i, int) and i >= 0 for i in ints) or len(size) != len(stride):
            raise pickle.UnpicklingError(f"bad tensor geometry {offset=} {size=} {stride=}")
        numel = math.prod(size)
        if numel == 0:
            return np.zeros(size, dtype)
        flat = storage.flat(dtype)
        need = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) + 1
        if need > flat.size:
            raise CheckpointError(
                f"{self._path}: a tensor of shape {list(size)} needs {need} elements of "
                f"storage data/{storage.key}, which holds {flat.size} (corrupt checkpoint)"
            )
        if numel > flat.size and numel * dtype.itemsize > _MAX_EXPANDED_BYTES:
            # Zero strides (torch.expand) let a tiny storage claim a huge shape; a real
            # checkpoint does not need gigabytes of repeated values.
            raise CheckpointError(
                f"{self._path}: refusing to expand data/{storage.key} to shape {list(size)}"
            )
        contiguous = stride == tuple(int(math.prod(size[i + 1 :])) for i in range(len(size)))
        if contiguous and offset == 0 and numel == flat.size and not storage.claimed:
            # The common state-dict case: the tensor is its whole storage; no copy.
            storage.claimed = True
            array = flat.reshape(size)
        else:
            view = np.lib.stride_tricks.as_strided(
                flat[offset:],
                shape=size,
                strides=[s * dtype.itemsize for s in stride],
                writeable=False,
            )
            array = np.array(view, copy=True, order="C")
        metadata = metadata or {}
        if metadata.get("conj"):
            array = np.conj(array)
        if metadata.get("neg"):
            array = np.negative(array)
        return array

    def _rebuild_tensor_v2(self, storage, offset, size, stride, requires_grad, hooks, meta=None):
        return self._rebuild_tensor(storage, offset, size, stride, metadata=meta)

    def _rebuild_tensor_v3(
        self, storage, offset, size, stride, requires_grad, hooks, dtype, meta=None
    ):
        if not isinstance(dtype, np.dtype):
            raise pickle.UnpicklingError(f"_rebuild_tensor_v3 with dtype {dtype!r:.40}")
        return self._rebuild_tensor(storage, offset, size, stride, dtype=dtype, metadata=meta)


def _check_is_zip(path: Path) -> None:
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK") or zipfile.is_zipfile(path):
        return
    if head[:1] == b"\x80" or tarfile.is_tarfile(path):
        raise CheckpointError(
            f"{path}: unsupported legacy (non-zip) torch.save format or plain pickle; "
            "re-save it with torch>=1.6: torch.save(torch.load(p), p)"
        )
    raise CheckpointError(f"{path}: not a PyTorch checkpoint (expected a torch.save zip archive)")


def _archive_prefix(zf: zipfile.ZipFile, path: Path) -> str:
    prefixes = [n[: -len("data.pkl")] for n in zf.namelist() if n.endswith("data.pkl")]
    prefixes = [p for p in prefixes if p.count("/") == 1 and p.endswith("/")]
    if len(prefixes) != 1:
        found = "no" if not prefixes else f"{len(prefixes)}"
        raise CheckpointError(
            f"{path}: {found} '<archive>/data.pkl' member(s); not a torch.save checkpoint"
        )
    return prefixes[0]


def load_torch_file(path: str | os.PathLike) -> Any:
    """Load a `torch.save` zip checkpoint with every tensor as a numpy array.

    Tensors (and `nn.Parameter`s) become C-contiguous numpy arrays of the same dtype, shape and
    values (strided views and storage offsets are materialised); bfloat16 and float8 use the
    ml_dtypes types. Distinct tensors never share memory, even when their torch storages did; a
    tensor object pickled twice (tied weights) loads as one array object, as in torch.
    OrderedDicts stay OrderedDicts; ints, floats, strings, None, lists, tuples, dicts, sets and
    `torch.Size` (a tuple) load as themselves. Nothing is imported or executed.

    Raises:
        CheckpointError: the path is not a file, not a zip (a legacy pre-1.6 file gets its own
            message), lacks data.pkl, is truncated or corrupt, or references a global outside
            the allow-list. The message names `path`.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file")
    _check_is_zip(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt zip archive ({e})") from e
    with zf:
        prefix = _archive_prefix(zf, path)
        try:
            data = zf.read(prefix + "data.pkl")
            has_order = prefix + "byteorder" in zf.namelist()
            order = zf.read(prefix + "byteorder") if has_order else b""
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise CheckpointError(f"{path}: truncated or corrupt zip archive ({e})") from e
        if order not in (b"", b"little", b"big"):
            raise CheckpointError(f"{path}: unknown byteorder record {order[:20]!r}")
        unpickler = _Unpickler(data, zf, prefix, order == b"big", path)
        try:
            return unpickler.load()
        except CheckpointError:
            raise
        except Exception as e:  # any failure inside a corrupt pickle stream
            raise CheckpointError(
                f"{path}: corrupt or unsupported data.pkl ({type(e).__name__}: {e})"
            ) from e


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items())
    )


def load_state_dict(path: str | os.PathLike, key: str = "model") -> dict[str, np.ndarray]:
    """The state dict in a `torch.save` checkpoint: torch key -> numpy array.

    Takes `obj[key]` when the file holds a dict with `key` (SAM2 checkpoints: {"model": ...}),
    else the file itself when it is a flat dict of tensors. A "module." prefix on every key (from
    DataParallel) is removed. Arrays keep the saved dtype (bfloat16 as ml_dtypes.bfloat16).

    Raises:
        CheckpointError: as `load_torch_file`, or no state dict of tensors found (names `path`).
    """
    obj = load_torch_file(path)
    if isinstance(obj, dict) and key in obj:
        state, where = obj[key], f"entry {key!r}"
    elif _is_state_dict(obj):
        state, where = obj, "top-level dict"
    else:
        keys = sorted(map(repr, obj))[:10] if isinstance(obj, dict) else None
        raise CheckpointError(
            f"{path}: no state dict found: expected a dict with key {key!r} or a flat dict of "
            f"tensors, got a {type(obj).__name__}" + (f" with keys {keys}" if keys else "")
        )
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path}: {where} is a {type(state).__name__}, not a state dict")
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, np.ndarray):
            raise CheckpointError(
                f"{path}: {where} is not a state dict: item {name!r:.80} is a "
                f"{type(value).__name__}, not a tensor"
            )
    if all(name.startswith("module.") for name in state):
        return {name.removeprefix("module."): value for name, value in state.items()}
    return dict(state)
