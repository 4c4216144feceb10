import gzip

import numpy as np
import tensorflow as tf

from data_pipeline import tfrecord


def test_examples_parse_like_tf_train_example(tmp_path):
    rng = np.random.default_rng(0)
    columns = {"input_ids": rng.integers(0, 2**40, (5, 7)),
               "small": rng.integers(0, 3, (5, 3)),
               "weights": rng.random((5, 4)).astype(np.float32)}
    columns["input_ids"][0, 0] = 0
    records = tfrecord.encode_examples(columns, float_keys={"weights"})
    for i, record in enumerate(records):
        ex = tf.train.Example.FromString(record)
        f = ex.features.feature
        assert list(f["input_ids"].int64_list.value) == columns["input_ids"][i].tolist()
        assert list(f["small"].int64_list.value) == columns["small"][i].tolist()
        np.testing.assert_array_equal(np.array(f["weights"].float_list.value, np.float32),
                                      columns["weights"][i])
        # Byte-identical to TensorFlow's own serialisation of the same Example.
        assert tf.train.Example.FromString(record).SerializeToString(deterministic=True) == \
            ex.SerializeToString(deterministic=True)


def test_framing_is_readable_by_tfrecorddataset_plain_and_gzip(tmp_path):
    records = tfrecord.encode_examples({"x": np.arange(12).reshape(4, 3)})
    plain = tmp_path / "a.tfrecord"
    plain.write_bytes(tfrecord.frame_all(records))
    zipped = tmp_path / "a.tfrecord.gz"
    f = tfrecord.RecordFile(open(zipped, "wb"), compress=True)
    f.write(tfrecord.frame_all(records))
    f.close()
    for path, compression in ((plain, ""), (zipped, "GZIP")):
        got = [r.numpy() for r in tf.data.TFRecordDataset(str(path), compression_type=compression)]
        assert got == records
    assert gzip.decompress(zipped.read_bytes()) == plain.read_bytes()


def test_batch_framing_equals_record_by_record_framing():
    # encode_framed builds every record of a batch with vectorised scatters; it must give the
    # bytes of encoding and framing each record on its own (TensorFlow reads those, above).
    rng = np.random.default_rng(3)
    n = 50
    columns = {"ids": rng.integers(0, 2**33, (n, 9)) * (rng.random((n, 9)) < 0.5),  # 1-5 byte varints
               "flags": rng.integers(0, 2, (n, 4)),
               "ragged": [rng.integers(0, 300, rng.integers(0, 6)) for _ in range(n)],  # empty rows too
               "w": rng.random((n, 2)).astype(np.float32)}
    framed = tfrecord.encode_framed(columns, float_keys={"w"})
    records = tfrecord.encode_examples(columns, float_keys={"w"})
    assert framed == b"".join(tfrecord.frame(r) for r in records)
    for i, record in enumerate(records):
        f = tf.train.Example.FromString(record).features.feature
        assert list(f["ids"].int64_list.value) == columns["ids"][i].tolist()
        assert list(f["ragged"].int64_list.value) == columns["ragged"][i].tolist()
    assert tfrecord.encode_framed({"x": np.zeros((0, 3), np.int64)}) == b""
