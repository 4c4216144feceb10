"""Where HF tokenizers' Unicode tables disagree with Google's BERT rules, and the patch for it.

HF's BertNormalizer/BertPreTokenizer implement Google's rules with Unicode tables of their own
version, while Google's rules (`google_text`) ask this Python's `unicodedata`. A scan of every code
point (`scan`) finds where the two disagree on the text 'a' + ch + 'a', and sorts each such code
point by what Google does with it: deletes it, splits it off as a token of its own, or keeps it
inside a word. `hf_pipeline` turns those ranges into an HF normalizer and pre-tokenizer that agree
with Google everywhere.

The ranges depend on both versions (this Python's Unicode data, HF tokenizers), so `rules` uses the
ones shipped in `_unicode_parity.py` only when both match the versions they were generated for.
Otherwise it scans for the running versions once (about 11 s per (lower_case, strip_accents) mode),
checks that the patch leaves no disagreement, caches the result under the user's cache directory
keyed by both versions, and logs one line saying so. Where no patch of these three kinds can make
HF agree, it raises an error naming the versions instead of tokenizing differently from Google.

Regenerate the shipped file (after upgrading tokenizers or Python):
    python -m data_pipeline.unicode_parity > data_pipeline/_unicode_parity.py
"""

import json
import logging
import os
import sys
import time
import unicodedata

from data_pipeline import google_text

MODES = ((True, True), (True, False), (False, True), (False, False))  # (lower_case, strip_accents)
KINDS = ("delete", "isolate", "letter")
SCAN_VERSION = 1  # part of the cache key: bump when `scan` changes what it finds
_STANDIN = "\ua4d0"  # a Lisu letter: no case, no decomposition, no meaning to BERT

log = logging.getLogger(__name__)


class ParityError(RuntimeError):
    """HF tokenizers cannot be patched to agree with Google's rules on the running versions."""


def running_versions():
    """(Unicode version of this Python's unicodedata, HF tokenizers version)."""
    import tokenizers

    return unicodedata.unidata_version, tokenizers.__version__


def rules(lower_case: bool, strip_accents: bool) -> dict:
    """{'delete'|'isolate'|'letter': [(first, last) code point ranges]} for the running versions."""
    from data_pipeline import _unicode_parity as shipped

    mode = (bool(lower_case), bool(strip_accents))
    versions = running_versions()
    if versions == (shipped.UNIDATA_VERSION, shipped.TOKENIZERS_VERSION):
        return shipped.RULES[mode]
    path = _cache_path(mode, versions)
    cached = _read(path)
    if cached is not None:
        return cached
    with _Lock(path):
        cached = _read(path)  # another process may have computed it while we waited
        if cached is not None:
            return cached
        started = time.time()
        found = compute_rules(*mode)
        saved = _write(path, found)
    log.warning("Unicode parity rules: shipped for Unicode %s / tokenizers %s, running Unicode %s / "
                "tokenizers %s; computed them for lower_case=%s, strip_accents=%s in %.0f s%s.",
                shipped.UNIDATA_VERSION, shipped.TOKENIZERS_VERSION, versions[0], versions[1],
                mode[0], mode[1], time.time() - started,
                ", cached in %s" % path if saved else " (cache directory not writable: not cached)")
    return found


def compute_rules(lower_case: bool, strip_accents: bool) -> dict:
    """Scans the running versions; raises ParityError if the patch does not remove every
    disagreement. Only code points in the rules change under the patch, and a deleted one leaves
    'aa', which is Google's answer by definition, so only the others are scanned again."""
    found = scan(lower_case, strip_accents, patched=None)
    out = {kind: _ranges(cp for cp, k in found if k == kind) for kind in KINDS}
    left = scan(lower_case, strip_accents, patched=out,
                code_points=[cp for cp, kind in found if kind != "delete"])
    if left:
        raise ParityError(
            "HF tokenizers %s on Unicode %s disagrees with Google's BERT rules at %d code points that "
            "no patch fixes (first: %s). Install the versions in requirements.txt, or regenerate "
            "data_pipeline/_unicode_parity.py on this Python and re-run the tests."
            % (running_versions()[1], running_versions()[0], len(left),
               ", ".join("U+%04X" % cp for cp, _ in left[:5])))
    return out


def hf_pipeline(lower_case, strip_accents, standin, parity_rules):
    """HF normalizer and pre-tokenizer that reproduce Google's BasicTokenizer.

    Code points Google deletes are removed first, those it splits off are isolated after HF's own
    split, and those it keeps inside a word are mapped to `standin`, a letter absent from the
    vocabulary, which turns the word into [UNK] exactly as Google's unmatched character does.
    """
    from tokenizers import Regex, normalizers, pre_tokenizers

    fixes = []
    if parity_rules["delete"]:
        fixes.append(normalizers.Replace(Regex(_char_class(parity_rules["delete"])), ""))
    if parity_rules["letter"]:
        fixes.append(normalizers.Replace(Regex(_char_class(parity_rules["letter"])), standin))
    normalizer = normalizers.Sequence(fixes + [normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=strip_accents,
        lowercase=lower_case)])
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    if parity_rules["isolate"]:
        pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizer, pre_tokenizers.Split(
            Regex(_char_class(parity_rules["isolate"])), behavior="isolated")])
    return normalizer, pre_tokenizer


def scan(lower_case, strip_accents, patched, code_points=None):
    """[(code point, Google's treatment)] for every disagreement on 'a' + ch + 'a'.

    patched: None for HF's plain BertNormalizer + BertPreTokenizer; a rules dict to scan HF
    patched with it (a disagreement left is then one the patch cannot fix).
    """
    from tokenizers import normalizers, pre_tokenizers

    if patched is not None:
        normalizer, pre_tokenizer = hf_pipeline(lower_case, strip_accents, _STANDIN, patched)
    else:
        normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=strip_accents, lowercase=lower_case)
        pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    out = []
    for cp in code_points if code_points is not None else range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        ch = chr(cp)
        text = "a" + ch + "a"
        google = google_text.basic_tokenize(text, lower_case, strip_accents)
        mine = [w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))]
        if mine != google and patched is not None and _STANDIN in "".join(mine):
            # The stand-in letter: equal to Google's output once the stand-in is mapped back.
            # NFC on both sides: Google's accent stripping leaves some letters decomposed (NFD).
            nfc = lambda words: [unicodedata.normalize("NFC", w) for w in words]
            if nfc([w.replace(_STANDIN, ch) for w in mine]) == nfc(google):
                continue
        if mine != google:
            kind = "delete" if google == ["aa"] else "isolate" if len(google) == 3 else "letter"
            out.append((cp, kind))
    return out


def _ranges(cps):
    out = []
    for cp in sorted(cps):
        if out and out[-1][1] == cp - 1:
            out[-1][1] = cp
        else:
            out.append([cp, cp])
    return [tuple(r) for r in out]


def _char_class(ranges):
    def esc(cp):
        return "\\x{%x}" % cp
    return "[" + "".join(esc(a) if a == b else "%s-%s" % (esc(a), esc(b)) for a, b in ranges) + "]"


# ------------------------------------------------------------------------------------ the cache

def cache_dir():
    """$XDG_CACHE_HOME/bert-tf-pretrain/unicode_parity (default ~/.cache/...)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "bert-tf-pretrain", "unicode_parity")


def _cache_path(mode, versions):
    name = "unicode-%s_tokenizers-%s_lower-%d_strip-%d_scan-%d.json" % (
        versions[0], versions[1], mode[0], mode[1], SCAN_VERSION)
    return os.path.join(cache_dir(), name)


def _read(path):
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return {kind: [tuple(r) for r in data[kind]] for kind in KINDS}
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or unreadable: computed again


def _write(path, found):
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = "%s.%d.tmp" % (path, os.getpid())
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(found, f)
        os.replace(tmp, path)
        return True
    except OSError:
        return False


class _Lock:
    """An exclusive lock file beside `path`, so parallel workers scan once; none if unwritable."""

    def __init__(self, path):
        self._path, self._file = path + ".lock", None

    def __enter__(self):
        import fcntl

        try:
            os.makedirs(os.path.dirname(self._path), exist_ok=True)
            self._file = open(self._path, "w")
            fcntl.flock(self._file, fcntl.LOCK_EX)
        except OSError:
            self._file = None
        return self

    def __exit__(self, *exc):
        if self._file is not None:
            self._file.close()  # releases the lock


def main():
    unidata, hf = running_versions()
    print('"""Generated by `python -m data_pipeline.unicode_parity`; do not edit.\n\n'
          "Code point ranges where HF tokenizers' Unicode tables disagree with Google's BERT rules,\n"
          "for the versions below (`unicode_parity.rules` computes them for any others). Keyed by\n"
          '(lower_case, strip_accents).\n"""\n')
    print("UNIDATA_VERSION = %r\nTOKENIZERS_VERSION = %r\n" % (unidata, hf))
    print("RULES = {")
    for mode in MODES:
        found = compute_rules(*mode)
        print("    %r: {" % (mode,))
        for kind in KINDS:
            print("        %r: %r," % (kind, found[kind]))
        print("    },")
    print("}")


if __name__ == "__main__":
    sys.exit(main())
