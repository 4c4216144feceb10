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
    # Continued pretraining: a Google-layout checkpoint (prefix or export directory) that a new run
    # starts from; ignored once the workdir has checkpoints. Its vocabulary must be the data's, or
    # init_vocab_map says how to map rows: "by_token", or a file of checkpoint ids (one per line).
    c.init_checkpoint = ""
    c.init_vocab_map = ""
    c.model = ml_collections.ConfigDict(dict(
        vocab_size=0, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1, max_position_embeddings=512, type_vocab_size=2,
        initializer_range=0.02, embedding_size=0))
    # worker_split: how hosts of a multi-worker run (launch.run) share the training stream.
    #   "files": each worker reads its own subset of the shard files (batch = global / workers):
    #            input work is split, so it scales to many hosts; needs >= as many train shards as
    #            workers, and a run must resume with the same number of workers.
    #   "rows":  every worker reads the whole stream at the global batch size and keeps its own
    #            rows of each batch: the batches (and so the weights, dropout aside) equal a
    #            single-process run's for any number of workers, which may change on resume;
    #            costs each worker the parsing/masking of the whole global batch (W x in total).
    # skip_bad_shards: shards that do not match the manifest (missing, truncated, changed bytes)
    #   stop the run with an error naming them (False), or are left out, logged and counted (True;
    #   local shards are then read once at start-up to check their CRC32C).
    c.data = ml_collections.ConfigDict(dict(train_dir="", shuffle_buffer=10000, worker_split="files",
                                            skip_bad_shards=False))
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
        # float32 | bfloat16 | float16 (dynamic loss scaling) | auto (bfloat16 on TPUs, else float32)
        precision="float32",
        jit_compile=False,
        clip_norm=1.0,                  # global-norm clipping (0: off)
        max_nonfinite_in_a_row=20,
        with_nsp=True,                  # NSP/SOP loss when the data has sentence pairs
    ))
    # pretrain/optimizers.py, schedules.py, updates.py. name: adamw | lamb | adam | sgd (Keras's;
    # no weight decay there). schedule "warmup_decay": learning_rate reached after warmup_steps,
    # then along `decay_shape` (linear | polynomial with `power` | cosine | constant) to
    # end_learning_rate at decay_steps (0: the run's steps). schedule "piecewise": learning_rate x
    # a multiplier interpolated between the points of `piecewise`, [[step, multiplier], ...]
    # (bert4keras's piecewise_linear). step_offset: steps already done by an earlier phase
    # (phase 2 of a 128 -> 512 recipe continues the schedule).
    c.optimizer = ml_collections.ConfigDict(dict(
        name="adamw", learning_rate=1e-4, schedule="warmup_decay", warmup_steps=10000,
        decay_shape="linear", decay_steps=0, power=1.0, end_learning_rate=0.0,
        piecewise=[], step_offset=0,
        weight_decay=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-6,
        bias_correction=True,           # adamw: False = google-research/bert's AdamWeightDecay
        momentum=0.0,                   # sgd
        # Regular expressions searched in variable paths (e.g. bert/layer_3/query/kernel).
        exclude_from_weight_decay=["LayerNorm", "bias"],
        exclude_from_layer_adaptation=["LayerNorm", "bias"],   # lamb
        lazy=[],                        # embedding tables updated lazily (rows absent keep state)
        lr_multipliers=[],              # [[pattern, multiplier], ...]; first match wins
        layer_decay=0.0,                # layer-wise LR decay factor in (0, 1] (0: off)
        lookahead=ml_collections.ConfigDict(dict(k=0, alpha=0.5)),   # k=0: off
        ema_decay=0.0,                  # EMA of the weights kept for export (0: off)
        # Per-variable gradient hooks after the all-reduce, before global-norm clipping, e.g.
        # [{"name": "clip_by_norm", "max_norm": 1.0, "pattern": "embeddings"}].
        gradient_transforms=[],
    ))
    c.distribute = ml_collections.ConfigDict(dict(name="default", device="", devices=[], tpu=""))
    return c
