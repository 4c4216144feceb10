"""SimBERT: UniLM generation of a synonym + in-batch retrieval over the global batch.

    python -m launch.build_data --task=simbert --input=synonyms.jsonl --output_dir=data/simbert_64 \
        --seq_len=64
    python -m launch.pretrain --config=configs/simbert_base.py \
        --config.data.train_dir=data/simbert_64 --workdir=runs/simbert

The global batch must split into even per-replica micro-batches (pairs stay together). Expect
similarity_accuracy (partner found among the whole batch) to approach 0.9+ and seq2seq_loss to fall.
"""

from configs import base


def get_config():
    c = base.get_config()
    c.task = "simbert"
    c.train.update(global_batch_size=128, steps=100_000)
    c.optimizer.update(learning_rate=5e-6, warmup_steps=0, decay_shape="constant")
    return c
