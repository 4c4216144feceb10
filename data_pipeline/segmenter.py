"""Chinese word segmentation for whole-word masking.

Chinese text is tokenized one character per token, so `##`/`▁` conventions say nothing about word
boundaries. With a segmenter (jieba, as bert4keras and HIT's Chinese-BERT-wwm used), a CJK token
that falls inside a segmenter word, but not at its start, is marked as a continuation, so masking
takes the whole word.
"""

import logging
import re


_CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]")


class JiebaSegmenter:
    def __init__(self):
        try:
            import jieba
        except ImportError:
            raise ValueError("--segmenter=jieba needs the jieba package: pip install jieba")
        jieba.setLogLevel(logging.WARNING)
        jieba.initialize()
        self._jieba = jieba

    def word_start_offsets(self, text):
        """Character offsets of every word start, and of every character inside a word."""
        starts, inside = set(), set()
        pos = 0
        for word in self._jieba.cut(text, HMM=False):
            starts.add(pos)
            inside.update(range(pos + 1, pos + len(word)))
            pos += len(word)
        return starts, inside

    def refine_word_starts(self, text, ids, offsets, starts, tokenizer):
        """starts: bool [n] from the vocabulary; returns a copy with Chinese continuations cleared."""
        if not _CJK.search(text):
            return starts
        _, inside = self.word_start_offsets(text)
        out = starts.copy()
        for i, offset in enumerate(offsets):
            if offset in inside and offset < len(text) and _CJK.match(text[offset]):
                out[i] = False
        return out


def make_segmenter(name):
    if not name:
        return None
    if name == "jieba":
        return JiebaSegmenter()
    raise ValueError("Unknown --segmenter %r (supported: jieba)" % name)


