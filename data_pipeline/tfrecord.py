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

    Values are encoded with NumPy over whole columns. Runs of features whose encoded size is the
    same in every row (masks, segment ids, float weights, small positions) are laid out as one
    [N, bytes] block; each record is then one `bytes.join` of a few slices.
    """
    pieces, sizes = [], []  # per part: one bytes object per row; and the rows' byte counts
    block, n = [], None     # consecutive fixed-size features, waiting to be merged
    for key, matrix in columns.items():
        values, packed, kind = _packed_values(key, matrix, key in float_keys)
        n = len(packed)
        name = key.encode("utf-8")
        name_part = b"\x0a" + _varint(len(name)) + name + b"\x12"
        if n and (packed == packed[0]).all():  # fixed size: header and values as an [N, k] block
            header = np.frombuffer(_entry_header(name_part, kind, int(packed[0])), np.uint8)
            block += [np.broadcast_to(header, (n, len(header))), values.reshape(n, -1)]
            continue
        _flush_block(block, pieces, sizes)
        block = []
        headers = {}
        for k in np.unique(packed).tolist():
            headers[k] = _entry_header(name_part, kind, k)
        pieces.append([headers[k] for k in packed.tolist()])
        sizes.append(np.array([len(h) for h in pieces[-1]], np.int64))
        pieces.append(_split_rows(values.tobytes(), packed))
        sizes.append(packed)
    _flush_block(block, pieces, sizes)
    if not n:
        return []
    body = np.sum(sizes, axis=0).tolist()
    return [b"\x0a" + _varint(size) + b"".join(row) for size, row in zip(body, zip(*pieces))]


def encode_framed(columns: Dict[str, np.ndarray], float_keys=()) -> bytes:
    """The same N Examples framed as TFRecords one after the other: the bytes a shard receives."""
    return frame_all(encode_examples(columns, float_keys))


def _flush_block(block, pieces, sizes):
    if block:
        rows = np.concatenate(block, axis=1)
        width = rows.shape[1]
        data = np.ascontiguousarray(rows).tobytes()
        pieces.append([data[i:i + width] for i in range(0, len(data), width)])
        sizes.append(np.full(len(rows), width, np.int64))


def _split_rows(data, sizes):
    bounds = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    return [data[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _packed_values(key, matrix, is_float):
    """(packed bytes of every row back to back as uint8, bytes per row, list kind)."""
    if isinstance(matrix, list):  # ragged int64 feature: one 1-D array per record
        lengths = np.array([len(r) for r in matrix], dtype=np.int64)
        values = (np.concatenate(matrix).astype(np.int64) if len(matrix) else np.zeros(0, np.int64))
        flat, per_value = _varint_array(values)
        bounds = np.concatenate([[0], np.cumsum(per_value)])[np.concatenate([[0], np.cumsum(lengths)])]
        return flat, np.diff(bounds), _INT64_LIST
    matrix = np.asarray(matrix)
    if matrix.ndim != 2:
        raise ValueError("Feature %r must be a [N, k] array or a list of 1-D arrays, got shape %s"
                         % (key, matrix.shape))
    if is_float:
        flat = np.ascontiguousarray(matrix, dtype="<f4").reshape(-1).view(np.uint8)
        return flat, np.full(len(matrix), 4 * matrix.shape[1], np.int64), _FLOAT_LIST
    flat, per_value = _varint_array(matrix.astype(np.int64).ravel())
    return flat, per_value.reshape(matrix.shape).sum(axis=1), _INT64_LIST


def _entry_header(name_part, kind, packed_size):
    """Bytes of a Features map entry up to its packed values (which follow)."""
    value_list = 1 + len(_varint(packed_size)) + packed_size            # {Int64,Float}List.value
    feature = 1 + len(_varint(value_list)) + value_list                 # Feature.{kind}_list
    entry = len(name_part) + len(_varint(feature)) + feature            # map entry: key, value
    return (b"\x0a" + _varint(entry) + name_part + _varint(feature) + bytes(((kind << 3) | 2,))
            + _varint(value_list) + b"\x0a" + _varint(packed_size))


def _varint_array(values):
    """(uint8 varint bytes of every value back to back, int64 byte count of each value)."""
    values = np.asarray(values)
    if values.size == 0:
        return np.zeros(0, np.uint8), np.zeros(values.shape, np.int64)
    if values.min() < 0:
        raise ValueError("Negative values cannot be stored by this encoder: %s" % values[values < 0][:5])
    width = max(1, (int(values.max()).bit_length() + 6) // 7)
    if width == 1:  # every value below 128: the bytes are the values
        return values.astype(np.uint8), np.ones(values.shape, np.int64)
    v = values.astype(np.uint32 if width <= 4 else np.uint64)
    nbytes = np.ones(v.shape, dtype=np.int64)
    for j in range(1, width):
        nbytes += v >= (1 << (7 * j))
    # Column j holds the 7-bit group j of every value, with the continuation bit where needed.
    groups = np.empty(v.shape + (width,), np.uint8)
    for j in range(width):
        groups[..., j] = (v >> v.dtype.type(7 * j)) & v.dtype.type(0x7F)
        groups[..., j] |= (nbytes > j + 1).view(np.uint8) << np.uint8(7)
    return groups[np.arange(width) < nbytes[..., None]], nbytes


_VARINT_CACHE = {}


def _varint(n: int) -> bytes:
    if n < 1 << 14:   # the varints of one or two bytes, the sizes that recur: cached
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
    return ((((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF).to_bytes(4, "little")


_PREFIXES = {}


def _prefix(size: int) -> bytes:
    """uint64 length and its masked CRC: the 12 bytes before a record of `size` bytes."""
    prefix = _PREFIXES.get(size)
    if prefix is None:
        length = struct.pack("<Q", size)
        prefix = length + _masked_crc(length)
        if len(_PREFIXES) < 1 << 16:   # distinct record sizes kept (a few MB at most)
            _PREFIXES[size] = prefix
    return prefix


def frame(record: bytes) -> bytes:
    """One TFRecord: uint64 length, masked crc32c(length), data, masked crc32c(data)."""
    return _prefix(len(record)) + record + _masked_crc(record)


def frame_all(records: List[bytes]) -> bytes:
    parts = []
    for record in records:
        parts += (_prefix(len(record)), record, _masked_crc(record))
    return b"".join(parts)


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
