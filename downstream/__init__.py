"""What uses an export: fine-tuning, generation, SimBERT retrieval, seq2seq, adversarial training.

Everything here starts from an export directory (`python -m launch.export`, or a Google release
such as chinese_L-12_H-768_A-12) and never from a training run: the engine is `pretrain`.

Public API (bert4keras's calls, Keras 3 models):
    build_transformer_model(config_path, checkpoint_path, with_pool=..., with_mlm=...)
    load_finetune_tokenizer(vocab_path).encode(first, second, maxlen) -> (token_ids, segment_ids)
    sequence_padding(batch)
    finetune_classifier(export_dir, train_rows, eval_rows, ...)   `launch.finetune_classifier`
    AutoRegressiveDecoder(model, end_id, max_len)                  `launch.generate`
    load_decoder(export_dir, application) -> (decoder, tokenizer)
    SimBERT.from_export(export_dir)                                 SimBERT vectors and paraphrases
    adversarial_training(model, epsilon)                            FGM on the word embeddings

The modules:
    backbone        BertBackbone (the pretraining network as one Keras layer), build_transformer_model
    tokenization    the fine-tuning tokenizer (bert4keras's interface) and sequence_padding
    classifier      text classification on an export, the library half of launch.finetune_classifier
    generation      AutoRegressiveDecoder: UniLM / LM decoding with a key/value cache
    decoding        the decoding algorithms (greedy, beam, top-k/top-p sampling) as TensorFlow loops
    simbert         SimBERT: sentence vectors, retrieval, and similar-sentence generation
    seq2seq         UniLM seq2seq fine-tuning (`launch.finetune_seq2seq`)
    adversarial     FGM adversarial training (bert4keras's one-liner)
    text_metrics    ROUGE / BLEU for seq2seq evaluation

Importing the package does not import TensorFlow (the names above load it on first use).
"""

_LAZY = {"build_transformer_model": "downstream.backbone",
         "load_finetune_tokenizer": "downstream.tokenization",
         "sequence_padding": "downstream.tokenization",
         "finetune_classifier": "downstream.classifier",
         "AutoRegressiveDecoder": "downstream.generation",
         "load_decoder": "downstream.generation",
         "SimBERT": "downstream.simbert",
         "adversarial_training": "downstream.adversarial"}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError("module 'downstream' has no attribute %r" % name)
