"""Continued pretraining: a run's model starts from released weights (`config.init_checkpoint`).

    init_from_checkpoint(model, "chinese_L-12_H-768_A-12/bert_model.ckpt", data_vocab,
                         vocab_map="by_token")
    init_from_checkpoint(model, "bert-base-chinese/", data_vocab)     # a transformers directory
    init_from_checkpoint(model, "gs://b/models/bert-base-chinese", data_vocab)   # also on GCS

The checkpoint is any Google-layout one (`pretrain.google_checkpoint`), or a transformers
BERT/RoBERTa directory (config.json and *.safetensors, no bert_model.ckpt; read by
`hf_format.read_hf_dir`, its vocabulary from vocab.txt, sentencepiece.model or tokenizer.json),
local or gs:// (the files it reads copied to a temporary directory first, CRC32C-verified, by
`hf_format.download_hf_dir`; messages name the gs:// files).
What this module adds is the check that the run can use it: the run's architecture must equal the
config beside the checkpoint (bert_config.json, or config.json), and the data's vocabulary must be
the checkpoint's, or be mapped to its rows (`vocab_map`). Optimizer state and the step start fresh.
"""

import glob
import json
import os
import tempfile

import numpy as np

from storage import fs, gcs
from data_pipeline.tokenizer import VocabError, load_tokenizer
from pretrain import hf_format
from pretrain.export_dir import BERT_CONFIG, CHECKPOINT, ExportDir
from pretrain.google_checkpoint import VOCAB_ROWS, CheckpointError, load_weights

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
      path: checkpoint prefix or directory (Google layout), or a transformers model directory
        (local or gs://).
      data_vocab: the data's vocabulary (its manifest's `VocabRecord`: path, sha256), or None.
      vocab_map: "", "by_token" or a path.
      log: a function taking one line of text.
    """
    try:
        hf = is_hf_dir(path)
    except gcs.GcsError as e:
        raise CheckpointError(str(e))
    if not hf:
        return _init(model, ExportDir(path), data_vocab, vocab_map, log)
    with tempfile.TemporaryDirectory(prefix="init-hf-") as scratch:
        if not gcs.is_gcs(path):
            return _init(model, HFWeights(path, scratch, data_vocab, log), data_vocab, vocab_map, log)
        # A gs:// directory is read from a local copy of its files, whose path no message shows:
        # errors and log lines name the gs:// files.
        local, url = os.path.join(scratch, "hf"), path.rstrip("/")

        def named(text):
            return text.replace(local, url)

        def log_named(line):
            log(named(line))

        try:
            hf_format.download_hf_dir(url, local)
            checkpoint = HFWeights(local, scratch, data_vocab, log_named)
            return _init(model, checkpoint, data_vocab, vocab_map, log_named)
        except (hf_format.HFFormatError, gcs.GcsError, CheckpointError) as e:
            raise CheckpointError(named(str(e))) from None


def is_hf_dir(path: str) -> bool:
    """Whether `path` is a transformers model directory: config.json, and no Google checkpoint
    (bert_model.ckpt*). Local, or gs:// (listed with google-cloud-storage, as the preflight does:
    a GcsError when it cannot be)."""
    if gcs.is_gcs(path):
        held = gcs.list_sizes(path)
        return hf_format.CONFIG in held and not any(name.startswith(CHECKPOINT) for name in held)
    return (not fs.is_remote(path) and os.path.isfile(os.path.join(path, hf_format.CONFIG))
            and not glob.glob(os.path.join(glob.escape(path), CHECKPOINT + "*")))


class HFWeights:
    """A transformers directory, read once, with what `init_from_checkpoint` reads of an
    `ExportDir` (prefix, config_path, config, vocab_path, variables) and its own reader
    (`get_variable_to_shape_map`, `get_tensor`), so both take the same checks and loading.

    Args:
      directory: the transformers directory.
      scratch: a directory for the vocab.txt of a tokenizer.json-only directory.
      data_vocab, log: as `init_from_checkpoint`'s (the casing of the two tokenizers is compared).

    Raises:
      CheckpointError: with `hf_format`'s message (pickled weights only, another architecture,
        missing or misshapen tensors).
    """

    def __init__(self, directory, scratch, data_vocab=None, log=print):
        try:
            # RoBERTa's LayerNorm epsilon (1e-5) is taken, and said: continued pretraining adapts.
            values, self.config, self.vocab_path = hf_format.read_hf_dir(
                directory, vocab_output=os.path.join(scratch, "vocab.txt"), accept_layer_norm_eps=True)
            with open(os.path.join(directory, hf_format.CONFIG), encoding="utf-8") as f:
                eps = json.load(f).get("layer_norm_eps", hf_format.GOOGLE_LAYER_NORM_EPS)
            lower_case = hf_format.tokenizer_settings(directory)["lower_case"]
        except hf_format.HFFormatError as e:
            raise CheckpointError(str(e))
        self.prefix = self.directory = directory
        self.config_path = os.path.join(directory, hf_format.CONFIG)
        self.variables = {name: list(value.shape) for name, value in values.items()}
        self.reader, self._values = self, values
        if eps != hf_format.GOOGLE_LAYER_NORM_EPS:
            log("init_checkpoint: %s has layer_norm_eps=%g; this model's LayerNorm uses 1e-12 "
                "(outputs move by about that much of their scale until training adapts)."
                % (self.config_path, eps))
        if data_vocab is not None and lower_case is not None and lower_case != data_vocab.lower_case:
            log("init_checkpoint: %s's tokenizer has do_lower_case=%s, but the data was tokenized with "
                "lower_case=%s." % (directory, lower_case, data_vocab.lower_case))

    def get_variable_to_shape_map(self):
        return self.variables

    def get_tensor(self, name):
        return self._values[name]


def _init(model, checkpoint, data_vocab, vocab_map, log):
    available = checkpoint.variables
    _check_architecture(checkpoint, model.config, log)
    rows = _vocab_rows(checkpoint, available, model.config.vocab_size, data_vocab, vocab_map, log)
    result = load_weights(model, checkpoint.prefix, rows=rows, reader=checkpoint.reader)
    log("init_checkpoint: %d variables loaded from %s%s" % (
        len(result["loaded"]), checkpoint.prefix,
        "; kept at their initial values (not in the checkpoint): %s" % ", ".join(result["kept"])
        if result["kept"] else ""))
    return result


def _check_architecture(checkpoint, config, log):
    path = checkpoint.config_path
    if not fs.exists(path):
        log("init_checkpoint: no %s beside %s; only the variable shapes are checked (not "
            "num_attention_heads or hidden_act)." % (BERT_CONFIG, checkpoint.prefix))
        return
    theirs = checkpoint.config
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


def _vocab_rows(checkpoint, available, model_vocab, data_vocab, vocab_map, log):
    """None when the vocabularies are the same; else the row map (see init_from_checkpoint)."""
    ckpt_rows = (available.get(VOCAB_ROWS[0]) or [None])[0]
    if ckpt_rows is None:
        return None   # load_weights reports the missing embeddings
    prefix, theirs = checkpoint.prefix, checkpoint.vocab_path
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
