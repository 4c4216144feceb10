"""SimBERT: vectors are the model's normalised pooled outputs whatever the padding, most_similar
ranks by cosine with an exact duplicate first, gen_synonyms never returns its input."""

import numpy as np
import pytest

from data_pipeline import sample_corpus
from downstream import build_transformer_model, load_finetune_tokenizer
from pretrain.export_dir import ExportDir
from downstream.simbert import SimBERT
from tests.tolerances import UNIT

TEXTS = ([s for doc in sample_corpus.english_documents()[:4] for s in doc][:6]
         + sample_corpus.chinese_documents()[0][:2])


@pytest.fixture(scope="module")
def simbert(word_export):
    return SimBERT.from_export(word_export)


def test_vectors_are_normalised_pooled_outputs_independent_of_padding(simbert, word_export):
    directory = ExportDir(word_export)
    tokenizer = load_finetune_tokenizer(directory.vocab_path)
    pooled = build_transformer_model(directory.config_path, directory.prefix, application="unilm",
                                     with_pool=True)
    vectors = simbert.encode(TEXTS, batch_size=3)          # batches of mixed lengths, padded
    assert vectors.shape == (len(TEXTS), 32)
    for text, vector in zip(TEXTS, vectors):
        ids = np.array([tokenizer.encode(text, maxlen=32)[0]])
        alone = np.asarray(pooled([ids, np.zeros_like(ids)]))[0]
        np.testing.assert_allclose(vector, alone / np.linalg.norm(alone), **UNIT)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def test_linear_pooler_for_the_simbert_release(simbert, word_export):
    linear = SimBERT.from_export(word_export, pooler="linear")
    directory = ExportDir(word_export)
    sequence = build_transformer_model(directory.config_path, directory.prefix, application="unilm")
    ids = np.array([linear.tokenizer.encode(TEXTS[0], maxlen=32)[0]])
    cls = np.asarray(sequence([ids, np.zeros_like(ids)]))[0, 0]
    kernel, bias = (linear.bert.pooler.kernel.numpy(), linear.bert.pooler.bias.numpy())
    expected = cls @ kernel + bias
    np.testing.assert_allclose(linear.encode(TEXTS[:1])[0], expected / np.linalg.norm(expected), **UNIT)
    assert np.abs(linear.encode(TEXTS[:1]) - simbert.encode(TEXTS[:1])).max() > 1e-3


def test_most_similar_ranks_an_exact_duplicate_first(simbert):
    query = TEXTS[2]
    candidates = TEXTS[:2] + TEXTS[3:] + [query] + ["an unrelated short line"]
    ranked = simbert.most_similar(query, candidates, k=4)
    assert ranked[0][0] == query and ranked[0][1] == pytest.approx(1.0, abs=1e-5)
    similarities = simbert.encode(candidates) @ simbert.encode([query])[0]
    assert [t for t, _ in ranked] == [candidates[i] for i in np.argsort(-similarities, kind="stable")[:4]]
    assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
    vectors = simbert.encode(candidates)
    assert simbert.most_similar(query, candidates, k=4, candidate_vectors=vectors) == ranked


def test_gen_synonyms_drops_the_input_and_duplicates(copy_model):
    """On the copy model most samples reproduce the input itself: all of them must go."""
    export, _, held = copy_model
    with pytest.warns(UserWarning, match="did not train its pooler"):
        simbert = SimBERT.from_export(export, max_len=10)
    text = held[0][0]
    drawn = [simbert.tokenizer.decode(s.ids) for s in simbert.decoder.generate(
        [simbert.tokenizer.encode(text)[0]], "sample", num_samples=30, top_k=3, seed=0)[0]]
    assert drawn.count(text) >= 5 and len(set(drawn) - {text}) >= 2
    found = simbert.gen_synonyms(text, n=30, k=5, top_k=3, seed=0, with_scores=True)
    texts = [t for t, _ in found]
    assert text not in texts and len(set(texts)) == len(texts) == min(5, len(set(drawn) - {text}))
    vectors = simbert.encode([text] + texts)
    np.testing.assert_allclose([s for _, s in found], vectors[1:] @ vectors[0], **UNIT)
    assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)
    assert simbert.gen_synonyms(text, n=30, k=5, top_k=3, seed=0) == texts
