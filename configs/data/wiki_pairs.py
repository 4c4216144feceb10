"""English Wikipedia-style pretraining data, google-research/bert's recipe: sentence pairs with
the next-sentence task, static masks in Google's TFRecord layout (read unchanged by
google-research/bert's run_pretraining.py and TF Model Garden), seq 128, 20 predictions, 5 masked
copies of every instance.

    python -m launch.build_data --config=configs/data/wiki_pairs.py --input='wiki/*.txt' \
        --vocab=vocab/uncased_vocab.txt --output_dir=data/wiki_pairs_128 --num_workers=16

Input in Google's convention: one sentence per line, a blank line between documents. Expect about
dupe_factor x (tokens / 110) examples (5 copies; pairs hold ~110 tokens on average at seq 128 with
short_seq_prob 0.1), `next_sentence_labels` about half 1, and ~15% of tokens masked (manifest
stats: masked_tokens / tokens). For seq 512 (phase 2 of BERT): --seq_len=512
--max_predictions_per_seq=80.
"""

from configs.data import base


def get_config():
    c = base.get_config()
    c.mode = "static"
    c.dupe_factor = 5
    c.instance.update(seq_len=128, layout="pairs", sentence_task="nsp", short_seq_prob=0.1)
    c.masking.update(masked_lm_prob=0.15, max_predictions=20)
    c.eval_fraction = 0.01
    return c
