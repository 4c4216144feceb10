"""Chinese whole-word masking (RoBERTa-wwm-ext style): jieba's word boundaries decide which
characters are masked together (cut by rjieba, jieba's algorithm and dictionary in Rust: the same
words, ~20x faster; --segmenter=jieba for the Python reference), packed sequences of 512, dynamic masks, from JSON lines
{"text": ...} (one document per line).

    python -m launch.build_data --config=configs/data/zh_wwm.py --input=zh.jsonl \
        --vocab=chinese_L-12_H-768_A-12/vocab.txt --output_dir=data/zh_wwm_512 --num_workers=16

Expect the manifest's word starts to group characters (whole-word spans of 2 characters on
average in news text), about tokens / 510 examples, and masks in the loader covering whole
words. Train with configs/roberta_wwm.py.
"""

from configs.data import base


def get_config():
    c = base.get_config()
    c.segmenter = "rjieba"
    c.source.update(input_format="jsonl", text_field="text")
    c.instance.update(seq_len=512, layout="pack")
    c.masking.update(masked_lm_prob=0.15, max_predictions=77)
    c.eval_fraction = 0.005
    return c
