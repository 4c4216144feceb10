"""Chinese RoBERTa-wwm-ext style: whole-word masking with jieba, full-sentence packing, no NSP.

    python -m launch.build_data --input=zh.jsonl --vocab=chinese_vocab.txt --segmenter=jieba \
        --output_dir=data/zh_wwm_512 --seq_len=512 --num_workers=16
    python -m launch.pretrain --config=configs/roberta_wwm.py \
        --config.data.train_dir=data/zh_wwm_512 --workdir=runs/roberta_wwm

Expect MLM accuracy to
climb past 0.6 on a news/wiki mix.
"""

from configs import base


def get_config():
    c = base.get_config()
    c.model.update(vocab_size=0, max_position_embeddings=512)
    c.train.update(global_batch_size=256, steps=1_000_000, with_nsp=False, recompute=True)
    c.optimizer.update(name="adamw", learning_rate=1e-4, warmup_steps=10_000)
    return c
