"""Builds a vocabulary from a corpus: WordPiece `vocab.txt` (Google layout) or a SentencePiece model.

Both put [PAD] [UNK] [CLS] [SEP] [MASK] in the vocabulary (looked up by name later, never by id),
and `num_reserved` [unusedN] slots that users can later turn into domain tokens without resizing
the embedding table.
"""

import contextlib
import io
import json
import tempfile
from typing import Iterable

from storage import fs
from data_pipeline.tokenizer import SPECIAL_TOKEN_NAMES, load_tokenizer

SPECIAL_TOKENS = tuple("[%s]" % n.upper() for n in SPECIAL_TOKEN_NAMES)


def build_wordpiece(texts: Iterable[str], output_path: str, vocab_size: int = 30522,
                    lower_case: bool = True, min_frequency: int = 2, num_reserved: int = 0,
                    limit_alphabet: int = 10000):
    """Trains WordPiece with the same normalisation and pre-tokenisation the tokenizer uses.

    Returns the loaded tokenizer for the written `vocab.txt`.
    """
    from tokenizers import Tokenizer, models, trainers

    from data_pipeline.tokenizer import _hf_pipeline

    reserved = ["[unused%d]" % i for i in range(num_reserved)]
    fixed = len(SPECIAL_TOKENS) + num_reserved
    if vocab_size <= fixed:
        raise ValueError("--vocab_size=%d leaves no room for words after the %d special and "
                         "reserved tokens." % (vocab_size, fixed))
    specials = list(SPECIAL_TOKENS) + reserved

    def train(registered, corpus):
        hf = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
        hf.normalizer, hf.pre_tokenizer = _hf_pipeline(lower_case, lower_case, "\ua4d0")
        trainer = trainers.WordPieceTrainer(
            # The trainer keeps every character of the alphabet even past vocab_size: cap it.
            vocab_size=vocab_size, min_frequency=min_frequency,
            limit_alphabet=min(limit_alphabet, vocab_size - fixed),
            special_tokens=registered, continuing_subword_prefix="##", show_progress=False)
        hf.train_from_iterator(corpus, trainer=trainer)
        vocab = hf.get_vocab()
        return sorted(vocab, key=vocab.get)

    # tokenizers' trainer numbers the "##c" continuation tokens in hash-map order, and it breaks
    # ties between merges of equal count by those numbers: one corpus gave different vocabularies
    # from run to run (huggingface/tokenizers#1794). So a first pass finds the continuation
    # characters and a second registers them up front, in code-point order: every number, and so
    # every tie, is then decided the same way on every run. (They are listed after the
    # alphabet, where the trainer puts them.)
    with _twice(texts) as corpus:
        continuing = sorted(t for t in train(specials, corpus()) if len(t) == 3 and t[:2] == "##")
        tokens = train(specials + continuing, corpus())
    learned = tokens[len(specials) + len(continuing):]
    alphabet = next((i for i, t in enumerate(learned) if len(t) > 1), len(learned))
    tokens = specials + learned[:alphabet] + continuing + learned[alphabet:]
    # Vocab lines are stripped on load (Google's convention): a token with outer whitespace could
    # never be looked up, so the trainer must not have produced one.
    tokens = [t for t in tokens if t and t == t.strip() and "\n" not in t][:vocab_size]
    fs.write_bytes_atomic(output_path, ("\n".join(tokens) + "\n").encode("utf-8"))
    return load_tokenizer(output_path, lower_case=lower_case)


@contextlib.contextmanager
def _twice(texts):
    """Yields a function returning `texts` afresh each call: a list as it is, anything else (a
    stream read once) spooled to a temporary file while the first pass reads it."""
    if isinstance(texts, (list, tuple)):
        yield lambda: texts
        return
    with tempfile.TemporaryFile("w+", encoding="utf-8") as spool:
        passes = []

        def spool_while_reading():
            for text in texts:
                spool.write(json.dumps(text) + "\n")   # one line per text, newlines escaped
                yield text

        def read_back():
            spool.seek(0)
            for line in spool:
                yield json.loads(line)

        def again():
            passes.append(None)
            return spool_while_reading() if len(passes) == 1 else read_back()
        yield again


def build_sentencepiece(texts: Iterable[str], output_path: str, vocab_size: int = 32000,
                        model_type: str = "unigram", character_coverage: float = 0.9995,
                        lower_case: bool = False, num_reserved: int = 0,
                        max_sentences: int = 10_000_000, seed: int = 12345):
    """Trains a SentencePiece model whose specials are [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK].

    [MASK] and the reserved slots are control symbols: text that spells "[MASK]" never becomes one.
    """
    import sentencepiece as spm

    spm.set_random_generator_seed(seed)  # Sentence sampling is random; keep builds reproducible.
    model = io.BytesIO()
    sentences = (t.lower() if lower_case else t for t in texts)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model, vocab_size=vocab_size,
        model_type=model_type, character_coverage=character_coverage,
        pad_id=0, unk_id=1, bos_id=2, eos_id=3,
        pad_piece="[PAD]", unk_piece="[UNK]", bos_piece="[CLS]", eos_piece="[SEP]",
        control_symbols=["[MASK]"] + ["[unused%d]" % i for i in range(num_reserved)],
        input_sentence_size=max_sentences, shuffle_input_sentence=True,
        num_threads=2, minloglevel=2, hard_vocab_limit=False)
    fs.write_bytes_atomic(output_path, model.getvalue())
    return load_tokenizer(output_path, lower_case=lower_case)
