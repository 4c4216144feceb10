r"""Training throughput on CPU: our engine vs HF transformers' BertForMaskedLM (PyTorch), same shapes.

    python -m benchmarks.train_throughput [--steps=30] [--threads=2]

Shapes from issue #4: vocab 8000, hidden 256, 4 layers, 4 heads, intermediate 1024, seq 128,
batch 32, AdamW, dropout 0.1 in both. Ours trains on random token batches through the same
`Trainer` step (MLM head at 20 gathered positions, as our data gives it); the peer computes the
MLM loss the usual HF way (labels -100 except at the masked positions, logits over every
position). Needs `pip install torch transformers` (not project requirements). Prints JSON.
"""

import json
import os
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 30, "Timed steps (after 5 warm-up steps).")
flags.DEFINE_integer("threads", 2, "Intra-op threads for both frameworks.")

V, H, LAYERS, HEADS, FF, L, B, P = 8000, 256, 4, 4, 1024, 128, 32, 20


def ours():
    import tensorflow as tf

    from pretrain import modeling, objectives, optimizers

    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    config = modeling.BertConfig(vocab_size=V, hidden_size=H, num_hidden_layers=LAYERS,
                                 num_attention_heads=HEADS, intermediate_size=FF,
                                 max_position_embeddings=L)
    model = modeling.build_model(config, with_nsp=False)
    opt = optimizers.AdamW(learning_rate=1e-4)
    variables = [v for v in model.trainable_variables if id(v) not in {id(w) for w in model.pooler.weights}]
    opt.build(variables)
    g = tf.random.Generator.from_seed(0)
    batch = {"input_ids": g.uniform([B, L], 5, V, tf.int32), "input_mask": tf.ones([B, L], tf.int32),
             "segment_ids": tf.zeros([B, L], tf.int32),
             "masked_lm_positions": tf.sort(g.uniform([B, P], 1, L, tf.int32), axis=1),
             "masked_lm_ids": g.uniform([B, P], 5, V, tf.int32),
             "masked_lm_weights": tf.ones([B, P], tf.float32)}
    strategy = tf.distribute.get_strategy()

    @tf.function
    def step(seed):
        counts = objectives.target_counts("mlm", batch, False)
        with tf.GradientTape() as tape:
            loss, _ = objectives.loss_and_metrics(model, "mlm", batch, counts, seed=seed, training=True,
                                                  with_nsp=False)
        grads = tape.gradient(loss, variables)
        optimizers.apply_update(opt, [tf.convert_to_tensor(x) for x in grads], variables, strategy)
        return loss

    return _time(lambda i: step(tf.constant([0, i], tf.int64)).numpy())


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
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        opt.step()
        return loss.item()

    return _time(step)


def _time(step):
    for i in range(5):
        step(i)
    t = time.perf_counter()
    for i in range(FLAGS.steps):
        step(i + 5)
    seconds = time.perf_counter() - t
    return {"steps_per_s": FLAGS.steps / seconds, "tokens_per_s": FLAGS.steps * B * L / seconds}


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = {"shapes": dict(vocab=V, hidden=H, layers=LAYERS, heads=HEADS, seq=L, batch=B),
              "threads": FLAGS.threads, "ours": ours(), "hf_torch_bert_for_masked_lm": peer()}
    result["speedup_tokens_per_s"] = (result["ours"]["tokens_per_s"]
                                      / result["hf_torch_bert_for_masked_lm"]["tokens_per_s"])
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    app.run(main)
