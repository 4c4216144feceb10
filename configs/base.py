"""Defaults shared by every experiment; each config file starts from `base.get_config()`.

Sections: task, seed, model (Google bert_config.json fields; vocab_size 0 = from the data
manifest), data, train (batching, accumulation, precision, checkpoints, eval), optimizer
(pretrain/optimizers.py), distribute (pretrain/distribute.py).
"""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.task = "mlm"                      # mlm | unilm | lm | simbert
    c.seed = 0
    c.model = ml_collections.ConfigDict(dict(
        vocab_size=0, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1, max_position_embeddings=512, type_vocab_size=2,
        initializer_range=0.02, embedding_size=0))
    c.data = ml_collections.ConfigDict(dict(train_dir="", shuffle_buffer=10000))
    c.train = ml_collections.ConfigDict(dict(
        global_batch_size=256,
        micro_batches=1,                # gradient accumulation: k micro-batches per update
        steps=1_000_000,
        steps_per_loop=100,             # updates per tf.function call
        checkpoint_every=1000,
        keep_checkpoints=3,
        eval_every=10000,               # 0: only at the end
        eval_steps=100,                 # 0: the whole eval split
        recompute=False,                # tf.recompute_grad per transformer block
        precision="float32",            # float32 | bfloat16 | float16 (dynamic loss scaling)
        jit_compile=False,
        clip_norm=1.0,                  # global-norm clipping (0: off)
        max_nonfinite_in_a_row=20,
        with_nsp=True,                  # NSP/SOP loss when the data has sentence pairs
    ))
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adamw", learning_rate=1e-4, warmup_steps=10000, decay="linear", weight_decay=0.01,
        beta_1=0.9, beta_2=0.999, epsilon=1e-6, step_offset=0))
    c.distribute = ml_collections.ConfigDict(dict(name="default", device="", devices=[], tpu=""))
    return c
