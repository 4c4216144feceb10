"""BERT-family pretraining on TensorFlow (model, heads, optimizers, training loop), export to
Google's checkpoint layout, and the fine-tuning API.

Public API for fine-tuning (bert4keras's call, Keras 3 models):
    build_transformer_model(config_path, checkpoint_path, with_pool=..., with_mlm=...)
    load_tokenizer(vocab_path).encode(first, second, maxlen) -> (token_ids, segment_ids)
    sequence_padding(batch)
Training: `pretrain.trainer.Trainer`; export: `pretrain.export.export` (`python -m launch.export`).
Using what was trained: `pretrain.generation.AutoRegressiveDecoder` (UniLM / LM decoding),
`pretrain.simbert.SimBERT`, `pretrain.seq2seq` (seq2seq fine-tuning), `pretrain.adversarial`
(FGM) (`python -m launch.generate`, `launch.finetune_seq2seq`).
"""

from pretrain.finetune import build_transformer_model, load_tokenizer, sequence_padding

__all__ = ["build_transformer_model", "load_tokenizer", "sequence_padding"]
