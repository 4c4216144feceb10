"""Task losses, normalised so that the result does not depend on how a batch is split.

Every loss is a sum of per-token (or per-row) losses divided by the *global* number of targets of
the whole update: across replicas and across accumulated micro-batches. The trainer counts the
targets of its batch before the forward passes (`target_counts`), sums them over replicas, and
passes the totals to `loss_and_metrics`; each micro-batch then contributes sum / global_count, so
k micro-batches of b give the same gradient as one batch of k*b.

Tasks:
  mlm      masked LM at the masked positions only (+ NSP/SOP when `with_nsp`), bidirectional mask;
  unilm    next-token loss on the target part, UniLM mask from segment ids (docs/FORMATS.md §4);
  lm       next-token loss on every real token after the first, causal mask;
  simbert  unilm + in-batch similarity: L2-normalised pooled [CLS], cosine x 30, own row excluded,
           the partner row (2k <-> 2k+1) as label, contrasted against the *global* batch (pooled
           vectors are gathered from every replica) (docs/FORMATS.md §5).
"""

import tensorflow as tf

from pretrain import choices
from pretrain.modeling import MASKED_LOGIT, attention_bias

TASKS = choices.TASKS   # the tasks implemented here (the config's `task`)
MASK_KIND = {"mlm": "bidirectional", "unilm": "unilm", "simbert": "unilm", "lm": "causal"}
SIMILARITY_SCALE = 30.0
_POOLED = ("nsp", "similarity")   # the losses computed from the pooled [CLS] vector


def loss_names(task, with_nsp):
    """The loss components of a task (each has _loss, _correct and _count metrics)."""
    if task == "mlm":
        return ("mlm", "nsp") if with_nsp else ("mlm",)
    if task == "simbert":
        return ("seq2seq", "similarity")
    return ("seq2seq",)


def pooler_trains(task, with_nsp):
    """Whether a run trains the pooler: only NSP/SOP and SimBERT's similarity loss read the pooled
    [CLS] vector. Otherwise it has no gradient: the train step leaves it out of the updates (it
    keeps its initial values) and the export records it untrained (heads.pooler_trained)."""
    return any(name in _POOLED for name in loss_names(task, with_nsp))


def metric_names(task, with_nsp):
    """The per-update metric sums: {component}_loss, _correct and _count for every loss."""
    return [n + s for n in loss_names(task, with_nsp) for s in ("_loss", "_correct", "_count")]


def target_counts(task, batch, with_nsp):
    """{component: number of targets in this (local) batch}, float32 scalars."""
    rows = tf.cast(tf.shape(batch["input_ids"])[0], tf.float32)
    if task == "mlm":
        counts = {"mlm": tf.reduce_sum(batch["masked_lm_weights"])}
        if with_nsp:
            counts["nsp"] = rows
        return counts
    counts = {"seq2seq": tf.reduce_sum(batch["target_mask"][:, 1:])}
    if task == "simbert":
        counts["similarity"] = rows
    return counts


def loss_and_metrics(model, task, batch, global_counts, *, seed, training, with_nsp,
                     replica_context=None):
    """(loss to differentiate, {metric: local sum}) for one (micro-)batch on one replica."""
    bias = attention_bias(batch["input_mask"], batch["segment_ids"], MASK_KIND[task])
    # MLM needs the last layer only at the masked positions (and [CLS]): the model skips the rest.
    positions = batch["masked_lm_positions"] if task == "mlm" else None
    hidden, pooled = model(batch["input_ids"], batch["segment_ids"], bias, seed=seed,
                           training=training, positions=positions)
    metrics = {}
    if task == "mlm":
        logits = model.mlm_logits(hidden)
        _add(metrics, "mlm", logits, batch["masked_lm_ids"], batch["masked_lm_weights"])
        if with_nsp:
            labels = batch["next_sentence_labels"][:, 0]
            _add(metrics, "nsp", model.nsp_logits(pooled), labels, tf.ones_like(labels, tf.float32))
    else:
        # Position i predicts token i + 1; target_mask marks the tokens to predict.
        logits = model.mlm_logits(hidden[:, :-1])
        _add(metrics, "seq2seq", logits, batch["input_ids"][:, 1:], batch["target_mask"][:, 1:])
        if task == "simbert":
            _similarity(metrics, pooled, replica_context)
    loss = tf.add_n([metrics[name + "_loss"] / tf.maximum(global_counts[name], 1.0)
                     for name in loss_names(task, with_nsp)])
    return loss, metrics


def _add(metrics, name, logits, labels, weights):
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    correct = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=labels.dtype), labels), tf.float32)
    metrics[name + "_loss"] = tf.reduce_sum(losses * weights)
    metrics[name + "_correct"] = tf.reduce_sum(correct * weights)
    metrics[name + "_count"] = tf.reduce_sum(weights)


def _similarity(metrics, pooled, replica_context):
    local = tf.math.l2_normalize(tf.cast(pooled, tf.float32), axis=-1)
    rows = tf.shape(local)[0]
    offset = 0
    candidates = local
    if replica_context is not None and replica_context.num_replicas_in_sync > 1:
        # Every row is contrasted with the whole global batch; all_gather is differentiable.
        candidates = replica_context.all_gather(local, axis=0)
        offset = tf.cast(replica_context.replica_id_in_sync_group, tf.int32) * rows
    logits = SIMILARITY_SCALE * tf.matmul(local, candidates, transpose_b=True)
    own = offset + tf.range(rows)
    logits += tf.one_hot(own, tf.shape(candidates)[0], on_value=MASKED_LOGIT, off_value=0.0)
    partner = offset + tf.bitwise.bitwise_xor(tf.range(rows), 1)
    _add(metrics, "similarity", logits, partner, tf.ones([rows], tf.float32))
