"""The Beam engine writes the local builder's bytes: every task and layout, on the FnApiRunner
and on the multi-processing DirectRunner, with corpus mixing and deduplication (both engines);
and it is all or nothing. The runner is always named: Beam's default would fetch a binary."""

import json
import os

import numpy as np
import pytest

# requirements.txt installs Apache Beam; the TPU VM environment (requirements-tpu.txt, .ci/run's
# second job) does not, and Beam builds run elsewhere (a workstation or Dataflow), never on the TPU.
pytest.importorskip("apache_beam", reason="Apache Beam is not installed (requirements.txt has it)")

from data_pipeline import beam_build, builder, sample_corpus, sources, tasks
from data_pipeline.build_config import BuildConfig, BuildError
from data_pipeline.instances import InstanceConfig
from data_pipeline.manifest import MANIFEST_FILE, Manifest

FN_API = "--runner=FnApiRunner"
DIRECT = "--runner=DirectRunner --direct_running_mode=multi_processing --direct_num_workers=2"


def _config(vocab, out, inputs, engine="local", runner=FN_API, seq_len=64, source=None, **kw):
    kw.setdefault("docs_per_chunk", 8)
    kw.setdefault("num_shards", 3)
    return BuildConfig(output_dir=str(out), vocab=vocab, progress=False, engine=engine,
                       beam_options=runner, instance=kw.pop("instance", InstanceConfig(seq_len=seq_len)),
                       source=sources.SourceConfig(inputs=tuple(str(i) for i in inputs), **(source or {})),
                       **kw)


def _same(local: Manifest, beam: Manifest):
    assert local.splits == beam.splits                     # files, examples, sizes, CRC32C
    for split in local.splits:
        for a, b in zip(local.paths(split), beam.paths(split)):
            assert open(a, "rb").read() == open(b, "rb").read(), b
    assert dict(local.stats, seconds=0) == dict(beam.stats, seconds=0)
    assert local.sources == beam.sources and local.fingerprint == beam.fingerprint


CASES = {
    "dynamic_pack": dict(eval_fraction=0.2),
    "static_pairs_nsp_gzip": dict(mode="static", dupe_factor=2, compress=True,
                                  instance=InstanceConfig(seq_len=64, layout="pairs")),
    "dynamic_pairs_sop": dict(instance=InstanceConfig(seq_len=64, layout="pairs", sentence_task="sop")),
    "static_pack_cross_documents": dict(mode="static", instance=InstanceConfig(seq_len=48, cross_documents=True)),
    "jieba": dict(segmenter="jieba", inputs=("zh.txt",)),
    "unilm_fields": dict(task=tasks.TaskConfig(task="unilm", max_target_len=20), inputs=("seq2seq",),
                         seq_len=96),
    "unilm_text": dict(task=tasks.TaskConfig(task="unilm", unilm_from="text")),
    "simbert": dict(task=tasks.TaskConfig(task="simbert"), inputs=("groups",)),
    "lm": dict(task=tasks.TaskConfig(task="lm"), eval_fraction=0.1),
    "mixed_dedup": dict(inputs=("a:en.txt:1.5", "b:zh.txt:0.5", "c:en.txt:1.0"),
                        source=dict(dedup="documents")),
}


def _inputs(case, corpus_dir, seq2seq_jsonl, groups_jsonl):
    named = {"seq2seq": seq2seq_jsonl, "groups": groups_jsonl}
    out = []
    for i in case.pop("inputs", ("en.txt", "zh.txt")):
        name, _, rest = i.partition(":") if i.count(":") == 2 else ("", "", i)
        path = named.get(rest.split(":")[0], str(corpus_dir / rest.split(":")[0]))
        out.append("%s:%s:%s" % (name, path, rest.split(":")[1]) if name else path)
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_beam_writes_the_bytes_of_the_local_builder(name, corpus_dir, wordpiece_vocab, seq2seq_jsonl,
                                                     groups_jsonl, tmp_path):
    case = dict(CASES[name])
    inputs = _inputs(case, corpus_dir, seq2seq_jsonl, groups_jsonl)
    local = builder.build(_config(wordpiece_vocab, tmp_path / "local", inputs, **case))
    beam = beam_build.build(_config(wordpiece_vocab, tmp_path / "beam", inputs, engine="beam", **case))
    _same(local, beam)


@pytest.mark.parametrize("name", ["static_pairs_nsp_gzip", "mixed_dedup"])
def test_the_multi_processing_direct_runner_too(name, corpus_dir, wordpiece_vocab, seq2seq_jsonl,
                                                groups_jsonl, tmp_path):
    case = dict(CASES[name])
    inputs = _inputs(case, corpus_dir, seq2seq_jsonl, groups_jsonl)
    local = builder.build(_config(wordpiece_vocab, tmp_path / "local", inputs, **case))
    beam = beam_build.build(_config(wordpiece_vocab, tmp_path / "beam", inputs, engine="beam",
                                    runner=DIRECT, **case))
    _same(local, beam)


def test_weights_repeat_or_sample_reproducibly_and_dedup_counts_exactly(corpus_dir, wordpiece_vocab,
                                                                         tmp_path):
    docs = sample_corpus.english_documents()
    sample_corpus.write_corpus(str(tmp_path / "a.txt"), docs[:80])
    # b: 15 of a's documents again (extra spaces, other Unicode normal form), then 25 of its own.
    again = [[s.replace(" ", "   ") + " " for s in d] for d in docs[:15]]
    sample_corpus.write_corpus(str(tmp_path / "b.txt"), again + docs[80:105])
    inputs = ["a:%s:2.0" % (tmp_path / "a.txt"), "b:%s:0.4" % (tmp_path / "b.txt")]
    m = builder.build(_config(wordpiece_vocab, tmp_path / "o1", inputs, source=dict(dedup="documents")))
    a, b = m.sources
    assert (a["documents_read"], a["duplicates_dropped"], a["documents"]) == (80, 0, 80)
    assert (b["documents_read"], b["duplicates_dropped"], b["documents"]) == (40, 15, 25)
    assert a["documents_after_weighting"] == 160 and a["tokens_after_weighting"] == 2 * a["tokens_before_weighting"]
    assert 3 <= b["documents_after_weighting"] <= 17          # 25 x 0.4 = 10 expected
    assert 0 < b["tokens_after_weighting"] < b["tokens_before_weighting"]
    again = builder.build(_config(wordpiece_vocab, tmp_path / "o2", inputs, source=dict(dedup="documents")))
    assert again.splits == m.splits and again.sources == m.sources            # same seed, same draw
    other = builder.build(_config(wordpiece_vocab, tmp_path / "o3", inputs, seed=7,
                                  source=dict(dedup="documents")))
    assert other.splits["train"].shards != m.splits["train"].shards
    many = builder.build(_config(wordpiece_vocab, tmp_path / "o4", ["b:%s:0.4" % (tmp_path / "a.txt")] * 1
                                 + ["c:%s:0.25" % (tmp_path / "b.txt")]))
    drawn = [s["documents_after_weighting"] / s["documents"] for s in many.sources]
    assert abs(drawn[0] - 0.4) < 0.15 and abs(drawn[1] - 0.25) < 0.2


def test_copies_draw_different_masks_in_static_mode(corpus_dir, wordpiece_vocab, tmp_path):
    import tensorflow as tf

    m = builder.build(_config(wordpiece_vocab, tmp_path / "o", ["a:%s:2.0" % (corpus_dir / "en.txt")],
                              mode="static", dupe_factor=1, num_shards=1))
    spec = {"input_ids": tf.io.FixedLenFeature([64], tf.int64),
            "masked_lm_positions": tf.io.FixedLenFeature([20], tf.int64),
            "masked_lm_ids": tf.io.FixedLenFeature([20], tf.int64)}
    seen = {}
    for record in tf.data.TFRecordDataset(m.paths("train")):
        ex = {k: v.numpy() for k, v in tf.io.parse_single_example(record, spec).items()}
        ids = ex["input_ids"].copy()
        real = ex["masked_lm_ids"] > 0
        ids[ex["masked_lm_positions"][real]] = ex["masked_lm_ids"][real]
        seen.setdefault(tuple(ids), []).append(tuple(ex["masked_lm_positions"]))
    pairs = [masks for masks in seen.values() if len(masks) == 2]
    assert len(pairs) > 50
    assert sum(a != b for a, b in pairs) > 0.9 * len(pairs)


def test_a_failed_pipeline_leaves_no_manifest_and_no_shard(wordpiece_vocab, tmp_path):
    good = {"source": "the pipeline builds shards", "target": "shards"}
    records = [good] * 20 + [{"source": "\u200b\u200b", "target": "a title"}] + [good] * 5
    path = sample_corpus.write_jsonl(str(tmp_path / "bad.jsonl"), records)
    config = _config(wordpiece_vocab, tmp_path / "out", [path], engine="beam", seq_len=32,
                     task=tasks.TaskConfig(task="unilm"))
    with pytest.raises(BuildError, match="1 bad record.*bad.jsonl:21 the source has no tokens"):
        beam_build.build(config)
    assert os.listdir(tmp_path / "out") == []                 # nothing: no shard, no work files
    with pytest.raises(BuildError, match="1 bad records .*bad2.jsonl:3 no 'target' field"):
        beam_build.build(_config(wordpiece_vocab, tmp_path / "out2", [sample_corpus.write_jsonl(
            str(tmp_path / "bad2.jsonl"), [good, good, {"source": "x"}])], engine="beam", seq_len=32,
            task=tasks.TaskConfig(task="unilm")))
    assert os.listdir(tmp_path / "out2") == []


def test_rerunning_finishes_or_does_nothing_and_another_build_is_refused(corpus_dir, wordpiece_vocab,
                                                                         tmp_path):
    inputs = [corpus_dir / "en.txt"]
    config = _config(wordpiece_vocab, tmp_path / "out", inputs, engine="beam")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".beam-work").mkdir()                  # left by a killed launcher
    first = beam_build.build(config)
    stamp = os.path.getmtime(tmp_path / "out" / MANIFEST_FILE)
    assert beam_build.build(config) == first                   # complete: nothing to do
    assert os.path.getmtime(tmp_path / "out" / MANIFEST_FILE) == stamp
    assert sorted(os.listdir(tmp_path / "out")) == sorted(first.splits["train"].files + [MANIFEST_FILE])
    with pytest.raises(BuildError, match="already holds shards of a different build"):
        beam_build.build(_config(wordpiece_vocab, tmp_path / "out", inputs, engine="beam", seed=3))
    with pytest.raises(BuildError, match="--beam_options must name the runner"):
        beam_build.build(_config(wordpiece_vocab, tmp_path / "o2", inputs, engine="beam", runner=""))
    json.dumps(first.to_dict())


def test_the_launcher_runs_the_beam_engine(corpus_dir, wordpiece_vocab, tmp_path):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, "-m", "launch.build_data", "--input=%s" % (corpus_dir / "en.txt"),
                           "--vocab=%s" % wordpiece_vocab, "--output_dir=%s" % (tmp_path / "o"),
                           "--engine=beam", "--beam_options=%s" % FN_API, "--seq_len=64"],
                          cwd=root, env=dict(os.environ, PYTHONPATH=root), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Beam metrics: bytes" in done.stderr and "Built %s" % (tmp_path / "o") in done.stderr
    assert np.isfinite(Manifest.load(str(tmp_path / "o")).splits["train"].examples)


@pytest.mark.parametrize("options,message", [
    (FN_API + " --direct_num_worker=2",
     "--beam_options: unknown Beam option --direct_num_worker=2 (check its spelling"),
    (DIRECT.replace("=2", "=two"),
     "--beam_options: argument --direct_num_workers: invalid int value: 'two'"),
    ("--runner=DirectRunner --direct_running_mode=fast",
     "--beam_options: argument --direct_running_mode: invalid choice: 'fast'"),
])
def test_beam_options_are_checked_in_one_line_before_the_pipeline(corpus_dir, wordpiece_vocab, tmp_path,
                                                                  options, message):
    """Beam ignores an option it does not know and answers a bad value with 137 lines of usage and
    an exit: both are one line here, before anything is read or written."""
    import subprocess
    import sys

    with pytest.raises(BuildError) as e:
        beam_build._pipeline_options(options)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, "-m", "launch.build_data", "--input=%s" % (corpus_dir / "en.txt"),
                           "--vocab=%s" % wordpiece_vocab, "--output_dir=%s" % (tmp_path / "o"),
                           "--engine=beam", "--beam_options=%s" % options],
                          cwd=root, env=dict(os.environ, PYTHONPATH=root), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2 and done.stderr.splitlines() == ["build_data: error: " + str(e.value)], \
        done.stderr[-3000:]
    assert not os.path.exists(tmp_path / "o")
