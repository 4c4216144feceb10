"""Defaults shared by every experiment; each config file starts from `base.get_config()`.

Sections: task, seed, init_checkpoint, init_vocab_map, model (Google bert_config.json fields;
vocab_size 0 = from the data manifest), data, train (batching, accumulation, precision,
checkpoints, eval), optimizer (pretrain/optimizers.py), distribute (pretrain/distribute.py),
probes (labelled CSV files scored at each evaluation: pretrain/probes.py).
Every field, its default, what it means and what it may be are written once, in the typed
sections of pretrain/run_config.py (`PretrainConfig`); this returns them as the
ml_collections.ConfigDict that config files edit and --config.x=value overrides change.
"""

from pretrain import run_config


def get_config():
    return run_config.to_config_dict()
