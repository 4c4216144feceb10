"""The TFRecord feature layouts, defined once for the writer (builder) and the reader (loader).

`google`: google-research/bert's static-mask layout (docs/FORMATS.md §1), readable by its
  run_pretraining.py and by TF Model Garden unchanged. Padding value 0.
`dynamic`: token ids plus word-start flags; the loader draws the mask each epoch. Padding with the
  vocabulary's [PAD] id (the attention mask is `input_ids != pad`). `segment_ids` and
  `next_sentence_labels` exist only for sentence-pair layouts (NSP/SOP).
`seq2seq` (UniLM): `[CLS] source [SEP] target [SEP]` padded with [PAD]; segment 0 source, 1 target
  (`unilm_row`).
`lm` (causal LM): packed token streams, documents separated by [SEP], padded with [PAD].
`groups` (SimBERT): the distinct members of a synonym group, without special tokens, concatenated
  in `member_ids` with their lengths in `member_lengths` (variable-length features); the loader
  draws a pair per group and epoch.

Rows are padded by `sequence_padding`, here and wherever batches are made (downstream too).
"""

import dataclasses
from typing import List, Optional

import numpy as np

GOOGLE = "google"
DYNAMIC = "dynamic"
SEQ2SEQ = "seq2seq"
LM = "lm"
GROUPS = "groups"
FORMATS = (GOOGLE, DYNAMIC, SEQ2SEQ, LM, GROUPS)


@dataclasses.dataclass(frozen=True)
class Feature:
    name: str
    dtype: str      # "int64" | "float32"
    length: Optional[int]  # None: variable length

    def as_dict(self):
        return dataclasses.asdict(self)


def features(record_format: str, seq_len: int, max_predictions: int = 0,
             pairs: bool = False) -> List[Feature]:
    if record_format == GOOGLE:
        return [Feature("input_ids", "int64", seq_len),
                Feature("input_mask", "int64", seq_len),
                Feature("segment_ids", "int64", seq_len),
                Feature("masked_lm_positions", "int64", max_predictions),
                Feature("masked_lm_ids", "int64", max_predictions),
                Feature("masked_lm_weights", "float32", max_predictions),
                Feature("next_sentence_labels", "int64", 1)]
    if record_format == DYNAMIC:
        out = [Feature("input_ids", "int64", seq_len), Feature("word_starts", "int64", seq_len)]
        if pairs:
            out += [Feature("segment_ids", "int64", seq_len), Feature("next_sentence_labels", "int64", 1)]
        return out
    if record_format == SEQ2SEQ:
        return [Feature("input_ids", "int64", seq_len), Feature("segment_ids", "int64", seq_len)]
    if record_format == LM:
        return [Feature("input_ids", "int64", seq_len)]
    if record_format == GROUPS:
        return [Feature("member_ids", "int64", None), Feature("member_lengths", "int64", None)]
    raise ValueError("Unknown record format %r (expected one of %s)" % (record_format, FORMATS))


# The UniLM row, defined once: the data build writes it (tasks), fine-tuning makes it
# (downstream.seq2seq) and decoding continues it (downstream.generation: generated tokens take
# TARGET_SEGMENT). The attention mask follows from the segment ids alone (pretrain.modeling.
# attention_bias, "unilm"): with idx = cumsum(segment_ids), token i sees token j iff
# idx[j] <= idx[i], so the source part sees itself and a target token sees the source and the
# target up to itself. SimBERT's pair rows ([CLS] a [SEP] b [SEP], loader) are laid out the same.
SOURCE_SEGMENT = 0      # [CLS] source [SEP]
TARGET_SEGMENT = 1      # target [SEP]: the tokens predicted


def unilm_row(source, target, cls_id: int, sep_id: int):
    """(token ids, segment ids) int64 [len(source) + len(target) + 3] of `[CLS] source [SEP]
    target [SEP]`, from the texts' token ids (without special tokens)."""
    ids = np.concatenate([[cls_id], source, [sep_id], target, [sep_id]]).astype(np.int64)
    segments = np.concatenate([np.full(len(source) + 2, SOURCE_SEGMENT, np.int64),
                               np.full(len(target) + 1, TARGET_SEGMENT, np.int64)])
    return ids, segments


def sequence_padding(sequences, length: Optional[int] = None, value: int = 0,
                     dtype=np.int32) -> np.ndarray:
    """Pads (or cuts) lists of ids to one length: [len(sequences), length], `length` defaulting to
    the longest. (bert4keras's name and behaviour; `downstream.sequence_padding` is this one.)"""
    length = length or max(len(s) for s in sequences)
    out = np.full((len(sequences), length), value, dtype=dtype)
    for row, s in zip(out, sequences):
        row[:min(len(s), length)] = s[:length]
    return out


def from_manifest(entries) -> List[Feature]:
    return [Feature(**e) for e in entries]


def parse_spec(feature_list: List[Feature]):
    """The `tf.io.parse_example` spec for these features."""
    import tensorflow as tf

    dtypes = {"int64": tf.int64, "float32": tf.float32}
    return {f.name: (tf.io.RaggedFeature(dtypes[f.dtype], row_splits_dtype=tf.int64) if f.length is None
                     else tf.io.FixedLenFeature([f.length], dtypes[f.dtype])) for f in feature_list}


def float_keys(feature_list: List[Feature]):
    return {f.name for f in feature_list if f.dtype == "float32"}
