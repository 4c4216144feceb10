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
from data_pipeline.instances import InstanceConfig, InstanceStats, Tokens, make_instances

_CHUNK_BITS = 24  # example id = chunk index << 24 | index in chunk (for static masks)
# Held-out draws take this constant where mixing's draws (the same hash stream) take a source's
# name hash, so that a document's eval draw and its source-weight draw are unrelated.
_EVAL_SALT = 0xE7A1


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

        self.settings = settings
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
        first_doc = chunk_index * self.settings.docs_per_chunk
        is_eval = _eval_docs(self.settings.seed, first_doc, len(documents), self.settings.eval_fraction)
        if self.task_builder is not None:
            return self._process_task(chunk_index, documents, is_eval)
        tokens, tokenized = self._tokenize(documents)
        stats = InstanceStats()
        out, counts = {}, {}
        masked_tokens = 0
        for split, want_eval in (("train", False), ("eval", True)):
            docs = [d for d, e in zip(tokenized, is_eval) if e == want_eval and d]
            out[split], counts[split], masked = self._records(chunk_index, split, tokens, docs, stats)
            masked_tokens += masked
        result = dataclasses.asdict(stats)
        result.update(documents=len(documents), masked_tokens=masked_tokens,
                      eval_documents=int(is_eval.sum()),
                      unknown_tokens=int((tokens.ids == self.specials.unk).sum()), tokens_read=len(tokens.ids))
        return chunk_index, out, counts, result

    def _process_task(self, chunk_index, items, is_eval):
        stats, problems, out, counts = {}, [], {}, {}
        for split, want_eval in (("train", False), ("eval", True)):
            chosen = [x for x, e in zip(items, is_eval) if e == want_eval]
            rng = random.Random("%d/%d/%s" % (self.settings.seed, chunk_index, split))
            columns, n = self.task_builder.columns(chosen, rng, stats, problems)
            out[split] = b""
            if n:
                order = np.random.default_rng(_seed_words(self.settings.seed, chunk_index, split)).permutation(n)
                columns = {k: ([v[i] for i in order] if isinstance(v, list) else v[order])
                           for k, v in columns.items()}
                out[split] = tfrecord.encode_framed(columns, self.float_keys)
            counts[split] = n
        stats.update(documents=len(items), eval_documents=int(is_eval.sum()),
                     bad_records=len(problems), problems=problems)
        return chunk_index, out, counts, stats

    def _tokenize(self, documents):
        """Tokens of every sentence back to back, and each document as a list of sentence spans
        (begin, end, False) into them; empty sentences are dropped."""
        flat = [s for doc in documents for s in doc]
        if self.segmenter is None:
            ids, lengths = self.tokenizer.encode_flat(flat)
            starts = self.word_start_table[ids]
        else:
            ids, starts, lengths = self._tokenize_segmented(flat)
        ends = np.cumsum(lengths).tolist()
        spans = [(end - n, end, False) for end, n in zip(ends, lengths.tolist())]
        out, k = [], 0
        for doc in documents:
            out.append([s for s in spans[k:k + len(doc)] if s[1] > s[0]])
            k += len(doc)
        return Tokens(ids, starts), out

    def _tokenize_segmented(self, texts):
        """Like the plain path, with word starts refined by the Chinese word segmenter: a token
        made from a CJK ideograph that the segmenter put inside a word continues that word. The
        chunk's texts are segmented together, in one call."""
        ids, lengths, cjk_at = self.tokenizer.encode_flat_cjk(texts)
        starts = self.word_start_table[ids]
        chinese = np.flatnonzero(cjk_at >= 0)
        if len(chinese):
            inside = self.segmenter.continuation_flags("\n".join(texts))
            starts[chinese] &= ~inside[cjk_at[chinese]]
        return ids, starts, lengths

    def _records(self, chunk_index, split, tokens, docs, stats):
        """(framed records of one split of the chunk, shuffled; their count; masked tokens)."""
        s = self.settings
        if not docs:
            return b"", 0, 0
        copies = self._copies(chunk_index, split, tokens, docs, stats)
        # Each copy is (ids, starts, segments, labels): the four arrays are joined across copies.
        ids, starts, segments, labels = (np.concatenate([c[k] for c in copies]) for k in range(4))
        if not len(ids):
            return b"", 0, 0
        masked_total = 0
        if s.record_format == schema.GOOGLE:
            # All copies are masked in one call: copy d is epoch d, its rows example ids from 0.
            sizes = [len(c[0]) for c in copies]
            epochs = np.repeat(np.arange(len(copies), dtype=np.int64), sizes)
            rows = np.concatenate([np.arange(n, dtype=np.int64) for n in sizes])
            columns = self._static_columns(ids, starts, segments, labels,
                                           (np.int64(chunk_index) << _CHUNK_BITS) + rows, epochs)
            masked_total = int(columns["masked_lm_weights"].sum())
        else:
            columns = {"input_ids": ids, "word_starts": starts}
            if s.instance.layout == "pairs":
                columns.update(segment_ids=segments, next_sentence_labels=labels)
        # Shuffle within the chunk (google-research/bert shuffles all instances in memory; across
        # chunks the loader's file interleave and shuffle buffer do the mixing).
        order = np.random.default_rng(_seed_words(s.seed, chunk_index, split)).permutation(len(ids))
        columns = {f.name: columns[f.name][order] for f in self.features}
        return tfrecord.encode_framed(columns, self.float_keys), len(order), masked_total

    def _copies(self, chunk_index, split, tokens, docs, stats):
        """[(ids, word starts, segment ids [N, seq_len], labels [N, 1])]: one per masked copy
        (`dupe_factor` in static mode, else one)."""
        s = self.settings
        passes = s.dupe_factor if s.record_format == schema.GOOGLE else 1
        if s.instance.layout != "pack":
            # Pairs are drawn again for each copy, as google-research/bert does.
            return [self._instances(chunk_index, dupe, split, tokens, docs, stats)[:4]
                    for dupe in range(passes)]
        # Packing draws nothing at random: every copy has the same instances, made once. The
        # statistics count every copy, as if it had been made again.
        *made, added = self._instances(chunk_index, 0, split, tokens, docs, stats)
        for _ in range(passes - 1):
            _add_stats(stats, added)
        return [made] * passes

    def _instances(self, chunk_index, dupe, split, tokens, docs, stats):
        """ids, word starts, segment ids [N, seq_len], labels [N, 1] of one copy of the instances,
        and what making them added to `stats`."""
        s = self.settings
        rng = random.Random("%d/%d/%d/%s" % (s.seed, chunk_index, dupe, split))
        before = dataclasses.astuple(stats)
        layout = make_instances(docs, s.instance, self.specials.cls, self.specials.sep, rng, stats)
        added = [now - then for now, then in zip(dataclasses.astuple(stats), before)]
        ids, starts, segments = layout.matrices(tokens, s.instance.seq_len, self.specials.pad)
        return ids, starts, segments, np.array(layout.labels, dtype=np.int64).reshape(-1, 1), added

    def _static_columns(self, ids, starts, segments, labels, example_ids, epochs):
        m = masking.mask_np(ids, starts, example_ids, seed=self.settings.seed, epoch=epochs,
                            special_ids=self.specials, replacement_ids=self.replacement_ids,
                            config=self.settings.masking)
        real = ids != self.specials.pad
        return {
            # Google's layout pads with 0 whatever the vocabulary's [PAD] id is.
            "input_ids": np.where(real, m["input_ids"], 0),
            "input_mask": real.astype(np.int64),
            "segment_ids": segments,
            "masked_lm_positions": m["masked_lm_positions"],
            "masked_lm_ids": m["masked_lm_ids"],
            "masked_lm_weights": m["masked_lm_weights"],
            "next_sentence_labels": labels,
        }


def _add_stats(stats: InstanceStats, added):
    for field, value in zip(dataclasses.fields(stats), added):
        setattr(stats, field.name, getattr(stats, field.name) + value)


def _seed_words(seed, chunk_index, split):
    return [seed & 0xFFFFFFFF, chunk_index, 1 if split == "eval" else 0]


def _eval_docs(seed, first_doc, count, fraction):
    """bool [count]: which documents are held out, by a hash of (seed, global document index)."""
    if fraction <= 0:
        return np.zeros(count, bool)
    doc_ids = np.arange(first_doc, first_doc + count, dtype=np.int64)
    h = masking.hash24_np(seed, _EVAL_SALT, doc_ids, np.zeros((count, 1), np.int64),
                          masking.STREAM_BUILD)[:, 0]
    return h < int(fraction * (1 << 24))


_PROCESSOR = None


def init_worker(settings: ChunkSettings):
    global _PROCESSOR
    _PROCESSOR = ChunkProcessor(settings)


def run_chunk(args):
    return _PROCESSOR.process(*args)


def worker_processor() -> "ChunkProcessor":
    """The ChunkProcessor of this worker process (after init_worker)."""
    return _PROCESSOR
