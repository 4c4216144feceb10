"""Builds a vocabulary from a corpus: WordPiece `vocab.txt` (Google layout) or a SentencePiece model.

Both put [PAD] [UNK] [CLS] [SEP] [MASK] in the vocabulary (looked up by name later, never by id),
and `num_reserved` [unusedN] slots that users can later turn into domain tokens without resizing
the embedding table.
"""

import io
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
    hf = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
    hf.normalizer, hf.pre_tokenizer = _hf_pipeline(lower_case, lower_case, "\ua4d0")
    trainer = trainers.WordPieceTrainer(
        # The trainer keeps every character of the alphabet even past vocab_size: cap it.
        vocab_size=vocab_size, min_frequency=min_frequency,
        limit_alphabet=min(limit_alphabet, vocab_size - fixed),
        special_tokens=list(SPECIAL_TOKENS) + reserved, continuing_subword_prefix="##",
        show_progress=False)
    hf.train_from_iterator(texts, trainer=trainer)
    vocab = hf.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    # Vocab lines are stripped on load (Google's convention): a token with outer whitespace could
    # never be looked up, so the trainer must not have produced one.
    tokens = [t for t in tokens if t and t == t.strip() and "\n" not in t][:vocab_size]
    fs.write_bytes_atomic(output_path, ("\n".join(tokens) + "\n").encode("utf-8"))
    return load_tokenizer(output_path, lower_case=lower_case)


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
