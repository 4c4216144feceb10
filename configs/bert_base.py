"""BERT-base (110M) MLM pretraining, the Google recipe with AdamW, seq 128.

    python -m launch.build_data --input='corpus/*.txt' --vocab=vocab.txt --output_dir=data/base_128 \
        --seq_len=128 --num_workers=16
    python -m launch.pretrain --config=configs/bert_base.py --config.data.train_dir=data/base_128 \
        --workdir=runs/bert_base [--config.distribute.name=mirrored]

You should see MLM accuracy pass ~0.5 within the first 100k steps at batch 256 on Wikipedia-size
data; checkpoints every 1000 steps in runs/bert_base/checkpoints.

Precision is "auto": bfloat16 on TPUs, float32 elsewhere. A TPU's matrix units multiply in
bfloat16 (float32 matmuls take several bfloat16 passes), bfloat16 has float32's exponent range so
no loss scaling is needed, and activations take half the memory; the weights, the optimizer state,
the softmax and the losses stay float32 (Keras's mixed_bfloat16 policy). On GPUs float32 stays the
default (TensorFloat-32 matmuls on Ampere and later); --config.train.precision=bfloat16 opts in.
"""

from configs import base


def get_config():
    c = base.get_config()
    c.train.update(global_batch_size=256, steps=1_000_000, steps_per_loop=200,
                   precision="auto")
    c.optimizer.update(name="adamw", learning_rate=1e-4, warmup_steps=10_000)
    return c
