"""Causal language-model data: documents joined with [SEP] and cut into windows of 256 tokens.

    python -m launch.build_data --config=configs/data/lm.py --input='corpus/*.txt' \
        --vocab=vocab.txt --output_dir=data/lm_256

Expect about tokens / 256 examples, every one full but the last of each chunk. Train with
configs/gpt_small.py.
"""

from configs.data import base


def get_config():
    c = base.get_config()
    c.task.task = "lm"
    c.instance.seq_len = 256
    c.eval_fraction = 0.01
    return c
