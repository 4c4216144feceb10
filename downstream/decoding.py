"""The search loops behind `downstream.generation`, as TensorFlow graphs: greedy, sampling, beam.

Rows come in groups: G rows (the beams or samples) per input, R = B * G rows in all. A loop holds
the next-token logits [R, V] of every row and, each step, picks tokens, records them and asks a
*stepper* for the next logits. Two steppers give the same distributions:

  * `CachedStepper` encodes the prefix once (`BertPretrainingModel.prefill`, the application's
    mask) and then runs one token per row through `BertPretrainingModel.extend`, which attends to
    the prefix's keys/values (kept once per input) and to the generated tokens' (preallocated at
    [R, heads, max_len, head_size] per block, written in place of zeros slot by slot);
  * `RecomputeStepper` re-runs the whole model on prefix + generated tokens every step (what
    bert4keras's AutoRegressiveDecoder does), for reference and for the benchmark.

Everything runs inside one `tf.while_loop` of a `tf.function` whose inputs have unknown batch and
length dimensions, so nothing is traced again per token, per batch or per source length.

Prefix layout: right-padded ids and segment ids [B, P] with real lengths [B]; the generated token s
of a row sits at position length + s with segment `generated_segment` (UniLM: 1, LM: 0), which
under the training masks sees every real prefix token and the generated tokens before it.
"""

import tensorflow as tf

from pretrain.modeling import MASKED_LOGIT, attention_bias

# The score of a token or hypothesis that must never be chosen: a true -inf (not MASKED_LOGIT),
# because scores are summed along a hypothesis and compared with it (`top > NEG_INF`), and a
# finite value would come back as an ordinary, if very low, score.
NEG_INF = float("-inf")


class CachedStepper:
    """Next-token logits from a key/value cache (see the module docstring)."""

    def __init__(self, bert, kind, generated_segment):
        self.bert, self.kind, self.generated_segment = bert, kind, generated_segment

    def start(self, ids, segments, lengths, group, max_len):
        """(logits [R, V] after each prefix, loop state)."""
        real = tf.sequence_mask(lengths, tf.shape(ids)[1])
        hidden, self.prefix = self.bert.prefill(ids, segments, attention_bias(real, segments, self.kind))
        self.prefix_bias = tf.repeat(tf.where(real, 0.0, MASKED_LOGIT), group, axis=0)[:, None, None, :]
        self.positions = tf.repeat(lengths, group)                                # [R]
        last = tf.gather(hidden, lengths - 1, batch_dims=1)                     # [B, H]
        logits = tf.repeat(self.bert.mlm_logits(last), group, axis=0)           # [R, V]
        c = self.bert.config
        heads = c.num_attention_heads
        shape = [tf.shape(logits)[0], heads, max_len, c.hidden_size // heads]
        zeros = tf.zeros(shape, self.bert.compute_dtype)
        return logits, [(zeros, zeros) for _ in self.bert.blocks]

    def step(self, state, tokens, t):
        """Feeds generated token t of every row ([R]); returns (logits for token t + 1, state)."""
        segments = tf.fill(tf.shape(tokens), self.generated_segment)
        hidden, state = self.bert.extend(tokens, segments, self.positions + t, self.prefix,
                                         self.prefix_bias, state, t)
        return self.bert.mlm_logits(hidden), state

    @staticmethod
    def reorder(state, rows):
        return [(tf.gather(k, rows), tf.gather(v, rows)) for k, v in state]


class RecomputeStepper:
    """Next-token logits from the whole sequence, recomputed every step."""

    def __init__(self, bert, kind, generated_segment):
        self.bert, self.kind, self.generated_segment = bert, kind, generated_segment

    def start(self, ids, segments, lengths, group, max_len):
        self.lengths = tf.repeat(lengths, group)                                # [R]
        pad = [[0, 0], [0, max_len]]
        state = (tf.pad(tf.repeat(ids, group, axis=0), pad),                    # [R, P + T]
                 tf.pad(tf.repeat(segments, group, axis=0), pad))
        return self._logits(state, self.lengths, tf.reduce_max(lengths)), state

    def step(self, state, tokens, t):
        ids, segments = state
        at = tf.one_hot(self.lengths + t, tf.shape(ids)[1], dtype=tf.int32)    # [R, P + T]
        ids = ids + at * tokens[:, None]
        segments = segments + at * self.generated_segment
        width = tf.reduce_max(self.lengths) + t + 1                             # the longest row
        state = (ids, segments)
        return self._logits(state, self.lengths + t + 1, width), state

    def _logits(self, state, lengths, width):
        ids, segments = (x[:, :width] for x in state)
        bias = attention_bias(tf.sequence_mask(lengths, width), segments, self.kind)
        hidden, _ = self.bert(ids, segments, bias)
        return self.bert.mlm_logits(tf.gather(hidden, lengths - 1, batch_dims=1))

    @staticmethod
    def reorder(state, rows):
        return tuple(tf.gather(x, rows) for x in state)


def _scores(logits, t, ends, settings):
    """Log-probabilities [R, V] at temperature; with settings["bar_end"] (a Python bool: the ops
    cost time every step), the end token is barred where it would end a sequence before
    `min_len` tokens."""
    scores = tf.nn.log_softmax(logits / settings["temperature"], axis=-1)
    if not settings["bar_end"]:
        return scores
    would_end = (t + 1 < settings["min_len"]) & (ends + 1 >= settings["min_ends"])      # [R]
    bar = would_end[:, None] & tf.equal(tf.range(tf.shape(scores)[1]), settings["end_id"])[None]
    return tf.where(bar, NEG_INF, scores)


def _write(buffer, column, values):
    """buffer [R, T] with the column `column` ([1, T] one-hot) set to values [R] (the column
    holds zeros until then)."""
    return buffer + tf.cast(column, buffer.dtype) * values[:, None]


def sample_tokens(scores, uniforms, top_k=None, top_p=None):
    """Tokens [R] drawn from softmax(scores) [R, V] restricted to the top_k tokens, then to the
    smallest set of most probable tokens whose (top-k renormalised) mass reaches top_p (the token
    that crosses top_p is kept; the most probable token always is), by inverse CDF with one uniform
    per row. top_k: a Python int or None; top_p: a float32 scalar tensor or None (None: no filter,
    decided when the graph is built). Ties at a boundary probability are all kept."""
    probs = tf.exp(scores)
    if top_k is not None or top_p is not None:
        probs = tf.where(probs >= _threshold(probs, top_k, top_p)[:, None], probs, 0.0)
    return inverse_cdf(probs, uniforms)


def _threshold(probs, top_k, top_p, head=64):
    """The least probability [R] the top-k / top-p filters keep.

    Sorting a whole vocabulary every step is the slow part, so the `head` most probable tokens come
    first: the filters need nothing else when top_k <= head, or when (no top_k) those tokens
    already hold top_p of the mass, as they do for any trained model. Otherwise: a full sort."""
    vocab = probs.shape[1]
    k = vocab if top_k is None else min(top_k, vocab)
    first = tf.math.top_k(probs, min(k, head)).values                           # [R, <= head]
    if k > head:
        def full_sort():
            return tf.sort(probs, -1, direction="DESCENDING")[:, :k]
    if top_p is None:
        return first[:, -1] if k <= head else full_sort()[:, -1]

    def nucleus(ranked, mass):   # the first ranked token whose running mass reaches top_p is kept
        kept = inverse_cdf(ranked, top_p * mass / tf.reduce_sum(ranked, -1))
        return tf.gather(ranked, kept, batch_dims=1)

    if k <= head:
        return nucleus(first, tf.reduce_sum(first, -1))
    if k < vocab:
        ranked = full_sort()
        return nucleus(ranked, tf.reduce_sum(ranked, -1))
    mass = tf.reduce_sum(probs, -1)
    return tf.cond(tf.reduce_all(tf.reduce_sum(first, -1) >= top_p * mass),
                   lambda: nucleus(first, mass), lambda: nucleus(full_sort(), mass))


def inverse_cdf(weights, uniforms, block=64):
    """The first index [R] whose running sum of weights [R, V] (in vocabulary order) exceeds
    uniforms [R] times the row's total; never an index of weight 0.

    A fixed order matters: a sort could order near-equal probabilities differently on the cached
    and the recomputed paths. The sum runs over blocks of `block` entries, then inside the chosen
    block: TensorFlow's cumsum over a whole vocabulary is ten times slower than this."""
    rows, vocab = tf.shape(weights)[0], tf.shape(weights)[1]
    blocks = tf.reshape(tf.pad(weights, [[0, 0], [0, (-vocab) % block]]), [rows, -1, block])
    mass = tf.reduce_sum(blocks, -1)                                              # [R, nb]
    block_cdf = tf.cumsum(mass, -1)
    target = uniforms * block_cdf[:, -1]
    b = tf.minimum(tf.reduce_sum(tf.cast(block_cdf <= target[:, None], tf.int32), -1),
                   _last_positive(mass))
    before = tf.where(b > 0, tf.gather(block_cdf, tf.maximum(b - 1, 0), batch_dims=1), 0.0)
    inside = tf.gather(blocks, b, batch_dims=1)                                   # [R, block]
    cdf = before[:, None] + tf.cumsum(inside, -1)
    i = tf.minimum(tf.reduce_sum(tf.cast(cdf <= target[:, None], tf.int32), -1), _last_positive(inside))
    return b * block + i


def _last_positive(x):
    """Index [R] of the last entry > 0 of every row of x [R, N]."""
    return tf.shape(x)[1] - 1 - tf.argmax(tf.reverse(x, [1]) > 0, axis=-1, output_type=tf.int32)


def rows_loop(stepper, prefix, group, settings, uniforms=None, filters=(None, None)):
    """Greedy decoding (uniforms None) or sampling (`filters`: top_k, top_p for `sample_tokens`):
    every row on its own until it ends.

    Returns (ids [R, T], token log-probs [R, T], lengths [R], finished [R])."""
    ids, segments, lengths = prefix
    max_len = settings["max_len"]
    logits, state = stepper.start(ids, segments, lengths, group, max_len)
    rows = tf.shape(logits)[0]
    out = tf.zeros([rows, max_len], tf.int32)
    logp = tf.zeros([rows, max_len], tf.float32)
    ends = tf.zeros([rows], tf.int32)
    done = tf.zeros([rows], tf.bool)

    def body(t, logits, state, out, logp, ends, done):
        scores = _scores(logits, t, ends, settings)
        if uniforms is None:
            token = tf.argmax(scores, axis=-1, output_type=tf.int32)
        else:
            token = sample_tokens(scores, uniforms[:, t], *filters)
        live = tf.logical_not(done)
        token = tf.where(live, token, 0)
        column = tf.one_hot(t, max_len)[None]
        out = _write(out, column, token)
        logp = _write(logp, column, tf.where(live, tf.gather(scores, token, batch_dims=1), 0.0))
        is_end = live & tf.equal(token, settings["end_id"])
        ends += tf.cast(is_end, tf.int32)
        done |= is_end & (ends >= settings["min_ends"])
        # After the last token this step is wasted (a tf.cond to skip it costs more, every step).
        logits, state = stepper.step(state, token, t)
        return t + 1, logits, state, out, logp, ends, done

    def more(t, logits, state, out, logp, ends, done):
        return (t < max_len) & tf.logical_not(tf.reduce_all(done))

    _, _, _, out, logp, _, done = tf.while_loop(
        more, body, (tf.constant(0), logits, state, out, logp, ends, done))
    return out, logp, _generated_lengths(out, done, settings), done


def _generated_lengths(out, done, settings):
    """Tokens generated per row: up to and including the end token, else max_len (a loop that
    stops early does so because every row is done)."""
    is_end = tf.equal(out, settings["end_id"])
    count = tf.cumsum(tf.cast(is_end, tf.int32), axis=-1)
    ended_at = tf.argmax(tf.cast(is_end & (count >= settings["min_ends"]), tf.int32), axis=-1,
                         output_type=tf.int32) + 1
    return tf.where(done, ended_at, settings["max_len"])


def beam_loop(stepper, prefix, beam_size, settings):
    """Beam search with `beam_size` live hypotheses per input and the best finished one kept.

    Each step takes the 2 * beam_size best extensions of an input's beams by cumulative log-prob;
    those that end (end token, at least `min_ends` of them, `min_len` reached) compete for the
    finished slot by score / length ** length_penalty, the others refill the beams. An input is
    done once no live beam can still beat its finished hypothesis: live scores only fall, so the
    bound live / max_len ** length_penalty is exact. At max_len, the best live beam (unfinished)
    wins if it scores higher than the finished hypothesis (or there is none).

    Returns (ids [B, T], token log-probs [B, T], scores [B], lengths [B], finished [B]).
    """
    ids, segments, lengths = prefix
    max_len, alpha, end_id = settings["max_len"], settings["length_penalty"], settings["end_id"]
    logits, state = stepper.start(ids, segments, lengths, beam_size, max_len)
    inputs = tf.shape(ids)[0]
    vocab = tf.shape(logits)[1]
    # Every beam starts as the same empty hypothesis: only the first may extend at step 0.
    live = tf.tile(tf.concat([[0.0], tf.fill([beam_size - 1], NEG_INF)], 0), [inputs])
    out = tf.zeros([inputs * beam_size, max_len], tf.int32)
    logp = tf.zeros([inputs * beam_size, max_len], tf.float32)
    ends = tf.zeros([inputs * beam_size], tf.int32)
    best = (tf.zeros([inputs, max_len], tf.int32), tf.zeros([inputs, max_len], tf.float32),
            tf.fill([inputs], NEG_INF), tf.zeros([inputs], tf.int32))        # ids, logp, score, len
    base = (tf.range(inputs) * beam_size)[:, None]                               # [B, 1]

    def body(t, logits, state, live, out, logp, ends, best, done):
        scores = _scores(logits, t, ends, settings)                               # [R, V]
        total = tf.reshape(live[:, None] + scores, [inputs, beam_size * vocab])
        top, flat = tf.math.top_k(total, 2 * beam_size)                          # [B, 2G]
        rows = base + flat // vocab                                               # parent rows
        token = flat % vocab
        token_logp = tf.gather_nd(scores, tf.stack([rows, token], -1))
        is_end = tf.equal(token, end_id)
        count = tf.gather(ends, rows) + tf.cast(is_end, tf.int32)
        ending = is_end & (count >= settings["min_ends"]) & (top > NEG_INF)
        norm = top / tf.pow(tf.cast(t + 1, tf.float32), alpha)
        column = tf.one_hot(t, max_len)[None]
        best = _keep_best(best, tf.where(ending, norm, NEG_INF), rows, token, token_logp, out, logp, t, column)
        live, pick = tf.math.top_k(tf.where(ending, NEG_INF, top), beam_size)    # [B, G]
        parents = tf.reshape(tf.gather(rows, pick, batch_dims=1), [-1])           # [R]
        new_tokens = tf.reshape(tf.gather(token, pick, batch_dims=1), [-1])
        live = tf.reshape(live, [-1])
        out = _write(tf.gather(out, parents), column, new_tokens)
        picked_logp = tf.reshape(tf.gather(token_logp, pick, batch_dims=1), [-1])
        logp = _write(tf.gather(logp, parents), column, picked_logp)
        ends = tf.reshape(tf.gather(count, pick, batch_dims=1), [-1])
        state = stepper.reorder(state, parents)
        bound = tf.reduce_max(tf.reshape(live, [inputs, beam_size]), -1)
        bound = bound / tf.pow(tf.cast(max_len, tf.float32), alpha)
        done = (best[2] >= bound) | tf.equal(bound, NEG_INF)
        logits, state = stepper.step(state, new_tokens, t)
        return t + 1, logits, state, live, out, logp, ends, best, done

    def more(t, logits, state, live, out, logp, ends, best, done):
        return (t < max_len) & tf.logical_not(tf.reduce_all(done))

    t, _, _, live, out, logp, _, best, _ = tf.while_loop(
        more, body, (tf.constant(0), logits, state, live, out, logp, ends, best,
                     tf.zeros([inputs], tf.bool)))
    # At max_len the best live beam (cut there) competes with the finished one on the same score;
    # an input that stopped early keeps its finished one (no live beam could beat it).
    top_live = tf.argmax(tf.reshape(live, [inputs, beam_size]), -1, output_type=tf.int32)
    row = tf.range(inputs) * beam_size + top_live
    live_score = tf.gather(live, row) / tf.pow(tf.cast(t, tf.float32), alpha)
    finished = best[2] >= live_score
    return (tf.where(finished[:, None], best[0], tf.gather(out, row)),
            tf.where(finished[:, None], best[1], tf.gather(logp, row)),
            tf.where(finished, best[2], live_score),
            tf.where(finished, best[3], t), finished)


def _keep_best(best, candidates, rows, token, token_logp, out, logp, t, column):
    """The finished slot of every input after this step's ending candidates [B, 2G]."""
    ids, logps, score, length = best
    pick = tf.argmax(candidates, -1, output_type=tf.int32)                        # [B]
    value = tf.gather(candidates, pick, batch_dims=1)
    better = value > score
    row = tf.gather(rows, pick, batch_dims=1)
    new_ids = _write(tf.gather(out, row), column, tf.gather(token, pick, batch_dims=1))
    new_logp = _write(tf.gather(logp, row), column, tf.gather(token_logp, pick, batch_dims=1))
    return (tf.where(better[:, None], new_ids, ids), tf.where(better[:, None], new_logp, logps),
            tf.where(better, value, score), tf.where(better, t + 1, length))
