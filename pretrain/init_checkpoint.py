"""Continued pretraining: a run's model starts from released weights (`config.init_checkpoint`).

    init_from_checkpoint(model, "chinese_L-12_H-768_A-12/bert_model.ckpt", data_vocab,
                         vocab_map="by_token")

The checkpoint is any Google-layout one (`pretrain.google_checkpoint`). What this module adds is
the check that the run can use it: the run's architecture must equal a bert_config.json beside the
checkpoint, and the data's vocabulary must be the checkpoint's, or be mapped to its rows
(`vocab_map`). Optimizer state and the step start fresh.
"""

import os

import numpy as np

from storage import fs
from data_pipeline.tokenizer import VocabError, load_tokenizer
from pretrain.google_checkpoint import (BERT_CONFIG, VOCAB_ROWS, CheckpointError, load_weights,
                                        open_reader, read_bert_config, resolve, vocab_beside)

# Fields a checkpoint fixes (vocab_size is checked with the vocabulary itself).
_ARCHITECTURE = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "hidden_act", "max_position_embeddings", "type_vocab_size", "embedding_size")

def init_from_checkpoint(model, path: str, data_vocab=None, vocab_map: str = "", log=print) -> dict:
    """Starts pretraining from released weights: loads every name the checkpoint has.

    The vocabulary must be the data's: a different size, or a vocab.txt beside the checkpoint with
    other tokens, is refused unless `vocab_map` says how to map rows:
      "by_token": the data's token i takes the checkpoint row of the same token string; tokens
        the checkpoint lacks keep their fresh initial rows;
      a file path: one integer per line, line i = checkpoint row for the data's token i (-1: keep
        the initial row).
    `model.config` must match a bert_config.json beside the checkpoint, when there is one.

    Args:
      model: the built `BertPretrainingModel` of the run.
      path: checkpoint prefix or directory.
      data_vocab: the data's vocabulary (`manifest.Vocab`: path, sha256, vocab_size), or None.
      vocab_map: "", "by_token" or a path.
      log: a function taking one line of text.
    """
    prefix = resolve(path)
    available = open_reader(prefix).get_variable_to_shape_map()
    _check_architecture(prefix, model.config, log)
    rows = _vocab_rows(prefix, available, model.config.vocab_size, data_vocab, vocab_map, log)
    result = load_weights(model, prefix, rows=rows)
    log("init_checkpoint: %d variables loaded from %s%s" % (
        len(result["loaded"]), prefix,
        "; kept at their initial values (not in the checkpoint): %s" % ", ".join(result["kept"])
        if result["kept"] else ""))
    return result


def _check_architecture(prefix, config, log):
    path = fs.join(os.path.dirname(prefix), BERT_CONFIG)
    if not fs.exists(path):
        log("init_checkpoint: no %s beside %s; only the variable shapes are checked (not "
            "num_attention_heads or hidden_act)." % (BERT_CONFIG, prefix))
        return
    theirs = read_bert_config(path)
    differ = []
    for field in _ARCHITECTURE:
        a, b = getattr(config, field), getattr(theirs, field)
        if field == "embedding_size":
            a, b = a or config.hidden_size, b or theirs.hidden_size
        if a != b:
            differ.append("%s: run %r, checkpoint %r" % (field, a, b))
    if differ:
        raise CheckpointError("The run's model config differs from %s (%s). Set the run's "
                              "config.model to the checkpoint's values." % (path, "; ".join(differ)))


def _vocab_rows(prefix, available, model_vocab, data_vocab, vocab_map, log):
    """None when the vocabularies are the same; else the row map (see init_from_checkpoint)."""
    ckpt_rows = (available.get(VOCAB_ROWS[0]) or [None])[0]
    if ckpt_rows is None:
        return None   # load_weights reports the missing embeddings
    theirs = vocab_beside(prefix)
    ours = data_vocab.path if data_vocab else None
    advice = ("Build the data with the checkpoint's vocabulary (`launch.build_data --vocab=%s`), or "
              "set --config.init_vocab_map=by_token to copy embedding rows by token string (tokens "
              "the checkpoint lacks start from fresh rows)." % (theirs or "<its vocab.txt>"))
    if not vocab_map:
        if ckpt_rows != model_vocab:
            raise CheckpointError("init_checkpoint %s has a %d-token vocabulary but the data was "
                                  "tokenized with %d tokens (%s). %s" % (prefix, ckpt_rows, model_vocab,
                                                                        ours or "its vocabulary", advice))
        if theirs is None or data_vocab is None:
            log("init_checkpoint: vocabulary sizes agree (%d) but the tokens cannot be compared (%s)."
                % (model_vocab, "no vocab.txt beside the checkpoint" if theirs is None
                   else "the data manifest records no vocabulary"))
            return None
        if fs.sha256(theirs) == data_vocab.sha256:
            return None
        a, b = _tokens(theirs), _tokens(ours) if ours and fs.exists(ours) else None
        if a == b:
            return None   # same tokens, different bytes (line endings, trailing spaces)
        where = "" if b is None else ": %d vs %d tokens, first difference at id %d" % (
            len(a), len(b), next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b))))
        raise CheckpointError("The vocabulary beside init_checkpoint (%s) differs from the one the "
                              "data was built with (%s)%s. %s" % (theirs, ours, where, advice))
    if vocab_map == "by_token":
        if theirs is None or not ours or not fs.exists(ours):
            raise CheckpointError("init_vocab_map=by_token needs both vocabularies: %s." % (
                "no vocab.txt beside %s" % prefix if theirs is None
                else "the data's vocabulary %s is not readable here" % ours))
        index = {token: i for i, token in enumerate(_tokens(theirs))}
        rows = np.array([index.get(token, -1) for token in _tokens(ours)], dtype=np.int64)
    else:
        if not fs.exists(vocab_map):
            raise CheckpointError("init_vocab_map %s: no such file (use \"by_token\", or a file with "
                                  "one checkpoint row per line)." % vocab_map)
        try:
            rows = np.array([int(x) for x in fs.read_bytes(vocab_map).decode().split()], dtype=np.int64)
        except ValueError as e:
            raise CheckpointError("init_vocab_map %s: expected one integer per line (%s)." % (vocab_map, e))
    if len(rows) != model_vocab or rows.min(initial=0) < -1 or rows.max(initial=-1) >= ckpt_rows:
        raise CheckpointError("init_vocab_map: %d rows, values in [%d, %d]; needed %d rows with values "
                              "in [-1, %d)." % (len(rows), rows.min(initial=0), rows.max(initial=0),
                                                model_vocab, ckpt_rows))
    copied = int((rows >= 0).sum())
    if not copied:
        raise CheckpointError("init_vocab_map: no token of the data's vocabulary is in the checkpoint's.")
    log("init_checkpoint: vocabulary remapped (%s): %d of %d rows copied from the checkpoint, %d new "
        "tokens keep fresh rows." % (vocab_map, copied, model_vocab, model_vocab - copied))
    return rows


def _tokens(path):
    """The tokens of a vocab.txt (one per line, stripped) or of a SentencePiece model."""
    if path.endswith(".txt"):
        lines = fs.read_bytes(path).decode("utf-8").split("\n")
        if lines and not lines[-1]:
            lines.pop()
        return [line.strip() for line in lines]
    try:
        return load_tokenizer(path).vocab
    except VocabError as e:
        raise CheckpointError(str(e))
