"""BERT-family pretraining on TensorFlow (model, heads, optimizers, training loop), export to
Google's checkpoint layout, and the fine-tuning API.

Public API for fine-tuning (bert4keras's call, Keras 3 models):
    build_transformer_model(config_path, checkpoint_path, with_pool=..., with_mlm=...)
    load_finetune_tokenizer(vocab_path).encode(first, second, maxlen) -> (token_ids, segment_ids)
    sequence_padding(batch)
Training: `pretrain.trainer.Trainer`; export: `pretrain.export.export` (`python -m launch.export`).
Using what was trained: `pretrain.generation.AutoRegressiveDecoder` (UniLM / LM decoding),
`pretrain.simbert.SimBERT`, `pretrain.seq2seq` (seq2seq fine-tuning), `pretrain.adversarial`
(FGM) (`python -m launch.generate`, `launch.finetune_seq2seq`).

Importing the package does not import TensorFlow (the names above load it on first use), so
`pretrain.run_config` checks a config in a second.
"""

_LAZY = {"build_transformer_model": "pretrain.finetune", "load_finetune_tokenizer": "pretrain.finetune",
         "sequence_padding": "pretrain.finetune",
         "load_tokenizer": "pretrain.finetune"}   # the first release's name of load_finetune_tokenizer

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError("module 'pretrain' has no attribute %r" % name)
