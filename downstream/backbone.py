"""The backbone of fine-tuning: Google-layout checkpoints as Keras 3 models, with bert4keras's call.

    from downstream import build_transformer_model, load_finetune_tokenizer

    tokenizer = load_finetune_tokenizer("exports/base/100000/vocab.txt")
    bert = build_transformer_model("exports/base/100000/bert_config.json",
                                   "exports/base/100000/bert_model.ckpt", with_pool=True)
    output = keras.layers.Dense(num_labels, activation="softmax")(bert.output)
    model = keras.Model(bert.inputs, output)
    token_ids, segment_ids = tokenizer.encode("first text", "second text", maxlen=128)

Scripts written for bert4keras port with an import change: inputs are [token_ids, segment_ids]
(token id 0, i.e. [PAD] in Google vocabularies, marks padding); outputs follow bert4keras:
  nothing asked     -> sequence output [B, L, H]
  with_pool         -> pooled [CLS] output [B, H] (tanh dense)     with_nsp: NSP probabilities [B, 2]
  with_mlm          -> MLM probabilities over the vocabulary [B, L, V] (with_mlm="linear": logits)
  pool/nsp and mlm  -> [pooled or NSP, MLM]
`application` picks the attention mask: "encoder" (bidirectional), "unilm" (seq2seq, from the
segment ids), "lm" (causal). The network is `modeling.BertPretrainingModel`, the very code that
pretrained the weights, so an export reproduces the pretrained model's outputs exactly.
"""

from typing import Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from pretrain import google_checkpoint
from pretrain.export_dir import ExportDir
from pretrain.modeling import BertConfig, BertPretrainingModel, attention_bias

APPLICATIONS = {"encoder": "bidirectional", "unilm": "unilm", "lm": "causal"}


# The package name is part of every saved .keras file ("pretrain>BertBackbone"): it stays "pretrain"
# so that models saved before the layer moved to `downstream` still load.
@keras.saving.register_keras_serializable(package="pretrain")
class BertBackbone(keras.layers.Layer):
    """BERT as one Keras layer: [token_ids, segment_ids] -> the outputs described above.

    Heads the outputs do not use are frozen (they have no gradient), so fine-tuning neither
    updates nor warns about them.
    """

    def __init__(self, bert_config: dict, application="encoder", with_pool=False, with_nsp=False,
                 with_mlm=False, padding_id=0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.bert_config = dict(bert_config)
        self.application, self.padding_id = application, padding_id
        self.with_pool, self.with_nsp, self.with_mlm = with_pool or with_nsp, with_nsp, with_mlm
        self.bert = BertPretrainingModel(BertConfig.from_dict(self.bert_config), with_nsp=bool(with_nsp))
        # Fresh dropout masks every training step (the model's dropout is a function of a seed).
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape=None):
        self.bert.build()
        unused = []
        if not self.with_mlm:
            unused += (self.bert.mlm_transform.weights + self.bert.mlm_norm.weights
                       + [self.bert.mlm_output_bias])
        if not self.with_pool:
            unused += self.bert.pooler.weights
        for variable in unused:
            variable.trainable = False
        self.built = True

    def call(self, inputs, training=False):
        token_ids, segment_ids = (tf.cast(x, tf.int32) for x in inputs)
        input_mask = tf.cast(tf.not_equal(token_ids, self.padding_id), tf.int32)
        bias = attention_bias(input_mask, segment_ids, APPLICATIONS[self.application])
        seed = tf.cast(self.seed_generator.next(), tf.int64) if training else None
        sequence, pooled = self.bert(token_ids, segment_ids, bias, seed=seed, training=training)
        outputs = []
        if self.with_pool:
            outputs.append(tf.nn.softmax(self.bert.nsp_logits(pooled)) if self.with_nsp else pooled)
        if self.with_mlm:
            logits = self.bert.mlm_logits(sequence)
            activation = "softmax" if self.with_mlm is True else self.with_mlm
            outputs.append(keras.activations.get(activation)(logits))
        if not outputs:
            return sequence
        return outputs[0] if len(outputs) == 1 else outputs

    def get_config(self):
        return dict(super().get_config(), bert_config=self.bert_config, application=self.application,
                    with_pool=self.with_pool, with_nsp=self.with_nsp, with_mlm=self.with_mlm,
                    padding_id=self.padding_id)


def build_transformer_model(config_path: str, checkpoint_path: Optional[str] = None, model="bert",
                            application="encoder", with_pool=False, with_nsp=False, with_mlm=False,
                            keep_tokens: Optional[Sequence[int]] = None, padding_id: int = 0,
                            return_keras_model=True, name="bert", seed=None):
    """A Keras 3 model with inputs [token_ids, segment_ids], weights from a Google-layout checkpoint.

    Args:
      config_path: a Google bert_config.json.
      checkpoint_path: checkpoint prefix (…/bert_model.ckpt) or its directory, or an opened
        `ExportDir` (its reader is used); None for fresh weights. Loaded by variable name; missing
        names, shapes that do not fit the config and corrupt files raise CheckpointError before
        anything is assigned.
      model: "bert" (RoBERTa releases in Google's layout, e.g. Chinese RoBERTa-wwm, load as "bert").
      application: "encoder", "unilm" or "lm" (the attention mask).
      with_pool, with_nsp, with_mlm: the heads (see the module docstring); with_mlm may name an
        activation ("linear" for logits).
      keep_tokens: bert4keras's simplified vocabulary: the checkpoint ids to keep, in order.
      padding_id: the token id that marks padding (0 = [PAD] in Google vocabularies).
      return_keras_model: must be True (bert4keras's Transformer object is not provided).
      seed: dropout seed for training (None: random).
    """
    if model not in ("bert", "roberta"):
        raise ValueError("model=%r: only BERT-layout checkpoints ('bert', 'roberta') are supported." % model)
    if application not in APPLICATIONS:
        raise ValueError("application=%r: use one of %s." % (application, ", ".join(APPLICATIONS)))
    if not return_keras_model:
        raise ValueError("return_keras_model=False (bert4keras's Transformer object) is not provided; "
                         "use the returned keras.Model (model.inputs, model.output).")
    config = google_checkpoint.read_bert_config(config_path).to_dict()
    if keep_tokens is not None:
        config["vocab_size"] = len(keep_tokens)
    token_ids = keras.Input(shape=(None,), dtype="int32", name="Input-Token")
    segment_ids = keras.Input(shape=(None,), dtype="int32", name="Input-Segment")
    backbone = BertBackbone(config, application=application, with_pool=with_pool, with_nsp=with_nsp,
                            with_mlm=with_mlm, padding_id=padding_id, seed=seed, name=name)
    outputs = backbone([token_ids, segment_ids])
    keras_model = keras.Model([token_ids, segment_ids], outputs, name=name)
    if checkpoint_path:
        heads = [h for h, on in (("pooler", backbone.with_pool), ("nsp", with_nsp), ("mlm", with_mlm)) if on]
        opened = isinstance(checkpoint_path, ExportDir)
        google_checkpoint.load_weights(
            backbone.bert, checkpoint_path.prefix if opened else checkpoint_path, heads=heads,
            rows=None if keep_tokens is None else np.asarray(keep_tokens),
            reader=checkpoint_path.reader if opened else None)
    return keras_model


def backbone_of(model) -> BertBackbone:
    """The `BertBackbone` layer of a Keras model built on `build_transformer_model` (or the layer
    itself); the underlying network is its `.bert`."""
    if isinstance(model, BertBackbone):
        return model
    for layer in getattr(model, "layers", []):
        found = layer if isinstance(layer, BertBackbone) else None
        if found is None and isinstance(layer, keras.Model):
            found = next((x for x in layer.layers if isinstance(x, BertBackbone)), None)
        if found is not None:
            return found
    raise ValueError("%r holds no BertBackbone: build it on downstream.build_transformer_model(...)."
                     % getattr(model, "name", model))


def check_positions(export: ExportDir, tokens: int, what: str):
    """A ValueError unless rows of `tokens` tokens (`what` makes them: e.g. "--max_len=128") fit the
    max_position_embeddings of `export`: checked before a model is built, instead of an error
    from inside Keras."""
    positions = export.config.max_position_embeddings
    if tokens > positions:
        raise ValueError("%s exceed the model's max_position_embeddings=%d (%s); lower them."
                         % (what, positions, export.config_path))
