r"""Builds a WordPiece vocab.txt or a SentencePiece model from a corpus.

    python -m launch.build_vocab --input=corpus/*.txt --output=vocab/vocab.txt --vocab_size=30522
    python -m launch.build_vocab --kind=sentencepiece --input=zh.jsonl --output=vocab/zh.model \
        --vocab_size=32000 --character_coverage=0.9995
"""

import itertools
import os
import sys

from absl import app, flags

from data_pipeline import sources, vocab
from data_pipeline.tokenizer import load_tokenizer
from launch import common

FLAGS = flags.FLAGS
flags.DEFINE_list("input", None, "Input files, globs (local or gs://) or tfds:NAME. " + sources.NAMES_HELP,
                  required=True)
flags.DEFINE_string("output", None, "Where to write vocab.txt (wordpiece) or *.model.", required=True)
flags.DEFINE_enum("kind", "wordpiece", ["wordpiece", "sentencepiece"], "Vocabulary type.")
flags.DEFINE_integer("vocab_size", 30522, "Target vocabulary size (specials included).")
flags.DEFINE_bool("lower_case", True, "Lower-case (and, for WordPiece, strip accents) before training.")
flags.DEFINE_integer("min_frequency", 2, "WordPiece: minimum count of a merged piece.")
flags.DEFINE_integer("num_reserved", 0, "Reserved [unusedN] slots for later domain tokens.")
flags.DEFINE_enum("model_type", "unigram", ["unigram", "bpe"], "SentencePiece model type.")
flags.DEFINE_float("character_coverage", 0.9995, "SentencePiece character coverage (1.0 for English).")
flags.DEFINE_integer("max_sentences", 0, "Train on at most this many sentences (0 = all).")
flags.DEFINE_enum("input_format", "auto", ["auto", "text", "jsonl"], "How to read the inputs.")
flags.DEFINE_string("text_field", "text", "JSON lines / TFDS field holding the text.")
flags.DEFINE_string("tfds_data_dir", None, "TFDS data directory for tfds: inputs.")
flags.DEFINE_float("max_bad_line_fraction", 0.01, "Fail when more lines than this are invalid UTF-8 or "
                   "JSON (fewer are skipped and counted), as launch.build_data does.")


def check_bad_lines(stats):
    """ValueError when more than --max_bad_line_fraction of the lines read were not text."""
    bad = stats.invalid_utf8_lines + stats.bad_json_lines
    if bad and bad / max(stats.lines, 1) > FLAGS.max_bad_line_fraction:
        raise ValueError("%d of %d lines are invalid UTF-8 or JSON, more than "
                         "--max_bad_line_fraction=%g: is the input text? First ones: %s"
                         % (bad, stats.lines, FLAGS.max_bad_line_fraction,
                            "; ".join("%s:%d %s" % p for p in stats.problems)))


def main(argv):
    del argv
    config = sources.SourceConfig(inputs=tuple(FLAGS.input), input_format=FLAGS.input_format,
                                  text_field=FLAGS.text_field, tfds_data_dir=FLAGS.tfds_data_dir)
    staged = FLAGS.output + ".tmp-%d" % os.getpid()   # the vocabulary goes in place once checked
    stats = sources.ReadStats()
    try:
        paths = sources.resolve_inputs(config.inputs)
        texts = (s for doc in sources.iter_documents(config, paths, stats) for s in doc)
        if FLAGS.max_sentences:
            texts = itertools.islice(texts, FLAGS.max_sentences)
        if os.path.dirname(FLAGS.output):
            os.makedirs(os.path.dirname(FLAGS.output), exist_ok=True)
        try:
            if FLAGS.kind == "wordpiece":
                vocab.build_wordpiece(texts, staged, FLAGS.vocab_size, FLAGS.lower_case,
                                      FLAGS.min_frequency, FLAGS.num_reserved)
            else:
                vocab.build_sentencepiece(texts, staged, FLAGS.vocab_size, FLAGS.model_type,
                                          FLAGS.character_coverage, FLAGS.lower_case,
                                          FLAGS.num_reserved, FLAGS.max_sentences or 10_000_000)
        finally:
            # Checked even when the trainer failed: on binary input SentencePiece fails with an
            # error of its own (too many characters) that does not say the input is not text.
            check_bad_lines(stats)
        os.replace(staged, FLAGS.output)
        tok = load_tokenizer(FLAGS.output, lower_case=FLAGS.lower_case)
    except (ValueError, OSError, RuntimeError) as e:
        print("build_vocab: error: %s" % e, file=sys.stderr)
        return 2
    finally:
        if os.path.exists(staged):
            os.remove(staged)
    common.record_command(os.path.dirname(FLAGS.output) or ".", "launch.build_vocab")
    bad = stats.invalid_utf8_lines + stats.bad_json_lines
    if bad:
        print("skipped %d invalid line(s) (first: %s)" % (bad, "; ".join(
            "%s:%d %s" % p for p in stats.problems)), file=sys.stderr)
    print("Wrote %s: %d tokens, specials %s" % (FLAGS.output, tok.vocab_size, tok.special_ids.as_dict()),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=common.parse_flags("build_vocab"))
