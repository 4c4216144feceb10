"""SimBERT data: synonym groups from JSON lines {"text": ..., "synonyms": [...]}; the loader draws
a new pair of distinct members per group every epoch and emits both orders as adjacent rows.

    python -m launch.build_data --config=configs/data/simbert.py --input=synonyms.jsonl \
        --vocab=vocab.txt --output_dir=data/simbert_64

Expect one example per group with at least two distinct members (smaller groups are counted as
groups_too_small), members cut to fit seq 64. Train with configs/simbert_base.py.
"""

from configs.data import base


def get_config():
    c = base.get_config()
    c.task.update(task="simbert", synonyms_field="synonyms")
    c.instance.seq_len = 64
    c.source.update(input_format="jsonl", text_field="text")
    return c
