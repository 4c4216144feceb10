"""Work done on one chunk of documents, in a worker process: tokenize, build instances, encode records.

A chunk is a fixed run of `docs_per_chunk` consecutive documents. Everything random in a chunk is
seeded from (seed, chunk index), so the records of a chunk do not depend on which process made
them or how many there are: the builder's output bytes are the same for any `--num_workers`.
"""

import dataclasses
import random
from typing import List, Optional

import numpy as np

from data_pipeline import masking, schema, tasks, tfrecord
from data_pipeline.instances import InstanceConfig, InstanceStats, make_instances

_CHUNK_BITS = 24  # example id = chunk index << 24 | index in chunk (for static masks)


@dataclasses.dataclass(frozen=True)
class ChunkSettings:
    """Everything a worker needs; picklable (the tokenizer is loaded once per worker)."""
    vocab: str
    lower_case: Optional[bool]
    instance: InstanceConfig
    masking: masking.MaskingConfig
    record_format: str          # schema.GOOGLE (static masks) | schema.DYNAMIC
    dupe_factor: int
    seed: int
    eval_fraction: float
    docs_per_chunk: int
    segmenter: Optional[str]
    task: tasks.TaskConfig = tasks.TaskConfig()


class ChunkProcessor:
    """Holds the per-process state (tokenizer, tables); call `process` per chunk."""

    def __init__(self, settings: ChunkSettings):
        from data_pipeline.segmenter import make_segmenter
        from data_pipeline.tokenizer import load_tokenizer

        self.s = settings
        self.tokenizer = load_tokenizer(settings.vocab, lower_case=settings.lower_case)
        self.specials = self.tokenizer.special_ids
        self.word_start_table = self.tokenizer.word_start_table()
        self.replacement_ids = self.tokenizer.random_replacement_ids()
        self.segmenter = make_segmenter(settings.segmenter)
        pairs = settings.instance.layout == "pairs"
        self.task_builder = None
        if settings.task.task != tasks.MLM:
            self.task_builder = tasks.TaskBuilder(settings.task, settings.instance.seq_len,
                                                  self.tokenizer, self.specials)
            self.features = self.task_builder.features
        else:
            self.features = schema.features(settings.record_format, settings.instance.seq_len,
                                            settings.masking.max_predictions, pairs)
        self.float_keys = schema.float_keys(self.features)

    def process(self, chunk_index: int, documents: List):
        """Returns (chunk_index, {split: framed bytes}, {split: record count}, stats dict).

        `documents` are the chunk's items: lists of sentences, or `tasks.Record`s. The stats of a
        structured task carry `problems`: (origin, reason) of the records it could not use.
        """
        first_doc = chunk_index * self.s.docs_per_chunk
        is_eval = _eval_docs(self.s.seed, first_doc, len(documents), self.s.eval_fraction)
        if self.task_builder is not None:
            return self._process_task(chunk_index, documents, is_eval)
        tokenized = self._tokenize(documents)
        stats = InstanceStats()
        out, counts = {}, {}
        masked_tokens = 0
        for split, want_eval in (("train", False), ("eval", True)):
            docs = [d for d, e in zip(tokenized, is_eval) if e == want_eval and d]
            out[split], counts[split], masked = self._records(chunk_index, split, docs, stats)
            masked_tokens += masked
        result = dataclasses.asdict(stats)
        result.update(documents=len(documents), masked_tokens=masked_tokens,
                      eval_documents=int(is_eval.sum()))
        return chunk_index, out, counts, result

    def _process_task(self, chunk_index, items, is_eval):
        stats, problems, out, counts = {}, [], {}, {}
        for split, want_eval in (("train", False), ("eval", True)):
            chosen = [x for x, e in zip(items, is_eval) if e == want_eval]
            rng = random.Random("%d/%d/%s" % (self.s.seed, chunk_index, split))
            columns, n = self.task_builder.columns(chosen, rng, stats, problems)
            out[split] = b""
            if n:
                order = np.random.default_rng(_seed_words(self.s.seed, chunk_index, split)).permutation(n)
                columns = {k: ([v[i] for i in order] if isinstance(v, list) else v[order])
                           for k, v in columns.items()}
                out[split] = tfrecord.encode_framed(columns, self.float_keys)
            counts[split] = n
        stats.update(documents=len(items), eval_documents=int(is_eval.sum()),
                     bad_records=len(problems), problems=problems)
        return chunk_index, out, counts, stats

    def _tokenize(self, documents):
        """[[sentence str]] -> [[(ids int32, word_starts bool)]]; empty sentences dropped."""
        flat = [s for doc in documents for s in doc]
        if self.segmenter is None:
            encoded = [(ids, None) for ids in self.tokenizer.encode_arrays(flat)]
        else:
            encoded = self.tokenizer.encode_with_offsets(flat)
        sentences = []
        for text, (ids, offsets) in zip(flat, encoded):
            ids = np.asarray(ids, dtype=np.int32)
            starts = self.word_start_table[ids]
            if offsets is not None and len(ids):
                starts = self.segmenter.refine_word_starts(text, ids, offsets, starts, self.tokenizer)
            sentences.append((ids, starts))
        out, k = [], 0
        for doc in documents:
            out.append([s for s in sentences[k:k + len(doc)] if len(s[0])])
            k += len(doc)
        return out

    def _records(self, chunk_index, split, docs, stats):
        """(framed records of one split of the chunk, shuffled; their count; masked tokens)."""
        s = self.s
        if not docs:
            return b"", 0, 0
        passes = s.dupe_factor if s.record_format == schema.GOOGLE else 1
        parts, masked_total = [], 0
        for dupe in range(passes):
            rng = random.Random("%d/%d/%d/%s" % (s.seed, chunk_index, dupe, split))
            instances = make_instances(docs, s.instance, self.specials.cls, self.specials.sep, rng, stats)
            if not instances:
                continue
            if s.record_format == schema.GOOGLE:
                columns = self._static_columns(instances, chunk_index, dupe)
                masked_total += int(columns["masked_lm_weights"].sum())
            else:
                columns = self._dynamic_columns(instances)
            parts.append(columns)
        if not parts:
            return b"", 0, 0
        columns = {f.name: np.concatenate([p[f.name] for p in parts]) for f in self.features}
        # Shuffle within the chunk (google-research/bert shuffles all instances in memory; across
        # chunks the loader's file interleave and shuffle buffer do the mixing).
        order = np.random.default_rng(_seed_words(s.seed, chunk_index, split)).permutation(
            len(columns["input_ids"]))
        columns = {k: v[order] for k, v in columns.items()}
        return tfrecord.encode_framed(columns, self.float_keys), len(order), masked_total

    def _matrix(self, instances, attr, fill):
        L = self.s.instance.seq_len
        m = np.full((len(instances), L), fill, dtype=np.int64)
        for i, inst in enumerate(instances):
            v = getattr(inst, attr)
            m[i, :len(v)] = v
        return m

    def _labels(self, instances):
        return np.array([[inst.label or 0] for inst in instances], dtype=np.int64)

    def _dynamic_columns(self, instances):
        columns = {"input_ids": self._matrix(instances, "tokens", self.specials.pad),
                   "word_starts": self._matrix(instances, "word_starts", 0)}
        if self.s.instance.layout == "pairs":
            columns["segment_ids"] = self._matrix(instances, "segment_ids", 0)
            columns["next_sentence_labels"] = self._labels(instances)
        return columns

    def _static_columns(self, instances, chunk_index, dupe):
        ids = self._matrix(instances, "tokens", self.specials.pad)
        starts = self._matrix(instances, "word_starts", 0)
        example_ids = (np.int64(chunk_index) << _CHUNK_BITS) + np.arange(len(instances), dtype=np.int64)
        m = masking.mask_np(ids, starts, example_ids, seed=self.s.seed, epoch=dupe,
                            special_ids=self.specials, replacement_ids=self.replacement_ids,
                            config=self.s.masking)
        real = ids != self.specials.pad
        return {
            # Google's layout pads with 0 whatever the vocabulary's [PAD] id is.
            "input_ids": np.where(real, m["input_ids"], 0),
            "input_mask": real.astype(np.int64),
            "segment_ids": self._matrix(instances, "segment_ids", 0),
            "masked_lm_positions": m["masked_lm_positions"],
            "masked_lm_ids": m["masked_lm_ids"],
            "masked_lm_weights": m["masked_lm_weights"],
            "next_sentence_labels": self._labels(instances),
        }


def _seed_words(seed, chunk_index, split):
    return [seed & 0xFFFFFFFF, chunk_index, 1 if split == "eval" else 0]


def _eval_docs(seed, first_doc, count, fraction):
    """bool [count]: which documents are held out, by a hash of (seed, global document index)."""
    if fraction <= 0:
        return np.zeros(count, bool)
    doc_ids = np.arange(first_doc, first_doc + count, dtype=np.int64)
    h = masking.hash24_np(seed, 0xE7A1, doc_ids, np.zeros((count, 1), np.int64), 3)[:, 0]
    return h < int(fraction * (1 << 24))


_PROCESSOR = None


def init_worker(settings: ChunkSettings):
    global _PROCESSOR
    _PROCESSOR = ChunkProcessor(settings)


def run_chunk(args):
    return _PROCESSOR.process(*args)
