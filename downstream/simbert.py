"""SimBERT: sentence vectors, retrieval and paraphrase generation from one UniLM model.

    from downstream.simbert import SimBERT

    simbert = SimBERT.from_export("exports/simbert/100000")
    vectors = simbert.encode(["how do I export a run", "exporting a pretraining run"])  # [2, H]
    simbert.most_similar("how do I export a run", candidates, k=10)     # [(text, cosine), ...]
    simbert.gen_synonyms("how do I export a run", n=100, k=20)          # [text, ...]

A SimBERT model is a UniLM trained two ways at once (`launch.pretrain --config=configs/
simbert_base.py`): to generate a sentence's paraphrase, and to place paraphrases close together as
L2-normalised pooled [CLS] vectors. `gen_synonyms` is the procedure of the SimBERT release
(ZhuiyiTechnology/simbert): sample n continuations of `[CLS] text [SEP]`, drop duplicates and the
input itself, rank the rest by cosine similarity to the input, keep the top k.

The pooler is the checkpoint's `bert/pooler/dense` with tanh (Google's, which this project's
SimBERT task trains); the SimBERT release was trained with a linear pooler: pass
`pooler="linear"` for its checkpoints.
"""

import warnings
from typing import List, Optional, Sequence

import numpy as np
import tensorflow as tf

from data_pipeline.schema import sequence_padding
from downstream.backbone import backbone_of, build_transformer_model
from downstream.tokenization import load_finetune_tokenizer
from downstream.generation import AutoRegressiveDecoder
from pretrain.export_dir import ExportDir
from pretrain.modeling import attention_bias


class SimBERT:
    """Retrieval and paraphrases from a SimBERT model.

    Args:
      model: a Keras model from `build_transformer_model(..., application="unilm",
        with_pool=True, with_mlm=True)`.
      tokenizer: its `load_finetune_tokenizer` tokenizer.
      max_len: tokens a text is cut to for encoding and generation, and the most tokens generated
        (the release's 32).
      pooler: "tanh" (this project's exports, Google's pooler) or "linear" (the SimBERT release).
      jit_compile: compile generation with XLA (see `AutoRegressiveDecoder`).
    """

    def __init__(self, model, tokenizer, max_len: int = 32, pooler: str = "tanh", jit_compile: bool = False):
        if pooler not in ("tanh", "linear"):
            raise ValueError("pooler=%r: use 'tanh' (Google's pooler) or 'linear' (the SimBERT release)."
                             % pooler)
        backbone = backbone_of(model)
        if not backbone.with_pool:
            raise ValueError("The model was built without with_pool=True: SimBERT's vectors are its "
                             "pooled [CLS] output. Rebuild it with with_pool=True, with_mlm=True.")
        self.bert, self.tokenizer, self.max_len, self.pooler = backbone.bert, tokenizer, max_len, pooler
        self.decoder = AutoRegressiveDecoder(model, end_id=tokenizer.special_ids.sep, max_len=max_len,
                                             jit_compile=jit_compile)
        spec = tf.TensorSpec([None, None], tf.int32)
        self._pool = tf.function(self._pooled, input_signature=[spec, spec], autograph=False)

    @classmethod
    def from_export(cls, export_dir: str, max_len: int = 32, pooler: str = "tanh", **kwargs):
        """A SimBERT over an export directory (or a Google-layout release with vocab.txt; or an
        `ExportDir`)."""
        export = ExportDir.of(export_dir)
        if export.manifest and not export.manifest.heads.get("pooler_trained", True):
            warnings.warn("%s was exported from a run that did not train its pooler (no NSP, not the "
                          "simbert task): its similarities carry little meaning." % export.directory)
        tokenizer = load_finetune_tokenizer(export.require_vocab(), export.lower_case)
        model = build_transformer_model(export.config_path, export, application="unilm",
                                        with_pool=True, with_mlm=True, padding_id=tokenizer.special_ids.pad)
        return cls(model, tokenizer, max_len=max_len, pooler=pooler, **kwargs)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """L2-normalised pooled vectors [len(texts), H] (float32) of `[CLS] text [SEP]`."""
        ids = [self.tokenizer.encode(t, maxlen=self.max_len)[0] for t in texts]
        out = np.zeros((len(ids), self.bert.config.hidden_size), np.float32)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))    # batches of similar lengths
        pad = self.tokenizer.special_ids.pad
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            batch = sequence_padding([ids[i] for i in rows], value=pad)
            out[rows] = self._pool(batch, (batch != pad).astype(np.int32)).numpy()
        return out

    def _pooled(self, ids, mask):
        segments = tf.zeros_like(ids)
        hidden, pooled = self.bert(ids, segments, attention_bias(mask, segments, "unilm"))
        if self.pooler == "linear":
            pooled = tf.matmul(hidden[:, 0], self.bert.pooler.kernel) + self.bert.pooler.bias
        return tf.math.l2_normalize(tf.cast(pooled, tf.float32), axis=-1)

    def most_similar(self, query: str, candidates: Sequence[str], k: int = 10,
                     candidate_vectors: Optional[np.ndarray] = None):
        """The k candidates closest to `query` by cosine similarity: [(text, similarity)], most
        similar first (ties keep the candidates' order). `candidate_vectors` (from `encode`) saves
        encoding a fixed corpus again for every query."""
        if candidate_vectors is None:
            candidate_vectors = self.encode(candidates)
        if len(candidate_vectors) != len(candidates):
            raise ValueError("%d candidate vectors for %d candidates."
                             % (len(candidate_vectors), len(candidates)))
        similarities = candidate_vectors @ self.encode([query])[0]
        order = np.argsort(-similarities, kind="stable")[:k]
        return [(candidates[i], float(similarities[i])) for i in order]

    def gen_synonyms(self, text: str, n: int = 100, k: int = 20, top_k: Optional[int] = 5,
                     top_p: Optional[float] = None, temperature: float = 1.0, seed: int = 0,
                     with_scores: bool = False, batch_size: int = 128) -> List:
        """Paraphrases of `text`, most similar first: SimBERT's `gen_synonyms`.

        Args:
          text: the input sentence.
          n: samples drawn (`top_k` / `top_p` / `temperature` as in `AutoRegressiveDecoder`; the
            release samples with top_k=5, bert4keras's SimBERT example with top_p=0.95).
          k: the most paraphrases returned (fewer when fewer distinct ones were drawn).
          seed: the sampling seed.
          with_scores: return (text, cosine similarity to the input) pairs instead of texts.
          batch_size: samples decoded together (memory is bounded by it, not by n).

        Example:
          simbert.gen_synonyms("数据分片在训练时被动态掩码", n=50, k=5)
        """
        prefix = self.tokenizer.encode(text, maxlen=self.max_len)[0]
        samples = self.decoder.generate([prefix], "sample", num_samples=n, top_k=top_k, top_p=top_p,
                                        temperature=temperature, seed=seed, batch_size=batch_size)[0]
        # "The input" is the text as given and as the tokenizer writes it back (case, spacing).
        seen, candidates = {text, self.tokenizer.decode(prefix)}, []
        for sample in samples:
            candidate = self.tokenizer.decode(sample.ids)
            if candidate.strip() and candidate not in seen:
                seen.add(candidate)
                candidates.append(candidate)
        if not candidates:
            return []
        vectors = self.encode([text] + candidates)
        similarities = vectors[1:] @ vectors[0]
        order = np.argsort(-similarities, kind="stable")[:k]
        return [(candidates[i], float(similarities[i])) if with_scores else candidates[i] for i in order]
