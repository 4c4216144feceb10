"""KerasHub preset directories (docs/FORMATS.md §10): Google-layout weights out to what
`keras_hub.models.Bert*` loads.

    write_keras_hub_dir("exports/base/keras_hub", values, config, "vocab.txt", lower_case=False,
                        task="mlm", card={"run": "runs/base", "step": 100000})

KerasHub (keras-hub 0.32) loads a preset directory with `BertBackbone.from_preset(DIR)`,
`BertMaskedLM.from_preset(DIR)` and `BertTokenizer.from_preset(DIR)`:

    config.json                       the BertBackbone's Keras config (registered_name keras_hub>BertBackbone)
    model.weights.h5                  its weights, in Keras 3's weights-file layout
    task.json, task.weights.h5        BertMaskedLM (with its preprocessor), and its MLM head's weights
    tokenizer.json, preprocessor.json BertTokenizer, BertMaskedLMPreprocessor (sequence_length =
                                      max_position_embeddings)
    assets/tokenizer/vocabulary.txt   the WordPiece vocabulary, a token per line
    metadata.json, README.md          versions and parameter count; a model card

The files are written here with json and h5py, without KerasHub (neither this process nor the
project's requirements have it): the JSON is what `save_to_preset` writes, and a weights file is
groups `layers/<layer>/vars` holding datasets "0", "1", ... in the order of the layer's variables,
the layout Keras 3 reads by walking the model's layers (their class names in snake case, numbered
from the second one of a class: transformer_encoder, transformer_encoder_1, ...). Published presets
are files of that layout, so KerasHub keeps reading it. tests/export/test_keras_hub_format.py loads
the directory with KerasHub itself and compares its outputs with ours.

What KerasHub's BERT computes, read from its source, and what that allows:

- BertBackbone: token + position + segment embeddings, LayerNorm (epsilon 1e-12), post-LayerNorm
  Transformer blocks whose feed-forward activation is the tanh approximation of GELU (our
  `gelu_new`; fixed in its code), pooled output = dense + tanh on [CLS]. Our model with
  hidden_act gelu_new computes the same; any other hidden_act is refused, and so are factorized
  embeddings (it has no projection).
- BertMaskedLM's head (MaskedLMHead): dense, exact GELU, LayerNorm with epsilon 1e-5, the word
  embeddings (tied) and an output bias. Ours applies hidden_act (gelu_new) and epsilon 1e-12, and
  KerasHub fixes both, so its MLM probabilities differ from ours slightly (1e-6 to 1e-4 on small
  test models); the backbone's outputs with our head give ours to float32 round-off.
- BertTokenizer: WordPiece only (SentencePiece vocabularies are refused), and with
  lowercase=True it applies NFKC case folding, which maps full-width forms to ASCII ("，" to ",",
  "Ａ" to "a") where Google's lower() keeps them: lower-cased vocabularies are refused, since
  ordinary Chinese text would get other ids. Cased, it splits text as Google's BasicTokenizer does,
  except on whitespace other than ASCII (U+3000, U+00A0: part of a word there), control and format
  characters such as U+0000 and U+200B (word boundaries there; Google removes them, and U+FFFD)
  and words longer than 100 UTF-8 bytes ([UNK] there; Google's limit is 200 characters).
- Causal-LM weights (task lm) are refused: KerasHub's BERT has no causal mask. The NSP head has no
  place and is left out; a pooler no loss trained is written as the checkpoint holds it (the
  model card says so), since BertBackbone always has one.
"""

import io
import itertools
import json
import os

import numpy as np

from pretrain import hf_format

CONFIG = "config.json"
TASK = "task.json"
TOKENIZER = "tokenizer.json"
PREPROCESSOR = "preprocessor.json"
METADATA = "metadata.json"
MODEL_WEIGHTS = "model.weights.h5"
TASK_WEIGHTS = "task.weights.h5"
VOCABULARY = "assets/tokenizer/vocabulary.txt"
CARD = "README.md"
# The versions whose preset layout this writes (and the tests load with); metadata.json records them.
KERAS_VERSION = "3.15.1"
KERAS_HUB_VERSION = "0.32.0"
# KerasHub's BERT tasks (what its save_to_preset lists in metadata.json for a BertBackbone).
TASKS = ["MaskedLM", "TextClassifier", "TextEmbedder"]
# BertMaskedLM's optimizer state as its save_to_preset writes it for a model compiled by default
# (Adam(5e-5), no step taken): without it, every load warns that the optimizer was skipped.
_OPTIMIZER = {"0": np.array(0, np.int64), "1": np.array(5e-5, np.float32)}
_NSP = ("cls/seq_relationship/output_weights", "cls/seq_relationship/output_bias")
_POOLER_UNTRAINED = ("mlm", "unilm", "lm")


class KerasHubFormatError(ValueError):
    """A model or vocabulary KerasHub's BERT cannot hold; the message says why and what to do."""


# ----------------------------------------------------------------------------------- checks

def check_exportable(config, vocab_kind: str, lower_case: bool, task: str):
    """A KerasHubFormatError, in one line naming every reason, unless KerasHub's BertBackbone and
    BertTokenizer reproduce a model of `config` with this vocabulary (kind "wordpiece" or
    "sentencepiece", `lower_case`) and `task` (a run's task)."""
    reasons = []
    if config.hidden_act != "gelu_new":
        reasons.append("hidden_act is %r, but KerasHub's BertBackbone always applies the tanh "
                       "approximation of GELU (our gelu_new), so its outputs would not be this "
                       "model's" % config.hidden_act)
    if config.embedding_size not in (None, config.hidden_size):
        reasons.append("the embeddings are factorized (embedding_size=%d, hidden_size=%d), and "
                       "BertBackbone has no projection" % (config.embedding_size, config.hidden_size))
    if vocab_kind != "wordpiece":
        reasons.append("the vocabulary is %s, and KerasHub's BertTokenizer is WordPiece only"
                       % vocab_kind)
    elif lower_case:
        reasons.append("the vocabulary is lower-cased, and KerasHub's BertTokenizer lower-cases "
                       "with NFKC case folding (full-width \"，\" becomes \",\"), where Google's "
                       "lower() keeps such characters, so text would get other ids")
    if task == "lm":
        reasons.append("the run trained a causal LM, and KerasHub's BERT has no causal mask")
    if reasons:
        raise KerasHubFormatError("KerasHub's BERT cannot hold this model: %s. Export --format=hf "
                                  "instead (transformers holds it)." % "; ".join(reasons))


# ------------------------------------------------------------------------------------ names

def _layout(config):
    """[(Google name, weights file, h5 group, dataset, Keras shape)] of every weight KerasHub's
    BertMaskedLM has: the backbone's in MODEL_WEIGHTS, the MLM head's in TASK_WEIGHTS.

    Attention kernels are EinsumDense's: query/key/value [H, heads, head_size] (bias [heads,
    head_size]), the output [heads, head_size, H]: Google's [H, H] reshaped, heads outermost."""
    h, n = config.hidden_size, config.num_attention_heads
    rows = [("bert/embeddings/word_embeddings", "layers/reversible_embedding", [config.vocab_size, h]),
            ("bert/embeddings/position_embeddings", "layers/position_embedding",
             [config.max_position_embeddings, h]),
            ("bert/embeddings/token_type_embeddings", "layers/embedding", [config.type_vocab_size, h]),
            ("bert/embeddings/LayerNorm/gamma", "layers/layer_normalization", [h]),
            ("bert/embeddings/LayerNorm/beta", "layers/layer_normalization", [h])]
    for i in range(config.num_hidden_layers):
        g = "bert/encoder/layer_%d/" % i
        k = "layers/transformer_encoder%s/" % ("_%d" % i if i else "")
        attention = k + "_self_attention_layer/"
        for part in ("query", "key", "value"):
            rows += [(g + "attention/self/%s/kernel" % part, attention + part + "_dense", [h, n, h // n]),
                     (g + "attention/self/%s/bias" % part, attention + part + "_dense", [n, h // n])]
        rows += [(g + "attention/output/dense/kernel", attention + "output_dense", [n, h // n, h]),
                 (g + "attention/output/dense/bias", attention + "output_dense", [h])]
        for google, keras in (("attention/output/LayerNorm", "_self_attention_layer_norm"),
                              ("intermediate/dense", "_feedforward_intermediate_dense"),
                              ("output/dense", "_feedforward_output_dense"),
                              ("output/LayerNorm", "_feedforward_layer_norm")):
            first, second = ("gamma", "beta") if google.endswith("LayerNorm") else ("kernel", "bias")
            rows += [(g + google + "/" + weight, k + keras, None) for weight in (first, second)]
    rows += [("bert/pooler/dense/kernel", "layers/dense", [h, h]),
             ("bert/pooler/dense/bias", "layers/dense", [h])]
    head = [("cls/predictions/transform/dense/kernel", "layers/masked_lm_head/_intermediate_dense", [h, h]),
            ("cls/predictions/transform/dense/bias", "layers/masked_lm_head/_intermediate_dense", [h]),
            ("cls/predictions/transform/LayerNorm/gamma",
             "layers/masked_lm_head/_intermediate_layer_norm", [h]),
            ("cls/predictions/transform/LayerNorm/beta",
             "layers/masked_lm_head/_intermediate_layer_norm", [h]),
            ("cls/predictions/output_bias", "layers/masked_lm_head", [config.vocab_size])]
    out, seen = [], {}
    for rows_of, file in ((rows, MODEL_WEIGHTS), (head, TASK_WEIGHTS)):
        for google, group, shape in rows_of:
            index = seen.get((file, group), 0)
            seen[(file, group)] = index + 1
            out.append((google, file, group, str(index), shape))
    return out


def to_keras_hub(values: dict, config) -> dict:
    """{weights file: {h5 group: {dataset: float32 array}}} of {Google name: array}.

    The backbone's and the MLM head's weights are required; the NSP head's are dropped (KerasHub's
    BERT has none); any other name is an error."""
    layout = _layout(config)
    known = {google for google, _, _, _, _ in layout} | set(_NSP)
    unknown = sorted(set(values) - known)
    missing = [google for google, _, _, _, _ in layout if google not in values]
    if unknown or missing:
        raise KerasHubFormatError("%s: not the weights of a BERT of this config (num_hidden_layers=%d)."
                                  % ("%d weight(s) have no place in KerasHub's BERT: %s" % (
                                      len(unknown), ", ".join(unknown[:5])) if unknown else
                                     "%d weight(s) are missing: %s" % (len(missing), ", ".join(missing[:5])),
                                     config.num_hidden_layers))
    out = {MODEL_WEIGHTS: {}, TASK_WEIGHTS: {}}
    for google, file, group, index, shape in layout:
        value = np.asarray(values[google], dtype=np.float32)
        if shape is not None:
            if value.size != int(np.prod(shape)):
                raise KerasHubFormatError("%s has shape %s, which the config does not give (KerasHub "
                                          "shape %s)." % (google, list(value.shape), shape))
            value = value.reshape(shape)
        out[file].setdefault(group, {})[index] = np.ascontiguousarray(value)
    return out


# ----------------------------------------------------------------------------------- configs

def _dtype(name):
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": name},
            "registered_name": None}


def _serialized(module, class_name, config):
    return {"module": "keras_hub.src.models.bert." + module, "class_name": class_name,
            "config": config, "registered_name": "keras_hub>" + class_name}


def backbone_config(config) -> dict:
    """config.json: BertBackbone's serialized config. KerasHub has one dropout rate for the
    embeddings, attention and feed-forward: hidden_dropout_prob's (only training uses it)."""
    return _serialized("bert_backbone", "BertBackbone", {
        "name": "bert_backbone", "trainable": True, "dtype": _dtype("float32"),
        "vocabulary_size": config.vocab_size, "num_layers": config.num_hidden_layers,
        "num_heads": config.num_attention_heads, "hidden_dim": config.hidden_size,
        "intermediate_dim": config.intermediate_size, "dropout": config.hidden_dropout_prob,
        "max_sequence_length": config.max_position_embeddings, "num_segments": config.type_vocab_size})


def tokenizer_config() -> dict:
    """tokenizer.json: BertTokenizer over assets/tokenizer/vocabulary.txt; case and accents kept
    (a cased vocabulary: check_exportable refuses the others), CJK ideographs split (its default)."""
    return _serialized("bert_tokenizer", "BertTokenizer", {
        "name": "bert_tokenizer", "trainable": True, "dtype": _dtype("int32"),
        "config_file": TOKENIZER, "vocabulary": None, "sequence_length": None,
        "lowercase": False, "strip_accents": False, "split": True,
        "suffix_indicator": "##", "oov_token": "[UNK]", "special_tokens": None,
        "special_tokens_in_strings": False})


def preprocessor_config(config) -> dict:
    """preprocessor.json: BertMaskedLMPreprocessor with KerasHub's masking defaults, inputs padded
    to max_position_embeddings."""
    return _serialized("bert_masked_lm_preprocessor", "BertMaskedLMPreprocessor", {
        "name": "bert_masked_lm_preprocessor", "trainable": True, "dtype": _dtype("float32"),
        "tokenizer": tokenizer_config(), "config_file": PREPROCESSOR,
        "sequence_length": config.max_position_embeddings, "truncate": "round_robin",
        "mask_selection_rate": 0.15, "mask_selection_length": 96, "mask_token_rate": 0.8,
        "random_token_rate": 0.1})


def task_config(config) -> dict:
    """task.json: BertMaskedLM over the backbone and preprocessor above."""
    return _serialized("bert_masked_lm", "BertMaskedLM", {
        "backbone": backbone_config(config), "preprocessor": preprocessor_config(config),
        "name": "bert_masked_lm"})


# ----------------------------------------------------------------------------------- writing

def write_keras_hub_dir(directory: str, values: dict, config, vocab_path: str, lower_case: bool,
                        task: str, card: dict = None) -> list:
    """Writes a KerasHub preset directory (see the module docstring); returns the names of the
    files written, relative to `directory`.

    Args:
      directory: a local directory that does not exist or is empty.
      values: {Google name: array}, e.g. an export's variables.
      config: the model's `BertConfig`.
      vocab_path: the vocab.txt the model was trained with (local or gs://).
      lower_case: the tokenizer's case folding (False: `check_exportable` refuses True).
      task: the run's task ("mlm", "unilm", "simbert", or a fine-tuning task; "lm" is refused).
      card: what the model card (README.md) records: {"run": ..., "step": ..., ...}.
    """
    from data_pipeline import tokenizer as tokenization

    if os.path.isdir(directory) and os.listdir(directory) or os.path.isfile(directory):
        raise KerasHubFormatError("%s already exists and is not an empty directory; choose another."
                                  % directory)
    try:
        tok = tokenization.load_tokenizer(vocab_path, lower_case=lower_case)
    except tokenization.VocabError as e:
        raise KerasHubFormatError(str(e))
    check_exportable(config, tok.kind, tok.lower_case, task)
    if tok.vocab_size != config.vocab_size:
        raise KerasHubFormatError("The vocabulary %s has %d tokens but the model has vocab_size=%d."
                                  % (vocab_path, tok.vocab_size, config.vocab_size))
    vocabulary = "".join(token + "\n" for token in tok.vocab)
    # KerasHub reads the file as text (universal newlines), a token per line, right-stripped.
    read_back = [line.rstrip() for line in io.StringIO(vocabulary, newline=None)]
    bad = [ours for ours, theirs in itertools.zip_longest(tok.vocab, read_back)
           if ours != theirs or not ours]
    if bad:
        raise KerasHubFormatError("%s has the token %r, which KerasHub's vocabulary file (a token per "
                                  "line, right-stripped) cannot hold." % (vocab_path, bad[0]))
    weights = to_keras_hub(values, config)
    pooler_trained = any(name in values for name in _NSP) or task not in _POOLER_UNTRAINED
    texts = {CONFIG: backbone_config(config), TASK: task_config(config), TOKENIZER: tokenizer_config(),
             PREPROCESSOR: preprocessor_config(config),
             METADATA: {"keras_version": KERAS_VERSION, "keras_hub_version": KERAS_HUB_VERSION,
                        "parameter_count": sum(v.size for group in weights[MODEL_WEIGHTS].values()
                                               for v in group.values()),
                        "tasks": TASKS}}
    os.makedirs(os.path.join(directory, os.path.dirname(VOCABULARY)), exist_ok=True)
    for name, content in texts.items():
        with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
            f.write(json.dumps(content, indent=4) + "\n")
    with open(os.path.join(directory, VOCABULARY), "w", encoding="utf-8", newline="\n") as f:
        f.write(vocabulary)
    with open(os.path.join(directory, CARD), "w", encoding="utf-8") as f:
        f.write(_model_card(config, task, pooler_trained, card or {}))
    _write_weights(os.path.join(directory, MODEL_WEIGHTS), weights[MODEL_WEIGHTS])
    _write_weights(os.path.join(directory, TASK_WEIGHTS),
                   dict(weights[TASK_WEIGHTS], optimizer=_OPTIMIZER))
    return sorted(list(texts) + [VOCABULARY, CARD, MODEL_WEIGHTS, TASK_WEIGHTS])


def _write_weights(path, groups):
    """A Keras 3 weights file: for each {group: {dataset: array}}, the datasets in group/vars."""
    import h5py

    with h5py.File(path, "w") as f:
        for group, datasets in groups.items():
            node = f.create_group(group + "/vars")
            for name, value in datasets.items():
                node[name] = value


def _model_card(config, task, pooler_trained, card):
    lines = ["---", "library_name: keras-hub", "tags: [bert, %s]" % task, "---", "",
             "# %s" % card.get("title", "BERT (%s)" % task), "",
             "BERT with %d layers, hidden size %d, %d attention heads and a %d-token WordPiece "
             "vocabulary (cased), pretrained with bert-tf-pretrain (task `%s`) and converted from its "
             "Google-layout export as a KerasHub %s preset." % (
                 config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
                 config.vocab_size, task, KERAS_HUB_VERSION), "",
             "## Use", "", "```python", "import keras_hub", "",
             "backbone = keras_hub.models.BertBackbone.from_preset(DIR)",
             "masked_lm = keras_hub.models.BertMaskedLM.from_preset(DIR)",
             "tokenizer = keras_hub.models.BertTokenizer.from_preset(DIR)", "```", "",
             "## Differences", "",
             "- BertBackbone gives the model's outputs. BertMaskedLM's head applies the exact GELU and "
             "a LayerNorm epsilon of 1e-5 (fixed in KerasHub; the model used gelu_new and 1e-12), so its "
             "probabilities differ slightly from the model's (1e-6 to 1e-4 on small test models).",
             "- BertTokenizer gives the model's ids, except on whitespace other than ASCII (U+3000, "
             "U+00A0), control and format characters (U+0000, U+200B, U+FFFD) and words over 100 "
             "UTF-8 bytes."]
    if task in ("unilm", "simbert"):
        lines.append("- It was trained with UniLM's attention mask (docs/FORMATS.md §4); KerasHub's "
                     "BERT sees the whole input, which suits fine-tuning, not generation.")
    if not pooler_trained:
        lines.append("- The pooler was not trained (no NSP, SimBERT or classification loss): "
                     "`pooled_output` comes from its initial weights.")
    lines.append("")
    return "\n".join(lines + hf_format.card_source(card, config))
