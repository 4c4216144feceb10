r"""Builds sharded pretraining TFRecords (+ manifest.json) from raw text.

Recipes are configs (configs/data/*.py, each docstring says what it makes); any field can be set
with --config.<field>=<value>, and the flags below are shortcuts for the common ones:
    python -m launch.build_data --config=configs/data/wiki_pairs.py --input='wiki/*.txt' \
        --vocab=vocab/vocab.txt --output_dir=data/wiki_pairs_128 --num_workers=16
Without --config, configs/data/base.py (dynamic masking, packing, seq 128):
    python -m launch.build_data --input='corpus/*.txt' --vocab=vocab/vocab.txt \
        --output_dir=data/wiki_128 --seq_len=128 --num_workers=2
Google layout with static masks (feeds google-research/bert and Model Garden unchanged):
    python -m launch.build_data --mode=static --layout=pairs --dupe_factor=5 ...
Chinese whole-word masking:
    python -m launch.build_data --config=configs/data/zh_wwm.py --input=zh.jsonl --vocab=vocab.txt ...
UniLM seq2seq from JSON lines {"content": ..., "title": ...} (title generation):
    python -m launch.build_data --task=unilm --input=news.jsonl --source_field=content \
        --target_field=title --max_target_len=32 ...
UniLM from plain text (packed segments split at a random point), causal LM, SimBERT groups:
    python -m launch.build_data --task=unilm --unilm_from=text --input=corpus/*.txt ...
    python -m launch.build_data --task=lm --input=corpus/*.txt ...
    python -m launch.build_data --task=simbert --input=synonyms.jsonl ...   # {"text", "synonyms"}
Several corpora mixed by weight, exact duplicates dropped, on Apache Beam:
    python -m launch.build_data --input=wiki:wiki/*.txt:1.0,books:books/*.txt:2.0 --dedup=documents \
        --engine=beam --beam_options="--runner=DataflowRunner --project=P --region=R ..." ...

Re-running the same command resumes an interrupted build (finished shards are kept) and does
nothing when the build is complete. Exit 2 on bad settings, inputs or output, with one line
saying which.
"""

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from data_pipeline import build_config, sources
from launch import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
try:
    config_flags.DEFINE_config_file("config", os.path.join(ROOT, "configs", "data", "base.py"),
                                    "Data-build config (configs/data/*.py); fields can be set with "
                                    "--config.<field>=<value>.")
except (AttributeError, KeyError) as e:   # ml_collections applies --config.x overrides of the
    # default config as the flag is defined, before any parser can report them
    print("build_data: error: %s" % common.no_such_field(sys.argv, e, config=build_config.to_config_dict()),
          file=sys.stderr)
    sys.exit(2)

# Shortcut flag -> (config field, help). A shortcut given on the command line overrides the
# config file and its --config.* overrides; its default is the config's (configs/data/base.py).
SHORTCUTS = {
    "input": ("source.inputs", "Input files, globs (local or gs://), or tfds:NAME[/CONFIG][:VERSION]; "
              "NAME:PATTERN:WEIGHT mixes sources (a weight above 1 repeats a source's documents, "
              "below 1 samples them). " + sources.NAMES_HELP),
    "vocab": ("vocab", "vocab.txt (WordPiece) or *.model (SentencePiece)."),
    "output_dir": ("output_dir", "Directory for shards and manifest.json (local or gs://)."),
    "task": ("task.task", "mlm: masked LM (+NSP/SOP); unilm: seq2seq [CLS] source [SEP] target "
             "[SEP]; simbert: synonym groups (pairs drawn by the loader each epoch); lm: packed "
             "causal-LM streams."),
    "unilm_from": ("task.unilm_from", "unilm: source/target from JSON fields, or packed plain text "
                   "split at a random point inside its real length (fields | text)."),
    "source_field": ("task.source_field", "unilm: JSON field of the source text."),
    "target_field": ("task.target_field", "unilm: JSON field of the target text."),
    "synonyms_field": ("task.synonyms_field", "simbert: JSON field with the list of synonyms (the "
                       "group's first member is --text_field)."),
    "max_source_len": ("task.max_source_len", "unilm: cut sources to this many tokens (sources are "
                       "always cut first to fit seq_len; cuts are counted)."),
    "max_target_len": ("task.max_target_len", "unilm: cut targets to this many tokens (counted). "
                       "Without it a target that leaves no room for the source is a bad record."),
    "on_bad_record": ("task.on_bad_record", "unilm/simbert: a record with missing/empty fields, an "
                      "over-long target, not JSON, or duplicates only: stop (nothing written) or skip "
                      "and count it."),
    "mode": ("mode", "dynamic: ids + word boundaries, masked by the loader each epoch; static: "
             "dupe_factor masked copies in google-research/bert's layout."),
    "layout": ("instance.layout", "pack: RoBERTa-style sentences packed to seq_len; pairs: [CLS] A "
               "[SEP] B [SEP]."),
    "sentence_task": ("instance.sentence_task", "Label for --layout=pairs: nsp | sop."),
    "cross_documents": ("instance.cross_documents", "pack: let an instance span documents ([SEP] "
                        "between)."),
    "seq_len": ("instance.seq_len", "Tokens per instance, [CLS]/[SEP] included."),
    "masked_lm_prob": ("masking.masked_lm_prob", "Fraction of tokens to predict."),
    "max_predictions_per_seq": ("masking.max_predictions", "Upper bound on predictions per instance."),
    "short_seq_prob": ("instance.short_seq_prob", "pairs: probability of a shorter target length."),
    "dupe_factor": ("dupe_factor", "static: masked copies of every instance."),
    "lower_case": ("lower_case", "Lower-case input (default: True for WordPiece, False for "
                   "SentencePiece)."),
    "segmenter": ("segmenter", "Word segmenter for Chinese whole-word masking: rjieba (jieba's "
                  "words, fast), jieba (the reference) or jieba_fast."),
    "seed": ("seed", "Seed of everything random; same seed, same bytes."),
    "num_shards": ("num_shards", "Train shards (at most one per chunk of documents)."),
    "eval_fraction": ("eval_fraction", "Fraction of documents held out in the eval split."),
    "num_eval_shards": ("num_eval_shards", "Eval shards."),
    "docs_per_chunk": ("docs_per_chunk", "Documents per unit of work (sets NSP's random-document pool "
                       "and the shuffle window; changing it changes the output)."),
    "num_workers": ("num_workers", "Worker processes (local engine; Beam: its options); the output "
                    "is the same for any value."),
    "compress": ("compress", "Write GZIP-compressed shards."),
    "input_format": ("source.input_format", "auto: .jsonl/.json(.gz) are JSON lines, anything else "
                     "plain text (auto | text | jsonl)."),
    "text_field": ("source.text_field", "JSON lines / TFDS field holding the text."),
    "tfds_data_dir": ("source.tfds_data_dir", "TFDS data directory for tfds: inputs."),
    "tfds_split": ("source.tfds_split", "TFDS split to read."),
    "max_document_chars": ("source.max_document_chars", "Longer documents (and lines) are cut."),
    "allow_empty_files": ("source.allow_empty_files", "Skip empty input files instead of failing."),
    "dedup": ("source.dedup", "documents: drop documents whose normalised text (NFC, whitespace "
              "collapsed) was seen before, keeping the first in input order (counted per source)."),
    "max_bad_line_fraction": ("max_bad_line_fraction", "Fail when more lines than this are invalid "
                              "UTF-8 or JSON (fewer are skipped, counted and reported)."),
    "overwrite": ("overwrite", "Replace the shards of a different build in --output_dir."),
    "progress": ("progress", "Show a progress line and a summary."),
    "engine": ("engine", "local: processes on this machine; beam: an Apache Beam pipeline (same "
               "bytes), --beam_options names the runner."),
    "beam_options": ("beam_options", "--engine=beam: Beam pipeline options in one string, e.g. "
                     "\"--runner=FnApiRunner\" or \"--runner=DataflowRunner --project=P --region=R "
                     "--temp_location=gs://b/tmp --setup_file=./setup.py\"."),
}


def _define_shortcuts():
    """One flag per SHORTCUTS entry, typed like its config field; default None = not given."""
    defaults = build_config.to_config_dict()
    define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
              str: flags.DEFINE_string, list: flags.DEFINE_list}
    for name, (path, help_text) in SHORTCUTS.items():
        section, _, field = path.rpartition(".")
        holder = defaults[section] if section else defaults
        value, kind = holder[field], holder.get_type(field)
        define[kind](name, None, "%s (config field %s; default %r)" % (help_text, path, value))


_define_shortcuts()


def config_from_flags() -> build_config.BuildConfig:
    """The config file with its --config.* overrides, then the shortcut flags given."""
    cd = FLAGS.config
    for name, (path, _) in SHORTCUTS.items():
        if FLAGS[name].present:
            section, _, field = path.rpartition(".")
            target = cd[section] if section else cd
            value = FLAGS[name].value
            target[field] = list(value) if isinstance(value, (list, tuple)) else value
    config = build_config.from_config_dict(cd)
    build_config.validate(config)
    return config


def main(argv):
    del argv
    try:
        config = config_from_flags()
        if config.engine == "beam":
            from data_pipeline import beam_build
            beam_build.build(config)
        else:
            from data_pipeline import builder
            builder.build(config)
        common.record_command(config.output_dir, "launch.build_data")
    except (build_config.BuildError, ValueError, TypeError) as e:
        print("build_data: error: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=common.parse_flags("build_data"))
