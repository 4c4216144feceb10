import logging
import os
import random
import re
import unicodedata

import numpy as np
import pytest

from data_pipeline import _unicode_parity as shipped
from data_pipeline import google_text, unicode_parity
from data_pipeline import tokenizer as tk
from data_pipeline import sample_corpus, vocab
from tests.data_pipeline import google_reference as ref

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

# Chinese, Chinese mixed with English and numbers, full-width punctuation, letters, digits and
# spaces, traditional characters, compatibility ideographs (NFD maps them to unified ones), CJK
# Extension B (split off by Google) and F (not in Google's CJK ranges: a letter to it), kana,
# Hangul, emoji, and the control and zero-width characters real text carries.
CHINESE_TEXTS = [
    "这本书的最大优点在于它的朴实和实用，书里没有什么说教。",
    "我用iPhone 12 Pro拍的照片，颜色很正！价格￥4,999.00元，ＡＢＣ１２３全角字母。",
    "【京东】《三体》（刘慈欣）——“好看”、‘推荐’；问：为什么？答：因为…… ～～ ！？｡｢｣",
    "繁體中文與简体混排，日本語のかなカナ、한국어 텍스트, emoji 😀👍 and Ext-B 𠀀𠀁 Ext-F 𬺰𬺱 compat 豈更",
    "\u3000全角空格\u3000和\u00a0不换行空格，零宽\u200b字符，控制\x07字符，\ufeffBOM\r\n换行",
    "Café 中文 naïve Ångström 混合 ﬁ ligature Ⅻ ① ㊀ ㍿ ＡＢＣ abc",
    "私用区\ue000字符\ue001混在中文里\ue001，\x01控制\n换行",  # the encoders' own marks, in text
    "",
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


@pytest.mark.parametrize("lower", [True, False])
def test_chinese_mixed_and_full_width_text_matches_google(wordpiece_vocab, lower):
    # Both ways to tokenize: the memoised path (`encode*`) and HF's patched pipeline, which
    # `encode_with_offsets` uses; every text alone and all of them in one batch.
    tok = tk.WordPieceTokenizer(wordpiece_vocab, lower_case=lower)
    expected = [ref.tokenize_ids(t, tok.vocab, lower_case=lower) for t in CHINESE_TEXTS]
    assert [tok.encode(t) for t in CHINESE_TEXTS] == expected
    assert tok.encode_batch(CHINESE_TEXTS + TEXTS)[:len(CHINESE_TEXTS)] == expected
    assert [ids for ids, _ in tok.encode_with_offsets(CHINESE_TEXTS)] == expected


def test_real_chinese_reviews_match_google(zh_reviews, tmp_path):
    # A vocabulary of the reviews themselves, so that ids are real pieces, not [UNK].
    texts = zh_reviews[:3000]
    tok = vocab.build_wordpiece(texts, str(tmp_path / "vocab.txt"), vocab_size=8000)
    assert tok.encode_batch(texts) == [ref.tokenize_ids(t, tok.vocab) for t in texts]


@pytest.mark.parametrize("mode", [(True, True), (False, False)])
def test_unicode_parity_rules_cover_every_assigned_code_point(mode):
    # Every assigned code point, and a sample of the unassigned ones (Google deletes those too).
    points = [cp for cp in range(0x110000)
              if not 0xD800 <= cp < 0xE000 and (unicodedata.category(chr(cp)) != "Cn" or cp % 97 == 0)]
    assert unicode_parity.scan(*mode, patched=shipped.RULES[mode], code_points=points) == []


def test_package_statement_of_google_rules_matches_the_oracle():
    # google_text is what the fast paths and the parity scan build on; the tests' oracle is written
    # separately. Every CJK decision, every assigned character between two letters, random text.
    cps = np.arange(0x110000)
    assert (google_text.cjk_mask(cps) == np.array([ref._is_cjk(int(c)) for c in cps])).all()
    for cp in range(0x110000):
        ch = chr(cp)
        if unicodedata.category(ch) not in ("Cn", "Cs"):
            for lower in (True, False):
                assert google_text.basic_tokenize("a%sa" % ch, lower) == ref.basic_tokenize("a%sa" % ch, lower), cp
    r = random.Random(3)
    alphabet = [chr(c) for c in range(0x20, 0x3100) if unicodedata.category(chr(c)) != "Cs"]
    alphabet += list("中文字符的了，。！？") * 30 + [" "] * 200
    for _ in range(300):
        text = "".join(r.choice(alphabet) for _ in range(50))
        for lower, strip in [(True, True), (False, False), (False, True)]:
            assert google_text.basic_tokenize(text, lower, strip) == ref.basic_tokenize(text, lower, strip)


def _cjk_positions_from_offsets(tok, texts):
    """The straightforward statement of `encode_flat_cjk`'s positions, from per-token offsets."""
    out, base = [], 0
    for text, (_, offsets) in zip(texts, tok.encode_with_offsets(texts)):
        out += [base + o if o < len(text) and ref._is_cjk(ord(text[o])) else -1 for o in offsets]
        base += len(text) + 1
    return out


def test_cjk_positions_name_the_characters_tokens_come_from(wordpiece_vocab, corpus_dir, tmp_path):
    # Whole-word masking looks each Chinese token's character up in a segmenter's cut of
    # "\n".join(texts): WordPiece finds them without offsets, SentencePiece from its offsets.
    texts = CHINESE_TEXTS + TEXTS + [line.strip() for line in open(corpus_dir / "zh.txt", encoding="utf-8")]
    wordpiece = tk.WordPieceTokenizer(wordpiece_vocab)
    spm_texts = [line for line in open(corpus_dir / "zh.txt", encoding="utf-8") if line.strip()] * 5
    sentencepiece = vocab.build_sentencepiece(spm_texts, str(tmp_path / "sp.model"), vocab_size=300,
                                              character_coverage=1.0)
    for tok in (wordpiece, sentencepiece):
        ids, lengths, at = tok.encode_flat_cjk(texts)
        assert [a.tolist() for a in np.split(ids, np.cumsum(lengths)[:-1])] == tok.encode_batch(texts)
        assert at.tolist() == _cjk_positions_from_offsets(tok, texts)
        joined = "\n".join(texts)
        assert all(google_text.is_cjk(ord(joined[i])) for i in at[at >= 0])
    assert (at >= 0).sum() > 100


def test_parity_rules_for_other_versions_are_computed_once_and_cached(
        wordpiece_vocab, monkeypatch, tmp_path, caplog):
    # A TPU host's Python 3.10 has Unicode 13.0: the shipped rules do not apply there. Simulated
    # here; on this Python the computed rules must come out equal to the shipped ones.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(unicode_parity, "running_versions",
                        lambda: ("13.0.0", shipped.TOKENIZERS_VERSION))
    with caplog.at_level(logging.INFO, logger="data_pipeline.unicode_parity"):
        tok = tk.WordPieceTokenizer(wordpiece_vocab, lower_case=True)
        got = [ids for ids, _ in tok.encode_with_offsets(CHINESE_TEXTS + TEXTS)]
    assert got == [ref.tokenize_ids(t, tok.vocab) for t in CHINESE_TEXTS + TEXTS]
    assert len(caplog.records) == 1
    assert "running Unicode 13.0.0" in caplog.text and "shipped for Unicode 14.0.0" in caplog.text
    cached = os.listdir(unicode_parity.cache_dir())
    assert [n for n in cached if n.endswith(".json")] == [
        "unicode-13.0.0_tokenizers-%s_lower-1_strip-1_scan-%d.json"
        % (shipped.TOKENIZERS_VERSION, unicode_parity.SCAN_VERSION)]

    def no_scan(*args, **kwargs):
        raise AssertionError("scanned again although the rules are cached")
    monkeypatch.setattr(unicode_parity, "scan", no_scan)
    caplog.clear()
    assert unicode_parity.rules(True, True) == shipped.RULES[(True, True)]
    assert not caplog.records


def test_versions_no_patch_can_fix_fail_clearly_and_unwritable_cache_still_works(monkeypatch, tmp_path,
                                                                              caplog):
    monkeypatch.setattr(unicode_parity, "running_versions", lambda: ("99.0.0", "9.9.9"))
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))  # not a directory: nothing cached
    monkeypatch.setattr(unicode_parity, "scan", lambda *a, **k: [(0x41, "letter")])
    with pytest.raises(unicode_parity.ParityError,
                       match=r"tokenizers 9\.9\.9 on Unicode 99\.0\.0 .* 1 code points .*U\+0041"):
        unicode_parity.rules(True, True)
    monkeypatch.setattr(unicode_parity, "scan", lambda *a, **k: [])
    with caplog.at_level(logging.WARNING, logger="data_pipeline.unicode_parity"):
        assert unicode_parity.rules(False, False) == {"delete": [], "isolate": [], "letter": []}
    assert "not cached" in caplog.text


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


def test_a_token_twice_in_a_vocabulary_is_refused_wherever_it_is_loaded(tmp_path, corpus_dir):
    """A second [MASK] would silently move the mask id (the later line wins a lookup by name):
    the tokenizer, the data build and a fine-tuning load all refuse the file, naming the token
    and both lines."""
    from data_pipeline import builder, sources
    from downstream import tokenization

    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\n[MASK]\nworld\n")
    message = "Vocabulary %s has token '[MASK]' twice, on lines 5 and 7" % path
    with pytest.raises(tk.VocabError) as e:
        tk.load_tokenizer(str(path))
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
    config = builder.BuildConfig(output_dir=str(tmp_path / "out"), vocab=str(path), progress=False,
                                 source=sources.SourceConfig(inputs=(str(corpus_dir / "en.txt"),)))
    with pytest.raises(builder.BuildError, match=re.escape(message)):
        builder.build(config)
    with pytest.raises(tokenization.CheckpointError, match=re.escape(message)):
        tokenization.load_finetune_tokenizer(str(path))


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


def test_a_corpus_gives_the_same_vocabulary_every_time(tmp_path):
    """tokenizers' WordPiece trainer alone numbers the "##c" tokens in hash-map order and breaks
    ties between merges by those numbers: three trainings on one corpus gave three vocabularies.
    build_wordpiece gives one, from a list or from a stream read once (as build_vocab streams)."""
    texts = [" ".join(doc) for doc in sample_corpus.english_documents()[:300]]
    texts += [" ".join(doc) for doc in sample_corpus.chinese_documents()]
    outputs = []
    for i, given in enumerate([texts, texts, iter(texts), (t for t in texts)]):
        path = tmp_path / ("vocab%d.txt" % i)
        vocab.build_wordpiece(given, str(path), vocab_size=2000, min_frequency=1, num_reserved=2)
        outputs.append(path.read_text(encoding="utf-8"))
    assert all(o == outputs[0] for o in outputs[1:])
    tokens = outputs[0].splitlines()
    assert len(tokens) == 2000 and tokens[:7] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
                                                   "[unused0]", "[unused1]"]
    continuing = [i for i, t in enumerate(tokens) if len(t) == 3 and t.startswith("##")]
    assert continuing == list(range(continuing[0], continuing[0] + len(continuing)))
    assert all(len(t) == 1 for t in tokens[7:continuing[0]])        # the alphabet, then ##c
    assert [tokens[i] for i in continuing] == sorted(tokens[i] for i in continuing)
