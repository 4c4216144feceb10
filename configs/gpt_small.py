"""A small GPT-style causal LM on the BERT backbone (causal mask, tied output embeddings).

    python -m launch.build_data --task=lm --input='corpus/*.txt' --vocab=vocab.txt \
        --output_dir=data/lm_256 --seq_len=256
    python -m launch.pretrain --config=configs/gpt_small.py --config.data.train_dir=data/lm_256 \
        --workdir=runs/gpt_small

Expect seq2seq_loss (next-token cross-entropy) to fall steadily; perplexity = exp(loss).
"""

from configs import base


def get_config():
    c = base.get_config()
    c.task = "lm"
    c.model.update(hidden_size=512, num_hidden_layers=6, num_attention_heads=8, intermediate_size=2048,
                   max_position_embeddings=256)
    c.train.update(global_batch_size=64, steps=200_000)
    c.optimizer.update(learning_rate=3e-4, warmup_steps=2000, decay_shape="cosine")
    return c
