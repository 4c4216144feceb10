"""UniLM seq2seq data from JSON lines, e.g. title generation: {"content": ..., "title": ...} ->
[CLS] content [SEP] title [SEP], segment 0 / 1, the source cut first to fit seq 256, titles cut
to 32 tokens (both counted in the manifest).

    python -m launch.build_data --config=configs/data/unilm_json.py --input=news.jsonl \
        --vocab=vocab.txt --output_dir=data/unilm_256 --config.task.source_field=content \
        --config.task.target_field=title

Expect one example per usable record; bad records (missing fields, not JSON) stop the build with
their file:line (--on_bad_record=skip skips and counts them). Train with configs/unilm_base.py.
"""

from configs.data import base


def get_config():
    c = base.get_config()
    c.task.update(task="unilm", unilm_from="fields", source_field="source", target_field="target",
                  max_target_len=32)
    c.instance.seq_len = 256
    c.source.input_format = "jsonl"
    c.eval_fraction = 0.01
    return c
