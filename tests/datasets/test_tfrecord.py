import os
import struct

import grain
import pytest

from jax_refvos.datasets import tfrecord

_GRAIN_TESTDATA = os.path.join(os.path.dirname(grain.__file__), "_src/python/testdata")


def test_crc32c_check_value():
    assert tfrecord.crc32c(b"123456789") == 0xE3069283  # the CRC-32C catalogue check value


def test_reads_a_tensorflow_written_file_with_crcs_verified():
    path = os.path.join(_GRAIN_TESTDATA, "morris_sequence_first_5.tfrecord")
    got = list(tfrecord.read_records(path, verify=True))
    assert got == [b"1", b"1 1", b"2 1", b"1 2 1 1", b"1 1 1 2 2 1"]
    assert tfrecord.count_records(path) == 5
    with open(path, "rb") as f:  # our framing reproduces TensorFlow's bytes exactly
        assert b"".join(tfrecord.frame(r) for r in got) == f.read()


def test_round_trip_and_grain_reads_our_files(tmp_path):
    path = tmp_path / "x.tfrecord"
    payloads = [b"", b"a", os.urandom(100_000), b"xyz" * 7]
    with tfrecord.TFRecordWriter(path) as w:
        for p in payloads:
            w.write(p)
    assert list(tfrecord.read_records(path)) == payloads
    assert tfrecord.count_records(path) == len(payloads)
    assert list(grain.experimental.TFRecordIterDataset(str(path))) == payloads


def _write(path, payloads):
    with tfrecord.TFRecordWriter(path) as w:
        for p in payloads:
            w.write(p)


def test_corruption_and_truncation_are_detected(tmp_path):
    path = tmp_path / "x.tfrecord"
    _write(path, [b"hello", b"world"])
    data = bytearray(path.read_bytes())
    flipped = tmp_path / "flipped.tfrecord"
    flipped.write_bytes(bytes(data[:13]) + bytes([data[13] ^ 1]) + bytes(data[14:]))
    with pytest.raises(tfrecord.TFRecordError, match=r"record 0 at byte 0: data CRC mismatch"):
        list(tfrecord.read_records(flipped))
    truncated = tmp_path / "truncated.tfrecord"
    truncated.write_bytes(bytes(data[:-3]))
    with pytest.raises(tfrecord.TFRecordError, match=r"record 1 .*truncated record"):
        list(tfrecord.read_records(truncated))
    with pytest.raises(tfrecord.TFRecordError, match="truncated final record"):
        tfrecord.count_records(truncated)
    bogus = tmp_path / "bogus.tfrecord"
    bogus.write_bytes(struct.pack("<Q", 5) + b"\0\0\0\0" + b"hello" + b"\0\0\0\0")
    with pytest.raises(tfrecord.TFRecordError, match="length CRC mismatch"):
        list(tfrecord.read_records(bogus))
    assert list(tfrecord.read_records(bogus, verify=False)) == [b"hello"]
