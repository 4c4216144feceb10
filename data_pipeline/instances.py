"""Turns tokenized documents into fixed-length MLM training instances.

A chunk's tokens live in one flat array (`Tokens`); a sentence is a span `(begin, end, force)` of
it, where `force` marks a span whose first token must count as a word start. The algorithms below
only move spans around (Python integers, no arrays); `Layout.matrices` then fills the [N, seq_len]
matrices of the whole chunk with a few vectorised scatters.

Two layouts:
  * `pack` (default, RoBERTa's FULL/DOC-SENTENCES): `[CLS] s1 s2 ... [SEP]`, sentences packed up
    to seq_len. With `cross_documents=False` an instance never spans two documents; with True it
    does, with a [SEP] between documents, so almost no token is padding.
  * `pairs` (google-research/bert): `[CLS] A [SEP] B [SEP]` with a next-sentence label (NSP:
    B is random with probability 0.5) or a sentence-order label (SOP: A and B swapped with
    probability 0.5); `short_seq_prob` of the instances get a shorter random target length.

Sentences longer than an instance can hold are split into pieces, never dropped; a piece that
starts inside a word is treated as a word start, so masking stays whole-word, and so is the first
token after [CLS] or [SEP]. In `pairs` mode google-research/bert trims A+B to the budget; the
trimmed tokens are counted.
"""

import dataclasses
import random
from typing import List, Optional, Tuple

import numpy as np

Span = Tuple[int, int, bool]  # (begin, end) in the chunk's flat token array; force a word start


@dataclasses.dataclass(frozen=True)
class InstanceConfig:
    seq_len: int = 128
    layout: str = "pack"                # pack | pairs
    cross_documents: bool = False       # pack only
    sentence_task: str = "nsp"          # pairs only: nsp | sop
    short_seq_prob: float = 0.1         # pairs only

    def validate(self):
        if self.layout not in ("pack", "pairs"):
            raise ValueError("layout must be 'pack' or 'pairs', got %r" % self.layout)
        if self.sentence_task not in ("nsp", "sop"):
            raise ValueError("sentence_task must be 'nsp' or 'sop', got %r" % self.sentence_task)
        minimum = 5 if self.layout == "pairs" else 3   # [CLS] a [SEP] b [SEP] / [CLS] a [SEP]
        if self.seq_len < minimum:
            raise ValueError("seq_len=%d is too small: a %s instance needs at least %d positions "
                             "([CLS], [SEP] and text)." % (self.seq_len, self.layout, minimum))


@dataclasses.dataclass
class InstanceStats:
    instances: int = 0
    tokens: int = 0
    sentences_split: int = 0
    tokens_trimmed: int = 0


@dataclasses.dataclass
class Tokens:
    """A chunk's tokens: ids int32 [T] and word-start flags bool [T], sentences back to back."""
    ids: np.ndarray
    word_starts: np.ndarray


class Layout:
    """Instances as spans: `add` one per instance, then `matrices` builds them all at once."""

    def __init__(self, cls_id: int, sep_id: int):
        self.cls_id, self.sep_id = cls_id, sep_id
        self.labels: List[int] = []
        self.lengths: List[int] = []
        # One entry per span and per [SEP]: row, column, (span begin, span length,) segment.
        self._span_rows, self._span_cols, self._span_begins, self._span_lengths = [], [], [], []
        self._span_segments, self._forced = [], []  # forced: (row, column) of forced starts
        self._sep_rows, self._sep_cols, self._sep_segments = [], [], []

    def __len__(self):
        return len(self.lengths)

    def add(self, parts: List[List[Span]], segments: bool, label: Optional[int] = None):
        """[CLS] part0 [SEP] part1 [SEP] ...; part i has segment id i if `segments`, else 0."""
        row, col = len(self.lengths), 1
        for index, part in enumerate(parts):
            segment = index if segments else 0
            for k, (begin, end, force) in enumerate(part):
                if end > begin:
                    self._span_rows.append(row)
                    self._span_cols.append(col)
                    self._span_begins.append(begin)
                    self._span_lengths.append(end - begin)
                    self._span_segments.append(segment)
                    if force or k == 0:  # a word always begins after a special token
                        self._forced.append(row * _STRIDE + col)
                    col += end - begin
            self._sep_rows.append(row)
            self._sep_cols.append(col)
            self._sep_segments.append(segment)
            col += 1
        self.lengths.append(col)
        self.labels.append(label or 0)

    def matrices(self, tokens: Tokens, seq_len: int, pad_id: int):
        """int64 [N, seq_len] input_ids (padded with pad_id), word_starts (0/1) and segment_ids."""
        n = len(self.lengths)
        ids = np.full((n, seq_len), pad_id, np.int64)
        starts = np.zeros((n, seq_len), np.int64)
        segments = np.zeros((n, seq_len), np.int64)
        if not n:
            return ids, starts, segments
        lengths = np.asarray(self._span_lengths, np.int64)
        first = np.cumsum(lengths) - lengths
        span = np.repeat(np.arange(len(lengths)), lengths)
        within = np.arange(int(lengths.sum())) - first[span]
        rows = np.asarray(self._span_rows, np.int64)[span]
        cols = np.asarray(self._span_cols, np.int64)[span] + within
        source = np.asarray(self._span_begins, np.int64)[span] + within
        ids[rows, cols] = tokens.ids[source]
        starts[rows, cols] = tokens.word_starts[source]
        segments[rows, cols] = np.asarray(self._span_segments, np.int64)[span]
        forced = np.asarray(self._forced, np.int64)
        starts[forced // _STRIDE, forced % _STRIDE] = 1
        ids[:, 0] = self.cls_id
        ids[self._sep_rows, self._sep_cols] = self.sep_id
        segments[self._sep_rows, self._sep_cols] = self._sep_segments
        return ids, starts, segments


_STRIDE = 1 << 20  # row * _STRIDE + column: one integer per forced word start


def split_long(sentences: List[Span], max_tokens: int, stats: InstanceStats) -> List[Span]:
    """Splits sentences longer than max_tokens; every piece starts a word."""
    out = []
    for begin, end, force in sentences:
        if end - begin <= max_tokens:
            out.append((begin, end, force))
            continue
        stats.sentences_split += 1
        out.extend((b, min(b + max_tokens, end), True) for b in range(begin, end, max_tokens))
    return out


def make_instances(documents: List[List[Span]], config: InstanceConfig, cls_id: int, sep_id: int,
                   rng: random.Random, stats: InstanceStats) -> Layout:
    """All instances of a group of documents (a chunk), in document order."""
    layout = Layout(cls_id, sep_id)
    if config.layout == "pack":
        _pack(documents, config, layout, stats)
    else:
        documents = [split_long(doc, config.seq_len - 3, stats) for doc in documents]
        for index in range(len(documents)):
            _pairs(documents, index, config, layout, rng, stats)
    stats.instances += len(layout)
    stats.tokens += sum(layout.lengths)
    return layout


def _length(span):
    return span[1] - span[0]


def _pack(documents, config, layout, stats):
    budget = config.seq_len - 2
    parts, current, used = [], [], 0

    def flush():
        nonlocal parts, current, used
        if current:
            parts.append(current)
        if parts:
            layout.add(parts, segments=False)
        parts, current, used = [], [], 0

    for doc in documents:
        for sentence in split_long(doc, budget, stats):
            if used + _length(sentence) > budget:
                flush()
            current.append(sentence)
            used += _length(sentence)
        if not config.cross_documents:
            flush()
        elif current:
            # The next document starts after a [SEP]; it costs one position of the budget.
            parts.append(current)
            current = []
            used += 1
            if used >= budget:
                flush()
    flush()


def _pairs(documents, index, config, layout, rng, stats):
    """google-research/bert's create_instances_from_document, with NSP or SOP labels."""
    max_tokens = config.seq_len - 3
    document = documents[index]  # already split to max_tokens
    target = max_tokens
    if rng.random() < config.short_seq_prob:
        target = rng.randint(2, max_tokens)
    chunk, length, i = [], 0, 0
    while i < len(document):
        chunk.append(document[i])
        length += _length(document[i])
        if i == len(document) - 1 or length >= target:
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            a, b = chunk[:a_end], chunk[a_end:]
            label = 0
            if config.sentence_task == "nsp" and (not b or rng.random() < 0.5):
                other = _random_continuation(documents, index, target - _span_tokens(a), rng)
                if other is not None:
                    i -= len(b)  # the segments B would have used go back into the document
                    b, label = other, 1
            if not b:  # one sentence and nothing else to pair it with: split it in two
                a, b = _split_sentence(a[0], rng)
            if config.sentence_task == "sop" and b and rng.random() < 0.5:
                a, b, label = b, a, 1
            if a and b:
                a, b = _trim_pair(a, b, max_tokens, rng, stats)
                layout.add([a, b], segments=True, label=label)
            chunk, length = [], 0
        i += 1


def _span_tokens(sentences):
    return sum(end - begin for begin, end, _ in sentences)


def _random_continuation(documents, index, target_b, rng):
    """Sentences from a random other document of the chunk, about target_b tokens; None if none."""
    if len(documents) < 2:
        return None
    other = rng.randint(0, len(documents) - 2)
    doc = documents[other + 1 if other >= index else other]  # documents are never empty
    b, size = [], 0
    for sentence in doc[rng.randint(0, len(doc) - 1):]:
        b.append(sentence)
        size += _length(sentence)
        if size >= target_b:
            break
    return b


def _split_sentence(sentence, rng):
    begin, end, force = sentence
    if end - begin < 2:
        return [sentence], []
    cut = begin + rng.randint(1, end - begin - 1)
    return [(begin, cut, force)], [(cut, end, True)]


def _trim_pair(a, b, max_tokens, rng, stats):
    """Trims the longer side, from the front or the back at random, until A+B fits."""
    cut = [[0, 0], [0, 0]]  # tokens to drop from [front, back] of A and of B
    length = [_span_tokens(a), _span_tokens(b)]
    while length[0] + length[1] > max_tokens:
        k = 0 if length[0] > length[1] else 1
        cut[k][0 if rng.random() < 0.5 else 1] += 1
        length[k] -= 1
        stats.tokens_trimmed += 1
    return _cut(a, *cut[0]), _cut(b, *cut[1])


def _cut(spans, front, back):
    """Drops `front` tokens from the start of a run of spans and `back` from its end."""
    out = []
    for begin, end, force in spans:
        skip = min(front, end - begin)
        front -= skip
        if end > begin + skip:
            out.append((begin + skip, end, force))
    while back and out:
        begin, end, force = out.pop()
        drop = min(back, end - begin)
        back -= drop
        if end - drop > begin:
            out.append((begin, end - drop, force))
    return out
