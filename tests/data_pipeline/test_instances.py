"""Instance layouts on synthetic chunks whose token ids say where each token came from."""

import random

import numpy as np
import pytest

from data_pipeline.instances import InstanceConfig, InstanceStats, Tokens, make_instances

CLS, SEP, PAD, FIRST = 1, 2, 0, 10  # token t of the chunk has id FIRST + t


def _chunk(seed, docs=12, max_sentence=40):
    """Random documents of random sentences; some sentences longer than an instance."""
    r = random.Random(seed)
    spans, documents = 0, []
    for _ in range(docs):
        doc = []
        for _ in range(r.randint(1, 6)):
            n = r.randint(1, max_sentence)
            doc.append((spans, spans + n, False))
            spans += n
        documents.append(doc)
    starts = np.random.default_rng(seed).random(spans) < 0.6
    return Tokens(np.arange(FIRST, FIRST + spans, dtype=np.int32), starts), documents


def _rows(layout, tokens, seq_len):
    ids, starts, segments = layout.matrices(tokens, seq_len, PAD)
    assert ids.shape == (len(layout), seq_len)
    for i, n in enumerate(layout.lengths):
        assert 3 <= n <= seq_len and ids[i, 0] == CLS and ids[i, n - 1] == SEP
        assert (ids[i, n:] == PAD).all() and (starts[i, n:] == 0).all() and (segments[i, n:] == 0).all()
        real = ids[i, :n] >= FIRST
        assert (starts[i, :n][~real] == 0).all()               # specials never start a word
        after_special = np.flatnonzero(real[1:] & ~real[:-1]) + 1
        assert (starts[i, after_special] == 1).all()            # a word begins after [CLS]/[SEP]
        yield ids[i, :n], starts[i, :n], segments[i, :n]


def _check_word_starts(row_ids, row_starts, tokens, pieces_start):
    """Every token keeps its own flag, except where a piece or a part begins (forced to 1)."""
    real = row_ids >= FIRST
    source = row_ids[real] - FIRST
    own = tokens.word_starts[source].astype(int)
    got = row_starts[real]
    differs = np.flatnonzero(got != own)
    assert (got[differs] == 1).all()
    assert set(source[differs].tolist()) <= pieces_start


@pytest.mark.parametrize("cross", [False, True])
def test_pack_keeps_every_token_in_order_and_splits_long_sentences(cross):
    tokens, docs = _chunk(0)
    seq_len = 16
    stats = InstanceStats()
    layout = make_instances(docs, InstanceConfig(seq_len=seq_len, cross_documents=cross), CLS, SEP,
                            random.Random(0), stats)
    budget = seq_len - 2
    long = [s for d in docs for s in d if s[1] - s[0] > budget]
    assert stats.sentences_split == len(long) > 0
    # Tokens of each split piece and of each part's first sentence may be forced to start a word.
    pieces_start = {b for s in long for b in range(s[0], s[1], budget)}
    pieces_start |= {s[0] for d in docs for s in d}
    seen = []
    for row_ids, row_starts, row_segments in _rows(layout, tokens, seq_len):
        assert (row_segments == 0).all()
        _check_word_starts(row_ids, row_starts, tokens, pieces_start)
        if not cross:  # one document per instance: the row holds one [SEP], at the end
            assert (row_ids == SEP).sum() == 1
        seen.extend((row_ids[row_ids >= FIRST] - FIRST).tolist())
    assert seen == list(range(len(tokens.ids)))  # nothing lost, duplicated or reordered
    assert stats.tokens == sum(layout.lengths) and stats.instances == len(layout)
    if cross:  # on short documents, packing across them needs far fewer instances
        _, short = _chunk(2, docs=40, max_sentence=3)
        count = [len(make_instances(short, InstanceConfig(seq_len=seq_len, cross_documents=c), CLS,
                                    SEP, random.Random(0), InstanceStats())) for c in (False, True)]
        assert count[0] >= 40 and count[1] < 0.7 * count[0]


@pytest.mark.parametrize("task", ["nsp", "sop"])
def test_pairs_have_two_segments_within_budget_and_count_trimmed_tokens(task):
    tokens, docs = _chunk(1, docs=30)
    seq_len = 24
    stats = InstanceStats()
    layout = make_instances(docs, InstanceConfig(seq_len=seq_len, layout="pairs", sentence_task=task),
                            CLS, SEP, random.Random(5), stats)
    doc_of = np.zeros(len(tokens.ids), int)
    for k, d in enumerate(docs):
        for b, e, _ in d:
            doc_of[b:e] = k
    labels = np.array(layout.labels)
    assert set(labels.tolist()) == {0, 1}
    for (row_ids, _, row_segments), label in zip(_rows(layout, tokens, seq_len), labels):
        seps = np.flatnonzero(row_ids == SEP)
        assert len(seps) == 2 and seps[1] == len(row_ids) - 1
        assert (row_segments[:seps[0] + 1] == 0).all() and (row_segments[seps[0] + 1:] == 1).all()
        a = row_ids[1:seps[0]] - FIRST
        b = row_ids[seps[0] + 1:seps[1]] - FIRST
        assert len(a) and len(b)
        assert (np.diff(a) > 0).all() and (np.diff(b) > 0).all()  # each side in document order
        if task == "sop":  # same document; label 1 means B comes first
            assert len(set(doc_of[np.concatenate([a, b])])) == 1
            assert (a.max() < b.min()) == (label == 0)
        elif label == 0:  # NSP, actual next: B follows A in the same document
            assert doc_of[a[0]] == doc_of[b[0]] and a.max() < b.min()
        else:  # NSP, random next: B from another document
            assert doc_of[a[0]] != doc_of[b[0]]
    assert stats.tokens_trimmed > 0 and stats.sentences_split > 0
