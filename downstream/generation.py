"""Text generation from UniLM and causal-LM models: greedy decoding, beam search and sampling.

    from downstream import build_transformer_model, load_finetune_tokenizer
    from downstream.generation import AutoRegressiveDecoder

    tokenizer = load_finetune_tokenizer("exports/unilm/1000/vocab.txt")
    model = build_transformer_model("exports/unilm/1000/bert_config.json",
                                    "exports/unilm/1000/bert_model.ckpt",
                                    application="unilm", with_mlm=True)
    decoder = AutoRegressiveDecoder(model, end_id=tokenizer.special_ids.sep, max_len=32)
    token_ids, segment_ids = tokenizer.encode("the article ...", maxlen=256)
    title = tokenizer.decode(decoder.beam_search([token_ids, segment_ids], topk=3))  # bert4keras's call
    batch = [tokenizer.encode(text, maxlen=256)[0] for text in texts]
    best = decoder.generate(batch, strategy="beam", beam_size=4)       # [Generation(ids, score, ...)]

The model is the one `build_transformer_model(..., application="unilm" | "lm", with_mlm=True)`
returns: the decoder runs its own layers (no second model definition), encoding the prefix once and
feeding one token per step against a key/value cache (`downstream.decoding`); `use_cache=False`
recomputes the whole sequence every step instead, as bert4keras does, with the same tokens and
log-probabilities (to float round-off).

Inputs are prefixes: for UniLM `[CLS] source [SEP]` (segment ids 0, or the source's own), for a
causal LM any token ids (`prefix_ids` writes both from text). Generated tokens take segment 1 under
UniLM and 0 under LM, exactly the masks of training. Batches may mix prefix lengths: every input
decodes as it would alone.

Differences from bert4keras's AutoRegressiveDecoder, on purpose:
  * batched: many inputs per call, and `n` samples or `beam_size` beams per input;
  * beam search keeps `beam_size` live beams and the best finished hypothesis (bert4keras returns
    as soon as the best beam ends and throws other finished beams away, so its width shrinks); it
    stops once no live beam can beat the finished one, and returns the best hypothesis it saw by
    sum of log-probs (divided by length ** length_penalty when that is not 0), a finished one or,
    at max_len, a live one cut there; `min_ends` as bert4keras: a sequence ends at an end token
    when it holds at least `min_ends` of them;
  * `min_len` bars the end token before `min_len` tokens (bert4keras lets it through unchecked);
  * sampling is seeded per call: sample j of every input draws from the random stream (seed, j),
    so an input's samples do not depend on the other inputs of the batch.
"""

import dataclasses
from typing import List, Optional, Sequence

import numpy as np
import tensorflow as tf

from data_pipeline.schema import TARGET_SEGMENT, sequence_padding
from downstream import decoding
from downstream.backbone import APPLICATIONS, backbone_of, build_transformer_model
from downstream.tokenization import load_finetune_tokenizer
from pretrain.export_dir import ExportDir
from pretrain.google_checkpoint import CheckpointError, HEADS
from pretrain.modeling import BertPretrainingModel

STRATEGIES = ("greedy", "beam", "sample")
_SETTINGS = {"max_len": tf.int32, "min_len": tf.int32, "end_id": tf.int32, "min_ends": tf.int32,
             "top_p": tf.float32, "temperature": tf.float32, "length_penalty": tf.float32}


@dataclasses.dataclass
class Generation:
    """One generated sequence.

    ids: the generated token ids (not the prefix), ending with the end token when `finished`;
    score: the sum of `logprobs` (beam search: divided by len(ids) ** length_penalty);
    logprobs: log-probability of each token under the decoding distribution (temperature applied);
    finished: whether it ended with the end token (else it stopped at max_len).
    """
    ids: np.ndarray
    score: float
    logprobs: np.ndarray
    finished: bool


class AutoRegressiveDecoder:
    """Greedy, beam and sampling decoders over a UniLM or causal-LM model.

    Args:
      model: a Keras model from `build_transformer_model(..., application="unilm" | "lm",
        with_mlm=True)` (or its `BertBackbone` layer, or a `BertPretrainingModel` with
        `application`).
      end_id: the token that ends a sequence ([SEP]: `tokenizer.special_ids.sep`); None: none does.
      max_len: the most tokens to generate (bert4keras's `maxlen`).
      min_len: the end token cannot end a sequence before this many tokens.
      application: "unilm" or "lm"; read from the model when it is a Keras model or backbone.
      use_cache: decode against a key/value cache (True) or recompute every step (False).
      jit_compile: compile the whole decoding loop with XLA (cached path only). Several times less
        time per token for small models, at a compile of seconds per (batch, prefix length)
        bucket: batches are padded to a power of two inputs and prefixes to a multiple of 16.

    Example:
      decoder = AutoRegressiveDecoder(model, end_id=tokenizer.special_ids.sep, max_len=32)
      [result] = decoder.generate([tokenizer.encode("a source text")[0]], strategy="greedy")
      print(tokenizer.decode(result.ids), result.score)
    """

    def __init__(self, model, end_id: Optional[int], max_len: int = 32, min_len: int = 0,
                 application: Optional[str] = None, use_cache: bool = True, jit_compile: bool = False):
        self.bert, application = _network(model, application)
        self.kind = APPLICATIONS[application]
        self.application = application
        self.end_id = -1 if end_id is None else int(end_id)
        self.max_len, self.min_len, self.use_cache = int(max_len), int(min_len), use_cache
        if self.max_len < 1:
            raise ValueError("max_len=%d: generate at least one token." % max_len)
        if jit_compile and not use_cache:
            raise ValueError("jit_compile=True needs use_cache=True: recomputing the whole sequence "
                             "changes its shape every step, which XLA would compile again each time.")
        self.jit_compile = jit_compile
        self.max_positions = self.bert.config.max_position_embeddings
        stepper = decoding.CachedStepper if use_cache else decoding.RecomputeStepper
        generated_segment = TARGET_SEGMENT if application == "unilm" else 0   # LM rows: all 0
        self._stepper = lambda: stepper(self.bert, self.kind, generated_segment)
        self._functions = {}

    # ------------------------------------------------------------------ bert4keras's calls

    def beam_search(self, inputs, topk: int, states=None, temperature: float = 1.0, min_ends: int = 1):
        """bert4keras's `beam_search`: one input `[token_ids, segment_ids]` (or `[token_ids]`), `topk`
        beams; returns the best sequence's ids (ending with end_id when finished)."""
        del states
        example = inputs[0] if len(inputs) == 1 else (inputs[0], inputs[1])
        return self.generate([example], "beam", beam_size=topk, temperature=temperature,
                             min_ends=min_ends)[0].ids

    def random_sample(self, inputs, n: int, topk=None, topp=None, states=None, temperature: float = 1.0,
                      min_ends: int = 1, seed: int = 0):
        """bert4keras's `random_sample`: `n` samples for one input; a list of n id arrays, in
        sample order (bert4keras lists them in the order they finish)."""
        del states
        example = inputs[0] if len(inputs) == 1 else (inputs[0], inputs[1])
        samples = self.generate([example], "sample", num_samples=n, top_k=topk, top_p=topp,
                                temperature=temperature, min_ends=min_ends, seed=seed)[0]
        return [s.ids for s in samples]

    # --------------------------------------------------------------------------- batched

    def generate(self, examples: Sequence, strategy: str = "greedy", beam_size: int = 4,
                 num_samples: int = 1, top_k: Optional[int] = None, top_p: Optional[float] = None,
                 temperature: float = 1.0, min_ends: int = 1, length_penalty: float = 0.0,
                 seed: int = 0, batch_size: int = 16, max_len: Optional[int] = None,
                 min_len: Optional[int] = None, progress=None):
        """Decodes every example.

        Args:
          examples: prefixes, each token ids or a (token_ids, segment_ids) pair.
          strategy: "greedy", "beam" or "sample".
          beam_size: beams per input ("beam").
          num_samples, top_k, top_p, seed: samples per input, the top-k / nucleus filters (None:
            off) and the seed ("sample").
          temperature: logits are divided by it (every strategy; greedy picks are unchanged).
          min_ends: end tokens a finished sequence holds (see the module docstring).
          length_penalty: beam scores are divided by length ** length_penalty (0: plain sums).
          batch_size: inputs decoded together ("greedy"; "beam": times beam_size rows); "sample":
            (input, sample) rows decoded together, so that memory is bounded whatever num_samples.
          max_len, min_len: this call's, instead of the decoder's.
          progress: called as progress(sequences done, sequences in all) after every batch.

        Returns:
          "greedy" / "beam": one `Generation` per example; "sample": a list of `num_samples`
          Generations per example. The same whatever the batch_size.
        """
        if strategy not in STRATEGIES:
            raise ValueError("strategy=%r: use one of %s." % (strategy, ", ".join(STRATEGIES)))
        group = {"greedy": 1, "beam": beam_size, "sample": num_samples}[strategy]
        if (group < 1 or batch_size < 1 or (top_k is not None and top_k < 1)
                or (top_p is not None and not 0.0 < top_p <= 1.0)):
            raise ValueError("beam_size, num_samples and batch_size must be >= 1, top_k >= 1 and top_p "
                             "in (0, 1] (got %d, %d, %s, %s)." % (group, batch_size, top_k, top_p))
        if temperature <= 0:
            raise ValueError("temperature=%s: must be > 0 (greedy decoding is strategy='greedy')."
                             % temperature)
        max_len = self.max_len if max_len is None else int(max_len)
        min_len = self.min_len if min_len is None else int(min_len)
        if max_len < 1:
            raise ValueError("max_len=%d: generate at least one token." % max_len)
        prefixes = [self._prefix(i, example, max_len) for i, example in enumerate(examples)]
        settings = {"max_len": max_len, "min_len": min_len, "end_id": self.end_id,
                    "min_ends": min_ends, "top_p": top_p or 1.0, "temperature": temperature,
                    "length_penalty": length_penalty}
        settings = {k: tf.constant(v, _SETTINGS[k]) for k, v in settings.items()}
        # Samples are rows like inputs: a call decodes at most batch_size (input, sample) rows, in
        # runs of `chunk` samples (the last run padded to it: one traced graph), so memory does
        # not grow with num_samples. Sample j draws from the stream (seed, j) whatever its run.
        chunk = -(-num_samples // -(-num_samples // batch_size)) if strategy == "sample" else group
        inputs_per_call = max(1, batch_size // chunk) if strategy == "sample" else batch_size
        key = (strategy, chunk, top_k, top_p is not None, min_len > 0)
        results = [None] * len(prefixes)
        order = sorted(range(len(prefixes)), key=lambda i: len(prefixes[i][0]))   # less padding
        done = 0
        for start in range(0, len(order), inputs_per_call):
            chosen = order[start:start + inputs_per_call]
            batch = [prefixes[i] for i in chosen]
            if strategy != "sample":
                for i, generations in zip(chosen, self._run(key, batch, settings, None)):
                    results[i] = generations[0]
                done += len(chosen)
                if progress:
                    progress(done, len(prefixes) * group)
                continue
            for i in chosen:
                results[i] = []
            for first in range(0, num_samples, chunk):
                uniforms = np.stack([np.random.default_rng([seed, j]).random(max_len, np.float32)
                                     for j in range(first, first + chunk)])     # [chunk, T]
                for i, generations in zip(chosen, self._run(key, batch, settings, uniforms)):
                    results[i] += generations[:num_samples - first]
                done += len(chosen) * min(chunk, num_samples - first)
                if progress:
                    progress(done, len(prefixes) * group)
        return results

    def _prefix(self, index, example, max_len):
        ids, segments = ((example[0], example[1]) if len(example) == 2 and np.ndim(example[0]) == 1
                         else (example, None))
        ids = np.asarray(ids, np.int32).reshape(-1)
        segments = np.zeros_like(ids) if segments is None else np.asarray(segments, np.int32).reshape(-1)
        if not len(ids) or len(segments) != len(ids):
            raise ValueError("Input %d: %d token ids and %d segment ids; a prefix needs at least one "
                             "token and one segment id per token." % (index, len(ids), len(segments)))
        if len(ids) + max_len > self.max_positions:
            raise ValueError(
                "Input %d: a %d-token prefix plus max_len=%d new tokens needs %d positions, but the "
                "model has max_position_embeddings=%d. Shorten the input (encode with maxlen=%d) or "
                "lower max_len." % (index, len(ids), max_len, len(ids) + max_len,
                                    self.max_positions, self.max_positions - max_len))
        return ids, segments

    def _run(self, key, prefixes, settings, uniforms):
        strategy, real = key[0], len(prefixes)
        width = max(len(p[0]) for p in prefixes)
        if self.jit_compile:   # few distinct shapes, few XLA compilations
            width = min(-(-width // 16) * 16, self.max_positions)
            prefixes = prefixes + [([0], [0])] * ((1 << (real - 1).bit_length()) - real)
        ids = sequence_padding([i for i, _ in prefixes], width)
        segments = sequence_padding([s for _, s in prefixes], width)
        lengths = np.array([len(p[0]) for p in prefixes], np.int32)
        if strategy == "sample":
            uniforms = np.tile(uniforms, (len(prefixes), 1))                       # [B * n, T]
        else:
            uniforms = np.zeros((0, 1), np.float32)
        out, logp, scores, lengths, finished = (
            x.numpy() for x in self._function(key)(ids, segments, lengths, settings, uniforms))
        group = 1 if strategy == "beam" else key[1]
        generations = [Generation(out[r, :lengths[r]], float(scores[r]), logp[r, :lengths[r]],
                                  bool(finished[r])) for r in range(len(out))]
        return [generations[b * group:(b + 1) * group] for b in range(real)]

    def _function(self, key):
        """One traced graph per (strategy, rows per input, top_k, top-p on, min_len on), with
        unknown batch and length dimensions: nothing retraces per call, batch or prefix length.
        (The beam and sample counts and top_k are sizes of tensors, fixed in a graph XLA can
        compile; filters and the min_len rule cost ops every step, so they are left out of the
        graph when off.)"""
        if key not in self._functions:
            strategy, group, top_k, use_p, bar_end = key

            def run(ids, segments, lengths, settings, uniforms):
                prefix, stepper = (ids, segments, lengths), self._stepper()
                settings = dict(settings, bar_end=bar_end)
                if strategy == "beam":
                    return decoding.beam_loop(stepper, prefix, group, settings)
                out, logp, length, done = decoding.rows_loop(
                    stepper, prefix, group, settings, uniforms if strategy == "sample" else None,
                    (top_k, settings["top_p"] if use_p else None))
                return out, logp, tf.reduce_sum(logp, -1), length, done

            signature = [tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None], tf.int32),
                         tf.TensorSpec([None], tf.int32),
                         {k: tf.TensorSpec([], v) for k, v in _SETTINGS.items()},
                         tf.TensorSpec([None, None], tf.float32)]
            self._functions[key] = tf.function(run, input_signature=signature, autograph=False,
                                               jit_compile=self.jit_compile)
        return self._functions[key]


def prefix_ids(tokenizer, text: str, application: str, max_len: Optional[int] = None) -> List[int]:
    """The prefix a model of `application` continues from `text`.

    UniLM: `[CLS] text [SEP]`, as the source side of its training rows. LM: `[SEP] text`, the start
    of a document in the LM training stream (documents are joined with [SEP]); the text is
    continued. `max_len` cuts the text to fit that many tokens."""
    ids = tokenizer.encode(text, maxlen=max_len)[0]
    if application == "lm":
        ids = [tokenizer.special_ids.sep] + ids[1:-1]
    return ids


def prefixes(tokenizer, records, application: str, max_len: int, max_positions: int,
             max_source_len: int = 0, path: str = ""):
    """`prefix_ids` of every (line number, text) record of the file `path`, checked against the
    model's positions: a source too long for max_len new tokens is a ValueError naming its line,
    unless `max_source_len` (tokens of text kept, 0: all) cuts it."""
    budget = max_positions - max_len
    if budget < 2:
        raise ValueError("--max_len=%d leaves no room for a source: the model has %d positions."
                         % (max_len, max_positions))
    out = []
    for line, source in records:
        ids = prefix_ids(tokenizer, source, application, max_source_len + 2 if max_source_len else None)
        if len(ids) > budget:
            raise ValueError(
                "%s:%d: the source makes a %d-token prefix; with --max_len=%d that needs %d positions, "
                "but the model has max_position_embeddings=%d. Pass --max_source_len=%d to cut "
                "sources, or lower --max_len." % (path, line, len(ids), max_len, len(ids) + max_len,
                                                  max_positions, budget - 2))
        out.append(ids)
    return out


def load_decoder(export_dir: str, application: str = "unilm", **kwargs):
    """(decoder, tokenizer) for an export directory (or a Google release directory).

    Args:
      export_dir: holds bert_config.json, bert_model.ckpt.* and the vocabulary (or an `ExportDir`).
      application: "unilm" or "lm".
      **kwargs: `AutoRegressiveDecoder` arguments (max_len, min_len, use_cache); end_id defaults
        to the vocabulary's [SEP].

    Raises:
      CheckpointError: no checkpoint, one without the MLM head (cls/predictions/*), which
        generation predicts tokens with, or no vocabulary.
    """
    if application not in ("unilm", "lm"):
        raise ValueError("application=%r: generation needs 'unilm' or 'lm'." % application)
    export = ExportDir.of(export_dir)
    if not export.has_head("mlm"):
        raise CheckpointError(
            "%s has no MLM head (%s*): generation predicts every token with it. Use an export of "
            "launch.export (always written with it), or a checkpoint released with its pretraining "
            "heads." % (export.prefix, HEADS["mlm"]))
    tokenizer = load_finetune_tokenizer(export.require_vocab(), export.lower_case)
    model = build_transformer_model(export.config_path, export, application=application, with_mlm=True,
                                    padding_id=tokenizer.special_ids.pad)
    kwargs.setdefault("end_id", tokenizer.special_ids.sep)
    return AutoRegressiveDecoder(model, **kwargs), tokenizer


def _network(model, application):
    """(BertPretrainingModel, application) of whatever the caller holds."""
    if isinstance(model, BertPretrainingModel):
        if application is None:
            raise ValueError("A BertPretrainingModel carries no application: pass application='unilm' "
                             "or 'lm'.")
        return model, _checked(application)
    backbone = backbone_of(model)
    if not backbone.with_mlm:
        raise ValueError("The model was built without with_mlm=True, so its MLM head (which predicts "
                         "the tokens) was neither loaded nor checked: rebuild it with with_mlm=True.")
    if application is not None and application != backbone.application:
        raise ValueError("application=%r, but the model was built with application=%r."
                         % (application, backbone.application))
    return backbone.bert, _checked(backbone.application)


def _checked(application):
    if application not in ("unilm", "lm"):
        raise ValueError("application=%r cannot generate: build the model with application='unilm' "
                         "(seq2seq) or 'lm' (causal)." % application)
    return application
