"""Google BERT checkpoints (docs/FORMATS.md §2), written and read by variable name.

    write_checkpoint({name: array}, "export/bert_model.ckpt")
    load_weights(model, "chinese_L-12_H-768_A-12/bert_model.ckpt", heads=("mlm",))

Any checkpoint in Google's layout loads: our exports (`launch.export`), google-research/bert's
releases, bert4keras's `save_weights_as_checkpoint`, Chinese BERT / RoBERTa-wwm releases. Extra
names (optimizer slots, global_step) are ignored. A missing name, a shape that does not fit the
config, or a corrupt file is a CheckpointError naming the file and the variable, raised before
any variable is assigned: a model is never left half-loaded.

`model` is a `modeling.BertPretrainingModel`; `modeling.google_variables` maps names to variables.
Continued pretraining from such a checkpoint (architecture and vocabulary checks, row mapping) is
`pretrain.init_checkpoint`.
"""

import json
import re

import numpy as np
import tensorflow as tf

from storage import fs
from pretrain.export_dir import CHECKPOINT
from pretrain.modeling import BertConfig, google_variables

HEADS = {"pooler": "bert/pooler/", "mlm": "cls/predictions/", "nsp": "cls/seq_relationship/"}
VOCAB_ROWS = ("bert/embeddings/word_embeddings", "cls/predictions/output_bias")
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

def read_bert_config(path: str) -> BertConfig:
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


def load_weights(model, path: str, heads=(), rows=None, reader=None) -> dict:
    """Assigns `model`'s variables from the checkpoint at `path`, by Google name.

    Args:
      model: a built `BertPretrainingModel`.
      path: checkpoint prefix or directory (see `resolve`).
      heads: parts beyond the encoder that must be present: "pooler", "mlm", "nsp". Others are
        loaded when present and otherwise keep their values.
      rows: optional int array [model vocab_size]: rows[i] is the checkpoint row for the model's
        token i, -1 to keep the model's current row (applies to the word embeddings and the MLM
        output bias). bert4keras's `keep_tokens` is such a map without -1.
      reader: the checkpoint's reader where the caller holds it open (`ExportDir.reader`); `path`
        is then its prefix.

    Returns:
      {"loaded": names assigned, "kept": names of the model absent from the checkpoint}.
    """
    prefix = path
    if reader is None:
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
                                                            list(variable.shape), config_fields_for(name)))
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


def config_fields_for(name):
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


def first_line(e):
    """The first line of an exception's message (TensorFlow's run to pages)."""
    text = (getattr(e, "message", None) or str(e)).strip()
    return text.splitlines()[0] if text else type(e).__name__
