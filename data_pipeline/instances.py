"""Turns tokenized documents into fixed-length MLM training instances.

A document is a list of sentences; a sentence is a pair of arrays (token ids, word-start flags).

Two layouts:
  * `pack` (default, RoBERTa's FULL/DOC-SENTENCES): `[CLS] s1 s2 ... [SEP]`, sentences packed up
    to seq_len. With `cross_documents=False` an instance never spans two documents; with True it
    does, with a [SEP] between documents, so almost no token is padding.
  * `pairs` (google-research/bert): `[CLS] A [SEP] B [SEP]` with a next-sentence label (NSP:
    B is random with probability 0.5) or a sentence-order label (SOP: A and B swapped with
    probability 0.5); `short_seq_prob` of the instances get a shorter random target length.

Sentences longer than an instance can hold are split into pieces, never dropped; a piece that
starts inside a word is treated as a word start, so masking stays whole-word. In `pairs` mode
google-research/bert trims A+B to the budget; the trimmed tokens are counted.
"""

import dataclasses
import random
from typing import List, Optional, Tuple

import numpy as np

Sentence = Tuple[np.ndarray, np.ndarray]  # (token ids int32 [n], word starts bool [n])


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
        minimum = 5 if self.layout == "pairs" else 3
        if self.seq_len < minimum:
            raise ValueError("seq_len=%d is too small: a %s instance needs at least %d positions "
                             "([CLS], [SEP] and text)." % (self.seq_len, self.layout, minimum))


@dataclasses.dataclass
class Instance:
    tokens: np.ndarray          # int32 [n], n <= seq_len, with [CLS]/[SEP]
    word_starts: np.ndarray     # bool [n]
    segment_ids: np.ndarray     # int32 [n]
    label: Optional[int] = None  # NSP/SOP label: 1 = B is random (NSP) or swapped (SOP)


@dataclasses.dataclass
class InstanceStats:
    instances: int = 0
    tokens: int = 0
    sentences_split: int = 0
    tokens_trimmed: int = 0

    def add(self, other):
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def split_long(sentences: List[Sentence], max_tokens: int, stats: InstanceStats) -> List[Sentence]:
    """Splits sentences longer than max_tokens; each piece after the first starts a word."""
    out = []
    for ids, starts in sentences:
        if len(ids) <= max_tokens:
            out.append((ids, starts))
            continue
        stats.sentences_split += 1
        for begin in range(0, len(ids), max_tokens):
            piece_starts = starts[begin:begin + max_tokens].copy()
            piece_starts[0] = True
            out.append((ids[begin:begin + max_tokens], piece_starts))
    return out


def make_instances(documents: List[List[Sentence]], config: InstanceConfig, cls_id: int,
                   sep_id: int, rng: random.Random, stats: InstanceStats) -> List[Instance]:
    """All instances of a group of documents (a chunk), in document order."""
    if config.layout == "pack":
        instances = _pack(documents, config, cls_id, sep_id, stats)
    else:
        documents = [split_long(doc, config.seq_len - 3, stats) for doc in documents]
        instances = []
        for index in range(len(documents)):
            instances.extend(_pairs(documents, index, config, cls_id, sep_id, rng, stats))
    stats.instances += len(instances)
    stats.tokens += sum(len(x.tokens) for x in instances)
    return instances


_FALSE = np.zeros(1, bool)


def _assemble(parts, cls_id, sep_id):
    """[CLS] part0 [SEP] part1 [SEP] ...; each part a list of sentences; segment i for part i."""
    cls, sep = np.array([cls_id], np.int32), np.array([sep_id], np.int32)
    ids, starts, lengths, segments = [cls], [_FALSE], [1], [0]
    for segment, part in enumerate(parts):
        for k, (s_ids, s_starts) in enumerate(part):
            if k == 0 and len(s_ids) and not s_starts[0]:
                s_starts = s_starts.copy()
                s_starts[0] = True  # after a special token a word always begins
            ids.append(s_ids)
            starts.append(s_starts)
            lengths.append(len(s_ids))
            segments.append(segment)
        ids.append(sep)
        starts.append(_FALSE)
        lengths.append(1)
        segments.append(segment)
    return (np.concatenate(ids), np.concatenate(starts),
            np.repeat(np.array(segments, np.int32), lengths))


def _pack(documents, config, cls_id, sep_id, stats):
    budget = config.seq_len - 2
    instances, parts, current, used = [], [], [], 0

    def flush():
        nonlocal parts, current, used
        if current:
            parts.append(current)
        if parts:
            ids, starts, _ = _assemble(parts, cls_id, sep_id)
            instances.append(Instance(ids, starts, np.zeros(len(ids), np.int32)))
        parts, current, used = [], [], 0

    for doc in documents:
        for sentence in split_long(doc, budget, stats):
            if used + len(sentence[0]) > budget:
                flush()
            current.append(sentence)
            used += len(sentence[0])
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
    return instances


def _pairs(documents, index, config, cls_id, sep_id, rng, stats):
    """google-research/bert's create_instances_from_document, with NSP or SOP labels."""
    max_tokens = config.seq_len - 3
    document = documents[index]  # already split to max_tokens
    target = max_tokens
    if rng.random() < config.short_seq_prob:
        target = rng.randint(2, max_tokens)
    instances, chunk, length, i = [], [], 0, 0
    while i < len(document):
        chunk.append(document[i])
        length += len(document[i][0])
        if i == len(document) - 1 or length >= target:
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            a, b = chunk[:a_end], chunk[a_end:]
            label = 0
            if config.sentence_task == "nsp" and (not b or rng.random() < 0.5):
                other = _random_continuation(documents, index, target - _count(a), rng)
                if other is not None:
                    i -= len(b)  # the segments B would have used go back into the document
                    b, label = other, 1
            if not b:  # one sentence and nothing else to pair it with: split it in two
                a, b = _split_sentence(a[0], rng)
            if config.sentence_task == "sop" and b and rng.random() < 0.5:
                a, b, label = b, a, 1
            if a and b:
                a, b = _trim_pair(a, b, max_tokens, rng, stats)
                ids, starts, segments = _assemble([a, b], cls_id, sep_id)
                instances.append(Instance(ids, starts, segments, label))
            chunk, length = [], 0
        i += 1
    return instances


def _count(sentences):
    return sum(len(s[0]) for s in sentences)


def _random_continuation(documents, index, target_b, rng):
    """Sentences from a random other document of the chunk, about target_b tokens; None if none."""
    if len(documents) < 2:
        return None
    other = rng.randint(0, len(documents) - 2)
    doc = documents[other + 1 if other >= index else other]  # documents are never empty
    b = []
    for sentence in doc[rng.randint(0, len(doc) - 1):]:
        b.append(sentence)
        if _count(b) >= target_b:
            break
    return b


def _split_sentence(sentence, rng):
    ids, starts = sentence
    if len(ids) < 2:
        return [sentence], []
    cut = rng.randint(1, len(ids) - 1)
    second_starts = starts[cut:].copy()
    second_starts[0] = True
    return [(ids[:cut], starts[:cut])], [(ids[cut:], second_starts)]


def _trim_pair(a, b, max_tokens, rng, stats):
    """Trims the longer side, from the front or the back at random, until A+B fits."""
    sides = [[np.concatenate([x[0] for x in side]), np.concatenate([x[1] for x in side])]
             for side in (a, b)]
    cut = [[0, 0], [0, 0]]  # tokens to drop from [front, back] of A and of B
    length = [len(sides[0][0]), len(sides[1][0])]
    while length[0] + length[1] > max_tokens:
        k = 0 if length[0] > length[1] else 1
        cut[k][0 if rng.random() < 0.5 else 1] += 1
        length[k] -= 1
        stats.tokens_trimmed += 1
    out = []
    for (ids, starts), (front, back) in zip(sides, cut):
        end = len(ids) - back
        out.append([(ids[front:end], starts[front:end])])
    return out[0], out[1]
