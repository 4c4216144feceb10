"""A plain-Python statement of Google's BERT tokenization rules (docs/FORMATS.md §3), used as the oracle.

Written from the specification of google-research/bert's BasicTokenizer + WordpieceTokenizer:
clean text (drop NUL, U+FFFD and C* characters; Zs and \\t\\n\\r become spaces), put spaces around CJK
ideographs, split on whitespace, optionally lower-case and strip accents (NFD, drop Mn), split
punctuation off (ASCII symbol ranges and Unicode P*), then greedy longest-match WordPiece with `##`
continuations; a word with an unmatched remainder, or longer than the limit, becomes [UNK].
Slow on purpose: clarity over speed. It is kept apart from the package's own statement of the
rules (`data_pipeline.google_text`, which the tokenizer's fast paths and the Unicode parity scan
use) so that the oracle shares no code with what it checks.
"""

import unicodedata


def _is_whitespace(ch):
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch):
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def _is_punctuation(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp):
    ranges = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
              (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
    return any(lo <= cp <= hi for lo, hi in ranges)


def basic_tokenize(text, lower_case=True, strip_accents=None):
    strip_accents = lower_case if strip_accents is None else strip_accents
    cleaned = []
    for ch in text:
        if ord(ch) == 0 or ord(ch) == 0xFFFD or _is_control(ch):
            continue
        ch = " " if _is_whitespace(ch) else ch
        cleaned.append(" %s " % ch if _is_cjk(ord(ch)) else ch)
    words = []
    for word in "".join(cleaned).split():
        if lower_case:
            word = word.lower()
        if strip_accents:
            word = "".join(c for c in unicodedata.normalize("NFD", word)
                           if unicodedata.category(c) != "Mn")
        current = []
        for ch in word:
            if _is_punctuation(ch):
                if current:
                    words.append("".join(current))
                    current = []
                words.append(ch)
            else:
                current.append(ch)
        if current:
            words.append("".join(current))
    return words


def wordpiece(word, vocab, max_chars=200, unk="[UNK]"):
    if len(word) > max_chars:
        return [unk]
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                break
            end -= 1
        if end == start:
            return [unk]
        pieces.append(piece)
        start = end
    return pieces


def tokenize_ids(text, vocab_list, lower_case=True, strip_accents=None, max_chars=200):
    index = {t: i for i, t in enumerate(vocab_list)}
    out = []
    for word in basic_tokenize(text, lower_case, strip_accents):
        out.extend(index[p] for p in wordpiece(word, index, max_chars))
    return out
