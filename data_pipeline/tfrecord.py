"""Writes TFRecord files of `tf.train.Example`s without TensorFlow.

The builder produces millions of records from worker processes; building `tf.train.Example` protos
in Python is where google-research/bert's tool spends much of its time, and importing TensorFlow in
every worker costs seconds and memory. The Example wire format is small and stable, so we encode it
directly: each feature is a packed `Int64List` (varints) or `FloatList` (little-endian float32), and
each record is framed as TFRecord expects (length, masked CRC32C of the length, data, masked CRC32C
of the data). `tests/data_pipeline/test_tfrecord.py` checks every byte against TensorFlow's parser.
"""

import gzip
import struct
from typing import Dict, List

import google_crc32c
import numpy as np

_INT64_LIST = 3  # Feature.int64_list field number
_FLOAT_LIST = 2  # Feature.float_list field number


def encode_examples(columns: Dict[str, np.ndarray], float_keys=()) -> List[bytes]:
    """Serialises N `tf.train.Example`s at once; columns map a feature name to a [N, k] array,
    or, for a variable-length int64 feature, to a list of N 1-D arrays.

    The varint work is vectorised over the whole [N, k] matrix of each feature; only the few
    header bytes per record are assembled in Python.
    """
    rows = None
    for key, matrix in columns.items():
        if isinstance(matrix, list):  # ragged int64 feature: one 1-D array per record
            lengths = np.array([len(r) for r in matrix], dtype=np.int64)
            values = (np.concatenate(matrix).astype(np.int64) if len(matrix)
                      else np.zeros(0, np.int64))
            flat, per_value = encode_varints(values, return_sizes=True)
            bounds = np.concatenate([[0], np.cumsum(per_value)])[np.concatenate([[0], np.cumsum(lengths)])]
            sizes = np.diff(bounds)
            kind = _INT64_LIST
        else:
            matrix = np.asarray(matrix)
            if matrix.ndim != 2:
                raise ValueError("Feature %r must be a [N, k] array or a list of 1-D arrays, got "
                                 "shape %s" % (key, matrix.shape))
            if key in float_keys:
                flat = matrix.astype("<f4").tobytes()
                sizes = np.full(len(matrix), 4 * matrix.shape[1])
                kind = _FLOAT_LIST
            else:
                flat, per_value = encode_varints(matrix.astype(np.int64).ravel(), return_sizes=True)
                sizes = per_value.reshape(matrix.shape).sum(axis=1)
                kind = _INT64_LIST
        ends = np.cumsum(sizes).tolist()
        starts = [0] + ends[:-1]
        name = key.encode("utf-8")
        name_part = b"\x0a" + _varint(len(name)) + name + b"\x12"
        if rows is None:
            rows = [bytearray() for _ in range(len(matrix))]
        if len(set(sizes.tolist())) == 1:  # same packed size in every row: one shared header
            header = _entry_header(name_part, kind, int(sizes[0]))
            for row, a, b in zip(rows, starts, ends):
                row += header
                row += flat[a:b]
            continue
        for row, a, b in zip(rows, starts, ends):
            row += _entry_header(name_part, kind, b - a)
            row += flat[a:b]
    return [b"\x0a" + _varint(len(body)) + bytes(body) for body in rows or []]  # Example.features


def _entry_header(name_part, kind, packed_size):
    """Bytes of a Features map entry up to its packed values (which follow)."""
    value_list = 1 + len(_varint(packed_size)) + packed_size            # {Int64,Float}List.value
    feature = 1 + len(_varint(value_list)) + value_list                 # Feature.{kind}_list
    entry = len(name_part) + len(_varint(feature)) + feature            # map entry: key, value
    return (b"\x0a" + _varint(entry) + name_part + _varint(feature) + bytes(((kind << 3) | 2,))
            + _varint(value_list) + b"\x0a" + _varint(packed_size))


def encode_example(features: Dict[str, np.ndarray], float_keys=()) -> bytes:
    """Serialises one `tf.train.Example` (features in the given order)."""
    return encode_examples({k: np.asarray(v).reshape(1, -1) for k, v in features.items()},
                           float_keys)[0]


def encode_varints(values: np.ndarray, return_sizes=False):
    """Protobuf varint encoding of a non-negative int64 array, vectorised.

    Returns the bytes, and with return_sizes also the byte count of each value.
    """
    if (values < 0).any():
        raise ValueError("Negative values cannot be stored by this encoder: %s" % values[values < 0][:5])
    v = values.astype(np.uint64)
    nbytes = np.ones(v.shape, dtype=np.int64)
    for shift in range(7, 64, 7):
        nbytes += v >= np.uint64(1 << shift)
    width = int(nbytes.max()) if v.size else 1
    # Column j holds the 7-bit group j of every value, with the continuation bit where needed.
    groups = np.stack([(v >> np.uint64(7 * j)) & np.uint64(0x7F) for j in range(width)], axis=1)
    more = np.arange(width)[None, :] < (nbytes[:, None] - 1)
    groups = (groups | (more.astype(np.uint64) << np.uint64(7))).astype(np.uint8)
    data = groups[np.arange(width)[None, :] < nbytes[:, None]].tobytes()
    return (data, nbytes) if return_sizes else data


_VARINT_CACHE = {}


def _varint(n: int) -> bytes:
    if n < 16384:
        cached = _VARINT_CACHE.get(n)
        if cached is None:
            cached = _VARINT_CACHE[n] = _varint_uncached(n)
        return cached
    return _varint_uncached(n)


def _varint_uncached(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _masked_crc(data: bytes) -> bytes:
    crc = google_crc32c.value(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def frame(record: bytes) -> bytes:
    """One TFRecord: uint64 length, masked crc32c(length), data, masked crc32c(data)."""
    length = struct.pack("<Q", len(record))
    return length + _masked_crc(length) + record + _masked_crc(record)


def frame_all(records: List[bytes]) -> bytes:
    return b"".join(frame(r) for r in records)


class RecordFile:
    """Appends framed records to an open binary file, through gzip when asked."""

    def __init__(self, raw_file, compress: bool):
        self._raw = raw_file
        # mtime=0 keeps the gzip header free of timestamps: same input, same bytes.
        self._out = gzip.GzipFile(fileobj=raw_file, mode="wb", mtime=0) if compress else raw_file

    def write(self, framed: bytes):
        self._out.write(framed)

    def close(self):
        if self._out is not self._raw:
            self._out.close()
        self._raw.close()
