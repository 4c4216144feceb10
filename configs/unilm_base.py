"""UniLM seq2seq on a BERT-base backbone (e.g. title generation from content).

    python -m launch.build_data --task=unilm --input=news.jsonl --source_field=content \
        --target_field=title --max_target_len=32 --output_dir=data/unilm_256 --seq_len=256
    python -m launch.pretrain --config=configs/unilm_base.py \
        --config.data.train_dir=data/unilm_256 --workdir=runs/unilm

You should see seq2seq_loss fall and seq2seq_accuracy (next-token accuracy on the target) rise;
the export is plain BERT weights (the UniLM behaviour is the attention mask).
"""

from configs import base


def get_config():
    c = base.get_config()
    c.task = "unilm"
    c.train.update(global_batch_size=128, steps=100_000)
    c.optimizer.update(learning_rate=2e-5, warmup_steps=1000)
    return c
