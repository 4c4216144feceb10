"""Chinese word segmentation for whole-word masking.

Chinese text is tokenized one character per token, so `##`/`▁` conventions say nothing about word
boundaries. With a segmenter (jieba, as bert4keras and HIT's Chinese-BERT-wwm used), a token made
from a CJK ideograph that falls inside a segmenter word, but not at its start, is marked as a
continuation, so masking takes the whole word.

Segmenters (`--segmenter=`), all cutting with jieba's dictionary and without its HMM for unknown
words (a word is a dictionary word, a run of Latin letters and digits, or one character):
  * `jieba`: the reference (pure Python).
  * `rjieba`: jieba-rs, a Rust port (the one HF's RoFormer tokenizer uses): the same words as jieba
    on all 62,621 shopping reviews of the shared corpus, about 10x faster.
  * `jieba_fast`: the C port bert4keras's pretraining script uses, at most 1.5x faster than jieba.
    Its dynamic programme breaks ties between equally likely cuts the other way (呵呵呵 as 呵|呵呵
    instead of 呵呵|呵): on those reviews 241 sentences in 62,621 are cut differently, which moves
    the word starts of 842 of 3,115,272 CJK characters (681 word spans). The tests count these.

A segmenter loads its dictionary on first use, once per process: the builder's main process, which
only checks that the package is installed, never pays for it, and each worker pays once per build.
"""

import logging
from typing import Dict, List

import numpy as np

SEGMENTERS = ("jieba", "rjieba", "jieba_fast")
_PIP_NAMES = {"jieba": "jieba", "rjieba": "rjieba", "jieba_fast": "jieba-fast"}
_LOADED: Dict[str, "Segmenter"] = {}


class Segmenter:
    """Cuts text into words; `name` is one of SEGMENTERS."""

    def __init__(self, name: str):
        import importlib.util

        if name not in SEGMENTERS:
            raise ValueError("Unknown --segmenter=%r (supported: %s)" % (name, ", ".join(SEGMENTERS)))
        if importlib.util.find_spec(name) is None:
            raise ValueError("--segmenter=%s needs the %s package: pip install %s (see "
                             "requirements.txt for the tested version)."
                             % (name, _PIP_NAMES[name], _PIP_NAMES[name]))
        self.name = name
        self._cut = None

    def words(self, text: str) -> List[str]:
        """The words of `text`, in order; together they spell `text` exactly."""
        if self._cut is None:
            self._cut = _load(self.name)
        return self._cut(text)

    def continuation_flags(self, text: str) -> np.ndarray:
        """bool [len(text)]: True at every character inside a word but not at its start.

        Text may hold many documents joined by newlines: a newline is never part of a word, so
        each document is cut as it would be alone.
        """
        lengths = np.fromiter(map(len, self.words(text)), np.int64)
        if lengths.sum() != len(text):
            raise RuntimeError("--segmenter=%s returned words spelling %d characters of a %d-character "
                               "text; it cannot be used for whole-word masking."
                               % (self.name, lengths.sum(), len(text)))
        inside = np.ones(len(text), bool)
        inside[(np.cumsum(lengths) - lengths)[lengths > 0]] = False
        return inside


def _load(name):
    """The package's cut function with its dictionary loaded; the HMM for unknown words is off."""
    if name == "rjieba":
        import rjieba  # the dictionary is loaded at import

        return lambda text: rjieba.cut(text, hmm=False)
    if name == "jieba":
        import jieba as module
    else:
        import jieba_fast as module
    module.setLogLevel(logging.WARNING)
    module.initialize()
    return lambda text: module.lcut(text, HMM=False)


def make_segmenter(name):
    """The process's segmenter of that name (None for none): created once, loaded on first use."""
    if not name:
        return None
    if name not in _LOADED:
        _LOADED[name] = Segmenter(name)
    return _LOADED[name]
