"""tf.data loader for the builder's shards (and for google-research/bert's own records).

    manifest = Manifest.load("data/wiki_128")
    manifest.check(vocab_size=30522, seq_len=128, task="mlm")
    ds = make_dataset(manifest, batch_size=256, seed=1, epoch=0)

Pipeline: files (split per input pipeline for multi-host runs) -> records numbered by (file, index)
-> interleave -> shuffle -> repeat -> batch (drop_remainder) -> vectorised parse -> in-graph dynamic
masking (`masking.mask_tf`, a pure function of seed, epoch and record id) -> prefetch. Parsing and
masking run on whole batches, not per example, which is what makes 20k+ examples/s on two cores.

Every MLM batch is a dict: input_ids, input_mask, segment_ids [B, L], masked_lm_positions,
masked_lm_ids, masked_lm_weights [B, P], next_sentence_labels [B, 1].

UniLM (`seq2seq`), SimBERT (`groups`) and causal-LM (`lm`) batches: input_ids, input_mask,
segment_ids [B, L] int32 and target_mask [B, L] float32, where target_mask[b, i] = 1 when token i
is a prediction target, predicted from position i - 1 (UniLM/SimBERT: the target part and its
closing [SEP]; LM: every real token but the first). The attention mask is the model's business
(UniLM: from segment_ids; LM: causal).

SimBERT: a record holds a synonym group; each epoch the loader draws two different members a, b
of every group (a pure function of seed, epoch and record) and emits `[CLS] a [SEP] b [SEP]` and
`[CLS] b [SEP] a [SEP]` as rows 2k and 2k+1 of the batch. Shuffling happens on groups, before
batching, so partners stay adjacent; batch sizes must be even (`check_pair_batching`).
"""

from typing import Optional

from data_pipeline import masking, schema
from data_pipeline.manifest import Manifest, ManifestError

_FILE_BITS = 32


def check_pair_batching(global_batch_size: int, num_replicas: int = 1, micro_batches: int = 1):
    """SimBERT rows come in partner pairs: every replica's micro-batch must hold whole pairs."""
    per_replica, rest = divmod(global_batch_size, num_replicas * micro_batches)
    if rest or per_replica % 2:
        raise ManifestError(
            "SimBERT needs partner rows (2k, 2k+1) on the same replica: the global batch %d split "
            "over %d replica(s) x %d micro-batch(es) gives %s rows each, which must be an even "
            "whole number. Pick a global batch divisible by %d."
            % (global_batch_size, num_replicas, micro_batches,
               "%g" % (global_batch_size / (num_replicas * micro_batches)),
               2 * num_replicas * micro_batches))


def pipeline_files(num_files: int, num_pipelines: int, pipeline_id: int) -> int:
    """How many of `num_files` files input pipeline `pipeline_id` of `num_pipelines` reads:
    `Dataset.shard` gives files id, id + n, id + 2n, ... so some pipelines get one fewer."""
    return len(range(pipeline_id, num_files, num_pipelines))


def make_dataset(data_dir_or_manifest, batch_size: int, split: str = "train", seed: int = 0,
                 epoch=0, training: bool = True, shuffle_buffer: int = 10000,
                 input_context=None, masked_lm_prob: Optional[float] = None,
                 max_predictions: Optional[int] = None, cycle_length: int = 8,
                 drop_remainder: Optional[bool] = None):
    """The batched dataset the trainer consumes.

    Args:
      data_dir_or_manifest: a built directory, or a `Manifest` (e.g. `Manifest.google(...)`).
      batch_size: per-pipeline batch size (the global batch divided by the input pipelines).
      epoch: the first epoch (an int or a scalar int64 tensor). The dynamic mask of a record is a
        function of (seed, its epoch, its file and index); with training=True the stream repeats
        and each pass over the files is the next epoch, so every epoch draws fresh masks.
      training: shuffle and repeat; otherwise one deterministic pass in file order.
      input_context: a `tf.distribute.InputContext`; files are split across input pipelines.
      masked_lm_prob, max_predictions: override the manifest's masking settings (dynamic only).
      drop_remainder: drop a last partial batch (default: when training).

    The order of records is a function of the seed (and the file list) only, so a run resumed
    from a checkpointed iterator sees exactly the batches an uninterrupted run would.
    """
    import tensorflow as tf

    m = (data_dir_or_manifest if isinstance(data_dir_or_manifest, Manifest)
         else Manifest.load(data_dir_or_manifest))
    files = m.paths(split)
    pipelines, pipeline_id = 1, 0
    if input_context is not None and input_context.num_input_pipelines > 1:
        pipelines, pipeline_id = input_context.num_input_pipelines, input_context.input_pipeline_id
        if len(files) < pipelines:
            raise ManifestError("%d files cannot feed %d input pipelines; rebuild with "
                                "--num_shards >= %d." % (len(files), pipelines, pipelines))
    groups = m.record_format == schema.GROUPS
    if groups:
        check_pair_batching(batch_size)
    compression = m.compression or ""
    index = file_epochs(files, seed, epoch, training, pipelines, pipeline_id)

    def numbered_records(path, file_index, record_epoch):
        records = tf.data.TFRecordDataset(path, compression_type=compression,
                                          buffer_size=1 << 20).enumerate()   # 1 MiB reads
        return records.map(lambda i, r: (record_epoch, file_index * (1 << _FILE_BITS) + i, r))

    ds = index.interleave(numbered_records, cycle_length=cycle_length if training else 1,
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size // 2 if groups else batch_size,
                  drop_remainder=training if drop_remainder is None else drop_remainder)
    ds = ds.map(_batch_parser(m, seed, masked_lm_prob, max_predictions),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def file_epochs(files, seed, epoch, training, pipelines=1, pipeline_id=0):
    """(path, file index, epoch) of every file this input pipeline reads, in reading order.

    `Dataset.shard` gives the pipeline files id, id + n, ...; with training the stream repeats,
    reshuffled each pass, and the k-th file read belongs to epoch first + k // (this pipeline's
    own file count): every pass over its files is the next epoch, so it draws fresh masks."""
    import tensorflow as tf

    index = tf.data.Dataset.from_tensor_slices((tf.constant(files), tf.range(len(files), dtype=tf.int64)))
    if pipelines > 1:
        index = index.shard(pipelines, pipeline_id)
    if training:
        index = index.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()
    n_files = tf.constant(pipeline_files(len(files), pipelines, pipeline_id), tf.int64)
    first = tf.cast(epoch, tf.int64)
    return index.enumerate().map(lambda k, item: (item[0], item[1], first + k // n_files))


def _batch_parser(m: Manifest, seed, masked_lm_prob, max_predictions):
    import tensorflow as tf

    spec = schema.parse_spec(m.features)
    if m.record_format == schema.GOOGLE:
        def parse_static(epochs, ids, records):
            ex = tf.io.parse_example(records, spec)
            return {k: (v if v.dtype == tf.float32 else tf.cast(v, tf.int32)) for k, v in ex.items()}
        return parse_static

    special = m.special_ids
    if m.record_format in (schema.SEQ2SEQ, schema.LM):
        return _sequence_parser(m, spec, special)
    if m.record_format == schema.GROUPS:
        return _pair_parser(m, spec, special, seed)
    replacement = list(m.vocab.random_replacement_ids)
    config = masking.MaskingConfig(
        masked_lm_prob=masked_lm_prob or m.masked_lm_prob,
        max_predictions=max_predictions or m.max_predictions_per_seq)
    config.validate(m.seq_len)
    pairs = "segment_ids" in spec

    def parse_dynamic(epochs, ids, records):
        ex = tf.io.parse_example(records, spec)
        masked = masking.mask_tf(ex["input_ids"], ex["word_starts"], ids, seed=seed,
                                 epoch=epochs, special_ids=special,
                                 replacement_ids=replacement, config=config)
        input_mask = tf.not_equal(ex["input_ids"], special.pad)
        batch = {
            "input_ids": tf.cast(masked["input_ids"], tf.int32),
            "input_mask": tf.cast(input_mask, tf.int32),
            "segment_ids": (tf.cast(ex["segment_ids"], tf.int32) if pairs
                            else tf.zeros_like(input_mask, tf.int32)),
            "masked_lm_positions": tf.cast(masked["masked_lm_positions"], tf.int32),
            "masked_lm_ids": tf.cast(masked["masked_lm_ids"], tf.int32),
            "masked_lm_weights": masked["masked_lm_weights"],
            "next_sentence_labels": (tf.cast(ex["next_sentence_labels"], tf.int32) if pairs
                                     else tf.zeros_like(input_mask[:, :1], tf.int32)),
        }
        return batch
    return parse_dynamic


def _sequence_batch(tf, input_ids, segment_ids, special, causal):
    real = tf.not_equal(input_ids, special.pad)
    if causal:
        target = tf.logical_and(real, tf.range(tf.shape(input_ids)[1])[None, :] > 0)
    else:
        target = tf.logical_and(real, tf.equal(segment_ids, schema.TARGET_SEGMENT))
    return {"input_ids": tf.cast(input_ids, tf.int32), "input_mask": tf.cast(real, tf.int32),
            "segment_ids": tf.cast(segment_ids, tf.int32), "target_mask": tf.cast(target, tf.float32)}


def _sequence_parser(m, spec, special):
    import tensorflow as tf

    causal = m.record_format == schema.LM

    def parse(epochs, ids, records):
        ex = tf.io.parse_example(records, spec)
        segments = ex["segment_ids"] if not causal else tf.zeros_like(ex["input_ids"])
        return _sequence_batch(tf, ex["input_ids"], segments, special, causal)
    return parse


def _pair_parser(m, spec, special, seed):
    """Draws a pair of distinct members per group and epoch; emits both orders as adjacent rows."""
    import tensorflow as tf

    L = m.seq_len

    def parse(epochs, ids, records):
        ex = tf.io.parse_example(records, spec)
        flat = ex["member_ids"].values
        row_start = ex["member_ids"].row_starts()                       # [G]
        lengths = ex["member_lengths"].to_tensor()                      # [G, M], 0-padded
        count = ex["member_lengths"].row_lengths()                      # [G] members per group
        offsets = tf.cumsum(lengths, axis=1, exclusive=True)
        h = tf.cast(masking.hash24_tf(seed, epochs, ids, [[0, 1]], 3), tf.int64)  # [G, 2]
        first = h[:, 0] % count
        second = (first + 1 + h[:, 1] % (count - 1)) % count           # never equal to first

        def member(k):
            return (row_start + tf.gather(offsets, k, batch_dims=1), tf.gather(lengths, k, batch_dims=1))

        a, b = member(first), member(second)
        rows_ab = _pair_rows(tf, flat, a, b, L, special)
        rows_ba = _pair_rows(tf, flat, b, a, L, special)
        input_ids = tf.reshape(tf.stack([rows_ab[0], rows_ba[0]], axis=1), [-1, L])
        segments = tf.reshape(tf.stack([rows_ab[1], rows_ba[1]], axis=1), [-1, L])
        return _sequence_batch(tf, input_ids, segments, special, causal=False)
    return parse


def _pair_rows(tf, flat, a, b, L, special):
    """[CLS] a [SEP] b [SEP] [PAD]...: ids and segment ids [G, L] (`schema.unilm_row`'s layout, in
    TensorFlow). a, b: (start in flat, length).

    When a + b exceed the L - 3 text positions the longer one loses its tail first (ties: a), as
    bert4keras's truncate_sequences does: a keeps min(len_a, max(budget - len_b, budget // 2)).
    """
    budget = L - 3
    (sa, la), (sb, lb) = a, b
    ta = tf.minimum(la, tf.maximum(budget - lb, budget // 2))
    tb = tf.minimum(lb, budget - ta)
    p = tf.range(L, dtype=tf.int64)[None, :]
    ta, tb, sa, sb = ta[:, None], tb[:, None], sa[:, None], sb[:, None]
    last = tf.cast(tf.size(flat), tf.int64) - 1
    from_a = tf.gather(flat, tf.clip_by_value(sa + p - 1, 0, last))
    from_b = tf.gather(flat, tf.clip_by_value(sb + p - ta - 2, 0, last))
    sep_a, end_b = ta + 1, ta + tb + 2
    ids = tf.where(p == 0, tf.cast(special.cls, tf.int64),
          tf.where(p < sep_a, from_a,
          tf.where(p == sep_a, tf.cast(special.sep, tf.int64),
          tf.where(p < end_b, from_b,
          tf.where(p == end_b, tf.cast(special.sep, tf.int64), tf.cast(special.pad, tf.int64))))))
    segments = tf.where(tf.logical_and(p > sep_a, p <= end_b), tf.constant(schema.TARGET_SEGMENT, tf.int64),
                        tf.constant(schema.SOURCE_SEGMENT, tf.int64))
    return ids, segments
