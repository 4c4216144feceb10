"""One tokenizer interface over WordPiece `vocab.txt` files and SentencePiece `.model` files.

WordPiece tokenization reproduces google-research/bert's `FullTokenizer` (BasicTokenizer followed by
WordpieceTokenizer) id for id. `encode*` use the memoised encoders of `google_wordpiece`: a short
path for pure-ASCII text, and one for any text that applies Google's rules (`google_text`) with this
Python's `unicodedata`, so ids are Google's on every Python version. `encode_with_offsets`, which
needs character offsets, goes through HF `tokenizers` (Rust), whose Unicode tables are patched
where they disagree with Google's rules (`unicode_parity`). The tests check all of them against a
Python statement of Google's rules on English, Chinese, mixed, full-width, accented,
punctuation-heavy, control-character and random text, and every assigned code point.

Special tokens ([PAD] [UNK] [CLS] [SEP] [MASK]) are always looked up by name in the vocabulary.

Example:
    tok = load_tokenizer("vocab.txt", lower_case=True)
    ids = tok.encode("Hello, world!")          # [7592, 1010, 2088, 999] for bert-base-uncased
    tok.special_ids.cls                        # id of [CLS] in this vocab
"""

import abc
import dataclasses
import itertools
import re
from typing import List, Optional, Sequence, Tuple

import numpy as np

from data_pipeline import google_text
from data_pipeline.google_wordpiece import AsciiWordPiece, UnicodeWordPiece, decode_cjk

SPECIAL_TOKEN_NAMES = ("pad", "unk", "cls", "sep", "mask")

# SentencePiece models trained elsewhere (ALBERT, T5-style) spell some specials differently.
_SPM_ALIASES = {"pad": ("[PAD]", "<pad>"), "unk": ("[UNK]", "<unk>"), "cls": ("[CLS]", "<cls>"),
                "sep": ("[SEP]", "<sep>"), "mask": ("[MASK]", "<mask>")}

# Tokens of the form [xxx] (e.g. [unused12]) are reserved slots, never real text: they are excluded
# from the random replacements of MLM masking.
_RESERVED_TOKEN = re.compile(r"^\[[^\]\s]+\]$|^<[^>\s]+>$")

# google-research/bert's WordpieceTokenizer default (the Python reference, not HF's 100).
GOOGLE_MAX_INPUT_CHARS_PER_WORD = 200


class VocabError(ValueError):
    """A vocabulary file is missing, unreadable, or lacks a required special token."""


# More [UNK] than this share of the tokens means the vocabulary does not fit the text (Chinese text
# with an English vocabulary, say), not a few rare symbols: a vocabulary built from text like it
# leaves well under 1% unknown, and a model trained on such rows learns to write [UNK].
UNKNOWN_WARN_RATE = 0.05


def count_unknown(id_lists, unk_id: int):
    """(unknown, total): the [UNK] tokens (`unk_id`) and all tokens of lists or arrays of ids."""
    unknown = total = 0
    for ids in id_lists:
        ids = np.asarray(ids)
        unknown, total = unknown + int((ids == unk_id).sum()), total + ids.size
    return unknown, total


def unknown_warning(unknown: int, total: int, what: str, vocab: str) -> Optional[str]:
    """The warning line when more than UNKNOWN_WARN_RATE of the `total` tokens of `what` are [UNK]
    (`unknown` of them, as `count_unknown` counts), else None."""
    if not total or unknown <= UNKNOWN_WARN_RATE * total:
        return None
    return ("warning: %.1f%% of the tokens of %s are [UNK] (%d of %d): the vocabulary %s does not "
            "cover this text (another language or script?), so a model trained on it learns [UNK]. "
            "Use a vocabulary built for text like it." % (100.0 * unknown / total, what, unknown,
                                                         total, vocab))


@dataclasses.dataclass(frozen=True)
class SpecialIds:
    pad: int
    unk: int
    cls: int
    sep: int
    mask: int

    def as_dict(self):
        return dataclasses.asdict(self)


@dataclasses.dataclass
class VocabRecord:
    """What is recorded of a vocabulary, one type from the tokenizer that reads it to the export
    that ships it. Each file keeps the JSON keys, in the order, it has always had:

      Tokenizer.describe()          (in memory)  kind path vocab_size lower_case sha256 special_ids
      a data manifest's "vocab"     to_dict      the same + not_random_replacements
      a run's vocab/vocab.json      to_dict      the same + not_random_replacements file source_path
      an export manifest's "vocab"  to_export_dict
                                                 file kind source_path vocab_size lower_case sha256
                                                 special_ids

    `random_replacement_ids` are the ids MLM masking may draw as random replacements (the
    tokenizer's `random_replacement_ids()` at build time). A data manifest stores their complement
    (the few non-special ids excluded: reserved and control tokens), which `from_dict` inverts once;
    None where nothing records them (a tokenizer's description, an export).
    """
    kind: str                                        # wordpiece | sentencepiece
    path: Optional[str]                              # the file; None in an export manifest (`file`)
    vocab_size: int
    lower_case: bool
    sha256: str                                      # of the file's bytes
    special_ids: SpecialIds
    random_replacement_ids: Optional[Tuple[int, ...]] = None
    file: Optional[str] = None                       # the copy's name in a run directory or export
    source_path: Optional[str] = None                # the path the copy was made from

    def not_random_replacements(self) -> List[int]:
        """The ids neither special nor random replacements: what a data manifest stores."""
        excluded = set(range(self.vocab_size)) - set(self.random_replacement_ids)
        return sorted(excluded - set(self.special_ids.as_dict().values()))

    def to_dict(self) -> dict:
        """A data manifest's "vocab" (random_replacement_ids set), a run's vocab.json (file and
        source_path set too)."""
        d = {"kind": self.kind, "path": self.path, "vocab_size": self.vocab_size,
             "lower_case": self.lower_case, "sha256": self.sha256,
             "special_ids": self.special_ids.as_dict()}
        if self.random_replacement_ids is not None:
            d["not_random_replacements"] = self.not_random_replacements()
        for name in ("file", "source_path"):
            if getattr(self, name) is not None:
                d[name] = getattr(self, name)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "VocabRecord":
        """The inverse of `to_dict`. Manifests without not_random_replacements (older builders)
        exclude nothing but the special tokens, as they were always read."""
        special_ids = SpecialIds(**d["special_ids"])
        excluded = set(d.get("not_random_replacements", ())) | set(special_ids.as_dict().values())
        return cls(kind=d["kind"], path=d["path"], vocab_size=d["vocab_size"], lower_case=d["lower_case"],
                   sha256=d["sha256"], special_ids=special_ids,
                   random_replacement_ids=tuple(i for i in range(d["vocab_size"]) if i not in excluded),
                   file=d.get("file"), source_path=d.get("source_path"))

    def to_export_dict(self) -> dict:
        """An export manifest's "vocab": the copy's name and where it came from, no path."""
        return {"file": self.file, "kind": self.kind, "source_path": self.source_path,
                "vocab_size": self.vocab_size, "lower_case": self.lower_case, "sha256": self.sha256,
                "special_ids": self.special_ids.as_dict()}

    @classmethod
    def from_export_dict(cls, d: dict) -> "VocabRecord":
        return cls(kind=d["kind"], path=None, vocab_size=d["vocab_size"], lower_case=d["lower_case"],
                   sha256=d["sha256"], special_ids=SpecialIds(**d["special_ids"]), file=d["file"],
                   source_path=d["source_path"])


class Tokenizer(abc.ABC):
    """Common interface. Subclasses set `vocab`, `special_ids`, `kind`, `path` and `_is_continuation`."""

    kind: str
    path: str
    vocab: List[str]
    special_ids: SpecialIds
    lower_case: bool

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> List[int]:
        return self.encode_batch([text])[0]

    @abc.abstractmethod
    def encode_batch(self, texts: Sequence[str]) -> List[List[int]]:
        """Token ids of each text (no [CLS]/[SEP] added)."""

    def encode_arrays(self, texts: Sequence[str]) -> List[np.ndarray]:
        """Like `encode_batch`, as int32 arrays."""
        return [np.asarray(ids, dtype=np.int32) for ids in self.encode_batch(texts)]

    def encode_flat(self, texts: Sequence[str]):
        """All texts' ids back to back (int32 [T]) and each text's length (int64 [len(texts)]):
        what the data builder consumes."""
        arrays = self.encode_arrays(texts)
        lengths = np.array([len(a) for a in arrays], dtype=np.int64)
        return (np.concatenate(arrays) if arrays else np.zeros(0, np.int32)), lengths

    def tokenize(self, text: str) -> List[str]:
        return [self.vocab[i] for i in self.encode(text)]

    def token_to_id(self, token: str) -> Optional[int]:
        return self._token_index.get(token)

    def id_to_token(self, index: int) -> str:
        return self.vocab[index]

    @abc.abstractmethod
    def encode_with_offsets(self, texts: Sequence[str]):
        """Returns, per text, (ids, start character offsets into the text)."""

    def encode_flat_cjk(self, texts: Sequence[str]):
        """`encode_flat`, plus int64 [T]: for each token that begins with a CJK ideograph
        (`google_text.is_cjk`), the index of that character in "\\n".join(texts); -1 for the
        others. Chinese whole-word masking looks these characters up in a word segmenter's output."""
        texts = list(texts)
        pairs = self.encode_with_offsets(texts)
        lengths = np.array([len(ids) for ids, _ in pairs], np.int64)
        total = int(lengths.sum())
        ids = np.fromiter(itertools.chain.from_iterable(i for i, _ in pairs), np.int32, count=total)
        offsets = np.fromiter(itertools.chain.from_iterable(o for _, o in pairs), np.int64, count=total)
        sizes = np.array([len(t) for t in texts], np.int64)
        owner = np.repeat(np.arange(len(texts)), lengths)
        in_text = offsets < sizes[owner]
        at = (np.cumsum(sizes + 1) - sizes - 1)[owner] + offsets
        cps = google_text.code_points("\n".join(texts))
        cjk = in_text & google_text.cjk_mask(cps[np.where(in_text, at, 0)]) if total else in_text
        return ids, lengths, np.where(cjk, at, -1)

    def word_start_table(self) -> np.ndarray:
        """bool[vocab_size]: True where a token begins a new word (not a `##` piece, or a `▁` piece)."""
        return ~self._is_continuation

    def random_replacement_ids(self) -> np.ndarray:
        """int32 ids that MLM masking may draw as random replacements: no special or reserved token."""
        specials = set(self.special_ids.as_dict().values())
        keep = [i for i, t in enumerate(self.vocab)
                if i not in specials and not _RESERVED_TOKEN.match(t) and not self._is_control(i)]
        return np.asarray(keep, dtype=np.int32)

    def _is_control(self, index: int) -> bool:
        return False

    def checksum(self) -> str:
        """sha256 of the vocabulary file: recorded in manifests so data and models can be matched."""
        from storage import fs

        return fs.sha256(self.path)

    def describe(self) -> VocabRecord:
        """The record of this vocabulary (without random replacements: the builder adds those)."""
        return VocabRecord(kind=self.kind, path=self.path, vocab_size=self.vocab_size,
                           lower_case=self.lower_case, sha256=self.checksum(),
                           special_ids=self.special_ids)

    def _index_vocab(self):
        self._token_index = {t: i for i, t in enumerate(self.vocab)}


class WordPieceTokenizer(Tokenizer):
    """Google-compatible WordPiece over a `vocab.txt` (one token per line, id = line number)."""

    kind = "wordpiece"

    def __init__(self, vocab_path: str, lower_case: bool = True, strip_accents: Optional[bool] = None,
                 max_input_chars_per_word: int = GOOGLE_MAX_INPUT_CHARS_PER_WORD):
        from tokenizers import models

        self.path = vocab_path
        self.lower_case = lower_case
        # Google strips accents exactly when it lower-cases; either may be set on its own here.
        self.strip_accents = lower_case if strip_accents is None else strip_accents
        self.vocab = _read_vocab_lines(vocab_path)
        self._index_vocab()
        self.special_ids = _lookup_specials(self._token_index, vocab_path,
                                            {k: ("[%s]" % k.upper(),) for k in SPECIAL_TOKEN_NAMES})
        model = models.WordPiece(self._token_index, unk_token="[UNK]",
                                 continuing_subword_prefix="##",
                                 max_input_chars_per_word=max_input_chars_per_word)
        self._model = model
        self._hf = None  # built on first use: only `encode_with_offsets` needs it
        self._ascii = AsciiWordPiece(model, lower_case)
        self._unicode = UnicodeWordPiece(model, lower_case, self.strip_accents)
        self._is_continuation = np.array([t.startswith("##") for t in self.vocab], dtype=bool)

    def encode_batch(self, texts):
        return [ids.tolist() for ids in self.encode_arrays(texts)]

    def encode_arrays(self, texts):
        flat, lengths = self.encode_flat(texts)
        return np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []

    def encode_flat(self, texts):
        flat, lengths = self._encode_marked(list(texts))
        return decode_cjk(flat)[0], lengths

    def encode_flat_cjk(self, texts):
        # Google makes every CJK ideograph a token of its own, in text order, so the tokens the
        # encoder flags are those characters one for one: no offsets needed.
        texts = list(texts)
        flat, lengths = self._encode_marked(texts)
        ids, cjk = decode_cjk(flat)
        at = np.full(len(ids), -1, np.int64)
        if cjk.any():
            chars = np.flatnonzero(google_text.cjk_mask(google_text.code_points("\n".join(texts))))
            if len(chars) != int(cjk.sum()):
                raise RuntimeError("WordPiece made %d CJK tokens of %d CJK characters; please report "
                                   "this with the text." % (int(cjk.sum()), len(chars)))
            at[cjk] = chars
        return ids, lengths, at

    def _encode_marked(self, texts):
        """Ids of all texts back to back, CJK tokens as -2 - id (`decode_cjk`); token counts."""
        is_ascii = np.array([t.isascii() for t in texts], dtype=bool)
        if is_ascii.all():
            return self._ascii.encode(texts)
        lengths = np.zeros(len(texts), np.int64)
        parts = []
        for route, encode in ((is_ascii, self._ascii.encode), (~is_ascii, self._unicode.encode)):
            which = np.flatnonzero(route)
            if len(which):
                flat, lengths[which] = encode([texts[i] for i in which])
                parts.append((which, flat))
        # Scatter each route's tokens to where its texts sit in the output.
        ends = np.cumsum(lengths)
        out = np.empty(int(ends[-1]) if len(ends) else 0, np.int32)
        for which, flat in parts:
            sizes = lengths[which]
            shift = np.repeat(ends[which] - sizes - (np.cumsum(sizes) - sizes), sizes)
            out[np.arange(len(flat)) + shift] = flat
        return out, lengths

    def encode_with_offsets(self, texts):
        out = []
        for e in self._hf_tokenizer().encode_batch(list(texts), add_special_tokens=False):
            out.append((e.ids, [s for s, _ in e.offsets]))
        return out

    def _hf_tokenizer(self):
        if self._hf is None:
            from tokenizers import Tokenizer as HFTokenizer

            hf = HFTokenizer(self._model)
            hf.normalizer, hf.pre_tokenizer = _hf_pipeline(self.lower_case, self.strip_accents,
                                                           _pick_standin(self.vocab))
            # No special tokens are registered with HF: like Google's tokenizer, a literal "[MASK]"
            # in raw text is split as ordinary punctuation + word, so text cannot inject them.
            self._hf = hf
        return self._hf


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece `.model`; specials found by name ([PAD] or <pad>, ...)."""

    kind = "sentencepiece"

    def __init__(self, model_path: str, lower_case: bool = False):
        import sentencepiece as spm

        self.path = model_path
        self.lower_case = lower_case
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(_read_bytes(model_path))
        except (RuntimeError, OSError) as e:
            raise VocabError("%s is not a readable SentencePiece model (%s)." % (model_path, e))
        self.vocab = [self._sp.IdToPiece(i) for i in range(self._sp.GetPieceSize())]
        self._index_vocab()
        self.special_ids = _lookup_specials(self._token_index, model_path, _SPM_ALIASES)
        self._is_continuation = np.array([not t.startswith("\u2581") for t in self.vocab], dtype=bool)
        for i in self.special_ids.as_dict().values():
            self._is_continuation[i] = False

    def _prepare(self, text):
        return text.lower() if self.lower_case else text

    def encode_batch(self, texts):
        return self._sp.EncodeAsIds([self._prepare(t) for t in texts])

    def encode_with_offsets(self, texts):
        # Offsets index the text as given to SentencePiece: lower-cased when `lower_case`, which
        # moves them only where lower-casing changes a text's length (a few letters, such as 'İ').
        out = self._sp.encode([self._prepare(t) for t in texts], out_type="offset_mapping")
        return [(m["ids"], [begin for begin, _ in m["offsets"]]) for m in out]

    def _is_control(self, index):
        sp = self._sp
        return sp.IsControl(index) or sp.IsUnknown(index) or sp.IsUnused(index)


def load_tokenizer(path: str, lower_case: Optional[bool] = None, **kwargs) -> Tokenizer:
    """Opens a WordPiece `vocab.txt` or a SentencePiece `.model` (any other name: tried as a model).

    Args:
      path: local or gs:// path of the vocabulary.
      lower_case: lower-case input (WordPiece default True, SentencePiece default False).
    """
    if not path.endswith(".txt") and _is_sentencepiece(path):
        return SentencePieceTokenizer(path, lower_case=bool(lower_case))
    return WordPieceTokenizer(path, lower_case=True if lower_case is None else lower_case, **kwargs)


def _is_sentencepiece(path):
    import sentencepiece as spm

    if path.endswith(".model"):
        return True
    try:
        spm.SentencePieceProcessor().LoadFromSerializedProto(_read_bytes(path))
        return True
    except (RuntimeError, TypeError):
        return False


def _hf_pipeline(lower_case, strip_accents, standin):
    """HF normalizer and pre-tokenizer that reproduce Google's BasicTokenizer on the running
    Python and tokenizers versions (the vocabulary trainer uses them too)."""
    from data_pipeline import unicode_parity

    return unicode_parity.hf_pipeline(lower_case, strip_accents, standin,
                                      unicode_parity.rules(lower_case, strip_accents))


def _pick_standin(vocab):
    """A letter with no case, no decomposition and no BERT meaning that no vocab token contains."""
    used = set("".join(vocab))
    for cp in range(0xA4D0, 0xA4F8):  # Lisu letters (Lo).
        if chr(cp) not in used:
            return chr(cp)
    raise VocabError("Vocabulary uses every Lisu letter; cannot pick a parity stand-in character.")


def _lookup_specials(index, path, names):
    found, missing = {}, []
    for key in SPECIAL_TOKEN_NAMES:
        hit = next((index[n] for n in names[key] if n in index), None)
        if hit is None:
            missing.append(names[key][0])
        found[key] = hit
    if missing:
        raise VocabError("Vocabulary %s lacks the special token(s) %s. Rebuild it with "
                         "`python -m launch.build_vocab`, or add them to the file."
                         % (path, ", ".join(missing)))
    return SpecialIds(**found)


def _read_bytes(path):
    from storage import fs

    try:
        return fs.read_bytes(path)
    except FileNotFoundError:
        raise VocabError("Vocabulary file %s does not exist (check --vocab)." % path)


def _read_vocab_lines(path):
    data = _read_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise VocabError("Vocabulary %s is not UTF-8 text (%s)." % (path, e))
    # Google strips each line; a token per line, id = line number. A trailing newline adds no token.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    vocab = [line.strip() for line in lines]
    if not vocab:
        raise VocabError("Vocabulary %s is empty." % path)
    # A token twice would have two ids, and a lookup by name (a special's) would take the later
    # one: a duplicated [MASK] silently moves the mask id. Google's loader does not check this.
    first = {}
    for number, token in enumerate(vocab, 1):
        if token in first:
            raise VocabError("Vocabulary %s has token %r twice, on lines %d and %d: each token must "
                             "appear once (remove one line)." % (path, token, first[token], number))
        first[token] = number
    return vocab
