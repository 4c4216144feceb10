"""The BERT encoder and its pretraining heads, in Keras 3 (TensorFlow backend).

Every parameter maps one-to-one onto the Google checkpoint layout (docs/FORMATS.md §2; the mapping
is `google_variables(model)`): post-LayerNorm Transformer blocks, exact-erf GELU, LayerNorm epsilon
1e-12, truncated-normal initialisation with `initializer_range`, optional factorized embeddings
(`embedding_size`, ALBERT-style `embedding_hidden_mapping_in`). The MLM output layer is tied to the
word embeddings plus an output bias; the same head predicts next tokens for UniLM and causal LM,
so every task exports as plain BERT weights.

Attention masks are additive biases built from the batch (`attention_bias`):
  * `bidirectional`: every real token sees every real token (MLM);
  * `unilm`: with idx = cumsum(segment_ids), token i sees token j iff idx[j] <= idx[i] (docs/FORMATS.md §4);
  * `causal`: token i sees tokens j <= i.

Dropout is stateless: each site draws its mask from (step seed, site number), so a block run again
by `tf.recompute_grad` replays exactly the same masks and gradients stay exact.
"""

import dataclasses
import json
import math
from typing import Optional

import keras
import tensorflow as tf

from pretrain import choices

LAYER_NORM_EPSILON = 1e-12
# The "minus infinity" of every mask: the attention bias of a key a token may not see, the logit of
# a candidate that must get no probability. Finite, so that a row with everything masked still
# gives a softmax, not NaN (-inf minus -inf), while exp(-1e9 - x) is exactly 0 in float32. It
# stays float32: float16 (largest 65504) would make it -inf, so biases never take a float16 policy's
# compute dtype (TransformerBlock's autocast=False); bfloat16 holds it (rounded, still finite).
MASKED_LOGIT = -1e9


@dataclasses.dataclass
class BertConfig:
    """The fields of Google's bert_config.json (plus optional embedding_size)."""
    vocab_size: int
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    embedding_size: Optional[int] = None

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size %d is not a multiple of num_attention_heads %d"
                             % (self.hidden_size, self.num_attention_heads))
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError("hidden_act %r is not supported (%s)"
                             % (self.hidden_act, ", ".join(_ACTIVATIONS)))

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def from_json_file(cls, path):
        with tf.io.gfile.GFile(path) as f:
            return cls.from_dict(json.load(f))

    def to_dict(self):
        d = dataclasses.asdict(self)
        if d["embedding_size"] is None or d["embedding_size"] == self.hidden_size:
            d.pop("embedding_size")
        return d


ACTIVATIONS = choices.ACTIVATIONS   # hidden_act: the names _ACTIVATIONS implements
_ACTIVATIONS = {
    "gelu": lambda x: tf.nn.gelu(x, approximate=False),   # Google's "gelu" is the exact erf form
    "gelu_new": lambda x: tf.nn.gelu(x, approximate=True),
    "relu": tf.nn.relu,
    "tanh": tf.tanh,
}


def attention_bias(input_mask, segment_ids, kind: str):
    """Additive attention bias [B, 1, L, L] (0 where allowed, MASKED_LOGIT elsewhere), float32."""
    mask = tf.cast(input_mask, tf.bool)
    length = tf.shape(input_mask)[1]
    allowed = mask[:, None, :]                                       # [B, 1, L]: keys that are real
    if kind == "unilm":
        idx = tf.cumsum(tf.cast(segment_ids, tf.int32), axis=1)
        allowed = tf.logical_and(allowed, idx[:, None, :] <= idx[:, :, None])
    elif kind == "causal":
        tri = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)
        allowed = tf.logical_and(allowed, tri[None])
    elif kind != "bidirectional":
        raise ValueError("Unknown attention mask %r" % kind)
    else:
        allowed = tf.broadcast_to(allowed, [tf.shape(mask)[0], length, length])
    return tf.where(allowed, 0.0, MASKED_LOGIT)[:, None, :, :]


def fold_in(seed, data):
    """A new stateless seed from `seed` [2] and an integer: the same bits on every device and
    with or without XLA (the Philox algorithm named, not the platform's default)."""
    return tf.random.experimental.stateless_fold_in(seed, data, alg="philox")


def dropout(x, rate: float, seed, site: int, training: bool):
    """Inverted dropout whose mask is a pure function of (seed, site): replayable.

    The mask compares raw 32-bit Philox draws with rate * 2^32: XLA and TensorFlow's kernels draw
    the same bits (they turn them into floats differently), so a step compiled for a TPU or with
    jit_compile drops exactly the units the uncompiled step drops."""
    if not training or rate <= 0.0:
        return x
    bits = tf.random.stateless_uniform(tf.shape(x), fold_in(seed, site), minval=None, maxval=None,
                                       dtype=tf.uint32, alg="philox")
    keep = bits >= tf.constant(min(int(rate * 2.0 ** 32), 2 ** 32 - 1), tf.uint32)
    return tf.where(keep, x / tf.cast(1.0 - rate, x.dtype), tf.zeros_like(x))


def _init(config):
    return keras.initializers.TruncatedNormal(stddev=config.initializer_range)


def _dense(units, config, name, activation=None, dtype=None):
    return keras.layers.Dense(units, activation=activation, kernel_initializer=_init(config),
                              name=name, dtype=dtype)


def _layer_norm(name, dtype=None):
    return keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name=name, dtype=dtype)


class Embeddings(keras.layers.Layer):
    """word + position + token type embeddings, LayerNorm, dropout (+ projection to hidden_size)."""

    def __init__(self, config: BertConfig, **kw):
        super().__init__(name="embeddings", **kw)
        self.config = config
        self.embedding_size = config.embedding_size or config.hidden_size
        self.layer_norm = _layer_norm("LayerNorm", self.dtype_policy)
        self.projection = (_dense(config.hidden_size, config, "embedding_hidden_mapping_in",
                                  dtype=self.dtype_policy)
                           if self.embedding_size != config.hidden_size else None)

    def build(self, input_shape=None):
        c, e = self.config, self.embedding_size
        self.word_embeddings = self.add_weight(name="word_embeddings", shape=(c.vocab_size, e),
                                               initializer=_init(c))
        self.token_type_embeddings = self.add_weight(name="token_type_embeddings",
                                                     shape=(c.type_vocab_size, e), initializer=_init(c))
        self.position_embeddings = self.add_weight(name="position_embeddings",
                                                   shape=(c.max_position_embeddings, e),
                                                   initializer=_init(c))
        self.layer_norm.build((None, None, e))
        if self.projection is not None:
            self.projection.build((None, None, e))

    def call(self, input_ids, segment_ids, seed=None, training=False, positions=None):
        """ids [B, L] -> [B, L, H]. `positions` (int, the shape of input_ids, of any rank) places
        tokens anywhere in the sequence (decoding: one token per row); by default at 0..L-1."""
        if positions is None:
            position_embeddings = self.position_embeddings[None, :tf.shape(input_ids)[1]]
        else:
            position_embeddings = tf.gather(self.position_embeddings, positions)
        x = (tf.gather(self.word_embeddings, input_ids)
             + tf.gather(self.token_type_embeddings, segment_ids)
             + position_embeddings)
        x = self.layer_norm(x)
        x = tf.cast(x, self.compute_dtype)
        x = dropout(x, self.config.hidden_dropout_prob, seed, 0, training)
        if self.projection is not None:
            x = self.projection(x)
        return x


class TransformerBlock(keras.layers.Layer):
    """Google's post-LayerNorm block: self-attention, add & norm, feed-forward, add & norm."""

    def __init__(self, config: BertConfig, index: int, **kw):
        # autocast off: the float32 attention bias must not be cast to a float16/bfloat16 policy's
        # compute dtype (-1e9 overflows float16); `x` arrives in the compute dtype already.
        super().__init__(name="layer_%d" % index, autocast=False, **kw)
        self.config, self.index = config, index
        h, p = config.hidden_size, self.dtype_policy
        self.heads = config.num_attention_heads
        self.head_size = h // self.heads
        self.query = _dense(h, config, "query", dtype=p)
        self.key = _dense(h, config, "key", dtype=p)
        self.value = _dense(h, config, "value", dtype=p)
        self.attention_output = _dense(h, config, "attention_output_dense", dtype=p)
        self.attention_norm = _layer_norm("attention_output_LayerNorm", p)
        self.intermediate = _dense(config.intermediate_size, config, "intermediate_dense", dtype=p)
        self.output_dense = _dense(h, config, "output_dense", dtype=p)
        self.output_norm = _layer_norm("output_LayerNorm", p)
        self.activation = _ACTIVATIONS[config.hidden_act]

    def build(self, input_shape=None):
        h, i = self.config.hidden_size, self.config.intermediate_size
        for layer in (self.query, self.key, self.value, self.attention_output):
            layer.build((None, None, h))
        self.intermediate.build((None, None, h))
        self.output_dense.build((None, None, i))
        self.attention_norm.build((None, None, h))
        self.output_norm.build((None, None, h))

    def call(self, x, bias, seed=None, training=False, queries=None):
        """x [B, L, H] -> [B, L, H]; with `queries` (int [B, Q]), only the outputs at those
        positions, [B, Q, H]: they attend to every position, nothing else is computed."""
        return self._forward(x, bias, seed, training, queries)[0]

    def prefill(self, x, bias):
        """Inference over a whole prefix x [B, L, H]: (outputs [B, L, H], (keys, values)), the
        keys and values [B, heads, L, head_size] that later tokens attend to (see `extend`)."""
        return self._forward(x, bias, None, False, None)

    def _forward(self, x, bias, seed, training, queries):
        k, v = self.keys_values(x)
        if queries is not None:
            x = tf.gather(x, queries, batch_dims=1)
            bias = tf.gather(bias, queries, axis=2, batch_dims=1)
        probs = self._attention_probs(self._split_heads(self.query(x)), k, bias, seed, training)
        return self._output(x, self._merge_heads(tf.matmul(probs, v)), seed, training), (k, v)

    def keys_values(self, x):
        """The keys and values of every position of x [B, L, H]: two [B, heads, L, head_size]."""
        return self._split_heads(self.key(x)), self._split_heads(self.value(x))

    def extend(self, x, prefix, prefix_bias, generated, slot):
        """Inference for one new token per row, attending to cached keys and values.

        Rows come in groups of G per prefix (the beams or samples of one input), and the prefix's
        keys/values are stored once per group, not per row.

        Args:
          x: [R, H], the new tokens' inputs to this block, R = B * G rows (group by group).
          prefix: (keys, values) of the prefix from `keys_values`, [B, heads, P, head_size].
          prefix_bias: [R, 1, 1, P] additive bias, 0 on the prefix positions a row's token sees.
          generated: (keys, values) of the tokens generated so far, [R, heads, T, head_size]:
            slot s holds the s-th generated token of the row, unwritten slots are zeros.
          slot: (one-hot float [1, 1, T, 1] of this token's slot, additive bias [1, 1, 1, T]
            that shows the token slots up to its own, and the sizes (R, B, G, P)): computed once
            per step by `BertPretrainingModel.extend`.

        Returns:
          (outputs [R, H], generated keys/values with this token's slot written).
        """
        one_hot, gen_bias, (rows, b, g, p) = slot
        heads, hs = self.heads, self.head_size
        # A single position: [R, H] -> [R, heads, 1, hs] is a reshape, no transpose.
        k_new, v_new = (tf.reshape(t, [-1, heads, 1, hs]) for t in (self.key(x), self.value(x)))
        gen_k, gen_v = generated[0] + one_hot * k_new, generated[1] + one_hot * v_new
        q = tf.reshape(self.query(x), [-1, heads, 1, hs]) * (1.0 / math.sqrt(hs))
        # Against the prefix, the G rows of a group are G queries of one [B, heads, G, hs] batch.
        q_group = tf.transpose(tf.reshape(q, [b, g, heads, hs]), [0, 2, 1, 3])
        prefix_scores = tf.matmul(q_group, prefix[0], transpose_b=True)          # [B, heads, G, P]
        prefix_scores = tf.reshape(tf.transpose(prefix_scores, [0, 2, 1, 3]), [rows, heads, 1, p])
        gen_scores = tf.matmul(q, gen_k, transpose_b=True)                       # [R, heads, 1, T]
        scores = tf.concat([tf.cast(prefix_scores, tf.float32) + prefix_bias,
                            tf.cast(gen_scores, tf.float32) + gen_bias], axis=-1)
        probs = tf.cast(tf.nn.softmax(scores, axis=-1), x.dtype)
        prefix_probs = tf.transpose(tf.reshape(probs[..., :p], [b, g, heads, p]), [0, 2, 1, 3])
        context = tf.transpose(tf.matmul(prefix_probs, prefix[1]), [0, 2, 1, 3])  # [B, G, heads, hs]
        context = (tf.reshape(context, [-1, self.config.hidden_size])
                   + tf.reshape(tf.matmul(probs[..., p:], gen_v), [-1, self.config.hidden_size]))
        return self._output(x, context, None, False), (gen_k, gen_v)

    def _split_heads(self, t):
        """[B, L, H] -> [B, heads, L, head_size]."""
        shape = [tf.shape(t)[0], tf.shape(t)[1], self.heads, self.head_size]
        return tf.transpose(tf.reshape(t, shape), [0, 2, 1, 3])

    def _merge_heads(self, t):
        """[B, heads, L, head_size] -> [B, L, H]."""
        shape = [tf.shape(t)[0], tf.shape(t)[2], self.config.hidden_size]
        return tf.reshape(tf.transpose(t, [0, 2, 1, 3]), shape)

    def _attention_probs(self, q, k, bias, seed, training):
        scores = tf.matmul(q, k, transpose_b=True) * (1.0 / math.sqrt(self.head_size))
        probs = tf.nn.softmax(tf.cast(scores, tf.float32) + bias, axis=-1)
        return dropout(tf.cast(probs, q.dtype), self.config.attention_probs_dropout_prob, seed,
                       1 + 3 * self.index, training)

    def _output(self, x, context, seed, training):
        """Attention output projection, add & norm, feed-forward, add & norm: [..., H] -> [..., H]."""
        c, site = self.config, 1 + 3 * self.index
        attended = dropout(self.attention_output(context), c.hidden_dropout_prob, seed, site + 1, training)
        x = tf.cast(self.attention_norm(x + attended), x.dtype)
        ffn = self.output_dense(self.activation(self.intermediate(x)))
        ffn = dropout(ffn, c.hidden_dropout_prob, seed, site + 2, training)
        return tf.cast(self.output_norm(x + ffn), x.dtype)


class BertPretrainingModel(keras.Model):
    """Encoder + pooler + MLM/NSP heads. `call` returns the final hidden states and pooled [CLS];
    the heads are methods so that each task computes only the logits it needs."""

    def __init__(self, config: BertConfig, recompute: bool = False, with_nsp: bool = True, **kw):
        super().__init__(name="bert", autocast=False, **kw)   # keeps the bias float32 (see blocks)
        self.config, self.recompute, self.with_nsp = config, recompute, with_nsp
        p = self.dtype_policy
        self.embeddings = Embeddings(config, dtype=p)
        self.blocks = [TransformerBlock(config, i, dtype=p) for i in range(config.num_hidden_layers)]
        # Keras 3 keeps the list for `weights`, but TF checkpoints only follow attributes: without
        # these, `tf.train.Checkpoint(model=...)` would silently skip every block.
        for block in self.blocks:
            setattr(self, block.name, block)
        self.pooler = _dense(config.hidden_size, config, "pooler_dense", activation="tanh", dtype=p)
        # With factorized embeddings the transform maps hidden -> embedding_size (ALBERT, bert4keras).
        self.mlm_transform = _dense(config.embedding_size or config.hidden_size, config,
                                    "cls_predictions_transform_dense", dtype=p)
        self.mlm_norm = _layer_norm("cls_predictions_transform_LayerNorm", p)
        self._activation = _ACTIVATIONS[config.hidden_act]

    def build(self, input_shape=None):
        c = self.config
        self.embeddings.build()
        for block in self.blocks:
            block.build()
        self.pooler.build((None, c.hidden_size))
        self.mlm_transform.build((None, None, c.hidden_size))
        self.mlm_norm.build((None, None, c.embedding_size or c.hidden_size))
        self.mlm_output_bias = self.add_weight(name="cls_predictions_output_bias",
                                               shape=(c.vocab_size,), initializer="zeros")
        if self.with_nsp:
            self.nsp_output_weights = self.add_weight(name="cls_seq_relationship_output_weights",
                                                      shape=(2, c.hidden_size), initializer=_init(c))
            self.nsp_output_bias = self.add_weight(name="cls_seq_relationship_output_bias",
                                                   shape=(2,), initializer="zeros")
        self.built = True

    def call(self, input_ids, segment_ids, bias, seed=None, training=False, positions=None):
        """(sequence output [B, L, H], pooled [CLS] output [B, H]) in the compute dtype.

        With `positions` (int [B, P], e.g. the masked positions), the sequence output holds only
        those positions, [B, P, H], and the last block computes nothing else: its queries,
        feed-forward and norms run on P + 1 rows instead of L (about a sixth of the encoder's
        work at seq 128 with 20 predictions). Keys and values still cover every position, so the
        outputs equal the full ones at those positions.
        """
        if seed is None:
            seed = tf.zeros([2], tf.int64)
        x = self.embeddings(input_ids, segment_ids, seed=seed, training=training)
        queries = None
        if positions is not None:  # [CLS] first, for the pooled output
            queries = tf.concat([tf.zeros_like(positions[:, :1]), positions], axis=1)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            q = queries if i == last else None
            if self.recompute and training:
                # Activations inside the block are dropped and recomputed in the backward pass;
                # the stateless dropout above makes the recomputation draw identical masks.
                # The mask bias (and the query positions) are captured, not passed: as arguments
                # they would get gradients ([B, heads, L, L] per block) that nobody needs.
                x = tf.recompute_grad(
                    lambda h, block=block, q=q: block(h, bias, seed=seed, training=True, queries=q))(x)
            else:
                x = block(x, bias, seed=seed, training=training, queries=q)
        if queries is not None and not self.blocks:  # an encoder without blocks
            x = tf.gather(x, queries, batch_dims=1)
        pooled = self.pooler(x[:, 0])
        return (x if positions is None else x[:, 1:]), pooled

    def prefill(self, input_ids, segment_ids, bias):
        """Inference over a prefix [B, P] with the attention `bias` of its application (see
        `attention_bias`): (hidden states [B, P, H], [(keys, values) per block]), the cache that
        `extend` attends to. The hidden states equal `call`'s."""
        x = self.embeddings(input_ids, segment_ids)
        caches = []
        for block in self.blocks:
            x, keys_values = block.prefill(x, bias)
            caches.append(keys_values)
        return x, caches

    def extend(self, token_ids, segment_ids, positions, prefix_caches, prefix_bias, generated, step):
        """One decoding step: a new token for each row, G rows per prefix.

        Args:
          token_ids, segment_ids, positions: int [R], the new tokens and where they sit; R = B * G,
            the G rows of a prefix consecutive.
          prefix_caches: `prefill`'s caches [B, ...]; prefix_bias [R, 1, 1, P]: 0 on the prefix
            positions a row sees (its real ones), -1e9 on padding.
          generated: per block (keys, values) [R, heads, T, head_size] of the generated tokens,
            zeros where nothing was written yet.
          step: int32 scalar, the slot of these tokens in `generated`; they see slots 0..step.

        Returns:
          (hidden states [R, H], the updated `generated`). With the same tokens, these equal
          `call` on the whole sequence under the UniLM or causal mask (to float round-off).
        """
        x = self.embeddings(token_ids, segment_ids, positions=positions)
        if not self.blocks:
            return x, []
        # What every block needs, computed once per step (a shape op costs as much as an add here).
        slots = tf.range(tf.shape(generated[0][0])[2])
        rows, prefix_shape = tf.shape(token_ids)[0], tf.shape(prefix_caches[0][0])
        sizes = (rows, prefix_shape[0], rows // prefix_shape[0], prefix_shape[2])
        # Every slot is written once (it holds zeros until then), so adding sets it.
        slot = (tf.cast(tf.equal(slots, step), x.dtype)[None, None, :, None],
                tf.where(slots <= step, 0.0, MASKED_LOGIT)[None, None, None, :], sizes)
        updated = []
        for block, prefix, cache in zip(self.blocks, prefix_caches, generated):
            x, cache = block.extend(x, prefix, prefix_bias, cache, slot)
            updated.append(cache)
        return x, updated

    def mlm_logits(self, hidden):
        """Tied-embedding output layer on hidden states [..., H] -> float32 logits [..., V]."""
        h = self.mlm_norm(self._activation(self.mlm_transform(hidden)))
        if h.shape.rank == 2:   # [N, H] already (decoding): no reshapes
            return (tf.cast(tf.matmul(h, tf.cast(self.embeddings.word_embeddings, h.dtype), transpose_b=True),
                            tf.float32) + self.mlm_output_bias)
        # One 2-D matmul over all rows: a [B, n, H] x [V, H] matmul broadcasts the embeddings, and
        # its gradient materialises a [B, V, H] tensor and sums it (a tenth of a small model's step).
        flat = tf.reshape(h, [-1, tf.shape(h)[-1]])
        logits = tf.matmul(flat, tf.cast(self.embeddings.word_embeddings, h.dtype), transpose_b=True)
        logits = tf.reshape(logits, tf.concat([tf.shape(h)[:-1], [-1]], axis=0))
        return tf.cast(logits, tf.float32) + self.mlm_output_bias

    def nsp_logits(self, pooled):
        return (tf.matmul(tf.cast(pooled, tf.float32), self.nsp_output_weights, transpose_b=True)
                + self.nsp_output_bias)


def build_model(config: BertConfig, recompute=False, with_nsp=True, dtype_policy=None):
    """A built model (variables created), so it can be checkpointed and wrapped by recompute."""
    model = BertPretrainingModel(config, recompute=recompute, with_nsp=with_nsp, dtype=dtype_policy)
    model.build()
    return model


def google_variables(model: BertPretrainingModel):
    """{Google checkpoint name: variable} (docs/FORMATS.md §2)."""
    e = model.embeddings
    out = {"bert/embeddings/word_embeddings": e.word_embeddings,
           "bert/embeddings/token_type_embeddings": e.token_type_embeddings,
           "bert/embeddings/position_embeddings": e.position_embeddings,
           "bert/embeddings/LayerNorm/gamma": e.layer_norm.gamma,
           "bert/embeddings/LayerNorm/beta": e.layer_norm.beta}
    if e.projection is not None:
        out["bert/encoder/embedding_hidden_mapping_in/kernel"] = e.projection.kernel
        out["bert/encoder/embedding_hidden_mapping_in/bias"] = e.projection.bias

    def dense(prefix, layer):
        out[prefix + "/kernel"], out[prefix + "/bias"] = layer.kernel, layer.bias

    def norm(prefix, layer):
        out[prefix + "/gamma"], out[prefix + "/beta"] = layer.gamma, layer.beta

    for i, b in enumerate(model.blocks):
        p = "bert/encoder/layer_%d/" % i
        dense(p + "attention/self/query", b.query)
        dense(p + "attention/self/key", b.key)
        dense(p + "attention/self/value", b.value)
        dense(p + "attention/output/dense", b.attention_output)
        norm(p + "attention/output/LayerNorm", b.attention_norm)
        dense(p + "intermediate/dense", b.intermediate)
        dense(p + "output/dense", b.output_dense)
        norm(p + "output/LayerNorm", b.output_norm)
    dense("bert/pooler/dense", model.pooler)
    dense("cls/predictions/transform/dense", model.mlm_transform)
    norm("cls/predictions/transform/LayerNorm", model.mlm_norm)
    out["cls/predictions/output_bias"] = model.mlm_output_bias
    if model.with_nsp:
        out["cls/seq_relationship/output_weights"] = model.nsp_output_weights
        out["cls/seq_relationship/output_bias"] = model.nsp_output_bias
    return out
