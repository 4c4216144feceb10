"""RoBERTa-style data: full sentences packed across document boundaries to seq 512, no
next-sentence task, masks drawn afresh by the loader every epoch (dynamic masking).

    python -m launch.build_data --config=configs/data/roberta_pack.py --input='books/*.txt,wiki/*.txt' \
        --vocab=vocab/vocab.txt --output_dir=data/roberta_512 --num_workers=16

Expect almost no padding (instances span documents, a [SEP] between them), about tokens / 510
examples, and the masks in the loader: 15% of tokens, up to 77 per sequence, whole words.
Train with configs/roberta_wwm.py-style settings (with_nsp off does not matter: there are no pairs).
"""

from configs.data import base


def get_config():
    c = base.get_config()
    c.instance.update(seq_len=512, layout="pack", cross_documents=True)
    c.masking.update(masked_lm_prob=0.15, max_predictions=77)
    c.eval_fraction = 0.005
    return c
