"""Downstream probes (config.probes): the labelled files, the host classifier and the trainer's
probe evaluations."""

import csv
import json
import os
import random
import re

import numpy as np
import pytest

from data_pipeline import sample_corpus
from data_pipeline.labelled import LabelledDataError, check_labels, read_labelled_csv
from pretrain import probes
from pretrain.rundir import RunDir
from pretrain.trainer import TrainError, Trainer
from tests.conftest import mirrored
from tests.pretrain.conftest import tiny_config


def _write(path, rows, header=("text", "label")):
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


# ---------------------------------------------------------------------------- labelled files

def test_bad_files_are_named_with_their_line(tmp_path):
    good = _write(tmp_path / "good.csv", [("a", "x"), ("b", "y")])
    assert [(r.line, r.text, r.label) for r in read_labelled_csv(good)] == [(2, "a", "x"), (3, "b", "y")]
    cases = {
        "missing.csv": ("", "missing.csv: cannot be read"),
        "empty.csv": ("", "empty.csv: the file is empty"),
        "header.csv": ("text,lable\na,x\n", "header.csv:1: no column 'label' (the header has: text, lable)"),
        "blank_label.csv": ("text,label\na,x\n\"two\nlines\",y\nc,\n", "blank_label.csv:5: empty label"),
        "fields.csv": ("text,label\na,x\nb,y,z\n", "fields.csv:3: 3 fields, the header has 2"),
        "latin1.csv": (b"text,label\na,x\n\xe9t\xe9,y\n", "latin1.csv:3: not UTF-8"),
        "quote.csv": ('text,label\na,x\n"b,y\n', "quote.csv:"),
        "no_rows.csv": ("text,label\n\n", "no_rows.csv: no rows after the header"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        if name != "missing.csv":
            path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        with pytest.raises(LabelledDataError) as e:
            read_labelled_csv(str(path))
        assert message in str(e.value), (name, str(e.value))
    pairs = _write(tmp_path / "pairs.csv", [("q", "a", "1")], ("question", "answer", "match"))
    assert read_labelled_csv(pairs, "question", "match", "answer")[0].text_b == "a"


def test_labels_need_two_classes_and_held_out_labels_seen_in_training(tmp_path):
    one = read_labelled_csv(_write(tmp_path / "one.csv", [("a", "x"), ("b", "x")]))
    with pytest.raises(LabelledDataError, match="one.csv: every row has the label 'x'"):
        check_labels(one, one, "one.csv", "one.csv")
    train = read_labelled_csv(_write(tmp_path / "t.csv", [("a", "x"), ("b", "y")]))
    held = read_labelled_csv(_write(tmp_path / "e.csv", [("a", "x"), ("c", "z")]))
    with pytest.raises(LabelledDataError, match=r"e.csv:3: label 'z' never occurs in t.csv"):
        check_labels(train, held, "t.csv", "e.csv")
    assert check_labels(train, train, "t.csv", "t.csv") == ["x", "y"]


# ------------------------------------------------------------------------------ the classifier

def test_the_fit_reaches_scipys_optimum():
    optimize = pytest.importorskip("scipy.optimize", reason="the reference optimizer is SciPy's L-BFGS")
    rng = np.random.default_rng(0)
    for n, d, c, l2 in [(200, 40, 2, 1e-2), (300, 48, 5, 1e-3), (150, 32, 3, 1e-1)]:
        x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.3
        y = rng.integers(0, c, n)
        x[:, :3] += y[:, None]
        (x,) = probes.standardise(x)
        w, b = probes.fit_softmax(x, y, c, l2)

        def f(p):
            weights = p[:d * c].reshape(d, c)
            value, dlogits = probes._cross_entropy(x @ weights + p[d * c:], y)
            grad = np.concatenate([(x.T @ dlogits + l2 * weights).ravel(), dlogits.sum(0)])
            return value + 0.5 * l2 * np.sum(weights ** 2), grad
        ref = optimize.minimize(f, np.zeros(d * c + c), jac=True, method="L-BFGS-B",
                                options=dict(maxiter=20000, maxfun=10 ** 6, ftol=1e-15, gtol=1e-10))
        assert probes.objective(x, y, w, b, l2) <= ref.fun * (1 + 1e-5) + 1e-9, (n, d, c, l2)


def test_scores_are_accuracy_and_macro_f1():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    s = probes.scores(y_true, y_pred, 3)
    f1 = [2 * 2 / (2 + 3), 2 * 1 / (2 + 2), 2 * 1 / (2 + 1)]
    assert s["accuracy"] == pytest.approx(4 / 6) and s["macro_f1"] == pytest.approx(np.mean(f1))


def test_random_labels_stay_at_chance_and_real_ones_are_learned():
    """The L2 is chosen on held-out train rows; the eval rows are only scored: with labels that
    have nothing to do with the features the probe cannot beat chance."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1400, 64))
    signal = (x[:, :4].sum(1) > 0).astype(int)
    noise = rng.integers(0, 2, 1400)
    real = probes.fit_and_score(x[:1000], signal[:1000], x[1000:], signal[1000:], 2, seed=0)
    chance = probes.fit_and_score(x[:1000], noise[:1000], x[1000:], noise[1000:], 2, seed=0)
    assert real["accuracy"] > 0.95
    assert abs(chance["accuracy"] - 0.5) < 0.08      # 400 rows: 3.2 standard deviations
    again = probes.fit_and_score(x[:1000], noise[:1000], x[1000:], noise[1000:], 2, seed=0)
    assert again == chance                             # seeded


def test_best_steps_name_the_best_and_the_last():
    rows = [{"split": "train", "step": 2, "loss": 1.0},
            {"split": "probe", "step": 0, "probe/s/accuracy": 0.5},
            {"split": "probe", "step": 2, "probe/s/accuracy": 0.8},
            {"split": "probe", "step": 4, "probe/s/accuracy": 0.8},
            {"split": "probe", "step": 6, "probe/s/accuracy": 0.7}]
    assert probes.best_steps(rows) == {"s": (0.8, 2, 0.7, 6)}


# --------------------------------------------------------------------------------- in a run

@pytest.fixture(scope="module")
def probe_files(tmp_path_factory):
    """A language probe (English or Chinese sentences: learnable from the first step) and the
    same texts with random labels, train and eval files of each."""
    d = tmp_path_factory.mktemp("probes")
    zh = [part for doc in sample_corpus.chinese_documents() for s in doc
          for part in re.split("[，。；：]", s) if len(part) >= 4]          # 32 clauses
    en = [doc[0] for doc in sample_corpus.english_documents()[:len(zh)]]
    rows = [(t, "en") for t in en] + [(t, "zh") for t in zh]
    random.Random(0).shuffle(rows)
    coin = random.Random(1)
    noise = [(t, coin.choice(["a", "b"])) for t, _ in rows]
    cut = len(rows) * 2 // 3
    return {"language": (_write(d / "lang_train.csv", rows[:cut]), _write(d / "lang_eval.csv", rows[cut:])),
            "noise": (_write(d / "noise_train.csv", noise[:cut]), _write(d / "noise_eval.csv", noise[cut:]))}


def _probe_config(mlm_data, probe_files, **train):
    c = tiny_config(mlm_data, **train)
    c.probes = [dict(name=name, train=tr, eval=ev, max_len=24) for name, (tr, ev) in probe_files.items()]
    return c


def test_a_run_scores_its_probes_from_step_0_and_names_the_best_step(mlm_data, probe_files, tmp_path, capsys):
    workdir = str(tmp_path / "run")
    result = Trainer(_probe_config(mlm_data, probe_files, steps=4, eval_every=2), workdir).train()
    rows = [r for r in RunDir(workdir).metrics_rows() if r["split"] == "probe"]
    assert [r["step"] for r in rows] == [0, 2, 4]
    for r in rows:
        assert r["probe/language/accuracy"] >= 0.8                # balanced: chance is 0.5
        assert 0 <= r["probe/language/macro_f1"] <= 1 and r["probe/seconds"] > 0
        assert abs(r["probe/noise/accuracy"] - 0.5) < 0.25      # 22 rows
    assert result.probe_metrics["probe/language/accuracy"] == rows[-1]["probe/language/accuracy"]
    best = max(rows, key=lambda r: (r["probe/language/accuracy"], -r["step"]))
    err = capsys.readouterr().err
    assert "probe language: best accuracy %.4f at step %d" % (
        best["probe/language/accuracy"], best["step"]) in err
    assert "probe at step 0: probe/language/accuracy" in err
    assert os.listdir(RunDir(workdir).tensorboard("probe"))
    saved = json.load(open(RunDir(workdir).config))
    assert [p["name"] for p in saved["probes"]] == ["language", "noise"]


def test_a_run_without_probes_writes_no_probe_key(mlm_data, tmp_path):
    """config.json keeps the bytes runs wrote before probes existed."""
    trainer = Trainer(tiny_config(mlm_data), str(tmp_path / "run"), progress=False)
    assert "probes" not in trainer.resolved_config() and trainer.probes == []


def test_bad_probe_files_fail_before_the_first_step(mlm_data, probe_files, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nfine,en\n,zh\n", encoding="utf-8")
    c = tiny_config(mlm_data)
    c.probes = [dict(name="language", train=probe_files["language"][0], eval=str(bad))]
    workdir = tmp_path / "run"
    with pytest.raises(TrainError, match=r"config.probes: probe 'language': .*bad.csv:3: empty text"):
        Trainer(c, str(workdir))
    assert not workdir.exists()
    c.probes = [dict(name="language", train=probe_files["language"][0], eval=probe_files["language"][1],
                     max_len=65)]
    with pytest.raises(TrainError, match="max_len 65 exceeds model.max_position_embeddings 64"):
        Trainer(c, str(workdir))
    c.probes = [dict(name="language", trian="x.csv")]
    with pytest.raises(TrainError, match=r"probes=.*\[0\].trian: no such field"):
        Trainer(c, str(workdir))


def test_features_are_the_same_on_two_replicas(mlm_data, probe_files, tmp_path):
    """The features come from the strategy's forward pass: two replicas give one replica's."""
    c = _probe_config(mlm_data, probe_files)
    one = Trainer(c, str(tmp_path / "one"), progress=False)
    two = Trainer(c, str(tmp_path / "two"), strategy=mirrored(2), progress=False)
    two.model.set_weights(one.model.get_weights())
    p = one.probes[0]
    features = one.probe_features(p.eval_ids[:11], p.eval_segments[:11])   # not a whole batch
    assert features.shape == (11, 2 * c.model.hidden_size)
    np.testing.assert_allclose(two.probe_features(p.eval_ids[:11], p.eval_segments[:11]), features,
                               rtol=1e-5, atol=1e-5)


def test_the_probe_flag_adds_entries_the_config_checks():
    from configs import base
    from pretrain import run_config

    parse_probe = run_config.probe_from_flag
    entry = parse_probe("sentiment=gs://b/train.csv,eval.csv,text=review,max_len=96")
    assert entry == {"name": "sentiment", "train": "gs://b/train.csv", "eval": "eval.csv",
                     "text": "review", "max_len": 96}
    c = base.get_config()
    c.probes = [entry, parse_probe("nli=t.csv,e.csv,text_b=hypothesis,lable=y")]
    with pytest.raises(run_config.ConfigError, match=r"\[1\].lable: no such field"):
        run_config.parse(c)
    for bad in ("sentiment", "sentiment=train.csv", "=a,b", "s=a,b,max_len"):
        with pytest.raises(ValueError, match="--probe=%s: " % re.escape(bad)):
            parse_probe(bad)


def test_a_probe_the_vocabulary_cannot_read_is_named_at_start_up(mlm_data, tmp_path, capsys):
    rows = [("สวัสดีครับ", "ab"[i % 2]) for i in range(8)]      # Thai: not in the test vocabulary
    c = tiny_config(mlm_data)
    c.probes = [dict(name="thai", train=_write(tmp_path / "t.csv", rows),
                     eval=_write(tmp_path / "e.csv", rows))]
    Trainer(c, str(tmp_path / "run"))
    err = capsys.readouterr().err
    assert "warning: " in err and "of the tokens of probe 'thai''s train rows are [UNK]" in err
