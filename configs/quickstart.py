"""A tiny BERT trained on CPU in a few minutes, on text the project ships with.

    python -m launch.quickstart --workdir=workspace/quickstart

builds the corpus, vocab and shards, then trains this config. You should see the MLM accuracy
climb from about 0 to well above the unigram baseline (predicting the most frequent token), which
the quickstart prints next to it, and a run directory with checkpoints, metrics.jsonl and
TensorBoard logs. Train it directly on data you built:

    python -m launch.pretrain --config=configs/quickstart.py \
        --config.data.train_dir=workspace/quickstart/data_mlm_128 --workdir=workspace/quickstart/run
"""

from configs import base


def get_config():
    c = base.get_config()
    c.model.update(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512,
                   max_position_embeddings=128)
    c.data.train_dir = "workspace/quickstart/data_mlm_128"
    c.data.shuffle_buffer = 2000
    c.train.update(global_batch_size=32, steps=1500, steps_per_loop=50, checkpoint_every=500,
                   eval_every=500, eval_steps=0)
    c.optimizer.update(learning_rate=1e-3, warmup_steps=150)
    return c
