"""The decoder: the cached and recomputed paths agree; tokens and log-probabilities are those of the
Keras model of `build_transformer_model`; beam search finds the exhaustive optimum; sampling is
seeded, filtered and distributed as asked; batching changes nothing; end and length rules."""

import itertools

import numpy as np
import pytest

from downstream import build_transformer_model
from downstream.backbone import export_files
from downstream.generation import AutoRegressiveDecoder, load_decoder
from pretrain.google_checkpoint import CheckpointError
from tests.downstream.conftest import SMALL, write_export
from tests.tolerances import LOGPROB, score_tolerance

END = 2
# Prefixes of several lengths; UniLM sources may carry segment 1 too (a passage + question).
PREFIXES = [([1, 5, 7, END], [0, 0, 0, 0]), ([1, 9, 4, 4, 11, 3, 8, END], [0] * 8),
            ([1, 6, END], [0, 0, 0]), ([1, 3, 10, END, 5, 9, END], [0, 0, 0, 0, 1, 1, 1])]
STRATEGIES = [("greedy", {}), ("beam", dict(beam_size=3)),
              ("sample", dict(num_samples=5, top_k=6, top_p=0.9, temperature=0.8, seed=5))]


@pytest.fixture(scope="module")
def models(small_export):
    """{application: Keras model}. padding_id=-1: a generated [PAD] (id 0) is a real token to the
    decoder, so the reference must not mask it either."""
    files = export_files(small_export)
    return {a: build_transformer_model(files["config"], files["checkpoint"], application=a,
                                       with_mlm=True, padding_id=-1) for a in ("unilm", "lm")}


@pytest.fixture(scope="module")
def decoders(models):
    """{(application, use_cache): decoder}, shared so that each traces its graphs once."""
    return {(a, cache): AutoRegressiveDecoder(models[a], end_id=END, max_len=10, use_cache=cache)
            for a in models for cache in (True, False)}


def reference_logprobs(model, prefix, continuations, application):
    """log p(. | prefix + c[:i]) [len(c), V] for every continuation c, from full forward passes of
    the Keras model. Continuations are padded at the end: under UniLM and causal masks later
    tokens do not change earlier positions, so one pass serves them all."""
    ids, segments = prefix
    width = max(len(c) for c in continuations)
    tokens = np.array([list(ids) + list(c) + [0] * (width - len(c)) for c in continuations])
    types = np.array([list(segments) + [1 if application == "unilm" else 0] * width] * len(tokens))
    probs = np.asarray(model([tokens, types]))
    return [np.log(probs[i, len(ids) - 1:len(ids) - 1 + len(c)]) for i, c in enumerate(continuations)]


def kept_tokens(p, top_k=None, top_p=None):
    """The tokens bert4keras's filters keep from distribution p: the top_k, then (renormalised)
    the most probable ones up to and including the one whose running sum reaches top_p."""
    order = np.argsort(-p)
    if top_k:
        order = order[:top_k]
    if top_p:
        running = np.cumsum(p[order] / p[order].sum())
        order = order[:1 + int(np.sum(running[:-1] < top_p))]
    return set(order.tolist())


def flat(results):
    return [g for r in results for g in (r if isinstance(r, list) else [r])]


@pytest.mark.parametrize("application", ["unilm", "lm"])
def test_cached_decoding_equals_full_recompute(decoders, application):
    cached, recomputed = decoders[application, True], decoders[application, False]
    for strategy, kw in STRATEGIES:
        a, b = flat(cached.generate(PREFIXES, strategy, **kw)), flat(recomputed.generate(PREFIXES, strategy, **kw))
        assert [x.ids.tolist() for x in a] == [y.ids.tolist() for y in b], strategy
        assert [x.finished for x in a] == [y.finished for y in b]
        for x, y in zip(a, b):
            np.testing.assert_allclose(x.logprobs, y.logprobs, err_msg=strategy, **LOGPROB)
            assert abs(x.score - y.score) <= score_tolerance(len(x.ids))
        if strategy == "sample":   # not a degenerate case: ended and cut sequences of many lengths
            assert len({len(g.ids) for g in a}) > 2 and 0 < sum(g.finished for g in a) < len(a)


@pytest.mark.parametrize("application", ["unilm", "lm"])
def test_tokens_and_logprobs_are_the_keras_models(models, decoders, application):
    decoder = decoders[application, True]
    greedy, beam = decoder.generate(PREFIXES, "greedy"), decoder.generate(PREFIXES, "beam", beam_size=3)
    for prefix, g, b in zip(PREFIXES, greedy, beam):
        logp_g, logp_b = reference_logprobs(models[application], prefix, [g.ids, b.ids], application)
        assert g.ids.tolist() == logp_g.argmax(-1).tolist()                # greedy picks the argmax
        np.testing.assert_allclose(g.logprobs, logp_g.max(-1), **LOGPROB)
        np.testing.assert_allclose(b.logprobs, logp_b[np.arange(len(b.ids)), b.ids], **LOGPROB)
        assert b.score == pytest.approx(b.logprobs.sum(), abs=1e-5)


def test_beam_search_returns_the_exhaustive_optimum(models, decoders):
    """With as many beams as there are 2-token prefixes, beam search over 3 tokens sees every
    hypothesis: it must return the best one by total log-probability, finished or cut at max_len."""
    model, decoder = models["unilm"], decoders["unilm", True]
    vocab = SMALL["vocab_size"]
    pairs = [list(p) for p in itertools.product(range(vocab), repeat=2)]
    differs_from_greedy = 0
    for prefix in PREFIXES[:3]:
        best, best_score = None, -np.inf
        # One pass per (a, b) gives p(a), p(b | a) and p(c | a, b) for every c.
        logprobs = reference_logprobs(model, prefix, [p + [0] for p in pairs], "unilm")
        for (a, b), (la, lb, lc) in zip(pairs, logprobs):
            for seq, score in (([a], la[a]), ([a, b], la[a] + lb[b])):
                if seq[-1] == END and END not in seq[:-1] and score > best_score:
                    best, best_score = seq, score
            if END not in (a, b):
                c = int(np.argmax(lc))    # a third token: ending or not, the best is the likeliest
                if la[a] + lb[b] + lc[c] > best_score:
                    best, best_score = [a, b, c], la[a] + lb[b] + lc[c]
        result = decoder.generate([prefix], "beam", beam_size=vocab ** 2, max_len=3)[0]
        assert result.ids.tolist() == best
        assert result.score == pytest.approx(best_score, abs=score_tolerance(len(best)))
        differs_from_greedy += decoder.generate([prefix], "greedy", max_len=3)[0].ids.tolist() != best
    assert differs_from_greedy, "the model is too easy: greedy already finds every optimum"


def test_sampling_is_seeded_filtered_and_follows_the_distribution(models, decoders):
    model, decoder = models["unilm"], decoders["unilm", True]
    prefix = PREFIXES[1]

    def samples(seed, **kw):
        return [g.ids.tolist() for g in decoder.generate([prefix], "sample", num_samples=20, seed=seed,
                                                         max_len=6, **kw)[0]]

    assert samples(7) == samples(7) and samples(7) != samples(8)
    for filters in (dict(top_k=2), dict(top_p=0.5), dict(top_k=4, top_p=0.6)):
        drawn = samples(1, **filters)
        for sample, logp in zip(drawn, reference_logprobs(model, prefix, drawn, "unilm")):
            for step, token in enumerate(sample):
                assert token in kept_tokens(np.exp(logp[step]), **filters), (step, filters)
    # First tokens of 4000 samples with top_k=3 follow the renormalised top-3 probabilities.
    first = decoder.generate([prefix], "sample", num_samples=4000, top_k=3, seed=0, max_len=1)[0]
    p = np.exp(reference_logprobs(model, prefix, [[0]], "unilm")[0][0])
    top = np.argsort(-p)[:3]
    expected = np.zeros_like(p)
    expected[top] = p[top] / p[top].sum()
    counts = np.bincount([g.ids[0] for g in first], minlength=len(p)) / 4000
    assert set(np.nonzero(counts)[0]) <= set(top.tolist())
    np.testing.assert_allclose(counts, expected, atol=4 * np.sqrt(0.25 / 4000))


def test_batching_gives_the_results_of_one_input_at_a_time(decoders):
    decoder = decoders["unilm", True]
    for strategy, kw in STRATEGIES:
        together = flat(decoder.generate(PREFIXES, strategy, **kw))
        alone = flat([decoder.generate([p], strategy, **kw)[0] for p in PREFIXES])
        assert [g.ids.tolist() for g in together] == [g.ids.tolist() for g in alone], strategy
        for g, one in zip(together, alone):   # oneDNN's kernels differ per batch size
            assert abs(g.score - one.score) <= score_tolerance(len(g.ids)), strategy
            np.testing.assert_allclose(g.logprobs, one.logprobs, err_msg=strategy, **LOGPROB)
        pairs = flat(decoder.generate(PREFIXES, strategy, batch_size=2, **kw))
        assert [g.ids.tolist() for g in pairs] == [g.ids.tolist() for g in alone], strategy


def test_samples_are_decoded_in_batches_of_at_most_batch_size_rows(decoders, monkeypatch):
    """Memory is bounded by batch_size, not num_samples: no call decodes more rows than it. Sample
    j draws from the stream (seed, j), so how samples are split into calls changes nothing, and
    the first k of n samples are those of a run of k."""
    decoder, rows, progress = decoders["unilm", True], [], []
    real = decoder._run

    def counted(key, prefixes, settings, uniforms):
        rows.append(len(prefixes) * key[1])
        return real(key, prefixes, settings, uniforms)

    monkeypatch.setattr(decoder, "_run", counted)
    kw = dict(top_k=6, temperature=0.8, seed=5, max_len=6)
    split = decoder.generate(PREFIXES[:2], "sample", num_samples=37, batch_size=8,
                             progress=lambda done, total: progress.append((done, total)), **kw)
    assert len(rows) > 1 and max(rows) <= 8
    assert [n for n, _ in progress] == sorted(n for n, _ in progress) and progress[-1] == (74, 74)
    together = decoder.generate(PREFIXES[:2], "sample", num_samples=37, batch_size=74, **kw)
    assert rows[-1] == 74
    first = decoder.generate(PREFIXES[:2], "sample", num_samples=5, batch_size=8, **kw)
    for a, b, c in zip(split, together, first):
        assert len(a) == len(b) == 37 and [g.ids.tolist() for g in a] == [g.ids.tolist() for g in b]
        assert [g.ids.tolist() for g in a[:5]] == [g.ids.tolist() for g in c]
        np.testing.assert_allclose([g.score for g in a], [g.score for g in b], atol=1e-4)


def test_end_token_min_ends_and_min_len(models, decoders):
    decoder = decoders["lm", True]
    for strategy, kw in STRATEGIES:
        for g in flat(decoder.generate(PREFIXES, strategy, min_ends=2, max_len=12, **kw)):
            ends = g.ids.tolist().count(END)
            assert g.finished == (ends == 2 and g.ids[-1] == END) and ends <= 2
            assert g.finished or len(g.ids) == 12
    results = flat(decoder.generate(PREFIXES, "sample", num_samples=10, seed=2, min_len=4, max_len=12))
    assert all(len(g.ids) >= 4 and END not in g.ids.tolist()[:3] for g in results)
    assert any(g.finished for g in results)
    never = AutoRegressiveDecoder(models["lm"], end_id=None, max_len=5)
    assert all(len(g.ids) == 5 and not g.finished for g in never.generate(PREFIXES, "greedy"))


def test_bert4keras_calls(decoders):
    """`beam_search(inputs, topk)` and `random_sample(inputs, n, topk, topp)` as bert4keras users
    call them: one input, ids arrays out (ending with the end token when finished)."""
    decoder = decoders["unilm", True]
    token_ids, segment_ids = PREFIXES[1]
    best = decoder.beam_search([token_ids, segment_ids], topk=3)
    assert best.tolist() == decoder.generate([PREFIXES[1]], "beam", beam_size=3)[0].ids.tolist()
    samples = decoder.random_sample([token_ids, segment_ids], 5, topk=6, topp=0.9, temperature=0.8, seed=5)
    assert [s.tolist() for s in samples] == [g.ids.tolist() for g in decoder.generate(
        [PREFIXES[1]], "sample", **STRATEGIES[2][1])[0]]


def test_xla_compiled_loop_gives_the_same_tokens(models, decoders):
    xla = AutoRegressiveDecoder(models["unilm"], end_id=END, max_len=10, jit_compile=True)
    a = decoders["unilm", True].generate(PREFIXES, "beam", beam_size=3)
    b = xla.generate(PREFIXES, "beam", beam_size=3)
    assert [x.ids.tolist() for x in a] == [y.ids.tolist() for y in b]
    for x, y in zip(a, b):
        assert abs(x.score - y.score) <= score_tolerance(len(x.ids))


def test_clear_errors(small_export, decoders, tmp_path):
    files = export_files(small_export)
    encoder = build_transformer_model(files["config"], files["checkpoint"], with_mlm=True)
    with pytest.raises(ValueError, match="application='encoder' cannot generate"):
        AutoRegressiveDecoder(encoder, end_id=END)
    no_mlm = build_transformer_model(files["config"], files["checkpoint"], application="unilm")
    with pytest.raises(ValueError, match="with_mlm=True"):
        AutoRegressiveDecoder(no_mlm, end_id=END)
    with pytest.raises(ValueError, match=r"Input 1: a 8-token prefix plus max_len=35 new tokens needs "
                                         r"43 positions, but the model has max_position_embeddings=40"):
        decoders["unilm", True].generate(PREFIXES[:2], max_len=35)
    headless = write_export(tmp_path / "headless", SMALL, seed=3, drop=("cls/",))
    with pytest.raises(CheckpointError, match=r"has no MLM head \(cls/predictions/\*\)"):
        load_decoder(headless)
