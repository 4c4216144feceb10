"""Whole-word MLM masking, defined once and implemented twice: NumPy (builder) and TensorFlow (loader).

Both implementations are the same vectorised algorithm over a batch `[batch_size, seq_len]` and draw
their randomness from the same counter-based hash of (seed, epoch, example id, position, stream), so
for equal inputs they return equal outputs (the tests check this bit for bit). The static builder
and the dynamic loader therefore mask by one definition, and a dynamic mask is a pure function of
(seed, epoch, example): reproducible, and fresh each epoch.

The algorithm, per example:
  1. Maskable tokens are the real tokens that are not [CLS]/[SEP]/[PAD]. Words are runs of maskable
     tokens that start at a token flagged in `word_starts` (a WordPiece piece without `##`, a
     SentencePiece piece with `▁`, or a segmenter's word start for Chinese).
  2. budget = min(max_predictions, max(1, round(num_real_tokens * masked_lm_prob))), with Python's
     round-half-to-even, as google-research/bert does.
  3. Words are visited in a random order; a word is taken if it fits in what is left of the budget
     and skipped otherwise (a word is never masked in part). This is google-research/bert's greedy
     rule, computed in `_PASSES` vectorised passes: each pass takes the longest prefix of the
     remaining words that fit; it equals the sequential rule whenever fewer than `_PASSES` words
     are skipped, i.e. nearly always (budgets are small and words short).
  4. Each selected word gets one decision: 80% [MASK], 10% random token, 10% unchanged. Random
     tokens come from `replacement_ids` (no special or reserved token).
  5. Positions are returned sorted, padded with 0 (weights 0.0) to max_predictions.
"""

import dataclasses

import numpy as np

_MIX1, _MIX2 = 0x7FEB352D, 0x846CA68B   # lowbias32 (C. Wellons): a well-mixed 32-bit permutation.
_STREAM_WORD_ORDER, _STREAM_ACTION, _STREAM_RANDOM_TOKEN = 0, 1, 2
# A hash draws from one of four streams (counter * 4 + stream); masking uses three, the build's own
# draws (held-out documents, fractional source weights) the fourth, so neither repeats the other.
STREAM_BUILD = 3
_PASSES = 3


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
    masked_lm_prob: float = 0.15
    max_predictions: int = 20
    mask_token_prob: float = 0.8      # the rest splits evenly between random and unchanged
    random_token_prob: float = 0.1

    def validate(self, seq_len):
        if not 0.0 < self.masked_lm_prob < 1.0:
            raise ValueError("masked_lm_prob must be in (0, 1), got %r" % self.masked_lm_prob)
        if not 1 <= self.max_predictions <= seq_len:
            raise ValueError("max_predictions_per_seq must be in [1, seq_len=%d], got %r"
                             % (seq_len, self.max_predictions))
        if self.mask_token_prob + self.random_token_prob > 1.0 or min(
                self.mask_token_prob, self.random_token_prob) < 0:
            raise ValueError("mask_token_prob + random_token_prob must lie in [0, 1]")


# ----------------------------------------------------------------------------------------- NumPy

def _mix_np(x):
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(_MIX1)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(_MIX2)
    return x ^ (x >> np.uint32(16))


def hash24_np(seed, epoch, example_ids, counters, stream):
    """24 random bits per (example, counter): uint32 [batch, len]. epoch: scalar or [batch]."""
    ex = np.asarray(example_ids, dtype=np.int64)[:, None]
    h = _mix_np(np.full((1, 1), (seed & 0xFFFFFFFF) ^ 0x9E3779B9, dtype=np.uint32))
    h = _mix_np(h ^ (np.asarray(epoch, dtype=np.int64).reshape(-1, 1) & 0xFFFFFFFF).astype(np.uint32))
    h = _mix_np(h ^ (ex & 0xFFFFFFFF).astype(np.uint32))
    h = _mix_np(h ^ (ex >> 32).astype(np.uint32))
    h = _mix_np(h ^ (np.asarray(counters).astype(np.uint32) * np.uint32(4) + np.uint32(stream)))
    return h >> np.uint32(8)


def mask_np(input_ids, word_starts, example_ids, *, seed, epoch, special_ids, replacement_ids,
            config: MaskingConfig):
    """Masks a batch. input_ids, word_starts: int [B, L]; example_ids: int64 [B].

    Returns dict: input_ids [B, L] (masked), masked_lm_positions [B, P], masked_lm_ids [B, P],
    masked_lm_weights float32 [B, P].

    Same results as `mask_tf`, computed in a cheaper order: the passes run on the words' random
    order directly (one sort, no stable argsort), and the action and replacement draws are hashed
    only at the (at most P) selected positions.
    """
    ids = np.asarray(input_ids, dtype=np.int64)
    batch, length = ids.shape
    P = config.max_predictions
    real = ids != special_ids.pad
    maskable = real & (ids != special_ids.cls) & (ids != special_ids.sep)
    starts = (np.asarray(word_starts) != 0) & maskable
    word = np.cumsum(starts, axis=1, dtype=np.int32)                            # [B, L] 1-based
    order_key = np.where(maskable, hash24_np(seed, epoch, example_ids, word, _STREAM_WORD_ORDER),
                         np.uint32(1 << 24)).astype(np.int64)
    # Positions by (key, position): the stable order, from one sort of unique composite keys.
    bits = length.bit_length()
    order = np.sort((order_key << bits) | np.arange(length), axis=1) & ((1 << bits) - 1)
    flat = word + np.arange(batch, dtype=np.int32)[:, None] * (length + 1)
    word_len = np.bincount(flat[maskable], minlength=batch * (length + 1))[flat]  # [B, L]
    s_word = np.take_along_axis(word, order, axis=1)
    s_maskable = np.take_along_axis(maskable, order, axis=1)
    s_word_len = np.take_along_axis(word_len, order, axis=1)
    new_word = s_word[:, 1:] != s_word[:, :-1]
    budget = np.round(real.sum(axis=1).astype(np.float64) * config.masked_lm_prob)
    remaining = np.minimum(P, np.maximum(1, budget)).astype(np.int64)[:, None]
    s_selected = np.zeros_like(s_maskable)
    live = np.arange(batch)  # rows a further pass can change: budget left, and a word taken last
    for p in range(_PASSES):
        these = slice(None) if p == 0 else live
        chosen, left = s_selected[these], remaining[these]
        candidate = s_maskable[these] & ~chosen & (s_word_len[these] <= left)
        running = np.cumsum(candidate, axis=1, dtype=np.int32)
        word_ends = np.ones_like(candidate)
        word_ends[:, :-1] = new_word[these] | ~candidate[:, 1:]
        taken = np.max(np.where(candidate & word_ends & (running <= left), running, 0),
                       axis=1)[:, None]
        s_selected[these] = chosen | (candidate & (running <= taken))
        remaining[these] = left - taken
        live = live[(remaining[these][:, 0] > 0) & (taken[:, 0] > 0)]
        if not len(live):
            break
    selected = np.zeros_like(s_selected)
    np.put_along_axis(selected, order, s_selected, axis=1)

    # Sorted positions: np.nonzero walks row by row, left to right; at most P per row.
    rows, cols = np.nonzero(selected)
    counts = selected.sum(axis=1)
    rank = np.arange(len(rows)) - (np.cumsum(counts) - counts)[rows]
    positions = np.zeros((batch, P), np.int64)
    positions[rows, rank] = cols
    valid = np.arange(P)[None, :] < counts[:, None]
    original = np.where(valid, np.take_along_axis(ids, positions, axis=1), 0)

    at_word = np.take_along_axis(word, positions, axis=1)
    action = hash24_np(seed, epoch, example_ids, at_word, _STREAM_ACTION).astype(np.int64)
    to_mask = action < int(config.mask_token_prob * (1 << 24))
    to_random = ~to_mask & (action < int((config.mask_token_prob + config.random_token_prob)
                                         * (1 << 24)))
    pick = hash24_np(seed, epoch, example_ids, positions, _STREAM_RANDOM_TOKEN).astype(np.int64)
    random_tokens = np.asarray(replacement_ids, dtype=np.int64)[
        (pick * len(replacement_ids)) >> 24]
    new_ids = np.where(to_mask, special_ids.mask, np.where(to_random, random_tokens, original))
    masked = ids.copy()
    masked[rows, cols] = new_ids[valid]
    return {
        "input_ids": masked,
        "masked_lm_positions": positions,
        "masked_lm_ids": original,
        "masked_lm_weights": valid.astype(np.float32),
    }


# ------------------------------------------------------------------------------------ TensorFlow

def _mix_tf(tf, x):
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))
    x = x * tf.constant(_MIX1, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(15, tf.uint32)))
    x = x * tf.constant(_MIX2, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))


def hash24_tf(seed, epoch, example_ids, counters, stream):
    """TensorFlow twin of `hash24_np`."""
    import tensorflow as tf

    def u32(x):
        return tf.cast(tf.bitwise.bitwise_and(tf.cast(x, tf.int64), 0xFFFFFFFF), tf.uint32)

    ex = tf.cast(example_ids, tf.int64)[:, None]
    h = _mix_tf(tf, tf.fill([1, 1], tf.constant((seed & 0xFFFFFFFF) ^ 0x9E3779B9, tf.uint32)))
    h = _mix_tf(tf, tf.bitwise.bitwise_xor(h, tf.reshape(u32(epoch), [-1, 1])))
    h = _mix_tf(tf, tf.bitwise.bitwise_xor(h, u32(ex)))
    h = _mix_tf(tf, tf.bitwise.bitwise_xor(h, u32(tf.bitwise.right_shift(ex, 32))))
    c = u32(counters) * tf.constant(4, tf.uint32) + tf.constant(stream, tf.uint32)
    h = _mix_tf(tf, tf.bitwise.bitwise_xor(h, c))
    return tf.bitwise.right_shift(h, tf.constant(8, tf.uint32))


def mask_tf(input_ids, word_starts, example_ids, *, seed, epoch, special_ids, replacement_ids,
            config: MaskingConfig):
    """TensorFlow twin of `mask_np`, for use inside tf.data (same arguments, same outputs)."""
    import tensorflow as tf

    ids = tf.cast(input_ids, tf.int64)
    batch, length = tf.shape(ids)[0], tf.shape(ids)[1]
    P = config.max_predictions
    real = tf.not_equal(ids, special_ids.pad)
    maskable = real & tf.not_equal(ids, special_ids.cls) & tf.not_equal(ids, special_ids.sep)
    starts = tf.not_equal(tf.cast(word_starts, tf.int64), 0) & maskable
    word = tf.cumsum(tf.cast(starts, tf.int64), axis=1)
    order_key = tf.where(maskable, tf.cast(hash24_tf(seed, epoch, example_ids, word,
                                                     _STREAM_WORD_ORDER), tf.int64), 1 << 24)
    order = tf.argsort(order_key, axis=1, stable=True)
    inverse = tf.argsort(order, axis=1)
    s_word = tf.gather(word, order, batch_dims=1)
    flat = word + tf.range(tf.cast(batch, tf.int64))[:, None] * tf.cast(length + 1, tf.int64)
    counts = tf.math.unsorted_segment_sum(tf.cast(maskable, tf.int64), flat, batch * (length + 1))
    word_len = tf.gather(counts, flat)
    num_real = tf.cast(tf.reduce_sum(tf.cast(real, tf.int64), axis=1), tf.float64)
    budget = tf.round(num_real * config.masked_lm_prob)          # round half to even, like Python
    budget = tf.minimum(tf.constant(P, tf.float64), tf.maximum(tf.constant(1.0, tf.float64), budget))
    remaining = tf.cast(budget, tf.int64)[:, None]
    selected = tf.zeros_like(maskable)
    for _ in range(_PASSES):
        candidate = maskable & ~selected & (word_len <= remaining)
        s_candidate = tf.gather(candidate, order, batch_dims=1)
        running = tf.cumsum(tf.cast(s_candidate, tf.int64), axis=1)
        word_ends = tf.concat([tf.not_equal(s_word[:, 1:], s_word[:, :-1]) | ~s_candidate[:, 1:],
                               tf.ones([batch, 1], tf.bool)], axis=1)
        taken = tf.reduce_max(tf.where(s_candidate & word_ends & (running <= remaining),
                                       running, 0), axis=1)[:, None]
        selected |= tf.gather(s_candidate & (running <= taken), inverse, batch_dims=1)
        remaining = remaining - taken

    action = tf.cast(hash24_tf(seed, epoch, example_ids, word, _STREAM_ACTION), tf.int64)
    to_mask = action < int(config.mask_token_prob * (1 << 24))
    to_random = ~to_mask & (action < int((config.mask_token_prob + config.random_token_prob)
                                         * (1 << 24)))
    pos = tf.broadcast_to(tf.range(length, dtype=tf.int64)[None, :], [batch, length])
    pick = tf.cast(hash24_tf(seed, epoch, example_ids, pos, _STREAM_RANDOM_TOKEN), tf.int64)
    candidates = tf.constant(np.asarray(replacement_ids, dtype=np.int64))
    random_tokens = tf.gather(candidates, tf.bitwise.right_shift(pick * len(replacement_ids), 24))
    masked = tf.where(selected & to_mask, tf.constant(special_ids.mask, tf.int64),
                      tf.where(selected & to_random, random_tokens, ids))

    pos_key = tf.where(selected, pos, tf.cast(length, tf.int64) + pos)
    positions = -tf.math.top_k(-pos_key, k=P, sorted=True).values   # P smallest, ascending
    valid = positions < tf.cast(length, tf.int64)
    positions = tf.where(valid, positions, 0)
    return {
        "input_ids": masked,
        "masked_lm_positions": positions,
        "masked_lm_ids": tf.where(valid, tf.gather(ids, positions, batch_dims=1), 0),
        "masked_lm_weights": tf.cast(valid, tf.float32),
    }
