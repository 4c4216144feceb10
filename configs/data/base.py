"""Every setting of a data build at its default: what the other files in configs/data/ start from.

    python -m launch.build_data --config=configs/data/base.py --input='corpus/*.txt' \
        --vocab=vocab/vocab.txt --output_dir=data/wiki_128

is the same as `python -m launch.build_data --input=... --vocab=... --output_dir=...`: dynamic
masking, RoBERTa-style packing, seq 128. Any field can be set with --config.<field>=<value>
(e.g. --config.instance.seq_len=512); the shortcut flags (--seq_len=512) set the same fields. The
defaults are written once, in data_pipeline/build_config.py (BuildConfig and the dataclasses it
holds); `python -m launch.build_data --helpfull` lists the shortcuts with their defaults.
"""

from data_pipeline import build_config


def get_config():
    return build_config.to_config_dict()
