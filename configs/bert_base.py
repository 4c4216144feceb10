"""BERT-base (110M) MLM pretraining, the Google recipe with AdamW, seq 128.

    python -m launch.build_data --input='corpus/*.txt' --vocab=vocab.txt --output_dir=data/base_128 \
        --seq_len=128 --num_workers=16
    python -m launch.pretrain --config=configs/bert_base.py --config.data.train_dir=data/base_128 \
        --workdir=runs/bert_base [--config.distribute.name=mirrored]

You should see MLM accuracy pass ~0.5 within the first 100k steps at batch 256 on Wikipedia-size
data; checkpoints every 1000 steps in runs/bert_base/checkpoints.
"""

from configs import base


def get_config():
    c = base.get_config()
    c.train.update(global_batch_size=256, steps=1_000_000, steps_per_loop=200)
    c.optimizer.update(name="adamw", learning_rate=1e-4, warmup_steps=10_000)
    return c
