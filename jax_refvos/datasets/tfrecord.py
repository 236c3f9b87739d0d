"""TFRecord files without TensorFlow: framing, masked CRC32C, a writer and a verifying reader.

A TFRecord file is a sequence of records, each framed as

    uint64 length (LE) | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)

with masked(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8 (mod 2**32) over CRC-32C (Castagnoli).
This is TensorFlow's `tensorflow/core/lib/io/record_writer.cc` format (uncompressed); files written
here are read by `tf.data.TFRecordDataset` and by `grain.experimental.TFRecordIterDataset`.
CRC-32C runs in C through `google_crc32c`.
"""

import os
import struct
from collections.abc import Iterator
from typing import BinaryIO

import google_crc32c

_LEN = struct.Struct("<Q")
_CRC = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8


class TFRecordError(ValueError):
    """A truncated or corrupt TFRecord file (the message says where)."""


def crc32c(data: bytes) -> int:
    return google_crc32c.value(data)


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One record in TFRecord framing."""
    length = _LEN.pack(len(data))
    return b"".join(
        (length, _CRC.pack(masked_crc32c(length)), data, _CRC.pack(masked_crc32c(data)))
    )


class TFRecordWriter:
    """Appends framed records to a binary file object or a path (`with` closes it)."""

    def __init__(self, target: str | os.PathLike | BinaryIO):
        self._own = not hasattr(target, "write")
        self._f = open(target, "wb") if self._own else target  # noqa: SIM115
        self.num_records = 0

    def write(self, data: bytes) -> None:
        self._f.write(frame(data))
        self.num_records += 1

    def close(self) -> None:
        if self._own:
            self._f.close()

    def __enter__(self) -> "TFRecordWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_records(path: str | os.PathLike, *, verify: bool = True) -> Iterator[bytes]:
    """Yields the records of a TFRecord file, checking framing and (by default) both CRCs.

    Raises `TFRecordError` naming the file, the record number and the byte offset.
    """
    with open(path, "rb") as f:
        index = 0
        while True:
            offset = f.tell()
            header = f.read(_LEN.size + _CRC.size)
            if not header:
                return
            where = f"{os.fspath(path)}: record {index} at byte {offset}"
            if len(header) < _LEN.size + _CRC.size:
                raise TFRecordError(f"{where}: truncated length header")
            length_bytes = header[: _LEN.size]
            (length,) = _LEN.unpack(length_bytes)
            (length_crc,) = _CRC.unpack(header[_LEN.size :])
            if verify and masked_crc32c(length_bytes) != length_crc:
                raise TFRecordError(f"{where}: length CRC mismatch (not a TFRecord file?)")
            data = f.read(length)
            footer = f.read(_CRC.size)
            if len(data) < length or len(footer) < _CRC.size:
                raise TFRecordError(f"{where}: truncated record ({length} bytes announced)")
            if verify and masked_crc32c(data) != _CRC.unpack(footer)[0]:
                raise TFRecordError(f"{where}: data CRC mismatch (corrupt record)")
            yield data
            index += 1


def count_records(path: str | os.PathLike) -> int:
    """Number of records, from the length headers only (CRC of the headers is checked)."""
    n = 0
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        while f.tell() < size:
            header = f.read(_LEN.size + _CRC.size)
            if len(header) < _LEN.size + _CRC.size:
                raise TFRecordError(f"{os.fspath(path)}: truncated length header at record {n}")
            if masked_crc32c(header[: _LEN.size]) != _CRC.unpack(header[_LEN.size :])[0]:
                raise TFRecordError(f"{os.fspath(path)}: length CRC mismatch at record {n}")
            (length,) = _LEN.unpack(header[: _LEN.size])
            f.seek(length + _CRC.size, os.SEEK_CUR)
            n += 1
        if f.tell() != size:
            raise TFRecordError(f"{os.fspath(path)}: truncated final record")
    return n
