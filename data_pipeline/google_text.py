"""Google's BERT BasicTokenizer rules (docs/FORMATS.md §3), stated in plain Python.

This is the definition the rest of the package is held to: the tokenizer's fast paths compute the
same thing faster, the Unicode parity scan compares HF tokenizers' tables against it, and the tests
use it as the oracle. Like google-research/bert's tokenization.py it asks this Python's
`unicodedata` about character classes, so it is Google's behaviour on whatever Python runs it.

The rules: clean the text (drop NUL, U+FFFD and C* characters; Zs and \\t\\n\\r become spaces), put
spaces around CJK ideographs, split on whitespace, then per word optionally lower-case and strip
accents (NFD, drop Mn), split punctuation off (ASCII symbol ranges and Unicode P*).

CJK ideographs are defined once, here (`CJK_RANGES`, `is_cjk`, `cjk_mask`): the ranges of Google's
`_is_chinese_char`. Anything that must agree with how the tokenizer splits Chinese (word
segmentation, decoding token ids back to text) should use them.
"""

import unicodedata

import numpy as np

# Google's _is_chinese_char: CJK Unified Ideographs, Extensions A-E, Compatibility Ideographs and
# their Supplement (inclusive ranges). Later extensions (F and on) are not among them: Google's
# tokenizer treats them as letters, so they are too.
CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
              (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def is_cjk(cp: int) -> bool:
    """True for a code point that Google's tokenizer makes a token of its own (a CJK ideograph)."""
    return any(lo <= cp <= hi for lo, hi in CJK_RANGES)


def cjk_mask(code_points: np.ndarray) -> np.ndarray:
    """bool array, `is_cjk` of every element of an integer array of code points."""
    cps = np.asarray(code_points)
    out = np.zeros(cps.shape, bool)
    for lo, hi in CJK_RANGES:
        out |= (cps >= lo) & (cps <= hi)
    return out


def code_points(text: str) -> np.ndarray:
    """uint32 [len(text)]: the code point of every character."""
    return np.frombuffer(text.encode("utf-32-le"), np.uint32)


def is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def is_control(ch: str) -> bool:
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def clean_char(ch: str) -> str:
    """What cleaning and CJK spacing make of one character: '', ' ', ' ch ' or ch itself.

    Both steps look at one character at a time, so a text's cleaned form is the concatenation of
    its characters' cleaned forms (the tokenizer applies them as one `str.translate` table).
    """
    cp = ord(ch)
    if cp == 0 or cp == 0xFFFD or is_control(ch):
        return ""
    if is_whitespace(ch):
        return " "
    return " %s " % ch if is_cjk(cp) else ch


def split_word(word: str, lower_case: bool, strip_accents: bool) -> list:
    """Google's processing of one whitespace-separated word of cleaned text: lower-casing, accent
    stripping, punctuation split, and the final split on whitespace."""
    if lower_case:
        word = word.lower()
    if strip_accents and not word.isascii():  # ASCII has nothing to decompose, no Mn
        word = "".join(c for c in unicodedata.normalize("NFD", word)
                       if unicodedata.category(c) != "Mn")
    if word.isalnum():  # letters and digits only: no punctuation, no whitespace (the common case)
        return [word]
    pieces, current = [], []
    for ch in word:
        if is_punctuation(ch):
            if current:
                pieces.append("".join(current))
                current = []
            pieces.append(ch)
        else:
            current.append(ch)
    if current:
        pieces.append("".join(current))
    return " ".join(pieces).split()


def basic_tokenize(text: str, lower_case: bool = True, strip_accents=None) -> list:
    """Google's BasicTokenizer.tokenize. strip_accents defaults to lower_case, as in Google's code."""
    strip_accents = lower_case if strip_accents is None else strip_accents
    cleaned = "".join(clean_char(ch) for ch in text)
    return [piece for word in cleaned.split() for piece in split_word(word, lower_case, strip_accents)]
