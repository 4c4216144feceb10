"""Google's BasicTokenizer + WordpieceTokenizer, computed fast and exactly: the tokenizer's encoders.

Both encoders below cut a whole batch of texts at once with C-speed string operations, then look
every word up in a cache: each distinct word is processed once by Google's rules
(`google_text`) and word-pieced once by HF's WordPiece model (Google's settings), which is what
makes them fast on real text, where a few thousand words make up nearly all of it.

  * `AsciiWordPiece`: on ASCII, Google's rules reduce to "delete control characters, lower-case,
    cut into runs of letters and digits and single punctuation characters": one regular
    expression over the batch.
  * `UnicodeWordPiece`: any text. Cleaning and CJK spacing look at one character at a time, so
    they are one `str.translate` over the batch with a table filled in from `google_text.clean_char`
    as new characters appear; `str.split` then gives Google's words, and the cache holds what
    lower-casing, accent stripping, punctuation splitting and WordPiece make of each. A CJK
    ideograph is always a token of its own, so Chinese takes a shorter way still: each run of
    ideographs stands in the word list as one placeholder, and their ids come from a table indexed
    by code point, with NumPy; the Python-level work is proportional to the rest of the text.

Everything goes through this Python's `unicodedata`, as Google's code does, so the ids are Google's
on any Python version (HF tokenizers' own Unicode tables play no part here).

Texts are joined with "\\n"; a newline inside a text is whitespace to Google, so such texts are
joined after turning their newlines into spaces. `encode` returns ids back to back and each text's
token count; tokens made from a CJK ideograph come back as -2 - id (see `decode_cjk`), because
whole-word masking needs to know which tokens they are.
"""

import itertools
import re

import numpy as np

from data_pipeline import google_text

_MAX_CACHE = 1 << 20  # distinct words kept; beyond that a cache starts over


def decode_cjk(flat):
    """(ids int32, is_cjk bool) from an encoder's output, where a CJK ideograph's token is -2 - id."""
    cjk = flat <= -2
    return np.where(cjk, -2 - flat, flat).astype(np.int32), cjk


def _join(texts):
    joined = "\n".join(texts)
    if joined.count("\n") != len(texts) - 1:  # a newline inside a text is whitespace
        joined = "\n".join(t.replace("\n", " ") for t in texts)
    return joined


def _split_lengths(flat):
    """Drops the -1 separators between texts; returns (tokens, each text's token count)."""
    separators = np.flatnonzero(flat == -1)
    lengths = np.diff(np.concatenate([[-1], separators, [len(flat)]])) - 1
    return flat[flat != -1], lengths.astype(np.int64)


class _CachedWords:
    """Maps words to ids through a cache filled by `_pieces`. `separator` is the word that marks the
    end of a text; it maps to -1."""

    def __init__(self, model, separator):
        self._model = model
        self._separator = separator
        self._cache = {separator: [-1]}

    def _lookup(self, words):
        """int32 ids of the words back to back."""
        if len(self._cache) > _MAX_CACHE:
            self._cache = {self._separator: [-1]}
        get, miss = self._cache.get, self._miss
        pieces = [get(w) or miss(w) for w in words]
        return np.fromiter(itertools.chain.from_iterable(pieces), dtype=np.int32)

    def _miss(self, word):
        ids = self._cache[word] = self._pieces(word)
        return ids

    def _word_pieces(self, word):
        return [t.id for t in self._model.tokenize(word)]


class AsciiWordPiece(_CachedWords):
    """Pure-ASCII texts: control characters other than tab, newline and carriage return are
    deleted; a word is a run of letters and digits, and every other printable character is a token
    of its own (all of them are punctuation to Google); there are no accents to strip."""

    _WORD = re.compile(r"[A-Za-z0-9]+|[^A-Za-z0-9 \t\r]")  # "\n" separates the texts
    _DELETE = {c: None for c in [*range(0x20), 0x7F] if chr(c) not in "\t\n\r"}

    def __init__(self, model, lower_case):
        super().__init__(model, separator="\n")
        self._lower = lower_case

    def encode(self, texts):
        """(ids of all texts back to back, int32; each text's token count, int64)."""
        if not texts:
            return np.zeros(0, np.int32), np.zeros(0, np.int64)
        joined = _join(texts).translate(self._DELETE)
        if self._lower:
            joined = joined.lower()
        return _split_lengths(self._lookup(self._WORD.findall(joined)))

    def _pieces(self, word):
        return self._word_pieces(word)


class UnicodeWordPiece(_CachedWords):
    """Any text, by Google's rules (see the module docstring)."""

    # Private-use characters (C*): cleaning deletes every one that is in the texts themselves, so
    # after cleaning they mark only what they are put in for.
    _MARK = "\ue000"    # the "\n" between two texts
    _BLOCK = "\ue001"   # a CJK ideograph; a run of them becomes one word
    _BLOCKS = re.compile("%s+" % _BLOCK)
    _CJK_END = max(hi for _, hi in google_text.CJK_RANGES) + 1

    def __init__(self, model, lower_case, strip_accents):
        super().__init__(model, separator=self._MARK)
        self._lower, self._strip = lower_case, strip_accents
        self._cache[self._BLOCK] = [-2]
        # Every character seen so far mapped to its cleaned form: translate then costs one lookup
        # per character (one missing from the table would cost a KeyError).
        self._table = {ord("\n"): " %s " % self._MARK}
        self._seen = {"\n"}
        self._cjk_codes = np.zeros(self._CJK_END, np.int32)  # -2 - id per ideograph; 0: not seen

    def encode(self, texts):
        """(ids of all texts back to back, CJK tokens as -2 - id, int32; token counts, int64)."""
        if not texts:
            return np.zeros(0, np.int32), np.zeros(0, np.int64)
        joined = _join(texts)
        new = set(joined) - self._seen
        if new:
            self._table.update((ord(ch), self._BLOCK if google_text.is_cjk(ord(ch))
                                else google_text.clean_char(ch)) for ch in new)
            self._seen |= new
        cleaned = joined.translate(self._table)
        if self._BLOCK not in cleaned:
            return _split_lengths(self._lookup(cleaned.split()))
        flat = self._lookup(self._BLOCKS.sub(" %s " % self._BLOCK, cleaned).split())
        # Each -2 placeholder stands for a run of ideographs: make room for the run, then fill in
        # their ids in text order.
        edges = np.diff(np.concatenate([[0], google_text.code_points(cleaned) == ord(self._BLOCK),
                                        [0]]).astype(np.int8))
        counts = np.ones(len(flat), np.int64)
        counts[flat == -2] = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
        flat = np.repeat(flat, counts)
        cps = google_text.code_points(joined)
        flat[flat == -2] = self._codes(cps[google_text.cjk_mask(cps)])
        return _split_lengths(flat)

    def _codes(self, ideographs):
        """-2 - id of each ideograph's token (Google makes it one token: itself, or [UNK])."""
        codes = self._cjk_codes[ideographs]
        unseen = np.unique(ideographs[codes == 0])
        if len(unseen):
            for cp in unseen.tolist():
                piece, = google_text.split_word(chr(cp), self._lower, self._strip)
                token, = self._word_pieces(piece)
                self._cjk_codes[cp] = -2 - token
            codes = self._cjk_codes[ideographs]
        return codes

    def _pieces(self, word):
        return [i for piece in google_text.split_word(word, self._lower, self._strip)
                for i in self._word_pieces(piece)]
