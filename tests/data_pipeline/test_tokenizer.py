import random
import unicodedata

import numpy as np
import pytest

from data_pipeline import tokenizer as tk
from data_pipeline import vocab
from tests.data_pipeline import google_reference as ref
from tests.data_pipeline.unicode_parity_scan import scan

TEXTS = [
    "The quick brown fox jumped over the lazy dog's back, didn't it?",
    "Pretraining BERT-large (340M parameters) on 3.3B words takes ~4 days on 16 TPUs!!",
    "Café, naïve façade, Ångström, résumé; Dvořák & Søren — “quotes” «guillemets» …",
    "我们喜欢自然语言处理。预训练模型（BERT）在中文上也很有效！",
    "Mixed 中英文 text with numbers 12,345.67 and emails a.b@c.de / URLs https://x.y/z?q=1",
    "[MASK] [CLS] tokens in raw text are split like any punctuation: [SEP]",
    "\u00a0non-breaking\u2003em-space\u200bzero-width\u00adsoft\ufeffbom\u2028line\u0085nel end",
    "a" * 250 + " " + "supercalifragilisticexpialidocious " * 3,
]


@pytest.mark.parametrize("lower", [True, False])
def test_wordpiece_matches_google_reference(wordpiece_vocab, lower):
    tok = tk.WordPieceTokenizer(wordpiece_vocab, lower_case=lower)
    for text in TEXTS:
        assert tok.encode(text) == ref.tokenize_ids(text, tok.vocab, lower_case=lower), text


def test_wordpiece_matches_google_on_random_unicode(wordpiece_vocab):
    tok = tk.WordPieceTokenizer(wordpiece_vocab, lower_case=True)
    r = random.Random(1)
    alphabet = [chr(c) for c in range(0x20, 0x3000) if unicodedata.category(chr(c)) != "Cs"]
    texts = ["".join(r.choice(alphabet + [" "] * 20 + list("the and 的了")) for _ in range(60))
             for _ in range(300)]
    assert tok.encode_batch(texts) == [ref.tokenize_ids(t, tok.vocab) for t in texts]


@pytest.mark.parametrize("lower", [True, False])
def test_ascii_short_path_matches_google_reference(wordpiece_vocab, lower):
    # Pure-ASCII texts skip HF's Unicode pipeline (tokenizer._AsciiWordPiece): every ASCII code
    # point, control characters and newlines inside a text, empty texts, words past the 200-character
    # limit, and batches that mix ASCII with non-ASCII texts (which go through HF) must all agree.
    tok = tk.WordPieceTokenizer(wordpiece_vocab, lower_case=lower)
    r = random.Random(2)
    words = "The quick brown fox jumped over lazy dogs 1984 BERT-large don't U.S.A. e-mail".split()
    def text():
        parts = [r.choice(words) if r.random() < 0.6 else chr(r.randrange(128))
                 for _ in range(r.randrange(0, 40))]
        return "".join(p + (" " if r.random() < 0.5 else "") for p in parts)
    texts = [text() for _ in range(400)] + ["", "a\nb", "x" * 201, "y" * 200, "\x00\x0b\x1f\x7f"]
    assert all(t.isascii() for t in texts)
    mixed = texts[:200] + ["Café naïve", "我们喜欢"] + texts[200:] + [""]
    expected = [ref.tokenize_ids(t, tok.vocab, lower_case=lower) for t in mixed]
    assert tok.encode_batch(mixed) == expected
    arrays = tok.encode_arrays(mixed)
    assert [a.dtype for a in arrays] == [np.int32] * len(mixed)
    assert [a.tolist() for a in arrays] == expected
    assert tok.encode_batch(texts[:3]) == expected[:3]  # all-ASCII batch, cache warm
    assert tok.encode_batch([]) == []


@pytest.mark.parametrize("mode", [(True, True), (False, False)])
def test_unicode_parity_rules_cover_every_assigned_code_point(mode):
    # Every assigned code point, and a sample of the unassigned ones (Google deletes those too).
    points = [cp for cp in range(0x110000)
              if not 0xD800 <= cp < 0xE000 and (unicodedata.category(chr(cp)) != "Cn" or cp % 97 == 0)]
    assert scan(*mode, patched=True, code_points=points) == []


def test_specials_are_looked_up_by_name(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("hello\n[SEP]\n[MASK]\n[PAD]\n[UNK]\n[CLS]\nworld\n")
    tok = tk.load_tokenizer(str(path))
    assert tok.special_ids == tk.SpecialIds(pad=3, unk=4, cls=5, sep=1, mask=2)
    assert tok.random_replacement_ids().tolist() == [0, 6]


def test_vocab_without_specials_is_refused(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\n[UNK]\nhello\n")
    with pytest.raises(tk.VocabError, match=r"lacks the special token\(s\) \[CLS\], \[SEP\], \[MASK\]"):
        tk.load_tokenizer(str(path))


def test_missing_vocab_names_the_file(tmp_path):
    with pytest.raises(tk.VocabError, match="does not exist"):
        tk.load_tokenizer(str(tmp_path / "nope.txt"))


def test_built_wordpiece_vocab_has_specials_and_reserved(wordpiece_vocab):
    tok = tk.load_tokenizer(wordpiece_vocab)
    assert {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]"} <= set(tok.vocab)
    replacements = set(tok.random_replacement_ids().tolist())
    assert tok.token_to_id("[unused0]") not in replacements
    assert tok.special_ids.mask not in replacements
    # ## pieces are continuations, everything else starts a word.
    table = tok.word_start_table()
    assert all(table[i] != t.startswith("##") for i, t in enumerate(tok.vocab))


def test_sentencepiece_tokenizer(corpus_dir, tmp_path):
    texts = [line for line in open(corpus_dir / "zh.txt", encoding="utf-8") if line.strip()] * 5
    texts += [line for line in open(corpus_dir / "en.txt", encoding="utf-8") if line.strip()]
    tok = vocab.build_sentencepiece(texts, str(tmp_path / "sp.model"), vocab_size=400,
                                    character_coverage=1.0)
    assert tok.kind == "sentencepiece"
    assert [tok.vocab[getattr(tok.special_ids, k)] for k in ("pad", "unk", "cls", "sep", "mask")] == \
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    ids = tok.encode("我们喜欢自然语言处理 [MASK]")
    assert tok.special_ids.mask not in ids  # a control symbol never comes from text
    (ids2, offsets), = tok.encode_with_offsets(["我们喜欢"])
    assert ids2 == tok.encode("我们喜欢") and offsets[0] == 0 and offsets == sorted(offsets)
    table = tok.word_start_table()
    assert all(table[i] == t.startswith("\u2581") for i, t in enumerate(tok.vocab) if i > 4)
