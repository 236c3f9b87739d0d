"""`torch_pickle` reads torch.save checkpoints exactly, and never runs code from a file.

The first half needs no torch: archives are assembled by hand from pickle opcodes. The parity
half saves real objects with torch and compares every value bit for bit.
"""

import collections
import pickle
import struct
import sys
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from jax_refvos.errors import InputError
from jax_refvos.weights.torch_pickle import CheckpointError, load_state_dict, load_torch_file

# --- a tiny pickle assembler (protocol 2 opcodes), so no test needs torch to build a file ---
PROTO, STOP, MARK, TUPLE, REDUCE, PERSID = b"\x80\x02", b".", b"(", b"t", b"R", b"Q"
EMPTY_DICT, SETITEMS, EMPTY_TUPLE, FALSE = b"}", b"u", b")", b"\x89"


def s(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def i(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def ints(values) -> bytes:
    return MARK + b"".join(i(v) for v in values) + TUPLE


def tensor(storage_cls: str, key: str, numel: int, offset: int, size, stride) -> bytes:
    """`_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`."""
    pid = MARK + s("storage") + glob("torch", storage_cls) + s(key) + s("cpu") + i(numel) + TUPLE
    hooks = glob("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE
    args = MARK + pid + PERSID + i(offset) + ints(size) + ints(stride) + FALSE + hooks + TUPLE
    return glob("torch._utils", "_rebuild_tensor_v2") + args + REDUCE


def state_pickle(items: dict[str, bytes], key: str | None = "model") -> bytes:
    body = EMPTY_DICT + MARK + b"".join(s(k) + v for k, v in items.items()) + SETITEMS
    if key is not None:
        body = EMPTY_DICT + MARK + s(key) + body + s("epoch") + i(7) + SETITEMS
    return PROTO + body + STOP


def write_archive(path, pkl: bytes, storages: dict[str, bytes] = (), byteorder=b"little"):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", pkl)
        if byteorder is not None:
            zf.writestr("archive/byteorder", byteorder)
        for key, raw in dict(storages).items():
            zf.writestr(f"archive/data/{key}", raw)
    return path


# A [3, 4] float32 storage 0..11, its transpose, and a row slice sharing the storage.
BASE = np.arange(12, dtype=np.float32).reshape(3, 4)
HAND_ITEMS = {
    "w": tensor("FloatStorage", "0", 12, 0, (3, 4), (4, 1)),
    "w_t": tensor("FloatStorage", "0", 12, 0, (4, 3), (1, 4)),
    "rows": tensor("FloatStorage", "0", 12, 4, (2, 4), (4, 1)),
    "h": tensor("BFloat16Storage", "1", 3, 0, (3,), (1,)),
}
BF16 = np.array([1.5, -2.0, 0.007], ml_dtypes.bfloat16)


@pytest.mark.parametrize("byteorder", [b"little", b"big", None])
def test_hand_built_archive_loads_views_offsets_and_byteorder(tmp_path, byteorder):
    order = ">" if byteorder == b"big" else "<"
    bf16_bits = BF16.view(np.uint16).astype(order + "u2")
    storages = {"0": BASE.astype(order + "f4").tobytes(), "1": bf16_bits.tobytes()}
    path = write_archive(tmp_path / "m.pt", state_pickle(HAND_ITEMS), storages, byteorder)

    obj = load_torch_file(path)
    assert obj["epoch"] == 7
    state = load_state_dict(path)
    assert list(state) == ["w", "w_t", "rows", "h"]
    np.testing.assert_array_equal(state["w"], BASE)
    np.testing.assert_array_equal(state["w_t"], BASE.T)
    np.testing.assert_array_equal(state["rows"], BASE[1:])
    assert state["h"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(state["h"].view(np.uint16), BF16.view(np.uint16))
    for value in state.values():
        assert value.flags.c_contiguous and value.flags.writeable
    assert not np.shares_memory(state["w"], state["w_t"])


def test_flat_state_dict_and_module_prefix(tmp_path):
    items = {"module.a": HAND_ITEMS["w"], "module.b": HAND_ITEMS["rows"]}
    path = write_archive(tmp_path / "m.pt", state_pickle(items, key=None), {"0": BASE.tobytes()})
    state = load_state_dict(path)
    assert list(state) == ["a", "b"]
    np.testing.assert_array_equal(state["b"], BASE[1:])


PAYLOADS = {
    "builtins.exec": lambda marker: (glob("builtins", "exec"), f"open({marker!r}, 'w').close()"),
    "builtins.eval": lambda marker: (glob("builtins", "eval"), f"open({marker!r}, 'w').close()"),
    "os.system": lambda marker: (glob("os", "system"), f"touch {marker}"),
    "posix.system": lambda marker: (glob("posix", "system"), f"touch {marker}"),
}


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_malicious_global_is_rejected_and_never_runs(tmp_path, name):
    marker = tmp_path / "pwned"
    func, arg = PAYLOADS[name](str(marker))
    payload = PROTO + func + MARK + s(arg) + TUPLE + REDUCE + STOP
    # Inside a state dict entry, as an attacker would hide it.
    pkl = PROTO + EMPTY_DICT + MARK + s("model") + payload[2:-1] + SETITEMS + STOP
    path = write_archive(tmp_path / "evil.pt", pkl)
    for load in (load_torch_file, load_state_dict):
        with pytest.raises(CheckpointError, match=rf"forbidden global '{name}'") as info:
            load(path)
        assert str(path) in str(info.value)
        assert not marker.exists()
    if name == "builtins.exec":  # the payload is live: plain pickle runs it
        pickle.loads(payload)
        assert marker.exists()


def test_forbidden_global_is_not_imported(tmp_path):
    assert "this" not in sys.modules  # importing `this` prints the Zen of Python
    for opcodes in (glob("this", "s"), s("this") + s("s") + b"\x93"):  # GLOBAL, STACK_GLOBAL
        path = write_archive(tmp_path / "g.pt", b"\x80\x04" + opcodes + STOP)
        with pytest.raises(CheckpointError, match="forbidden global 'this.s'"):
            load_torch_file(path)
    assert "this" not in sys.modules


def _valid_archive(tmp_path):
    storages = {"0": BASE.tobytes(), "1": BF16.tobytes()}
    return write_archive(tmp_path / "ok.pt", state_pickle(HAND_ITEMS), storages)


def _write(path, raw: bytes):
    path.write_bytes(raw)
    return path


def _zip_without_pickle(path):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/other.txt", "x")
    return path


BAD_FILES = {
    "missing": (lambda p: p / "nope.pt", "not a file"),
    "directory": (lambda p: p, "not a file"),
    "empty": (lambda p: _write(p / "e.pt", b""), "not a PyTorch checkpoint"),
    "garbage": (lambda p: _write(p / "g.pt", b"hello world" * 10), "not a PyTorch checkpoint"),
    "truncated zip": (
        lambda p: _write(p / "t.pt", _valid_archive(p).read_bytes()[:200]),
        "truncated or corrupt zip",
    ),
    "legacy": (
        lambda p: _write(p / "l.pt", PROTO + b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."),
        "legacy",
    ),
    "no data.pkl": (lambda p: _zip_without_pickle(p / "n.zip"), "no '<archive>/data.pkl'"),
    "storage missing": (
        lambda p: write_archive(p / "s.pt", state_pickle(HAND_ITEMS), {"1": BF16.tobytes()}),
        r"storage member 'archive/data/0' is missing",
    ),
    "storage short": (
        lambda p: write_archive(p / "s.pt", state_pickle(HAND_ITEMS), {"0": b"\0" * 40}),
        "has 40 bytes but data.pkl declares 48",
    ),
    "view past storage": (
        lambda p: write_archive(
            p / "v.pt",
            state_pickle({"x": tensor("FloatStorage", "0", 2, 1, (2,), (1,))}),
            {"0": b"\0" * 8},
        ),
        "needs 3 elements of storage data/0, which holds 2",
    ),
    "huge expanded view": (
        lambda p: write_archive(
            p / "h.pt",
            state_pickle({"x": tensor("FloatStorage", "0", 1, 0, (1 << 20, 1 << 20), (0, 0))}),
            {"0": b"\0" * 4},
        ),
        "refusing to expand data/0",
    ),
    "corrupt storage": (
        lambda p: _write(
            p / "c.pt",
            _valid_archive(p).read_bytes().replace(BASE.tobytes()[:8], b"\xff" * 8),
        ),
        "truncated or corrupt",
    ),
    "corrupt pickle": (lambda p: write_archive(p / "p.pt", PROTO + b"}(X\xff"), "corrupt"),
    "not a state dict": (
        lambda p: write_archive(
            p / "x.pt", PROTO + EMPTY_DICT + MARK + s("a") + i(1) + SETITEMS + STOP
        ),
        "no state dict found: expected a dict with key 'model'",
    ),
    "non-tensor entry": (
        lambda p: write_archive(p / "y.pt", state_pickle({"a": i(1)})),
        r"item 'a' is a int, not a tensor",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_raise_checkpoint_error_naming_the_file(tmp_path, case):
    make, message = BAD_FILES[case]
    path = make(tmp_path)
    with pytest.raises(CheckpointError, match=message) as info:
        load_state_dict(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, InputError)


# --- parity: files written by torch itself ---


def _torch_numpy(t):
    import torch

    t = t.detach().resolve_conj().resolve_neg()
    ml = {torch.bfloat16: ml_dtypes.bfloat16, torch.float8_e4m3fn: ml_dtypes.float8_e4m3fn}
    if t.dtype in ml:  # torch.Tensor.numpy() knows neither: compare the bits
        bits = torch.int16 if t.dtype.itemsize == 2 else torch.int8
        return t.contiguous().view(bits).numpy().view(ml[t.dtype])
    return t.numpy()


def _assert_same(ours: np.ndarray, theirs: np.ndarray):
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    assert ours.tobytes() == np.ascontiguousarray(theirs).tobytes()


@pytest.mark.parity
def test_torch_saved_dict_round_trips_exactly(tmp_path):
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(5, 6, generator=gen)
    state = collections.OrderedDict(
        f32=base,
        tied=base,  # the same tensor object twice: one array object, as in torch
        flat=base.view(30),  # another whole-storage view: must get its own memory
        transposed=base.t(),
        sliced=base[2:, 1:4],  # shares base's storage, with an offset and a row stride of 6
        expanded=torch.randn(3, 1, generator=gen).expand(3, 4),  # stride (1, 0)
        f16=torch.randn(3, 2, generator=gen).half(),
        bf16=torch.randn(4, generator=gen).bfloat16(),
        i64=torch.arange(-3, 5).reshape(2, 4),
        flags=torch.tensor([[True, False], [False, True]]),
        param=torch.nn.Parameter(torch.randn(2, 3, generator=gen)),
        scalar=torch.tensor(2.5),
        empty=torch.zeros(0, 3),
        u16=torch.tensor([0, 7, 65535], dtype=torch.uint16),  # _rebuild_tensor_v3
        f8=torch.tensor([0.5, -2.0, 3.0]).to(torch.float8_e4m3fn),
        conj=torch.tensor([1 + 2j, -3j], dtype=torch.complex64).conj(),  # metadata {"conj": True}
    )
    extra = torch.ones(2)
    extra.note = "attr"  # _rebuild_from_type_v2
    path = tmp_path / "ck.pt"
    torch.save({"model": state, "epoch": 12, "name": "tiny", "t": extra, "size": base.shape}, path)

    obj = load_torch_file(path)
    assert (obj["epoch"], obj["name"], obj["size"]) == (12, "tiny", (5, 6))
    np.testing.assert_array_equal(obj["t"], np.ones(2, np.float32))
    loaded = load_state_dict(path)
    assert list(loaded) == list(state)
    for name, t in state.items():
        _assert_same(loaded[name], _torch_numpy(t))
        assert loaded[name].flags.c_contiguous and loaded[name].flags.writeable
    assert loaded["tied"] is loaded["f32"]
    arrays = [a for name, a in loaded.items() if name != "tied"]
    for k, a in enumerate(arrays):  # distinct tensors never alias, even on a shared storage
        assert not any(np.shares_memory(a, b) for b in arrays[k + 1 :])
    assert loaded["f32"].std() > 0.5  # non-trivial values


@pytest.mark.parity
def test_legacy_torch_format_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "old.pt"
    torch.save({"model": {"w": torch.ones(2)}}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="legacy.*torch>=1.6"):
        load_state_dict(path)


@pytest.mark.parity
def test_sam2_state_dict_round_trips_exactly(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("sam2")
    monkeypatch.syspath_prepend(Path(__file__).parents[1] / "parity")
    import sam2_reference

    model = sam2_reference.build_reference("sam2.1_hiera_t", image_size=256, video=False)
    path = tmp_path / "sam2.pt"
    torch.save({"model": model.state_dict()}, path)
    expected = sam2_reference.state_dict_numpy(model)
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    loaded = load_state_dict(path)
    assert list(loaded) == list(expected)
    for name, value in expected.items():
        assert str(loaded[name].dtype) == str(dtypes[name]).removeprefix("torch.")
        np.testing.assert_array_equal(loaded[name].astype(np.float32), value, err_msg=name)
