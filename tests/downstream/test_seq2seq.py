"""Seq2seq end to end: a UniLM fine-tuned on a copy task built from the project's text generates
held-out targets exactly (greedy in the fine-tuning report, beam search through launch.generate);
the fine-tuning CLI on the pipeline's own export; the generation CLI's refusals; the metrics."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from data_pipeline import sample_corpus
from launch import common
from downstream import load_finetune_tokenizer, seq2seq, text_metrics
from downstream.generation import prefixes
from pretrain.export_dir import ExportDir
from downstream.seq2seq import Seq2SeqData
from tests.tf_noise import env_without_log_level, start_up_noise

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cli(*args, expect=0):
    """Runs an entry point as a user's shell does (no TF_CPP_MIN_LOG_LEVEL): it exits `expect`
    and prints none of TensorFlow's start-up noise."""
    done = subprocess.run([sys.executable, "-m"] + list(args), cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=env_without_log_level(PYTHONPATH=ROOT))
    assert done.returncode == expect, "%s exited %d:\n%s" % (args[0], done.returncode, done.stderr[-3000:])
    assert not start_up_noise(done.stderr), start_up_noise(done.stderr)
    return done


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_finetuned_unilm_reproduces_held_out_targets(copy_model, tmp_path):
    export, result, held = copy_model
    # Greedy decoding of the held-out sources during fine-tuning's evaluation: exact copies.
    assert result["model"]["rougeL"] == 100.0 and result["model"]["bleu"] == pytest.approx(100.0)
    wrong = [(g, r) for _, g, r in result["samples"] if g != r]
    assert not wrong, "generated != reference: %r" % wrong
    manifest = json.load(open(os.path.join(export, "export_manifest.json")))
    assert manifest["task"] == "unilm" and manifest["metrics"]["eval"]["rougeL"] == 100.0
    # Beam search through the CLI, on the saved export: every held-out target, finished with [SEP].
    source = write_jsonl(tmp_path / "held.jsonl", [{"text": s} for s, _ in held])
    cli("launch.generate", "--export=%s" % export, "--input=%s" % source, "--output=%s" % (tmp_path / "out.jsonl"),
        "--strategy=beam", "--beam_size=3", "--max_len=10")
    out = [json.loads(line) for line in open(tmp_path / "out.jsonl")]
    assert [r["line"] for r in out] == list(range(1, len(held) + 1))
    assert [r["generated"] for r in out] == [t for _, t in held]
    assert [r["finished"] for r in out] == [True] * len(held) and all(r["score"] < 0 for r in out)


def test_finetune_cli_on_the_pipeline_export(exported, tmp_path):
    """launch.finetune_seq2seq on the project's sample pairs, from the pretraining pipeline's
    export: a new export with trained weights, and scores next to the lead baseline."""
    output, metrics = tmp_path / "titles", tmp_path / "metrics.json"
    done = cli("launch.finetune_seq2seq", "--write_sample_data=%s" % (tmp_path / "pairs"),
               "--export=%s" % exported, "--train=%s" % (tmp_path / "pairs" / "train.jsonl"),
               "--eval=%s" % (tmp_path / "pairs" / "eval.jsonl"), "--output=%s" % output, "--epochs=1",
               "--learning_rate=1e-3", "--max_source_len=24", "--max_target_len=12",
               "--metrics_json=%s" % metrics)
    pairs = len(sample_corpus.seq2seq_records())
    held = max(1, int(pairs * 0.1))
    assert "eval (%d pairs, greedy): ROUGE-1" % held in done.stdout and "lead-" in done.stdout
    result = json.load(open(metrics))
    assert result["train_pairs"] == pairs - held and result["eval_pairs"] == held
    for scores in (result["model"], result["lead"]):
        assert all(0.0 <= scores[k] <= 100.0 for k in ("rouge1", "rouge2", "rougeL", "bleu"))
    assert result["lead"]["rouge1"] > 0      # the first words of a document do overlap its first sentence
    name = "bert/embeddings/word_embeddings"
    before, after = (tf.train.load_variable(ExportDir(d).prefix, name) for d in (exported, str(output)))
    assert before.shape == after.shape and np.abs(after - before).max() > 1e-4
    manifest = json.load(open(output / "export_manifest.json"))
    assert manifest["run_config"]["settings"]["epochs"] == 1 and "launch.finetune_seq2seq" in \
        manifest["run_config"]["settings"]["command"]
    # A run whose eval decodes adds its scores to the export's metrics; covered text gives no [UNK]
    # warning (the Korean pairs of the next test do).
    assert {"train", "eval", "eval_lead_%d" % result["lead_n"]} <= set(manifest["metrics"]), \
        manifest["metrics"]
    assert "[UNK]" not in done.stderr, done.stderr[-2000:]
    cli("launch.finetune_seq2seq", "--export=%s" % exported, "--train=%s" % (tmp_path / "pairs" / "train.jsonl"),
        "--eval=%s" % (tmp_path / "pairs" / "eval.jsonl"), "--output=%s" % output, expect=2)


def test_finetune_checks_its_flags_before_training_and_saves_before_decoding(exported, tmp_path, monkeypatch):
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(pairs, [{"source": "the loader reads shards", "target": "shards"}] * 4)
    done = cli("launch.finetune_seq2seq", "--export=%s" % exported, "--train=%s" % pairs, "--eval=%s" % pairs,
               "--output=%s" % (tmp_path / "out"), "--strategy=beam", "--beam_size=0", "--epochs=0", expect=2)
    assert "--epochs=0: must be an integer >= 1; --beam_size=0: must be an integer >= 1" in done.stderr
    assert "fine-tuning" not in done.stderr and not (tmp_path / "out").exists()
    train = [("the loader reads shards", "shards")] * 4
    with pytest.raises(ValueError, match="beam_size >= 1"):          # the library call too
        seq2seq.finetune(exported, train, train, str(tmp_path / "out"), strategy="beam", beam_size=0,
                         log=lambda text: None)
    assert not (tmp_path / "out").exists()

    def broken(*args, **kwargs):
        raise RuntimeError("the eval decoding failed")

    logs = []
    # Korean under the tests' English + Chinese vocabulary: every word is [UNK], which it warns of.
    korean = [("안녕하세요 세계 좋은 아침", "안녕하세요 세계")] * 4
    with monkeypatch.context() as m:   # the trained model is saved before the eval decodes
        m.setattr(seq2seq, "evaluate", broken)
        with pytest.raises(RuntimeError, match="the eval decoding failed"):
            seq2seq.finetune(exported, korean, korean, str(tmp_path / "out"), max_source_len=8,
                             max_target_len=4, epochs=1, log=logs.append)
    manifest = json.load(open(tmp_path / "out" / "export_manifest.json"))
    assert manifest["task"] == "unilm" and set(manifest["metrics"]) == {"train"}
    assert any("of the tokens of the training pairs are [UNK]" in line for line in logs), logs
    # That a run whose eval succeeds adds its scores, without the warning on covered text, is
    # checked on the command's run above (test_finetune_cli_on_the_pipeline_export).


def test_bad_input_lines_are_named(tmp_path, exported):
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "fine"}\n\n{"title": "no text"}\n')
    with pytest.raises(ValueError, match=r"in.jsonl:3: no field 'text' \(the line has 'title'\)"):
        common.read_jsonl(str(path), ("text",))
    path.write_text('{"text": "fine"}\n{"text": 3}\n')
    with pytest.raises(ValueError, match=r"in.jsonl:2: field 'text' must be a non-empty string, not 3"):
        common.read_jsonl(str(path), ("text",))
    path.write_text('{"text": "fine"}\n["a list"]\nnot json\n')
    with pytest.raises(ValueError, match=r"in.jsonl:2: a JSON list, not an object"):
        common.read_jsonl(str(path), ("text",))
    tokenizer = load_finetune_tokenizer(ExportDir(exported).vocab_path)
    records = [(1, "short"), (4, " ".join(["masking"] * 60))]
    with pytest.raises(ValueError, match=r"in.jsonl:4: the source makes a 62-token prefix; with --max_len=16 "
                                         r"that needs 78 positions, but the model has "
                                         r"max_position_embeddings=64. Pass --max_source_len=46"):
        prefixes(tokenizer, records, "unilm", 16, 64, path="in.jsonl")
    assert [len(p) for p in prefixes(tokenizer, records, "unilm", 16, 64, 46)] == [3, 48]
    assert prefixes(tokenizer, records, "lm", 16, 64, 46)[0] == [
        tokenizer.special_ids.sep] + tokenizer.encode("short")[0][1:-1]
    path.write_text('{"text": "fine"}\nnot json\n')
    done = cli("launch.generate", "--export=%s" % exported, "--input=%s" % path,
               "--output=%s" % (tmp_path / "out.jsonl"), expect=2)
    assert "in.jsonl:2: not JSON" in done.stderr and not (tmp_path / "out.jsonl").exists()


def test_generate_refuses_bad_flags_input_exports_and_outputs_before_decoding(tmp_path, exported):
    source = write_jsonl(tmp_path / "in.jsonl", [{"text": "the loader reads shards"}])
    out = tmp_path / "out.jsonl"
    common_args = ["launch.generate", "--export=%s" % exported, "--input=%s" % source]
    for flags, message in ((["--top_p=1.5", "--num_samples=0"], "--top_p=1.5: must be in (0.0, 1.0]; "
                                                               "--num_samples=0: must be an integer >= 1"),
                           (["--top_p=0"], "--top_p=0.0: must be in (0.0, 1.0]"),
                           (["--temperature=0", "--beam_size=0"], "--beam_size=0: must be an integer >= 1; "
                                                                  "--temperature=0.0: must be in (0.0, inf]"),
                           (["--min_len=40", "--max_len=8"], "--min_len=40 exceeds --max_len=8")):
        done = cli(*common_args, "--output=%s" % out, *flags, expect=2)
        assert message in done.stderr and "Traceback" not in done.stderr, done.stderr
    # Not UTF-8: the file and line are named, before the model loads.
    (tmp_path / "latin1.jsonl").write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    done = cli("launch.generate", "--export=%s" % exported, "--input=%s" % (tmp_path / "latin1.jsonl"),
               "--output=%s" % out, expect=2)
    assert "latin1.jsonl:2: not UTF-8 text (byte 0xe9 at column 14)" in done.stderr, done.stderr
    # An output directory that is missing, or a file: refused before the model loads, nothing left.
    (tmp_path / "a_file").write_text("")
    for bad in (tmp_path / "missing" / "out.jsonl", tmp_path / "a_file" / "out.jsonl"):
        done = cli(*common_args, "--output=%s" % bad, expect=2)
        assert "cannot write --output=%s: " % bad in done.stderr and "Traceback" not in done.stderr
    assert sorted(os.listdir(tmp_path)) == ["a_file", "in.jsonl", "latin1.jsonl"]
    # An MLM-only export: synonyms are refused, generation warns that it will babble.
    done = cli(*common_args, "--output=%s" % out, "--mode=synonyms", expect=2)
    assert "--mode=synonyms needs a SimBERT export with a trained pooler" in done.stderr
    done = cli(*common_args, "--output=%s" % out, "--strategy=sample", "--num_samples=20", "--batch_size=4",
               "--max_len=4")
    assert "is an MLM-only export (task mlm), neither an LM nor a UniLM" in done.stderr
    [record] = [json.loads(line) for line in open(out)]
    assert len(record["samples"]) == 20 and not [n for n in os.listdir(tmp_path) if ".tmp" in n]


def test_rows_weight_only_target_tokens(exported):
    tokenizer = load_finetune_tokenizer(ExportDir(exported).vocab_path)
    data = Seq2SeqData(tokenizer, max_source_len=4, max_target_len=3)
    [ids, segments], targets, weights = data.training_arrays(
        [("the loader reads shards every epoch", "masks are new"), ("数据", "分片很好")])
    sep, cls = tokenizer.special_ids.sep, tokenizer.special_ids.cls
    source, target = tokenizer.encode("the loader reads shards")[0], tokenizer.encode("masks are new")[0]
    assert ids[0].tolist() == source + target[1:]                       # cut to 4 and 3 tokens
    assert ids[0, 0] == cls and segments[0].tolist() == [0] * 6 + [1] * 4
    assert targets[0, :-1].tolist() == ids[0, 1:].tolist()              # position i predicts i + 1
    assert weights[0].tolist() == [0] * 5 + [1] * 4 + [0]              # the target and its [SEP]
    assert ids[1, -1] == tokenizer.special_ids.pad and weights[1].sum() == 4 and ids[1].tolist().count(sep) == 2


def test_metrics_count_characters_for_chinese_and_words_for_english():
    assert text_metrics.tokens("The loader, 数据分片!") == ["the", "loader", "数", "据", "分", "片"]
    perfect = text_metrics.scores(["数据分片", "the loader reads shards"],
                                  ["数据分片", "The loader reads shards."])
    assert perfect == {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0, "bleu": 100.0, "pairs": 2}
    half = text_metrics.scores(["数据"], ["数据分片"])
    assert half["rouge1"] == pytest.approx(100 * 2 * 1.0 * 0.5 / 1.5, abs=0.01)   # P 1, R 0.5
    assert text_metrics.lead("数据分片 in shards", 3) == "数 据 分"
    assert text_metrics.lead_length(["a b", "c d e f"]) == 3
