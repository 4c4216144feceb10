"""UniLM seq2seq fine-tuning on (source, target) pairs, as bert4keras users write it.

    from downstream.seq2seq import Seq2SeqData, build_seq2seq_model, seq2seq_loss
    from pretrain.export_dir import ExportDir

    export = ExportDir("exports/base/100000")
    data = Seq2SeqData(tokenizer, max_source_len=256, max_target_len=32)
    x, y, weights = data.training_arrays(pairs)                  # pairs: [(source, target), ...]
    model = build_seq2seq_model(export.config_path, export.prefix, padding_id=tokenizer.special_ids.pad)
    model.compile(keras.optimizers.Adam(2e-5), **seq2seq_loss())
    model.fit(x, y, sample_weight=weights, batch_size=16, epochs=3)
    decoder = AutoRegressiveDecoder(model, end_id=tokenizer.special_ids.sep, max_len=32)

Rows are `[CLS] source [SEP] target [SEP]` with segment ids 0 / 1, the layout of `launch.build_data
--task=unilm`; position i predicts token i + 1, and only the target's tokens (its closing [SEP]
included) carry loss: the UniLM mask lets a target token see the whole source and the target
before it, so the model learns p(target | source) and generates with `downstream.generation`.
"""

from typing import Sequence, Tuple

import keras
import numpy as np

from storage import fs
from data_pipeline.schema import TARGET_SEGMENT, sequence_padding, unilm_row
from data_pipeline.tokenizer import count_unknown, unknown_warning
from downstream.backbone import backbone_of, build_transformer_model, check_positions
from downstream.tokenization import load_finetune_tokenizer
from pretrain.export_dir import EXPORT_MANIFEST, ExportDir

def seq2seq_loss() -> dict:
    """`model.compile` arguments of a seq2seq model: cross-entropy on the logits averaged over the
    weighted (target) tokens only, and next-token accuracy on them (new objects every call: a
    metric holds state and belongs to one model)."""
    return dict(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                                reduction="mean_with_sample_weight"),
                weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])


class Seq2SeqData:
    """Turns (source, target) text pairs into model rows.

    Args:
      tokenizer: a `downstream.load_finetune_tokenizer` tokenizer.
      max_source_len, max_target_len: tokens kept of each text (without [CLS]/[SEP]); longer texts
        are cut at the end.
    """

    def __init__(self, tokenizer, max_source_len: int = 256, max_target_len: int = 32):
        if max_source_len < 1 or max_target_len < 1:
            raise ValueError("max_source_len and max_target_len must be >= 1 (got %d, %d)."
                             % (max_source_len, max_target_len))
        self.tokenizer = tokenizer
        self.max_source_len, self.max_target_len = max_source_len, max_target_len

    def source_ids(self, source: str):
        """The prefix a decoder continues: [CLS] source [SEP]."""
        return self.tokenizer.encode(source, maxlen=self.max_source_len + 2)[0]

    def row(self, source: str, target: str):
        """(token_ids, segment_ids) of one pair."""
        target_ids = self.tokenizer.encode(target, maxlen=self.max_target_len + 2)[0]
        specials = self.tokenizer.special_ids
        ids, segments = unilm_row(self.source_ids(source)[1:-1], target_ids[1:-1], specials.cls, specials.sep)
        return ids.tolist(), segments.tolist()

    def training_arrays(self, pairs: Sequence[Tuple[str, str]]):
        """([token_ids, segment_ids], next tokens, loss weights), each int32/float32 [N, L] padded
        to the longest row: y[:, i] is token i + 1, weighted 1 where it is a target token."""
        rows = [self.row(s, t) for s, t in pairs]
        if not rows:
            raise ValueError("No (source, target) pairs to train on.")
        pad = self.tokenizer.special_ids.pad
        ids = sequence_padding([row_ids for row_ids, _ in rows], value=pad)
        segments = sequence_padding([row_segments for _, row_segments in rows])
        targets = np.concatenate([ids[:, 1:], np.full((len(rows), 1), pad, np.int32)], axis=1)
        weights = np.concatenate([segments[:, 1:] == TARGET_SEGMENT, np.zeros((len(rows), 1), bool)], axis=1)
        return [ids, segments], targets, weights.astype(np.float32)


def build_seq2seq_model(config_path: str, checkpoint_path, padding_id: int = 0, seed=None):
    """The UniLM model of `build_transformer_model` with MLM logits [B, L, V] as its output; train
    it with `seq2seq_loss()` and the arrays of `Seq2SeqData.training_arrays`."""
    return build_transformer_model(config_path, checkpoint_path, application="unilm",
                                   with_mlm="linear", padding_id=padding_id, seed=seed)


def generate_texts(decoder, data: Seq2SeqData, sources: Sequence[str], strategy: str = "greedy",
                   beam_size: int = 4, batch_size: int = 16):
    """(texts, scores) the decoder writes for each source."""
    results = decoder.generate([data.source_ids(s) for s in sources], strategy, beam_size=beam_size,
                               batch_size=batch_size)
    return [data.tokenizer.decode(r.ids) for r in results], [r.score for r in results]


def evaluate(decoder, data: Seq2SeqData, pairs: Sequence[Tuple[str, str]], lead_n: int,
             strategy: str = "greedy", beam_size: int = 4) -> dict:
    """ROUGE-1/2/L and BLEU of the generated targets and of the lead-`lead_n` baseline.

    Returns:
      {"model": scores, "lead": scores, "lead_n": lead_n, "samples": the first 5 (source,
      generated, reference)}; scores as `text_metrics.scores`.
    """
    from downstream import text_metrics

    sources, references = [s for s, _ in pairs], [t for _, t in pairs]
    generated, _ = generate_texts(decoder, data, sources, strategy, beam_size)
    return {"model": text_metrics.scores(generated, references),
            "lead": text_metrics.scores([text_metrics.lead(s, lead_n) for s in sources], references),
            "lead_n": lead_n, "samples": list(zip(sources, generated, references))[:5]}


def finetune(export_dir, train_pairs, eval_pairs, output, max_source_len=64, max_target_len=32,
             epochs=3, batch_size=16, learning_rate=2e-5, adversarial_epsilon=0.0, strategy="greedy",
             beam_size=4, seed=0, command=None, callbacks=(), log=print):
    """Fine-tunes the export at `export_dir` on (source, target) pairs, saves the result as an export
    at `output` (a new directory) and scores `eval_pairs` (`evaluate`).

    Args:
      export_dir: an export (or Google release) directory with its vocabulary.
      train_pairs, eval_pairs: lists of (source, target) texts.
      output: the new export directory.
      max_source_len, max_target_len: tokens kept of each text; max_target_len + 1 are decoded.
      epochs, batch_size, learning_rate: Adam training.
      adversarial_epsilon: FGM on the word embeddings (`downstream.adversarial`); 0: off.
      strategy, beam_size: how the eval sources are decoded.
      seed: dropout seed and data order.
      command: the command line, recorded in the export's manifest with the settings.
      callbacks: Keras callbacks for `model.fit` (e.g. one that stops training early).
      log: a function taking one line of text.

    Returns:
      `evaluate`'s dict plus output, train_pairs, eval_pairs, strategy, train_loss.

    Example:
      finetune("exports/base", [("an article", "its title")], [("another", "title")], "exports/titles")
    """
    from downstream.adversarial import adversarial_training
    from pretrain.export import export_model
    from downstream.generation import AutoRegressiveDecoder
    from downstream.text_metrics import lead_length

    # Everything that could stop the run is checked before training, not after it.
    if strategy not in ("greedy", "beam") or (strategy == "beam" and beam_size < 1):
        raise ValueError("strategy=%r, beam_size=%d: the eval decodes with 'greedy' or 'beam' and "
                         "beam_size >= 1." % (strategy, beam_size))
    if epochs < 1 or batch_size < 1:
        raise ValueError("epochs=%d, batch_size=%d: both must be >= 1." % (epochs, batch_size))
    keras.utils.set_random_seed(seed)
    export = ExportDir(export_dir)
    check_positions(export, max_source_len + max_target_len + 3, "--max_source_len=%d plus "
                    "--max_target_len=%d plus 3 special tokens" % (max_source_len, max_target_len))
    if fs.exists(output) and (not fs.isdir(output) or fs.listdir(output)):
        raise ValueError("--output %s already exists and is not empty; choose a new directory." % output)
    tokenizer = load_finetune_tokenizer(export.require_vocab(), export.lower_case)
    data = Seq2SeqData(tokenizer, max_source_len, max_target_len)
    x, y, weights = data.training_arrays(train_pairs)
    pad = tokenizer.special_ids.pad
    warning = unknown_warning(*count_unknown([r[r != pad] for r in x[0]], tokenizer.special_ids.unk),
                              "the training pairs", export.vocab_path)
    if warning:
        log(warning)
    model = build_seq2seq_model(export.config_path, export, tokenizer.special_ids.pad, seed)
    model.compile(keras.optimizers.Adam(learning_rate), **seq2seq_loss())
    if adversarial_epsilon:
        adversarial_training(model, epsilon=adversarial_epsilon)
    log("fine-tuning on %d pairs (rows of %d tokens) from %s" % (len(train_pairs), x[0].shape[1],
                                                                export.prefix))
    history = model.fit(x, y, sample_weight=weights, batch_size=batch_size, epochs=epochs, shuffle=True,
                        callbacks=list(callbacks), verbose=2).history
    settings = dict(max_source_len=max_source_len, max_target_len=max_target_len,
                    epochs=len(history["loss"]),
                    batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                    adversarial_epsilon=adversarial_epsilon, train_pairs=len(train_pairs), command=command)
    # Saved before the eval decodes, so that nothing after training can lose the trained weights;
    # the eval scores join the manifest's metrics once they exist.
    manifest = export_model(backbone_of(model).bert, output, export.vocab_path, "unilm",
                            {"export": export_dir},
                            metrics={"train": {k: float(v[-1]) for k, v in history.items()}},
                            settings=settings, lower_case=tokenizer.base.lower_case, log=log)
    decoder = AutoRegressiveDecoder(model, end_id=tokenizer.special_ids.sep, max_len=max_target_len + 1)
    scores = evaluate(decoder, data, eval_pairs, lead_length([t for _, t in train_pairs]), strategy, beam_size)
    manifest.metrics.update({"eval": scores["model"], "eval_lead_%d" % scores["lead_n"]: scores["lead"]})
    fs.write_json_atomic(fs.join(output, EXPORT_MANIFEST), manifest.to_json())
    return dict(scores, output=output, train_pairs=len(train_pairs), eval_pairs=len(eval_pairs),
                strategy=strategy, epochs=len(history["loss"]), train_loss=float(history["loss"][-1]))
