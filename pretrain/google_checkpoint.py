"""Google BERT checkpoints (docs/FORMATS.md §2), written and read by variable name.

    write_checkpoint({name: array}, "export/bert_model.ckpt")
    load_weights(model, "chinese_L-12_H-768_A-12/bert_model.ckpt", heads=("mlm",))
    init_from_checkpoint(model, path, data_vocab, vocab_map="by_token")   # continued pretraining

Any checkpoint in Google's layout loads: our exports (`launch.export`), google-research/bert's
releases, bert4keras's `save_weights_as_checkpoint`, Chinese BERT / RoBERTa-wwm releases. Extra
names (optimizer slots, global_step) are ignored. A missing name, a shape that does not fit the
config, or a corrupt file is a CheckpointError naming the file and the variable, raised before
any variable is assigned: a model is never left half-loaded.

`model` is a `modeling.BertPretrainingModel`; `modeling.google_variables` maps names to variables.
"""

import json
import os
import re

import numpy as np
import tensorflow as tf

from storage import fs
from data_pipeline.tokenizer import VocabError, load_tokenizer
from pretrain.modeling import BertConfig, google_variables

CHECKPOINT = "bert_model.ckpt"
BERT_CONFIG = "bert_config.json"
EXPORT_MANIFEST = "export_manifest.json"
HEADS = {"pooler": "bert/pooler/", "mlm": "cls/predictions/", "nsp": "cls/seq_relationship/"}
VOCAB_ROWS = ("bert/embeddings/word_embeddings", "cls/predictions/output_bias")
# Fields a checkpoint fixes (vocab_size is checked with the vocabulary itself).
_ARCHITECTURE = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "hidden_act", "max_position_embeddings", "type_vocab_size", "embedding_size")
_REQUIRED_CONFIG = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size")


class CheckpointError(ValueError):
    """A checkpoint or config that cannot be loaded as asked; the message says why and what to do."""


# ---------------------------------------------------------------------------------- writing

def write_checkpoint(values: dict, prefix: str):
    """Writes {name: array} as a name-based V2 checkpoint (prefix.index, prefix.data-00000-of-00001)
    with TensorFlow's bundle writer, then reads the index back to check every name and shape."""
    names = sorted(values)
    with tf.device("/cpu:0"):
        tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                          tensors=[tf.constant(values[n]) for n in names])
    written = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
    wrong = [n for n in names if list(written.get(n, [-1])) != list(np.shape(values[n]))]
    if wrong or len(written) != len(names):
        raise CheckpointError("The checkpoint written at %s does not read back as written (%s)."
                              % (prefix, ", ".join(wrong[:3]) or "extra names"))


# ---------------------------------------------------------------------------------- reading

def read_config(path: str) -> BertConfig:
    """A bert_config.json (Google's keys; unknown keys such as `directionality` are ignored)."""
    if not fs.exists(path):
        raise CheckpointError("Config %s does not exist (expected a Google bert_config.json)." % path)
    try:
        d = json.loads(fs.read_bytes(path))
    except ValueError as e:
        raise CheckpointError("Config %s is not valid JSON (%s)." % (path, e))
    missing = [k for k in _REQUIRED_CONFIG if k not in d]
    if missing:
        raise CheckpointError("Config %s lacks %s: is it a BERT bert_config.json?"
                              % (path, ", ".join(missing)))
    try:
        return BertConfig.from_dict(d)
    except (TypeError, ValueError) as e:
        raise CheckpointError("Config %s: %s" % (path, e))


def resolve(path: str) -> str:
    """The checkpoint prefix for `path`: a prefix itself, or a directory holding bert_model.ckpt
    (or a `checkpoint` state file)."""
    if fs.exists(path + ".index"):
        return path
    if fs.isdir(path):
        if fs.exists(fs.join(path, CHECKPOINT + ".index")):
            return fs.join(path, CHECKPOINT)
        latest = tf.train.latest_checkpoint(path)
        if latest:
            return latest
    raise CheckpointError("No checkpoint at %s: expected PREFIX with PREFIX.index beside it (e.g. "
                          "…/bert_model.ckpt), or a directory holding bert_model.ckpt.index." % path)


def open_reader(prefix: str, advice: str = "re-download or re-export it"):
    try:
        return tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as e:
        raise CheckpointError("Cannot open checkpoint %s: %s. Its index is truncated or corrupt; %s."
                              % (prefix, first_line(e), advice))


def read_tensor(reader, prefix: str, name: str, advice: str = "re-download or re-export it"):
    try:
        return reader.get_tensor(name)
    except (tf.errors.OpError, ValueError, IndexError) as e:
        raise CheckpointError("Checkpoint %s is truncated or corrupt: reading %s failed (%s). %s."
                              % (prefix, name, first_line(e), advice[:1].upper() + advice[1:]))


def load_weights(model, path: str, heads=(), rows=None) -> dict:
    """Assigns `model`'s variables from the checkpoint at `path`, by Google name.

    Args:
      model: a built `BertPretrainingModel`.
      path: checkpoint prefix or directory (see `resolve`).
      heads: parts beyond the encoder that must be present: "pooler", "mlm", "nsp". Others are
        loaded when present and otherwise keep their values.
      rows: optional int array [model vocab_size]: rows[i] is the checkpoint row for the model's
        token i, -1 to keep the model's current row (applies to the word embeddings and the MLM
        output bias). bert4keras's `keep_tokens` is such a map without -1.

    Returns:
      {"loaded": names assigned, "kept": names of the model absent from the checkpoint}.
    """
    prefix = resolve(path)
    reader = open_reader(prefix)
    available = reader.get_variable_to_shape_map()
    targets = google_variables(model)
    required = [n for n in targets
                if not any(n.startswith(p) for p in HEADS.values())
                or any(n.startswith(HEADS[h]) for h in heads)]
    missing = [n for n in required if n not in available]
    if missing:
        raise _missing_error(prefix, missing, available, model.config)
    values = {}
    for name, variable in targets.items():
        if name not in available:
            continue
        value = read_tensor(reader, prefix, name)
        if rows is not None and name in VOCAB_ROWS:
            value = _remap_rows(value, rows, variable, prefix, name)
        if tuple(value.shape) != tuple(variable.shape):
            raise CheckpointError(
                "%s in %s has shape %s, but the model built from the config needs %s: the config "
                "(%s) does not describe this checkpoint." % (name, prefix, list(value.shape),
                                                            list(variable.shape), _fields_for(name)))
        values[name] = value
    for name, value in values.items():
        targets[name].assign(value.astype(targets[name].dtype))
    return {"loaded": sorted(values), "kept": sorted(set(targets) - set(values))}


def _remap_rows(value, rows, variable, prefix, name):
    rows = np.asarray(rows, dtype=np.int64)
    if rows.max(initial=-1) >= value.shape[0]:
        raise CheckpointError("The row map asks for row %d of %s in %s, which has %d rows."
                              % (rows.max(), name, prefix, value.shape[0]))
    out = np.array(variable.numpy(), dtype=value.dtype)
    if out.shape[0] != len(rows):
        raise CheckpointError("The row map has %d entries but the model's vocab_size is %d."
                              % (len(rows), out.shape[0]))
    out[rows >= 0] = value[rows[rows >= 0]]
    return out


def _fields_for(name):
    """The config fields that decide the shape of variable `name` (for error messages)."""
    if name in VOCAB_ROWS:
        return "vocab_size, embedding_size"
    if "position_embeddings" in name:
        return "max_position_embeddings"
    if "token_type_embeddings" in name:
        return "type_vocab_size"
    if "embedding_hidden_mapping_in" in name:
        return "embedding_size, hidden_size"
    if "/intermediate/" in name or re.search(r"layer_\d+/output/dense/kernel$", name):
        return "intermediate_size, hidden_size"
    return "hidden_size"


def _missing_error(prefix, missing, available, config):
    if any("/.ATTRIBUTES/" in k for k in available):
        return CheckpointError(
            "%s is a training checkpoint (TF2 object-based names such as %r), not Google's layout. "
            "Export it first: python -m launch.export --workdir=RUN --output=DIR, then load "
            "DIR/%s." % (prefix, next(k for k in sorted(available) if "/.ATTRIBUTES/" in k), CHECKPOINT))
    text = "%s lacks %d variable(s) the model needs: %s%s." % (
        prefix, len(missing), ", ".join(missing[:4]), ", …" if len(missing) > 4 else "")
    layers = {k.split("/")[2] for k in available if k.startswith("bert/encoder/layer_")}
    absent_heads = [h for h, p in HEADS.items() if any(m.startswith(p) for m in missing)]
    if not any(k.startswith("bert/") for k in available):
        text += " Its names look like %s: is it a BERT checkpoint in Google's layout?" % sorted(available)[:3]
    elif layers and len(layers) < config.num_hidden_layers:
        text += " It has %d layers but the config says num_hidden_layers=%d." % (
            len(layers), config.num_hidden_layers)
    elif absent_heads and all(any(m.startswith(HEADS[h]) for h in absent_heads) for m in missing):
        text += (" It was saved without the %s head(s); build the model without them."
                 % ", ".join(absent_heads))
    return CheckpointError(text)


# --------------------------------------------------------------------- continued pretraining

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
    theirs = read_config(path)
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


def vocab_beside(prefix: str):
    """The vocabulary stored with a checkpoint: named by an export manifest, or vocab.txt."""
    directory = os.path.dirname(prefix)
    manifest = fs.join(directory, EXPORT_MANIFEST)
    if fs.exists(manifest):
        name = json.loads(fs.read_bytes(manifest)).get("vocab", {}).get("file")
        if name and fs.exists(fs.join(directory, name)):
            return fs.join(directory, name)
    path = fs.join(directory, "vocab.txt")
    return path if fs.exists(path) else None


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


def first_line(e):
    """The first line of an exception's message (TensorFlow's run to pages)."""
    text = (getattr(e, "message", None) or str(e)).strip()
    return text.splitlines()[0] if text else type(e).__name__
