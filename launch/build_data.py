r"""Builds sharded pretraining TFRecords (+ manifest.json) from raw text.

Dynamic masking (default; the loader draws a fresh mask every epoch):
    python -m launch.build_data --input=corpus/*.txt --vocab=vocab/vocab.txt \
        --output_dir=data/wiki_128 --seq_len=128 --num_workers=2
Google layout with static masks (feeds google-research/bert and Model Garden unchanged):
    python -m launch.build_data --mode=static --layout=pairs --dupe_factor=5 ...
Chinese whole-word masking:
    python -m launch.build_data --input=zh.jsonl --vocab=vocab.txt --segmenter=jieba ...
UniLM seq2seq from JSON lines {"content": ..., "title": ...} (title generation):
    python -m launch.build_data --task=unilm --input=news.jsonl --source_field=content \
        --target_field=title --max_target_len=32 ...
UniLM from plain text (packed segments split at a random point), causal LM, SimBERT groups:
    python -m launch.build_data --task=unilm --unilm_from=text --input=corpus/*.txt ...
    python -m launch.build_data --task=lm --input=corpus/*.txt ...
    python -m launch.build_data --task=simbert --input=synonyms.jsonl ...   # {"text", "synonyms"}

Re-running the same command resumes an interrupted build (finished shards are kept) and does
nothing when the build is complete.
"""

import sys

from absl import app, flags

from data_pipeline import builder, sources, tasks
from launch import common
from data_pipeline.instances import InstanceConfig
from data_pipeline.masking import MaskingConfig

FLAGS = flags.FLAGS
flags.DEFINE_list("input", None, "Input files, globs (local or gs://), or tfds:NAME[/CONFIG][:VERSION].",
                  required=True)
flags.DEFINE_string("vocab", None, "vocab.txt (WordPiece) or *.model (SentencePiece).", required=True)
flags.DEFINE_string("output_dir", None, "Directory for shards and manifest.json (local or gs://).",
                    required=True)
flags.DEFINE_enum("task", "mlm", list(tasks.TASKS),
                  "mlm: masked LM (+NSP/SOP); unilm: seq2seq [CLS] source [SEP] target [SEP]; "
                  "simbert: synonym groups (pairs drawn by the loader each epoch); lm: packed "
                  "causal-LM streams.")
flags.DEFINE_enum("unilm_from", "fields", ["fields", "text"],
                  "unilm: source/target from JSON fields, or packed plain text split at a random "
                  "point inside its real length.")
flags.DEFINE_string("source_field", "source", "unilm: JSON field of the source text.")
flags.DEFINE_string("target_field", "target", "unilm: JSON field of the target text.")
flags.DEFINE_string("synonyms_field", "synonyms", "simbert: JSON field with the list of synonyms "
                    "(the group's first member is --text_field).")
flags.DEFINE_integer("max_source_len", None, "unilm: cut sources to this many tokens (sources are "
                     "always cut first to fit seq_len; cuts are counted).")
flags.DEFINE_integer("max_target_len", None, "unilm: cut targets to this many tokens (counted). "
                     "Without it a target that leaves no room for the source is a bad record.")
flags.DEFINE_enum("on_bad_record", "stop", ["stop", "skip"],
                  "unilm/simbert: a record with missing/empty fields, an over-long target, not JSON, "
                  "or duplicates only: stop with an error (nothing written) or skip and count it.")
flags.DEFINE_enum("mode", "dynamic", ["dynamic", "static"],
                  "dynamic: ids + word boundaries, masked by the loader each epoch; static: "
                  "dupe_factor masked copies in google-research/bert's layout.")
flags.DEFINE_enum("layout", "pack", ["pack", "pairs"],
                  "pack: RoBERTa-style sentences packed to seq_len; pairs: [CLS] A [SEP] B [SEP].")
flags.DEFINE_enum("sentence_task", "nsp", ["nsp", "sop"], "Label for --layout=pairs.")
flags.DEFINE_bool("cross_documents", False, "pack: let an instance span documents ([SEP] between).")
flags.DEFINE_integer("seq_len", 128, "Tokens per instance, [CLS]/[SEP] included.")
flags.DEFINE_float("masked_lm_prob", 0.15, "Fraction of tokens to predict.")
flags.DEFINE_integer("max_predictions_per_seq", 20, "Upper bound on predictions per instance.")
flags.DEFINE_float("short_seq_prob", 0.1, "pairs: probability of a shorter target length.")
flags.DEFINE_integer("dupe_factor", 5, "static: masked copies of every instance.")
flags.DEFINE_bool("lower_case", None, "Lower-case input (default: True for WordPiece, False for "
                  "SentencePiece).")
flags.DEFINE_string("segmenter", None, "Word segmenter for Chinese whole-word masking: jieba.")
flags.DEFINE_integer("seed", 12345, "Seed of everything random; same seed, same bytes.")
flags.DEFINE_integer("num_shards", 16, "Train shards (at most one per chunk of documents).")
flags.DEFINE_float("eval_fraction", 0.0, "Fraction of documents held out in the eval split.")
flags.DEFINE_integer("num_eval_shards", 1, "Eval shards.")
flags.DEFINE_integer("docs_per_chunk", 256, "Documents per unit of work (sets NSP's random-document "
                     "pool and the shuffle window; changing it changes the output).")
flags.DEFINE_integer("num_workers", 1, "Worker processes; the output is the same for any value.")
flags.DEFINE_bool("compress", False, "Write GZIP-compressed shards.")
flags.DEFINE_enum("input_format", "auto", ["auto", "text", "jsonl"],
                  "auto: .jsonl/.json(.gz) are JSON lines, anything else plain text.")
flags.DEFINE_string("text_field", "text", "JSON lines / TFDS field holding the text.")
flags.DEFINE_string("tfds_data_dir", None, "TFDS data directory for tfds: inputs.")
flags.DEFINE_string("tfds_split", "train", "TFDS split to read.")
flags.DEFINE_integer("max_document_chars", 1_000_000, "Longer documents (and lines) are cut.")
flags.DEFINE_bool("allow_empty_files", False, "Skip empty input files instead of failing.")
flags.DEFINE_float("max_bad_line_fraction", 0.01, "Fail when more lines than this are invalid "
                   "UTF-8 or JSON (fewer are skipped, counted and reported).")
flags.DEFINE_bool("overwrite", False, "Replace the shards of a different build in --output_dir.")
flags.DEFINE_bool("progress", True, "Show a progress line and a summary.")


def config_from_flags() -> builder.BuildConfig:
    source = sources.SourceConfig(
        inputs=tuple(FLAGS.input), input_format=FLAGS.input_format, text_field=FLAGS.text_field,
        tfds_data_dir=FLAGS.tfds_data_dir, tfds_split=FLAGS.tfds_split,
        max_document_chars=FLAGS.max_document_chars, allow_empty_files=FLAGS.allow_empty_files)
    return builder.BuildConfig(
        output_dir=FLAGS.output_dir, vocab=FLAGS.vocab, source=source,
        task=tasks.TaskConfig(
            task=FLAGS.task, unilm_from=FLAGS.unilm_from, source_field=FLAGS.source_field,
            target_field=FLAGS.target_field, synonyms_field=FLAGS.synonyms_field,
            max_source_len=FLAGS.max_source_len, max_target_len=FLAGS.max_target_len,
            on_bad_record=FLAGS.on_bad_record),
        instance=InstanceConfig(seq_len=FLAGS.seq_len, layout=FLAGS.layout,
                                cross_documents=FLAGS.cross_documents,
                                sentence_task=FLAGS.sentence_task, short_seq_prob=FLAGS.short_seq_prob),
        masking=MaskingConfig(masked_lm_prob=FLAGS.masked_lm_prob,
                              max_predictions=FLAGS.max_predictions_per_seq),
        mode=FLAGS.mode, dupe_factor=FLAGS.dupe_factor, lower_case=FLAGS.lower_case,
        segmenter=FLAGS.segmenter, seed=FLAGS.seed, num_shards=FLAGS.num_shards,
        eval_fraction=FLAGS.eval_fraction, num_eval_shards=FLAGS.num_eval_shards,
        docs_per_chunk=FLAGS.docs_per_chunk, num_workers=FLAGS.num_workers, compress=FLAGS.compress,
        max_bad_line_fraction=FLAGS.max_bad_line_fraction, overwrite=FLAGS.overwrite,
        progress=FLAGS.progress)


def main(argv):
    del argv
    try:
        config = config_from_flags()
        builder.build(config)
        common.record_command(config.output_dir, "launch.build_data")
    except (builder.BuildError, ValueError) as e:
        print("build_data: error: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    app.run(main)
