"""HF transformers model directories: Google-layout weights out to them, and back in.

transformers 5 has no TensorFlow, so what it loads is a directory of `config.json`,
`model.safetensors` and tokenizer files. This module converts between those and the Google
checkpoint layout (docs/FORMATS.md §2) with plain values: {name: numpy array}, `BertConfig`, paths.

    write_hf_dir("exports/base/hf", values, config, "vocab.txt", lower_case=True, task="mlm",
                 card={"run": "runs/base", "step": 100000})
    values, config, vocab = read_hf_dir("bert-base-uncased")     # for continued pretraining

Names (L = layer index; kernels are [in, out] in Google's layout, torch Linear weights [out, in]):

    bert/embeddings/{word,token_type,position}_embeddings   bert.embeddings.*_embeddings.weight
    bert/.../LayerNorm/{gamma,beta}                          bert.....LayerNorm.{weight,bias}
    bert/encoder/layer_L/.../{kernel,bias}                   bert.encoder.layer.L.....{weight,bias}
                                                             (kernels transposed)
    bert/pooler/dense/{kernel,bias}                          bert.pooler.dense.*
    cls/predictions/transform/...                            cls.predictions.transform.*
    cls/predictions/output_bias                              cls.predictions.bias
    cls/seq_relationship/output_weights [2, H]               cls.seq_relationship.weight (as is: [out, in])
    cls/seq_relationship/output_bias                         cls.seq_relationship.bias

The MLM output layer is the word embeddings in both: transformers ties `cls.predictions.decoder`
to them (and `decoder.bias` to `cls.predictions.bias`) and leaves them out of the file, as we do.

config.json's `architectures` says what the weights are for: BertForPreTraining when NSP was
trained, BertLMHeadModel with `is_decoder: true` for causal-LM runs, BertForMaskedLM otherwise
(UniLM and SimBERT weights too: transformers has no UniLM mask; the model card says so). Google's
"gelu" is the exact erf GELU, transformers' "gelu"; "gelu_new" is the tanh form in both.

What HF BERT cannot hold is refused (HFFormatError): factorized embeddings (embedding_size !=
hidden_size), an activation transformers lacks. On import, model types other than BERT are
refused, except RoBERTa, whose mapping is exact: its positions start at padding_idx + 1, so the
position rows from there on are ours (max_position_embeddings shrinks by padding_idx + 1), and
`lm_head` is the MLM head. Pickled weights (pytorch_model.bin) are never opened.

Importing this module does not import TensorFlow; `from_hf`/`read_hf_dir` build a `BertConfig`,
whose module does.
"""

import json
import math
import os
import re

import numpy as np

from storage import fs

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
VOCAB = "vocab.txt"
SENTENCEPIECE = "sentencepiece.model"
TOKENIZER_CONFIG = "tokenizer_config.json"
TOKENIZER_JSON = "tokenizer.json"
CARD = "README.md"
GOOGLE_LAYER_NORM_EPS = 1e-12
ARCHITECTURES = ("BertForPreTraining", "BertForMaskedLM", "BertLMHeadModel")

# Our activations (pretrain.modeling) under transformers' ACT2FN names, and the reverse.
_ACT_TO_HF = {"gelu": "gelu", "gelu_new": "gelu_new", "relu": "relu", "tanh": "tanh"}
_ACT_FROM_HF = {"gelu": "gelu", "gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_new",
                "relu": "relu", "tanh": "tanh"}
# Buffers older transformers saved with the weights (recomputed, never learned): skipped on import.
IGNORED_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
_PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json")
# The files read_hf_dir and tokenizer_settings read (and the weight shards: *.safetensors).
_READ = (CONFIG, WEIGHTS, WEIGHTS_INDEX, VOCAB, SENTENCEPIECE, TOKENIZER_JSON, TOKENIZER_CONFIG)
_NSP = ("cls/seq_relationship/output_weights", "cls/seq_relationship/output_bias")
_POOLER = ("bert/pooler/dense/kernel", "bert/pooler/dense/bias")
# Tasks whose loss never reaches the pooler (NSP does, SimBERT and classifier fine-tuning too).
_POOLER_UNTRAINED = ("mlm", "unilm", "lm")
_SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8",
                       "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}
# Converts pickled weights tensor for tensor (from_pretrained would add any head the file lacks,
# initialised at random, and save it as if trained). torch's weights_only loader runs no code.
_CONVERT = ("python -c \"import torch; from safetensors.torch import save_file; "
            "w = torch.load('{d}/pytorch_model.bin', weights_only=True); "
            "save_file({{k: v.clone().contiguous() for k, v in w.items()}}, '{d}/model.safetensors', "
            "metadata={{'format': 'pt'}})\"")


class HFFormatError(ValueError):
    """Weights, a config or a directory that cannot be converted; the message says why and what to do."""


# ------------------------------------------------------------------------------ names and shapes

def _layout(config, model_type="bert", prefix="bert."):
    """[(Google name, HF name, transposed, Google shape)] of every weight a model of `config` can have.

    model_type "roberta" names the MLM head `lm_head` and has no NSP head; `prefix` is "" for the
    weights of a bare encoder (BertModel.save_pretrained)."""
    h, i, v = config.hidden_size, config.intermediate_size, config.vocab_size
    rows = [("bert/embeddings/word_embeddings", prefix + "embeddings.word_embeddings.weight", False, [v, h]),
            ("bert/embeddings/token_type_embeddings", prefix + "embeddings.token_type_embeddings.weight",
             False, [config.type_vocab_size, h]),
            ("bert/embeddings/position_embeddings", prefix + "embeddings.position_embeddings.weight",
             False, [config.max_position_embeddings, h])]

    def dense(google, hf, fan_in, fan_out):
        rows.extend([(google + "/kernel", hf + ".weight", True, [fan_in, fan_out]),
                     (google + "/bias", hf + ".bias", False, [fan_out])])

    def norm(google, hf):
        rows.extend([(google + "/gamma", hf + ".weight", False, [h]),
                     (google + "/beta", hf + ".bias", False, [h])])

    norm("bert/embeddings/LayerNorm", prefix + "embeddings.LayerNorm")
    for n in range(config.num_hidden_layers):
        g, t = "bert/encoder/layer_%d/" % n, "%sencoder.layer.%d." % (prefix, n)
        for part in ("query", "key", "value"):
            dense(g + "attention/self/" + part, t + "attention.self." + part, h, h)
        dense(g + "attention/output/dense", t + "attention.output.dense", h, h)
        norm(g + "attention/output/LayerNorm", t + "attention.output.LayerNorm")
        dense(g + "intermediate/dense", t + "intermediate.dense", h, i)
        dense(g + "output/dense", t + "output.dense", i, h)
        norm(g + "output/LayerNorm", t + "output.LayerNorm")
    dense("bert/pooler/dense", prefix + "pooler.dense", h, h)
    if model_type == "roberta":
        dense("cls/predictions/transform/dense", "lm_head.dense", h, h)
        norm("cls/predictions/transform/LayerNorm", "lm_head.layer_norm")
        rows.append(("cls/predictions/output_bias", "lm_head.bias", False, [v]))
        return rows
    dense("cls/predictions/transform/dense", "cls.predictions.transform.dense", h, h)
    norm("cls/predictions/transform/LayerNorm", "cls.predictions.transform.LayerNorm")
    rows.append(("cls/predictions/output_bias", "cls.predictions.bias", False, [v]))
    rows.extend([(_NSP[0], "cls.seq_relationship.weight", False, [2, h]),
                 (_NSP[1], "cls.seq_relationship.bias", False, [2])])
    return rows


def _parts(name):
    """Which part of the model a Google name belongs to: weights of a part come all or none."""
    if name.startswith("cls/predictions/"):
        return "the MLM head"
    if name.startswith("cls/seq_relationship/"):
        return "the NSP head"
    if name.startswith("bert/pooler/"):
        return "the pooler"
    return "the encoder"


def _config_field(google_name):
    """The config.json field that decides the shape of `google_name` (for error messages): the
    first of the Google layout's fields for it (transformers' BERT has no embedding_size)."""
    from pretrain.google_checkpoint import config_fields_for

    return config_fields_for(google_name).split(",")[0]


# ----------------------------------------------------------------------------------- export

def check_exportable(config):
    """An HFFormatError unless HF BERT can hold a model of `config` exactly."""
    if config.embedding_size not in (None, config.hidden_size):
        raise HFFormatError(
            "This model has factorized embeddings (embedding_size=%d, hidden_size=%d, ALBERT-style "
            "embedding_hidden_mapping_in): transformers' BERT has no such projection, so it cannot "
            "hold these weights. Use the Google-layout export (bert4keras and our loaders read it)."
            % (config.embedding_size, config.hidden_size))
    if config.hidden_act not in _ACT_TO_HF:
        raise HFFormatError("hidden_act %r has no transformers equivalent here (%s map exactly)."
                            % (config.hidden_act, ", ".join(_ACT_TO_HF)))


def to_hf(values: dict, config) -> dict:
    """{Google name: array} -> {transformers BertForPreTraining name: float32 array}.

    Every name in `values` is converted (none dropped); kernels are transposed to torch's
    [out, in]. The tied decoder weight is not written (transformers ties it to the embeddings)."""
    check_exportable(config)
    by_google = {g: (h, transposed, shape) for g, h, transposed, shape in _layout(config)}
    unknown = sorted(set(values) - set(by_google))
    if unknown:
        raise HFFormatError("%d weight(s) have no place in transformers' BERT: %s%s."
                            % (len(unknown), ", ".join(unknown[:5]), ", …" if len(unknown) > 5 else ""))
    out = {}
    for name, value in values.items():
        hf, transposed, shape = by_google[name]
        if list(np.shape(value)) != shape:
            raise HFFormatError("%s has shape %s but the config (%s) gives %s."
                                % (name, list(np.shape(value)), _config_field(name), shape))
        value = np.asarray(value, dtype=np.float32)
        out[hf] = np.ascontiguousarray(value.T if transposed else value)
    return out


def architecture_for(task: str, with_nsp: bool) -> str:
    """The transformers class that config.json names for weights of `task` (a run's task)."""
    if task == "lm":
        return "BertLMHeadModel"
    return "BertForPreTraining" if with_nsp else "BertForMaskedLM"


def hf_config(config, architecture: str, pad_token_id: int = 0) -> dict:
    """config.json for transformers' BERT. BertLMHeadModel gets `is_decoder: true` (the causal mask
    a causal-LM run trained with); the other architectures see the whole input."""
    check_exportable(config)
    if architecture not in ARCHITECTURES:
        raise HFFormatError("architecture %r: use one of %s." % (architecture, ", ".join(ARCHITECTURES)))
    return {
        "architectures": [architecture],
        "model_type": "bert",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "hidden_act": _ACT_TO_HF[config.hidden_act],
        "hidden_dropout_prob": config.hidden_dropout_prob,
        "attention_probs_dropout_prob": config.attention_probs_dropout_prob,
        "max_position_embeddings": config.max_position_embeddings,
        "type_vocab_size": config.type_vocab_size,
        "initializer_range": config.initializer_range,
        "layer_norm_eps": GOOGLE_LAYER_NORM_EPS,
        "pad_token_id": pad_token_id,
        "is_decoder": architecture == "BertLMHeadModel",
        "add_cross_attention": False,
        "tie_word_embeddings": True,
        "dtype": "float32",
    }


def write_hf_dir(directory: str, values: dict, config, vocab_path: str, lower_case: bool, task: str,
                 card: dict = None) -> list:
    """Writes a directory that transformers 5 loads (`AutoModelForMaskedLM.from_pretrained`,
    `AutoTokenizer.from_pretrained`); returns the names of the files written.

    Args:
      directory: a local directory that does not exist or is empty.
      values: {Google name: array}, e.g. an export's variables.
      config: the model's `BertConfig`.
      vocab_path: the vocab.txt or SentencePiece .model the model was trained with (local or gs://).
      lower_case: the tokenizer's case folding (WordPiece: accents are stripped with it, as Google's).
      task: the run's task ("mlm", "unilm", "lm", "simbert", or a fine-tuning task): picks the
        architecture and the notes of the model card. The pooler is left out where it was never
        trained (MLM without NSP, UniLM, LM): it would look like real weights.
      card: what the model card (README.md) records: {"run": ..., "step": ..., "data": ..., ...}.
    """
    from data_pipeline import tokenizer as tokenization

    if os.path.isdir(directory) and os.listdir(directory) or os.path.isfile(directory):
        raise HFFormatError("%s already exists and is not an empty directory; choose another." % directory)
    with_nsp = all(name in values for name in _NSP)
    if not with_nsp and task in _POOLER_UNTRAINED:
        values = {k: v for k, v in values.items() if k not in _POOLER}
    tensors = to_hf(values, config)
    try:
        tok = tokenization.load_tokenizer(vocab_path, lower_case=lower_case)
    except tokenization.VocabError as e:
        raise HFFormatError(str(e))
    if tok.vocab_size != config.vocab_size:
        raise HFFormatError("The vocabulary %s has %d tokens but the model has vocab_size=%d."
                            % (vocab_path, tok.vocab_size, config.vocab_size))
    architecture = architecture_for(task, with_nsp)
    tokenizer_files = (_wordpiece_files(tok, config) if tok.kind == "wordpiece"
                       else _sentencepiece_files(tok, config))   # checked before anything is written
    os.makedirs(directory, exist_ok=True)
    files = {CONFIG: json.dumps(hf_config(config, architecture, tok.special_ids.pad), indent=2) + "\n",
             CARD: _model_card(config, architecture, task, tok, sorted(tensors), card or {})}
    files.update(tokenizer_files)
    for name, content in files.items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(content if isinstance(content, bytes) else content.encode("utf-8"))
    from safetensors.numpy import save_file

    save_file(tensors, os.path.join(directory, WEIGHTS), metadata={"format": "pt"})
    return sorted(list(files) + [WEIGHTS])


def _special_tokens(tok):
    return {"%s_token" % k: tok.vocab[i] for k, i in tok.special_ids.as_dict().items()}


def _wordpiece_files(tok, config):
    """vocab.txt and tokenizer_config.json for transformers' BertTokenizer (do_lower_case and
    strip_accents as Google's tokenizer applied them; CJK ideographs split)."""
    settings = dict(tokenizer_class="BertTokenizer", do_lower_case=bool(tok.lower_case),
                    strip_accents=bool(tok.strip_accents), tokenize_chinese_chars=True,
                    model_max_length=config.max_position_embeddings, **_special_tokens(tok))
    return {VOCAB: fs.read_bytes(tok.path), TOKENIZER_CONFIG: json.dumps(settings, indent=2) + "\n"}


# ------------------------------------------------------------------------ SentencePiece export

def _sentencepiece_files(tok, config):
    """tokenizer.json (HF tokenizers' Unigram or BPE model built from the .model), tokenizer_config.json,
    and the .model itself. The tokenizer is checked against SentencePiece on sample text first."""
    model = fs.read_bytes(tok.path)
    hf = sentencepiece_tokenizer(model, tok)
    settings = dict(tokenizer_class="PreTrainedTokenizerFast",
                    model_input_names=["input_ids", "token_type_ids", "attention_mask"],
                    model_max_length=config.max_position_embeddings, **_special_tokens(tok))
    return {TOKENIZER_JSON: hf.to_str(), SENTENCEPIECE: model,
            TOKENIZER_CONFIG: json.dumps(settings, indent=2) + "\n"}


def sentencepiece_tokenizer(model: bytes, tok, check_texts=None):
    """An HF `tokenizers.Tokenizer` that gives the ids of `tok` (our SentencePieceTokenizer over the
    serialized `model`), with [CLS] … [SEP] added as ours are. HFFormatError if it cannot."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE, Unigram

    proto = _proto_fields(model)
    trainer = _proto_fields(proto.get(2, [b""])[0])
    spec = _proto_fields(proto.get(3, [b""])[0])
    model_type = trainer.get(3, [1])[0]
    byte_fallback = bool(trainer.get(35, [0])[0])
    pieces = [_proto_fields(p) for p in proto.get(1, [])]
    vocab = [(p[1][0].decode("utf-8"), float(np.frombuffer(p.get(2, [b"\0\0\0\0"])[0], "<f4")[0]))
             for p in pieces]
    types = [p.get(3, [1])[0] for p in pieces]
    unk = types.index(2) if 2 in types else 0
    if model_type == 1:
        # SentencePiece never matches control, unknown or unused pieces ([CLS], [MASK], [unused0])
        # in text; HF's Unigram would, so they get a score no path of text pieces falls below.
        floor = min([score for (_, score), t in zip(vocab, types) if t == 1] + [0.0]) - 1e6
        hf = Tokenizer(Unigram(vocab=[(piece, floor if t in (2, 3, 5) else score)
                                      for (piece, score), t in zip(vocab, types)],
                               unk_id=unk, byte_fallback=byte_fallback))
    elif model_type == 2:
        # SentencePiece BPE applies the merge of the highest-scoring piece first (as transformers'
        # converter ranks them); only normal pieces merge.
        normal = {piece: (score, i) for i, ((piece, score), t) in enumerate(zip(vocab, types)) if t == 1}
        ranked = sorted((-score, i, piece[:k], piece[k:]) for piece, (score, i) in normal.items()
                        for k in range(1, len(piece)) if piece[:k] in normal and piece[k:] in normal)
        hf = Tokenizer(BPE(vocab={piece: i for i, (piece, _) in enumerate(vocab)},
                           merges=[(a, b) for _, _, a, b in ranked], unk_token=vocab[unk][0],
                           fuse_unk=True, byte_fallback=byte_fallback))
    else:
        raise HFFormatError("%s is a SentencePiece %s model: HF tokenizers has no model that splits "
                            "as it does. Export the Google layout and tokenize with sentencepiece."
                            % (tok.path, {3: "word", 4: "char"}.get(model_type, "type-%d" % model_type)))
    steps = [normalizers.Lowercase()] if tok.lower_case else []   # ours lower-cases before SentencePiece
    charsmap = spec.get(2, [b""])[0]
    if charsmap:
        steps.append(normalizers.Precompiled(charsmap))
    if spec.get(4, [1])[0]:   # remove_extra_whitespaces: spaces only, as SentencePiece does
        steps += [normalizers.Replace(Regex(r"\A +| +\z"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    if spec.get(5, [1])[0]:   # escape_whitespaces
        steps.append(normalizers.Replace(" ", "\u2581"))
    add_dummy_prefix = bool(spec.get(3, [1])[0])
    if add_dummy_prefix:   # Metaspace adds no prefix to a text that starts with one; SentencePiece does
        steps.append(normalizers.Replace(Regex("\\A\u2581"), "\u2581\u2581"))
    hf.normalizer = normalizers.Sequence(steps)
    split = [pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=False)
             ] if add_dummy_prefix else []
    user_defined = [piece for (piece, _), t in zip(vocab, types) if t == 4]
    if user_defined:   # SentencePiece emits them whole, never merged with what is around them
        split.append(pre_tokenizers.Split(Regex("|".join(re.escape(p) for p in sorted(
            user_defined, key=len, reverse=True))), behavior="isolated"))
    if split:
        hf.pre_tokenizer = pre_tokenizers.Sequence(split)
    hf.decoder = decoders.Sequence([decoders.Replace("\u2581", " ")]
                                   + ([decoders.ByteFallback()] if byte_fallback else [])
                                   + [decoders.Fuse(), decoders.Strip(content=" ", left=1)])
    mismatch = _first_mismatch(hf, tok, check_texts)
    if mismatch is not None:
        raise HFFormatError("HF tokenizers does not reproduce SentencePiece %s on %r (from token "
                            "%d: ids %s, not %s), "
                            "so a tokenizer.json would give other ids than the model was trained "
                            "on. Export the Google layout and tokenize with sentencepiece."
                            % ((tok.path,) + mismatch))
    specials = _special_tokens(tok)
    from tokenizers import AddedToken

    hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials.values()])
    cls, sep = specials["cls_token"], specials["sep_token"]
    ids = tok.special_ids
    hf.post_processor = processors.TemplateProcessing(
        single="%s:0 $A:0 %s:0" % (cls, sep), pair="%s:0 $A:0 %s:0 $B:1 %s:1" % (cls, sep, sep),
        special_tokens=[(cls, ids.cls), (sep, ids.sep)])
    return hf


# Text the SentencePiece check encodes both ways: scripts, accents, full-width forms, digits, runs of
# spaces and other whitespace, edges. Every piece of the vocabulary is encoded too.
CHECK_TEXTS = ("The quick brown fox jumps over the lazy dog.", "  leading and trailing spaces  ",
               "several   spaces\tand a tab\nand a newline", "Café naïve résumé Ångström ÉCOLE",
               "我们喜欢自然语言处理。", "中文，English！混合（full-width）１２３４５ＡＢＣ",
               "numbers 3.14159 and 2024-01-01, e-mail a@b.co", "emoji 😀 and symbols ©®™ ½ ①",
               "ﬁ ligature, Ⅻ numeral, ｶﾀｶﾅ half-width", "")


def _first_mismatch(hf, tok, texts):
    texts = list(texts if texts is not None else CHECK_TEXTS)
    # Every piece, except the special tokens: spelled out in text, transformers reads them as the
    # special token and sentencepiece as characters (a difference the model card states).
    specials = set(tok.special_ids.as_dict().values())
    pieces = [p.replace("\u2581", " ") for i, p in enumerate(tok.vocab) if i not in specials]
    texts += [" ".join(pieces[i:i + 50]) for i in range(0, len(pieces), 50)]
    for text, ours in zip(texts, tok.encode_batch(texts)):
        theirs = hf.encode(text, add_special_tokens=False).ids
        if theirs != list(ours):
            at = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b),
                      min(len(theirs), len(ours)))
            return text[:60], at, theirs[max(at - 2, 0):at + 6], list(ours)[max(at - 2, 0):at + 6]
    return None


def _proto_fields(data: bytes) -> dict:
    """{field number: [values]} of one serialized protobuf message: varints as ints, everything
    else as bytes (enough to read a SentencePiece ModelProto without its generated module)."""
    out, i = {}, 0
    while i < len(data):
        key, i = _varint(data, i)
        wire = key & 7
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            size, i = _varint(data, i)
            value, i = data[i:i + size], i + size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            value, i = data[i:i + width], i + width
        else:
            raise HFFormatError("Not a SentencePiece model (protobuf wire type %d)." % wire)
        out.setdefault(key >> 3, []).append(value)
    return out


def _varint(data, i):
    value = shift = 0
    while True:
        if i >= len(data):
            raise HFFormatError("Not a SentencePiece model (truncated protobuf).")
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not byte & 0x80:
            return value, i


# ---------------------------------------------------------------------------------- model card

_TASK_NOTES = {
    "unilm": "Trained as UniLM (docs/FORMATS.md §4: the source sees itself, each target token the "
             "source and the target before it). transformers' BERT has no such mask: loaded as "
             "BertForMaskedLM it sees the whole input, which suits fine-tuning, not generation.",
    "simbert": "Trained as SimBERT (UniLM generation plus similarity of the pooled [CLS] vectors); "
               "AutoModel gives the pooled vectors (`pooler_output`). transformers has no UniLM mask.",
    "lm": "Trained as a causal language model: config.json sets is_decoder, so BertLMHeadModel "
          "applies the causal mask it was trained with.",
}


def _model_card(config, architecture, task, tok, names, card):
    pipeline = "text-generation" if architecture == "BertLMHeadModel" else "fill-mask"
    auto = "AutoModelForCausalLM" if architecture == "BertLMHeadModel" else "AutoModelForMaskedLM"
    lines = ["---", "library_name: transformers", "pipeline_tag: %s" % pipeline,
             "tags: [bert, %s]" % task, "---", "",
             "# %s" % card.get("title", "BERT (%s)" % task), "",
             "BERT with %d layers, hidden size %d, %d attention heads and a %d-token %s vocabulary, "
             "pretrained with bert-tf-pretrain (task `%s`) and converted from its Google-layout "
             "export. config.json names `%s`." % (
                 config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
                 config.vocab_size, tok.kind, task, architecture), ""]
    if _TASK_NOTES.get(task):
        lines += [_TASK_NOTES[task], ""]
    if not any(n.startswith("bert.pooler.") for n in names):
        lines += ["The pooler was not trained (no NSP, SimBERT or classification loss) and is not included: "
                  "AutoModel initialises it at random.", ""]
    lines += ["## Use", "", "```python", "from transformers import AutoTokenizer, %s" % auto, "",
              "tokenizer = AutoTokenizer.from_pretrained(DIR)",
              "model = %s.from_pretrained(DIR)" % auto, "```", "",
              "## Tokenizer", ""]
    if tok.kind == "wordpiece":
        lines += ["Google's WordPiece: lower_case=%s (accents stripped with it), CJK ideographs as "
                  "tokens of their own. transformers' BertTokenizer gives the same ids, except on "
                  "words of 101 to 200 characters (Google's limit is 200, transformers' 100) and on "
                  "code points its Unicode tables classify otherwise than Python's." % tok.lower_case, ""]
    else:
        lines += ["SentencePiece (`%s`, also included), as tokenizer.json; checked to give the "
                  "model's ids on sample text. Special tokens spelled out in text become special "
                  "ids in transformers (never in the training data)." % SENTENCEPIECE, ""]
    return "\n".join(lines + card_source(card, config))


def card_source(card: dict, config) -> list:
    """The lines of a model card's "Source" (`card`'s items but its title: the run, step, data,
    ...) and "Config" (Google's bert_config.json) sections, as every export format's card ends."""
    lines = []
    if card:
        lines += ["## Source", ""]
        for key, value in card.items():
            if key == "title":
                continue
            if isinstance(value, (dict, list)):
                lines += ["- %s:" % key, "", "```json", json.dumps(value, indent=2, sort_keys=True),
                          "```", ""]
            else:
                lines.append("- %s: %s" % (key, value))
        lines.append("")
    return lines + ["## Config (Google's bert_config.json)", "", "```json",
                    json.dumps(config.to_dict(), indent=2), "```", ""]


# ------------------------------------------------------------------------ sentence-transformers

# sentence-transformers 6's module classes, as its SentenceTransformer.save names them in modules.json.
_ST_MODULES = [("", "sentence_transformers.base.modules.transformer.Transformer"),
               ("1_Pooling", "sentence_transformers.sentence_transformer.modules.pooling.Pooling"),
               ("2_Dense", "sentence_transformers.base.modules.dense.Dense"),
               ("3_Normalize", "sentence_transformers.base.modules.normalize.Normalize")]


def write_sentence_transformers(directory: str, values: dict, config) -> list:
    """Adds to the transformers directory `directory` (written by `write_hf_dir`) the files that make
    it a sentence-transformers model whose `encode` gives `downstream.SimBERT.encode`'s vectors:
    the encoder's last hidden states, the [CLS] row, our pooler (dense + tanh, as a Dense module),
    L2-normalised. Returns the names of the files written (relative to `directory`).

    Only for weights whose pooler was trained (SimBERT, NSP, classification): HFFormatError if
    `values` has no pooler."""
    if not all(name in values for name in _POOLER):
        raise HFFormatError("sentence_transformers: these weights have no pooler (it is exported only "
                            "where a loss trained it: SimBERT, NSP or classification), and the "
                            "sentence vectors are the pooled [CLS] vectors.")
    h = config.hidden_size
    text = {
        "modules.json": [{"idx": n, "name": str(n), "path": path, "type": kind}
                         for n, (path, kind) in enumerate(_ST_MODULES)],
        "sentence_bert_config.json": {
            "transformer_task": "feature-extraction",
            "modality_config": {"text": {"method": "forward", "method_output_name": "last_hidden_state"}},
            "module_output_name": "token_embeddings"},
        "config_sentence_transformers.json": {"model_type": "SentenceTransformer", "prompts": {},
                                              "default_prompt_name": None, "similarity_fn_name": "cosine"},
        "1_Pooling/config.json": {"embedding_dimension": h, "pooling_mode": "cls", "include_prompt": True},
        "2_Dense/config.json": {"in_features": h, "out_features": h, "bias": True,
                                "activation_function": "torch.nn.modules.activation.Tanh",
                                "module_input_name": "sentence_embedding",
                                "module_output_name": "sentence_embedding"},
        "3_Normalize/config.json": {"module_input_name": "sentence_embedding",
                                    "module_output_name": "sentence_embedding"},
    }
    for name, content in text.items():
        os.makedirs(os.path.dirname(os.path.join(directory, name)), exist_ok=True)
        with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
            f.write(json.dumps(content, indent=2) + "\n")
    from safetensors.numpy import save_file

    kernel, bias = (np.asarray(values[name], dtype=np.float32) for name in _POOLER)
    save_file({"linear.weight": np.ascontiguousarray(kernel.T), "linear.bias": bias},   # torch: [out, in]
              os.path.join(directory, "2_Dense", WEIGHTS), metadata={"format": "pt"})
    return sorted(list(text) + ["2_Dense/" + WEIGHTS])


# ----------------------------------------------------------------------------------- import

def config_from_hf(d: dict, where: str = CONFIG, accept_layer_norm_eps: bool = False):
    """BertConfig of a transformers config.json (`d`); `where` names it in errors.

    model_type "bert", or "roberta" (positions shifted: see the module docstring). Refused: other
    model types, relative position embeddings, cross-attention, activations without an exact
    equivalent, and a LayerNorm epsilon other than Google's 1e-12 unless `accept_layer_norm_eps`
    (RoBERTa's 1e-5 moves outputs by about 1e-5 of their scale: continued pretraining absorbs it,
    an exact comparison does not)."""
    from pretrain.modeling import BertConfig

    model_type = d.get("model_type")
    if model_type not in ("bert", "roberta"):
        raise HFFormatError("%s: model_type %r is not a BERT encoder. Only model_type \"bert\" (and "
                            "\"roberta\", mapped exactly) load as this project's model."
                            % (where, model_type))
    required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    missing = [k for k in required if k not in d]
    if missing:
        raise HFFormatError("%s lacks %s." % (where, ", ".join(missing)))
    act = d.get("hidden_act", "gelu")
    if act not in _ACT_FROM_HF:
        raise HFFormatError("%s: hidden_act %r has no exact equivalent here (supported: %s)."
                            % (where, act, ", ".join(sorted(_ACT_FROM_HF))))
    if model_type == "roberta" and _ACT_FROM_HF[act] != "gelu":
        raise HFFormatError("%s: hidden_act %r, but RoBERTa's lm_head applies the exact GELU whatever "
                            "the config says, and ours applies hidden_act." % (where, act))
    if d.get("position_embedding_type", "absolute") != "absolute":
        raise HFFormatError("%s: position_embedding_type %r; only absolute position embeddings map "
                            "onto this model." % (where, d["position_embedding_type"]))
    if d.get("add_cross_attention"):
        raise HFFormatError("%s: add_cross_attention is set (an encoder-decoder half); this model "
                            "has no cross-attention." % where)
    eps = float(d.get("layer_norm_eps", GOOGLE_LAYER_NORM_EPS))
    if eps != GOOGLE_LAYER_NORM_EPS and not accept_layer_norm_eps:
        raise HFFormatError("%s: layer_norm_eps=%g, but this model's LayerNorm uses Google's 1e-12, so "
                            "its outputs would differ slightly (about %g of their scale). Pass "
                            "accept_layer_norm_eps=True to import it anyway (continued pretraining "
                            "adapts to the change)." % (where, eps, eps))
    positions = d.get("max_position_embeddings", 512) - _position_offset(d)
    try:
        return BertConfig(
            vocab_size=d["vocab_size"], hidden_size=d["hidden_size"],
            num_hidden_layers=d["num_hidden_layers"], num_attention_heads=d["num_attention_heads"],
            intermediate_size=d["intermediate_size"], hidden_act=_ACT_FROM_HF[act],
            hidden_dropout_prob=d.get("hidden_dropout_prob", 0.1),
            attention_probs_dropout_prob=d.get("attention_probs_dropout_prob", 0.1),
            max_position_embeddings=positions, type_vocab_size=d.get("type_vocab_size", 2),
            initializer_range=d.get("initializer_range", 0.02))
    except (TypeError, ValueError) as e:
        raise HFFormatError("%s: %s" % (where, e))


def _position_offset(d):
    """RoBERTa numbers positions from padding_idx + 1 (rows 0..padding_idx are never used)."""
    return d.get("pad_token_id", 1) + 1 if d.get("model_type") == "roberta" else 0


def from_hf(tensors: dict, d: dict, where: str = None, accept_layer_norm_eps: bool = False):
    """({Google name: float32 array}, BertConfig) from transformers tensors and config.json `d`.

    Takes BertForPreTraining / BertForMaskedLM / BertLMHeadModel / BertModel names (and RoBERTa's,
    see the module docstring; legacy `LayerNorm.gamma/beta` too). The encoder is required; the
    pooler, MLM and NSP heads are taken when present, each whole. Tied decoder tensors, when
    saved, must equal what they are tied to. Unknown names are an error listing them (only the
    buffers of IGNORED_BUFFERS are skipped). `where`, the directory they came from, is named in
    errors.
    """
    config = config_from_hf(d, os.path.join(where, CONFIG) if where else CONFIG, accept_layer_norm_eps)
    where = where or "the tensors"
    model_type = d["model_type"]
    legacy = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}
    tensors = {re.sub(r"LayerNorm\.(gamma|beta)$", lambda m: legacy[m.group(0)], k): v
               for k, v in tensors.items()}
    prefix = model_type + "." if any(k.startswith(model_type + ".") for k in tensors) else ""
    layout = _layout(config, model_type, prefix)
    offset = _position_offset(d)
    bias = "lm_head.bias" if model_type == "roberta" else "cls.predictions.bias"
    aliases = {bias.replace("bias", "decoder.weight"): prefix + "embeddings.word_embeddings.weight",
               bias.replace("bias", "decoder.bias"): bias}
    for alias, target in aliases.items():
        if alias in tensors and target not in tensors:
            tensors[target] = tensors[alias]
        elif alias in tensors and not np.array_equal(tensors[alias], tensors[target]):
            raise HFFormatError("%s: %s differs from %s: an untied output layer, which this model (its "
                                "output layer is the word embeddings) cannot hold." % (where, alias, target))
    skipped = set(aliases) | {prefix + b for b in IGNORED_BUFFERS}
    unknown = sorted(set(tensors) - {hf for _, hf, _, _ in layout} - skipped)
    if unknown:
        raise HFFormatError("%s holds %d tensor(s) this model has no place for: %s%s. Is it a BERT "
                            "encoder of model_type %s?" % (where, len(unknown), ", ".join(unknown[:6]),
                                                          ", …" if len(unknown) > 6 else "", model_type))
    # The encoder is required; a head or the pooler is taken whole or not at all.
    present = {_parts(g) for g, hf, _, _ in layout if hf in tensors}
    missing = [hf for g, hf, _, _ in layout
               if hf not in tensors and (_parts(g) == "the encoder" or _parts(g) in present)]
    if missing:
        partial = sorted({_parts(g) for g, hf, _, _ in layout if hf in missing} - {"the encoder"})
        raise HFFormatError("%s lacks %d tensor(s): %s%s.%s" % (
            where, len(missing), ", ".join(missing[:6]), ", …" if len(missing) > 6 else "",
            " Only part of %s is there." % " and ".join(partial) if partial else
            " Does config.json (num_hidden_layers=%d) describe these weights?" % config.num_hidden_layers))
    values = {}
    for google, hf, transposed, shape in layout:
        if hf not in tensors:
            continue
        expected = shape[::-1] if transposed else list(shape)
        if google == "bert/embeddings/position_embeddings":
            expected[0] += offset
        if list(tensors[hf].shape) != expected:
            field = _config_field(google)
            raise HFFormatError("%s: %s has shape %s, but config.json's %s=%s gives %s%s." % (
                where, hf, list(tensors[hf].shape), field, d.get(field), expected,
                " (RoBERTa's positions start at pad_token_id + 1)" if offset and
                field == "max_position_embeddings" else ""))
        value = np.asarray(tensors[hf], dtype=np.float32)[offset:] if google.endswith(
            "position_embeddings") else np.asarray(tensors[hf], dtype=np.float32)
        values[google] = np.ascontiguousarray(value.T if transposed else value)
    return values, config


def read_hf_dir(directory: str, vocab_output: str = None, accept_layer_norm_eps: bool = False):
    """(values {Google name: float32 array}, BertConfig, vocabulary path or None) of a transformers
    model directory: config.json and model.safetensors, or shards named by model.safetensors.index.json.

    The vocabulary: vocab.txt, or sentencepiece.model; a directory with only a tokenizer.json
    (what transformers 5 saves) holding a WordPiece model has its vocabulary written to
    `vocab_output` (a vocab.txt path, required then); None when there is no vocabulary this
    project's tokenizers read (RoBERTa's byte-level BPE). `tokenizer_settings` gives the casing.
    """
    config_path = os.path.join(directory, CONFIG)
    if not os.path.isfile(config_path):
        raise HFFormatError("%s has no %s: not a transformers model directory%s." % (
            directory, CONFIG, " (it holds %s)" % ", ".join(sorted(os.listdir(directory))[:8])
            if os.path.isdir(directory) else " (it does not exist)"))
    d = _read_json(config_path)
    values, config = from_hf(_read_weights(directory), d, directory, accept_layer_norm_eps)
    return values, config, _vocabulary(directory, config, vocab_output)


def tokenizer_settings(directory: str) -> dict:
    """{"lower_case", "strip_accents", "tokenize_chinese_chars"} from tokenizer_config.json (None
    where it does not say; transformers' BertTokenizer defaults: True, follows lower_case, True)."""
    path = os.path.join(directory, TOKENIZER_CONFIG)
    d = _read_json(path) if os.path.isfile(path) else {}
    return {"lower_case": d.get("do_lower_case"), "strip_accents": d.get("strip_accents"),
            "tokenize_chinese_chars": d.get("tokenize_chinese_chars")}


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as e:
        raise HFFormatError("%s is not valid JSON (%s)." % (path, e))


def _read_weights(directory):
    single, index = os.path.join(directory, WEIGHTS), os.path.join(directory, WEIGHTS_INDEX)
    if os.path.isfile(single):
        return read_safetensors(single)
    if os.path.isfile(index):
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise HFFormatError("%s has no weight_map." % index)
        tensors = {}
        for shard in sorted(set(weight_map.values())):
            path = os.path.join(directory, shard)
            if not os.path.isfile(path):
                raise HFFormatError("%s names shard %s, which is not in %s (an incomplete download?)."
                                    % (index, shard, directory))
            tensors.update(read_safetensors(path))
        absent = sorted(n for n, shard in weight_map.items() if n not in tensors)
        if absent:
            raise HFFormatError("%s lists %s in %s, but the shard does not hold it."
                                % (index, absent[0], weight_map[absent[0]]))
        return tensors
    raise _no_weights(directory, sorted(os.listdir(directory)), _CONVERT.format(d=directory))


def _no_weights(directory, held, convert):
    """The HFFormatError of a directory holding the files `held` but no safetensors weights;
    `convert`: the command that converts its pickled weights where it holds some."""
    pickled = [name for name in _PICKLED if name in held]
    if pickled:
        return HFFormatError(
            "%s holds %s, pickled PyTorch weights, which are never opened here (unpickling can run "
            "code). Convert them to safetensors with torch and safetensors:\n    %s"
            % (directory, pickled[0], convert))
    return HFFormatError("%s has no %s (nor sharded %s): no weights to import. It holds %s."
                         % (directory, WEIGHTS, WEIGHTS_INDEX, ", ".join(held)))


def download_hf_dir(url: str, local_dir: str) -> list:
    """Copies into `local_dir` the files of the gs:// transformers directory `url` that
    `read_hf_dir` and `tokenizer_settings` read, each verified by CRC32C, and no others (a hub
    snapshot may hold other frameworks' weights too: gigabytes never read). Returns their names.

    Raises:
      HFFormatError: naming `url`: no config.json there, or no safetensors weights (pickled ones
        are not copied; the message gives the commands that convert them beside the originals).
      storage.gcs.GcsError: the directory cannot be listed or read.
    """
    from storage import gcs

    held = sorted(gcs.list_sizes(url))   # the objects directly under url/
    if CONFIG not in held:
        raise HFFormatError("%s has no %s: not a transformers model directory (%s)." % (
            url, CONFIG, "it holds %s" % ", ".join(held[:8]) if held else "nothing is there"))
    if WEIGHTS not in held and WEIGHTS_INDEX not in held:
        name = url.rstrip("/").rsplit("/", 1)[-1]
        raise _no_weights(url, held, "gcloud storage cp -r %s . && %s && gcloud storage cp %s/%s %s/" % (
            url, _CONVERT.format(d=name), name, WEIGHTS, url.rstrip("/")))
    names = [name for name in held if name in _READ or name.endswith(".safetensors")]
    gcs.download_directory(url, local_dir, names)
    return names


def read_safetensors(path: str) -> dict:
    """{name: array} of a .safetensors file, floating point as float32 (bfloat16 included, which
    numpy cannot hold), integers as they are. Read with numpy alone; sizes are checked."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < length <= size - 8:
            raise HFFormatError("%s is not a safetensors file (or is truncated)." % path)
        try:
            header = json.loads(f.read(length))
        except ValueError as e:
            raise HFFormatError("%s has a corrupt safetensors header (%s)." % (path, e))
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            dtype = _SAFETENSORS_DTYPES.get(info.get("dtype"))
            if dtype is None:
                raise HFFormatError("%s: tensor %s has dtype %s, which is not read here."
                                    % (path, name, info.get("dtype")))
            begin, end = info["data_offsets"]
            count = math.prod(info["shape"])
            if end - begin != count * np.dtype(dtype).itemsize or 8 + length + end > size:
                raise HFFormatError("%s is truncated or corrupt: tensor %s does not fit its %s bytes."
                                    % (path, name, end - begin))
            f.seek(8 + length + begin)
            value = np.frombuffer(f.read(end - begin), dtype=dtype)
            if info["dtype"] == "BF16":   # the upper half of a float32
                value = (value.astype(np.uint32) << 16).view(np.float32)
            elif value.dtype.kind == "f":
                value = value.astype(np.float32)
            out[name] = value.reshape(info["shape"])
    return out


def _vocabulary(directory, config, vocab_output):
    vocab = os.path.join(directory, VOCAB)
    if os.path.isfile(vocab):
        with open(vocab, "rb") as f:
            lines = f.read().split(b"\n")
        count = len(lines) - (lines[-1] == b"")
        if count != config.vocab_size:
            raise HFFormatError("%s has %d tokens but %s says vocab_size=%d: they do not belong together."
                                % (vocab, count, os.path.join(directory, CONFIG), config.vocab_size))
        return vocab
    model = os.path.join(directory, SENTENCEPIECE)
    if os.path.isfile(model):
        return model
    tokenizer_json = os.path.join(directory, TOKENIZER_JSON)
    if not os.path.isfile(tokenizer_json):
        return None
    spec = _read_json(tokenizer_json).get("model", {})
    if spec.get("type") != "WordPiece":
        return None
    tokens = sorted(spec["vocab"], key=spec["vocab"].get)
    if [spec["vocab"][t] for t in tokens] != list(range(len(tokens))) or len(tokens) != config.vocab_size:
        raise HFFormatError("%s: its WordPiece vocabulary (%d tokens, ids %s) does not number the "
                            "%d rows config.json gives (vocab_size) one for one."
                            % (tokenizer_json, len(tokens), "0.." + str(len(tokens) - 1),
                               config.vocab_size))
    if vocab_output is None:
        raise HFFormatError("%s keeps its vocabulary only in %s (as transformers 5 saves it): pass "
                            "vocab_output=PATH to write it as a vocab.txt." % (directory, TOKENIZER_JSON))
    fs.write_bytes_atomic(vocab_output, ("\n".join(tokens) + "\n").encode("utf-8"))
    return vocab_output

