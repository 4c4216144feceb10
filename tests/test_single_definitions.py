"""Small facts the packages share are defined once and used from there: the mask value ("minus
infinity"), the UniLM row, row padding, and a file's checksums. Each test checks the users reach
the one definition; the source scans catch a copy written again."""

import hashlib
import io
import os
import re
import tokenize

import numpy as np

from data_pipeline import schema
from storage import fs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("storage", "data_pipeline", "pretrain", "downstream", "launch", "benchmarks")


def _sources():
    for package in PACKAGES:
        for folder, _, names in os.walk(os.path.join(ROOT, package)):
            for name in sorted(names):
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    yield os.path.relpath(path, ROOT), open(path, encoding="utf-8").read()


def _lines_matching(pattern):
    return ["%s: %s" % (path, line.strip()) for path, text in _sources()
            for line in text.splitlines() if re.search(pattern, line)]


def _minus_infinities():
    """'file: line' of every literal "minus infinity" in code (not comments or docstrings): a
    negative number of magnitude 1e4 or more, or float("-inf")."""
    found = []
    for path, text in _sources():
        before = [None, None]   # the two code tokens before this one
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            large = (token.type == tokenize.NUMBER and before[-1] == "-"
                     and "e" in token.string.lower() and float(token.string) >= 1e4)
            infinite = token.string in ('"-inf"', "'-inf'") and before == ["float", "("]
            if large or infinite:
                found.append("%s: %s" % (path, token.line.strip()))
            if token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT):
                before = [before[-1], token.string]
    return sorted(found)


def test_every_mask_uses_modelings_minus_infinity():
    import tensorflow as tf

    from downstream import decoding
    from pretrain import modeling, objectives

    assert decoding.MASKED_LOGIT is modeling.MASKED_LOGIT
    assert objectives.MASKED_LOGIT is modeling.MASKED_LOGIT
    bias = modeling.attention_bias(tf.constant([[1, 1, 0]]), tf.constant([[0, 1, 1]]), "unilm")
    assert bias.dtype == tf.float32
    assert set(np.unique(bias.numpy()).tolist()) == {0.0, modeling.MASKED_LOGIT}
    # Large negative literals are written once: MASKED_LOGIT, and decoding's true -inf for scores
    # (the others are not masks: a benchmark's output bias, a weight; and the score below every
    # SentencePiece control piece that keeps transformers' Unigram from matching them in text).
    found = _minus_infinities()
    assert found == ["benchmarks/generation.py: values[\"cls/predictions/output_bias\"][0] = -1e4",
                     "downstream/decoding.py: NEG_INF = float(\"-inf\")",
                     "pretrain/hf_format.py: floor = min([score for (_, score), t in zip(vocab, types) "
                     "if t == 1] + [0.0]) - 1e6",
                     "pretrain/modeling.py: MASKED_LOGIT = -1e9"], found


def test_padding_loops_are_sequence_padding():
    import downstream
    from downstream import tokenization

    assert downstream.sequence_padding is tokenization.sequence_padding is schema.sequence_padding
    out = schema.sequence_padding([[5, 6, 7], [8]], value=1)
    assert out.dtype == np.int32 and out.tolist() == [[5, 6, 7], [8, 1, 1]]
    assert schema.sequence_padding([[5, 6, 7]], 2, dtype=np.int64).tolist() == [[5, 6]]
    # The loop `rows[i, :len(row)] = row` is written only in sequence_padding.
    assert _lines_matching(r"\[\s*\w+\s*,\s*:\s*len\(") == [], "a padding loop besides sequence_padding"


def test_the_unilm_row_has_one_definition(wordpiece_vocab):
    from downstream.generation import AutoRegressiveDecoder
    from downstream.seq2seq import Seq2SeqData
    from downstream.tokenization import load_finetune_tokenizer
    from pretrain.modeling import BertConfig, build_model

    tokenizer = load_finetune_tokenizer(wordpiece_vocab)
    specials = tokenizer.special_ids
    source, target = tokenizer.base.encode("the source text"), tokenizer.base.encode("a target")
    ids, segments = schema.unilm_row(source, target, specials.cls, specials.sep)
    assert ids.tolist() == [specials.cls] + source + [specials.sep] + target + [specials.sep]
    assert segments.tolist() == ([schema.SOURCE_SEGMENT] * (len(source) + 2)
                                 + [schema.TARGET_SEGMENT] * (len(target) + 1))
    assert Seq2SeqData(tokenizer).row("the source text", "a target") == (ids.tolist(), segments.tolist())
    # Generated tokens continue the row in the target segment (under LM, rows are all segment 0).
    model = build_model(BertConfig(vocab_size=12, hidden_size=8, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=16), with_nsp=False)
    for application, segment in (("unilm", schema.TARGET_SEGMENT), ("lm", 0)):
        decoder = AutoRegressiveDecoder(model, end_id=None, application=application)
        assert decoder._stepper().generated_segment == segment


def test_a_files_checksums_are_storages(tmp_path, wordpiece_vocab):
    from data_pipeline.tokenizer import load_tokenizer

    path = tmp_path / "f"
    path.write_bytes(b"123456789")
    # CRC32C("123456789") = 0xE3069283, base64 of its big-endian bytes as Cloud Storage shows it.
    assert fs.crc32c(str(path)) == "4waSgw=="
    with fs.open_write(str(tmp_path / "g")) as f:
        writer = fs.ChecksummedWriter(f)
        writer.write(b"12345")
        writer.write(b"6789")
    assert (writer.bytes, writer.crc32c) == (9, "4waSgw==")
    assert fs.sha256(str(path)) == hashlib.sha256(b"123456789").hexdigest()
    assert load_tokenizer(wordpiece_vocab).checksum() == fs.sha256(wordpiece_vocab)
    assert _lines_matching(r"google_crc32c\.Checksum\(") == [
        "storage/fs.py: checksum = google_crc32c.Checksum()",
        "storage/fs.py: self._f, self._crc, self.bytes = f, google_crc32c.Checksum(), 0"]
