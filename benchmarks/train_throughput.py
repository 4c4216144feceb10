r"""Training throughput on CPU: our engine vs HF transformers' BertForMaskedLM (PyTorch), same shapes.

    python -m benchmarks.train_throughput [--steps=10] [--rounds=3] [--threads=2] [--jit_compile]

Shapes from issue #4: vocab 8000, hidden 256, 4 layers, 4 heads, intermediate 1024, seq 128,
batch 32, AdamW, dropout 0.1 in both. Ours trains on random token batches through the same
`Trainer` step (MLM head at 20 gathered positions, as our data gives it); the peer computes the
MLM loss the usual HF way (labels -100 except at the masked positions, logits over every
position). Needs `pip install torch transformers` (not project requirements). Prints JSON.
"""

import json
import os
import statistics
import time

from absl import app, flags

from benchmarks.measure import describe_machine

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 10, "Timed steps per round (after 5 warm-up steps).")
flags.DEFINE_integer("threads", 2, "Intra-op threads for both frameworks.")
flags.DEFINE_integer("rounds", 3, "Alternating timed rounds per framework (median reported).")
flags.DEFINE_enum("precision", "float32", ["float32", "bfloat16"],
                  "Compute precision of both: Keras mixed_bfloat16 policy / torch.autocast(bfloat16).")
flags.DEFINE_bool("jit_compile", False, "XLA-compile our forward/backward (as train.jit_compile).")

V, H, LAYERS, HEADS, FF, L, B, P = 8000, 256, 4, 4, 1024, 128, 32, 20


def ours():
    import tensorflow as tf

    from pretrain import modeling, objectives, optimizers, updates

    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    config = modeling.BertConfig(vocab_size=V, hidden_size=H, num_hidden_layers=LAYERS,
                                 num_attention_heads=HEADS, intermediate_size=FF,
                                 max_position_embeddings=L)
    policy = "mixed_bfloat16" if FLAGS.precision == "bfloat16" else None
    model = modeling.build_model(config, with_nsp=False, dtype_policy=policy)
    opt = optimizers.AdamW(learning_rate=1e-4)
    variables = [v for v in model.trainable_variables if id(v) not in {id(w) for w in model.pooler.weights}]
    opt.build(variables)
    g = tf.random.Generator.from_seed(0)
    batch = {"input_ids": g.uniform([B, L], 5, V, tf.int32), "input_mask": tf.ones([B, L], tf.int32),
             "segment_ids": tf.zeros([B, L], tf.int32),
             "masked_lm_positions": tf.sort(g.uniform([B, P], 1, L, tf.int32), axis=1),
             "masked_lm_ids": g.uniform([B, P], 5, V, tf.int32),
             "masked_lm_weights": tf.ones([B, P], tf.float32)}

    def grads_of(seed):   # what the trainer's `_micro_step` does
        counts = objectives.target_counts("mlm", batch, False)
        with tf.GradientTape() as tape:
            loss, _ = objectives.loss_and_metrics(model, "mlm", batch, counts, seed=seed, training=True,
                                                  with_nsp=False)
        return loss, [tf.convert_to_tensor(x) for x in tape.gradient(loss, variables)]

    grads_fn = tf.function(grads_of, jit_compile=True) if FLAGS.jit_compile else grads_of

    @tf.function
    def step(seed):
        loss, grads = grads_fn(seed)
        updates.apply_update(opt, grads, variables)
        updates.count_update(opt)
        return loss

    return lambda i: step(tf.constant([0, i], tf.int64)).numpy()


def peer():
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.set_num_threads(FLAGS.threads)
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=V, hidden_size=H, num_hidden_layers=LAYERS,
                                       num_attention_heads=HEADS, intermediate_size=FF,
                                       max_position_embeddings=L))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    ids = torch.randint(5, V, (B, L))
    labels = torch.full((B, L), -100)
    pos = torch.randint(1, L, (B, P))
    labels.scatter_(1, pos, torch.randint(5, V, (B, P)))

    def step(i):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=FLAGS.precision == "bfloat16"):
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        opt.step()
        return loss.item()

    return step


def _timed_rounds(steps):
    """Warms every step function up, then times them in alternating rounds (noise hits all)."""
    for step in steps.values():
        for i in range(5):
            step(i)
    seconds = {name: [] for name in steps}
    for _ in range(FLAGS.rounds):
        for name, step in steps.items():
            t = time.perf_counter()
            for i in range(FLAGS.steps):
                step(i + 5)
            seconds[name].append((time.perf_counter() - t) / FLAGS.steps)
    out = {}
    for name, s in seconds.items():
        median = statistics.median(s)
        out[name] = {"seconds_per_step": median, "tokens_per_s": B * L / median,
                     "rounds_seconds_per_step": [round(x, 4) for x in s]}
    return out


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = {"machine": describe_machine(),
              "shapes": dict(vocab=V, hidden=H, layers=LAYERS, heads=HEADS, seq=L, batch=B),
              "threads": FLAGS.threads, "jit_compile": FLAGS.jit_compile,
              "precision": FLAGS.precision}
    result.update(_timed_rounds({"ours": ours(), "hf_torch_bert_for_masked_lm": peer()}))
    result["speedup_tokens_per_s"] = (result["ours"]["tokens_per_s"]
                                      / result["hf_torch_bert_for_masked_lm"]["tokens_per_s"])
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    app.run(main)
