"""HF transformers directories (pretrain.hf_format): exact round trips, one clear error per bad
input, and interop with the real transformers 5 in a separate environment.

The interop tests run tests/export/hf_check.py with the Python named by BERT_HF_PYTHON (default
/tmp/bert-tf-pretrain-hf/bin/python), which needs torch and transformers but not TensorFlow. They
are skipped, saying how to create it, where there is none.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from data_pipeline import vocab as vocab_builder
from downstream import build_transformer_model, load_finetune_tokenizer
from pretrain import google_checkpoint, hf_format
from pretrain.export_dir import ExportDir
from pretrain.hf_format import HFFormatError
from pretrain.modeling import BertConfig, build_model, google_variables
from tests.tolerances import PROBABILITY

HERE = os.path.dirname(os.path.abspath(__file__))
HF_PYTHON = os.environ.get("BERT_HF_PYTHON", "/tmp/bert-tf-pretrain-hf/bin/python")
HF_SETUP = ("python -m venv /tmp/bert-tf-pretrain-hf && /tmp/bert-tf-pretrain-hf/bin/pip install "
            "-r requirements-interop.txt (PyTorch's CPU build: --extra-index-url "
            "https://download.pytorch.org/whl/cpu)")
SENTENCES = [("The quick brown fox jumps over the lazy dog.", None),
             ("我们喜欢自然语言处理，今天天气很好。", None),
             ("Café Müller sagt: 北京欢迎你！（ＦＵＬＬ－ＷＩＤＴＨ）naïve résumé.", None),
             ("How are you today?", "我很好，谢谢！")]


def export_contents(directory):
    """(values {Google name: array}, BertConfig, vocab path, lower_case) of an export directory."""
    export = ExportDir(directory)
    values = {name: export.reader.get_tensor(name) for name in export.variables}
    return values, export.config, export.require_vocab(), export.lower_case


def with_nsp(values, config, seed=0):
    rng = np.random.default_rng(seed)
    return dict(values, **{"cls/seq_relationship/output_weights":
                           rng.normal(size=(2, config.hidden_size)).astype(np.float32),
                           "cls/seq_relationship/output_bias": rng.normal(size=2).astype(np.float32)})


def assert_same_values(a, b):
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == np.float32 and a[name].shape == b[name].shape, name
        assert np.array_equal(a[name], b[name]), name


# ------------------------------------------------------------------------------- round trips

def test_google_to_hf_to_google_is_exact(exported):
    values, config, _, _ = export_contents(exported)
    for given in (values, with_nsp(values, config)):
        tensors = hf_format.to_hf(given, config)
        assert "bert.encoder.layer.1.attention.self.query.weight" in tensors
        assert "cls.predictions.decoder.weight" not in tensors   # tied: transformers leaves it out
        np.testing.assert_array_equal(tensors["bert.encoder.layer.0.intermediate.dense.weight"],
                                      given["bert/encoder/layer_0/intermediate/dense/kernel"].T)
        architecture = hf_format.architecture_for("mlm", "cls/seq_relationship/output_bias" in given)
        back, back_config = hf_format.from_hf(tensors, hf_format.hf_config(config, architecture))
        assert_same_values(back, given)
        assert back_config == config


def test_hf_config_fields():
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, hidden_act="gelu_new")
    assert hf_format.architecture_for("mlm", True) == "BertForPreTraining"
    assert hf_format.architecture_for("unilm", False) == "BertForMaskedLM"
    d = hf_format.hf_config(config, hf_format.architecture_for("lm", False), pad_token_id=3)
    assert d["architectures"] == ["BertLMHeadModel"] and d["is_decoder"] is True
    assert (d["model_type"], d["hidden_act"], d["layer_norm_eps"], d["pad_token_id"]) == \
        ("bert", "gelu_new", 1e-12, 3)
    assert hf_format.hf_config(config, "BertForMaskedLM")["is_decoder"] is False
    assert hf_format.config_from_hf(dict(d, hidden_act="gelu_pytorch_tanh")).hidden_act == "gelu_new"


def test_write_and_read_a_directory(exported, tmp_path):
    values, config, vocab, lower_case = export_contents(exported)
    out = str(tmp_path / "hf")
    files = hf_format.write_hf_dir(out, values, config, vocab, lower_case, "mlm",
                                   card={"run": "runs/tiny", "step": 4, "data": "sample corpus"})
    assert files == ["README.md", "config.json", "model.safetensors", "tokenizer_config.json", "vocab.txt"]
    with open(os.path.join(out, "tokenizer_config.json")) as f:
        settings = json.load(f)
    assert (settings["tokenizer_class"], settings["do_lower_case"], settings["strip_accents"],
            settings["tokenize_chinese_chars"], settings["mask_token"]) == \
        ("BertTokenizer", lower_case, lower_case, True, "[MASK]")
    with open(os.path.join(out, "model.safetensors"), "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    assert header["__metadata__"] == {"format": "pt"}
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"F32"}
    card = open(os.path.join(out, "README.md"), encoding="utf-8").read()
    assert "runs/tiny" in card and "- step: 4" in card and "BertForMaskedLM" in card
    back, back_config, back_vocab = hf_format.read_hf_dir(out)
    # An MLM run's pooler was never trained: it is not exported (AutoModel initialises one).
    assert_same_values(back, {k: v for k, v in values.items() if not k.startswith("bert/pooler/")})
    assert back_config == config
    assert open(back_vocab, "rb").read() == open(vocab, "rb").read()
    assert hf_format.tokenizer_settings(out)["lower_case"] == lower_case

    simbert = str(tmp_path / "simbert")
    hf_format.write_hf_dir(simbert, values, config, vocab, lower_case, "simbert", card={})
    assert_same_values(hf_format.read_hf_dir(simbert)[0], values)   # its pooler was trained
    nsp = str(tmp_path / "nsp")
    hf_format.write_hf_dir(nsp, with_nsp(values, config), config, vocab, lower_case, "mlm", card={})
    assert json.load(open(os.path.join(nsp, "config.json")))["architectures"] == ["BertForPreTraining"]
    assert_same_values(hf_format.read_hf_dir(nsp)[0], with_nsp(values, config))


def test_sharded_and_legacy_directories_read_the_same(exported, tmp_path):
    """Shards named by model.safetensors.index.json, bfloat16 tensors, LayerNorm.gamma/beta names
    and the buffers older transformers saved, as hub checkpoints have them."""
    from safetensors.numpy import save_file

    values, config, _, _ = export_contents(exported)
    tensors = hf_format.to_hf(values, config)
    d = hf_format.hf_config(config, "BertForMaskedLM")
    names = sorted(tensors)
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    weight_map = {}
    for n, part in enumerate((names[:10], names[10:])):
        shard = "model-%05d-of-00002.safetensors" % (n + 1)
        save_file({k: tensors[k] for k in part}, str(sharded / shard), metadata={"format": "pt"})
        weight_map.update({k: shard for k in part})
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (sharded / "config.json").write_text(json.dumps(d))
    assert_same_values(hf_format.read_hf_dir(str(sharded))[0], values)

    legacy = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
              for k, v in tensors.items()}
    legacy["bert.embeddings.position_ids"] = np.arange(config.max_position_embeddings)[None]
    legacy["cls.predictions.decoder.weight"] = tensors["bert.embeddings.word_embeddings.weight"]
    assert_same_values(hf_format.from_hf(legacy, d)[0], values)

    bf16 = tmp_path / "bf16.safetensors"
    ours = np.array([[1.5, -2.25], [2.0 ** -9, 7.0]], np.float32)   # exact in bfloat16
    raw = (ours.view(np.uint32) >> 16).astype("<u2").tobytes()
    header = json.dumps({"w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, len(raw)]}}).encode()
    bf16.write_bytes(len(header).to_bytes(8, "little") + header + raw)
    np.testing.assert_array_equal(hf_format.read_safetensors(str(bf16))["w"], ours)


def test_roberta_positions_are_shifted(exported):
    """RoBERTa's weights under its names: positions from pad_token_id + 1, lm_head, no NSP."""
    values, config, _, _ = export_contents(exported)
    renames = [("bert.", "roberta."), ("cls.predictions.transform.LayerNorm", "lm_head.layer_norm"),
               ("cls.predictions.transform.", "lm_head."), ("cls.predictions.bias", "lm_head.bias")]
    tensors = {}
    for name, value in hf_format.to_hf(values, config).items():
        for old, new in renames:
            name = name.replace(old, new)
        tensors[name] = value
    positions = "roberta.embeddings.position_embeddings.weight"
    tensors[positions] = np.concatenate([np.full((2, config.hidden_size), 9.0, np.float32),
                                         tensors[positions]])
    d = dict(hf_format.hf_config(config, "BertForMaskedLM"), model_type="roberta", pad_token_id=1,
             max_position_embeddings=config.max_position_embeddings + 2)
    back, back_config = hf_format.from_hf(tensors, d)
    assert_same_values(back, values)
    assert back_config == config


# Fixed text for the SentencePiece models: the project's sample corpus is made from its docs and
# changes with them: a literal "[MASK]" in it, for one, is a text transformers tokenizes as the
# special token and sentencepiece as characters (the converter then refuses, as it must; the
# model card names that difference).
_ENGLISH = """Shards are written in parallel by worker processes, and each one is checked when it is read.
A run resumes at the exact batch after preemption: the data position is part of the checkpoint.
The loader draws new masks every epoch, so 15% of the tokens are predicted, 80% of them masked.
Export the latest step with launch.export; the files are bert_config.json and bert_model.ckpt.
Version 2.19 runs on TPU VMs; 2.21 runs here. Files look like data-00000-of-00004.tfrecord.gz.
Café, naïve and résumé keep their accents unless the vocabulary is lower-cased.
Fine-tuning takes 3 epochs at a learning rate of 5e-5, with a warmup of 10% of the steps.
What is the held-out accuracy? It is 0.86 against a majority baseline of 0.52!"""


def sentencepiece_texts():
    from data_pipeline import sample_corpus

    chinese = [s for doc in sample_corpus.chinese_documents() for s in doc]
    return chinese + _ENGLISH.split("\n")


def test_sentencepiece_tokenizer_json_gives_our_ids(tmp_path):
    from data_pipeline.tokenizer import load_tokenizer

    texts = sentencepiece_texts()
    for model_type, lower_case in (("unigram", False), ("unigram", True), ("bpe", False)):
        path = str(tmp_path / ("%s-%s.model" % (model_type, lower_case)))
        vocab_builder.build_sentencepiece(texts * 3, path, vocab_size=400, model_type=model_type,
                                          character_coverage=1.0, lower_case=lower_case)
        tok = load_tokenizer(path, lower_case=lower_case)
        with open(path, "rb") as f:
            hf = hf_format.sentencepiece_tokenizer(f.read(), tok, check_texts=texts[:200])
        sample = texts[:5] + [t.upper() for t in texts[:5]]
        assert [hf.encode(t, add_special_tokens=False).ids for t in sample] == tok.encode_batch(sample)
        assert hf.encode("a", "b").ids[0] == tok.special_ids.cls


# -------------------------------------------------------------------------- clear refusals

def _hf_dir(exported, tmp_path, name="bad"):
    values, config, vocab, lower_case = export_contents(exported)
    out = str(tmp_path / name)
    hf_format.write_hf_dir(out, values, config, vocab, lower_case, "mlm", card={})
    return out


def _edit_json(path, **changes):
    with open(path) as f:
        d = json.load(f)
    d.update(changes)
    with open(path, "w") as f:
        json.dump(d, f)


def _edit_tensors(directory, edit):
    from safetensors.numpy import save_file

    path = os.path.join(directory, "model.safetensors")
    tensors = hf_format.read_safetensors(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def test_what_hf_bert_cannot_hold_is_refused():
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, embedding_size=16)
    values = {k: v.numpy() for k, v in google_variables(build_model(config, with_nsp=False)).items()}
    with pytest.raises(HFFormatError, match=r"factorized embeddings \(embedding_size=16, hidden_size=32"):
        hf_format.to_hf(values, config)
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64)
    config.hidden_act = "swish"   # an activation this project may add one day
    with pytest.raises(HFFormatError, match="hidden_act 'swish' has no transformers equivalent"):
        hf_format.hf_config(config, "BertForMaskedLM")


@pytest.mark.parametrize("case", ["gpt2", "pickle", "missing", "vocab", "unknown", "untied", "silu",
                                  "eps", "shard", "truncated", "shape"])
def test_bad_directories_are_refused_naming_the_file(exported, tmp_path, case):
    d = _hf_dir(exported, tmp_path)
    config_json = os.path.join(d, "config.json")
    weights = os.path.join(d, "model.safetensors")
    D, C, W = re.escape(d), re.escape(config_json), re.escape(weights)   # for the expected messages
    if case == "gpt2":
        _edit_json(config_json, model_type="gpt2")
        expected = r"%s: model_type 'gpt2' is not a BERT encoder" % C
    elif case == "pickle":
        os.rename(weights, os.path.join(d, "pytorch_model.bin"))
        expected = (r"holds pytorch_model.bin, pickled PyTorch weights, which are never opened.*\n.*"
                    r"torch.load\('%s/pytorch_model.bin', weights_only=True\).*'%s/model.safetensors'"
                    % (D, D))
    elif case == "missing":
        _edit_tensors(d, lambda t: [t.pop(k) for k in list(t) if "layer.1.attention.self" in k])
        expected = r"%s lacks 6 tensor\(s\): bert.encoder.layer.1.attention.self.query.weight, " % D
    elif case == "vocab":
        with open(os.path.join(d, "vocab.txt"), "a", encoding="utf-8") as f:
            f.write("extra\n")
        expected = r"%s/vocab.txt has \d+ tokens but %s says vocab_size=\d+" % (D, C)
    elif case == "unknown":
        _edit_tensors(d, lambda t: t.update({"bert.encoder.layer.0.adapter.weight": np.zeros(3)}))
        expected = r"%s holds 1 tensor\(s\) this model has no place for: bert.encoder.layer.0.adapter" % D
    elif case == "untied":
        _edit_tensors(d, lambda t: t.update({"cls.predictions.decoder.weight": np.zeros_like(
            t["bert.embeddings.word_embeddings.weight"])}))
        expected = r"%s: cls.predictions.decoder.weight differs from bert.embeddings.word_embeddings" % D
    elif case == "silu":
        _edit_json(config_json, hidden_act="silu")
        expected = r"%s: hidden_act 'silu' has no exact equivalent here" % C
    elif case == "eps":
        _edit_json(config_json, layer_norm_eps=1e-5)
        assert hf_format.read_hf_dir(d, accept_layer_norm_eps=True)[1].hidden_size == 32
        expected = r"%s: layer_norm_eps=1e-05, but this model's LayerNorm uses Google's 1e-12" % C
    elif case == "shard":
        os.rename(weights, os.path.join(d, "model-00001-of-00002.safetensors"))
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump({"weight_map": {"a": "model-00001-of-00002.safetensors",
                                      "b": "model-00002-of-00002.safetensors"}}, f)
        expected = r"names shard model-00002-of-00002.safetensors, which is not in %s" % D
    elif case == "truncated":
        size = os.path.getsize(weights)
        with open(weights, "r+b") as f:
            f.truncate(size - 100)
        expected = r"%s is truncated or corrupt: tensor \S+ does not fit" % W
    else:
        _edit_json(config_json, max_position_embeddings=128)
        expected = (r"%s: bert.embeddings.position_embeddings.weight has shape \[64, 32\], but "
                    r"config.json's max_position_embeddings=128 gives \[128, 32\]" % D)
    with pytest.raises(HFFormatError, match=expected) as e:
        hf_format.read_hf_dir(d)
    assert str(e.value).count("\n") <= 1, "one message, not a traceback's worth"


def test_a_non_empty_output_is_refused(exported, tmp_path):
    d = _hf_dir(exported, tmp_path)
    values, config, vocab, lower_case = export_contents(exported)
    with pytest.raises(HFFormatError, match="%s already exists and is not an empty directory" % d):
        hf_format.write_hf_dir(d, values, config, vocab, lower_case, "mlm")


# ------------------------------------------------------------- against the real transformers 5

@pytest.fixture(scope="session")
def hf_python():
    if not os.path.exists(HF_PYTHON):
        pytest.skip("no Python with transformers 5 at %s (set BERT_HF_PYTHON); create it with: %s"
                    % (HF_PYTHON, HF_SETUP))
    probe = subprocess.run([HF_PYTHON, "-c", "import torch, transformers; print(transformers.__version__)"],
                           capture_output=True, text=True)
    if probe.returncode != 0 or not probe.stdout.startswith("5."):
        pytest.skip("%s has no torch + transformers 5 (%s); create it with: %s"
                    % (HF_PYTHON, (probe.stdout + probe.stderr).strip()[-200:], HF_SETUP))
    return HF_PYTHON


def run_check(hf_python, *args):
    result = subprocess.run([hf_python, os.path.join(HERE, "hf_check.py")] + [str(a) for a in args],
                            capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    print(result.stdout)   # what was checked, and the largest difference
    return result.stdout


def documented_snippet(document, name, path):
    """The ```python block of docs/DOCUMENT that uses `name`; it must load from `path`."""
    with open(os.path.join(HERE, "..", "..", "docs", document), encoding="utf-8") as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
    snippet = next(b for b in blocks if name in b)
    assert path in snippet
    return snippet


def write_cases(config_path, checkpoint, vocab, lower_case, application, directory):
    """Our token ids and MLM probabilities on SENTENCES, as hf_check.py `load` reads them."""
    tokenizer = load_finetune_tokenizer(vocab, lower_case=lower_case)
    model = build_transformer_model(config_path, checkpoint, with_mlm=True, application=application)
    cases, probs = [], {}
    for n, (a, b) in enumerate(SENTENCES):
        ids, segments = tokenizer.encode(a, b)
        cases.append({"a": a, "b": b, "ids": ids, "segments": segments})
        probs["case%d" % n] = model([np.array([ids]), np.array([segments])]).numpy()[0]
    with open(os.path.join(directory, "cases.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False)
    np.savez(os.path.join(directory, "probs.npz"), **probs)
    return os.path.join(directory, "cases.json"), os.path.join(directory, "probs.npz")


@pytest.mark.parametrize("task,application", [("mlm", "encoder"), ("lm", "lm")])
def test_transformers_loads_our_export(exported, hf_python, tmp_path, task, application):
    """AutoTokenizer gives our ids and AutoModelForMaskedLM (AutoModelForCausalLM with the causal
    mask, for LM runs) our probabilities, on English, Chinese, accented and full-width text."""
    values, config, vocab, lower_case = export_contents(exported)
    out = str(tmp_path / "hf")
    hf_format.write_hf_dir(out, values, config, vocab, lower_case, task, card={"step": 4})
    files = export_files_of(exported)
    cases, probs = write_cases(files[0], files[1], vocab, lower_case, application, str(tmp_path))
    report = run_check(hf_python, "load", out, cases, probs)
    assert ("BertLMHeadModel" if task == "lm" else "BertForMaskedLM") in report


# New tokens per prompt (launch.generate's default --max_len): with the longest prompt of SENTENCES,
# within the tiny model's 64 positions.
GENERATE_MAX_LEN = 32


def sep_bias(source, texts):
    """(bias, margin): output bias to add to [SEP] so that greedy decoding by the export `source`
    ends some of `texts`' continuations with [SEP] and runs others to GENERATE_MAX_LEN.

    A 4-step run's greedy path never picks [SEP] by itself. Along each continuation, the step where
    [SEP]'s log-probability comes closest to the pick's decides: a bias above that shortfall ends the
    sequence there (the picks before it are unchanged), one below it leaves the sequence whole. The
    bias is the middle of the widest gap between the texts' shortfalls; `margin` is half that gap."""
    from downstream.generation import load_decoder, prefixes

    decoder, tokenizer = load_decoder(source, "lm", max_len=GENERATE_MAX_LEN, end_id=None)
    ids = prefixes(tokenizer, list(enumerate(texts, 1)), "lm", GENERATE_MAX_LEN, decoder.max_positions)
    model = build_transformer_model(source.config_path, source, application="lm", with_mlm=True)
    shortfalls = []
    for prompt, generation in zip(ids, decoder.generate(ids, "greedy")):
        sequence = np.array([list(prompt) + list(generation.ids)])
        probs = model([sequence, np.zeros_like(sequence)]).numpy()[0]
        logp = np.log(probs[len(prompt) - 1:-1])   # [T, V]: the distributions each pick was made from
        shortfalls.append(float((logp.max(-1) - logp[:, tokenizer.special_ids.sep]).min()))
    shortfalls.sort()
    widest = int(np.argmax(np.diff(shortfalls)))
    return (shortfalls[widest] + shortfalls[widest + 1]) / 2, (shortfalls[widest + 1] - shortfalls[widest]) / 2


def test_transformers_greedy_generate_gives_launch_generate_tokens(exported, hf_python, tmp_path):
    """An LM export (task lm: hf/ says BertLMHeadModel): transformers' greedy `generate` on hf/
    continues each prompt with the tokens of `launch.generate --application=lm --strategy=greedy`,
    id for id. Ours: the prompt is [SEP] and the text (no [CLS], no closing [SEP]), [SEP] ends a
    sequence, at most --max_len new tokens; transformers: the same prompt, eos_token_id=[SEP],
    max_new_tokens=--max_len. docs/export.md's call gives them too."""
    from downstream.generation import load_decoder, prefixes
    from pretrain import export

    source = ExportDir(exported)
    texts = [a for a, _ in SENTENCES] + [SENTENCES[-1][1]]
    raise_sep, margin = sep_bias(source, texts)
    assert margin > 1e-3, "shortfalls too close to split: %.3g" % margin   # float round-off: ~1e-6
    model = build_model(source.config, with_nsp=False)   # as the run: no NSP head, so no pooler out
    google_checkpoint.load_weights(model, source.prefix)
    tokenizer = load_finetune_tokenizer(source.require_vocab(), source.lower_case)
    bias = google_variables(model)["cls/predictions/output_bias"]
    bias.assign(bias + raise_sep * np.eye(bias.shape[0], dtype=np.float32)[tokenizer.special_ids.sep])
    out = str(tmp_path / "lm")
    export.export_model(model, out, source.require_vocab(), "lm", {"export": exported},
                        lower_case=source.lower_case, formats="hf")
    assert json.load(open(os.path.join(out, "hf", "config.json")))["architectures"] == ["BertLMHeadModel"]

    prompts, results = tmp_path / "prompts.jsonl", tmp_path / "generated.jsonl"
    prompts.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts),
                       encoding="utf-8")
    root = os.path.dirname(os.path.dirname(HERE))
    done = subprocess.run([sys.executable, "-m", "launch.generate", "--export=%s" % out,
                           "--application=lm", "--strategy=greedy", "--max_len=%d" % GENERATE_MAX_LEN,
                           "--input=%s" % prompts, "--output=%s" % results], cwd=root, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONPATH=root,
                                                           TF_CPP_MIN_LOG_LEVEL="2"))
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines()]
    # launch.generate writes text: its ids come from the calls it makes, made here again.
    decoder, tokenizer = load_decoder(out, "lm", max_len=GENERATE_MAX_LEN)
    ids = prefixes(tokenizer, list(enumerate(texts, 1)), "lm", GENERATE_MAX_LEN, decoder.max_positions)
    ours = decoder.generate(ids, "greedy")
    assert [(r["generated"], r["finished"]) for r in records] == \
        [(tokenizer.decode(g.ids), g.finished) for g in ours]
    assert {g.finished for g in ours} == {True, False}, "both stop rules: [SEP], and --max_len"
    cases = [{"text": t, "prompt": [int(i) for i in p], "generated": g.ids.tolist(),
              "logprobs": g.logprobs.tolist()}
             for t, p, g in zip(texts, ids, ours)]
    (tmp_path / "cases.json").write_text(json.dumps({"max_new_tokens": GENERATE_MAX_LEN, "cases": cases},
                                                    ensure_ascii=False), encoding="utf-8")
    report = run_check(hf_python, "generate", os.path.join(out, "hf"), tmp_path / "cases.json")
    assert "BertLMHeadModel greedy generate: %d prompts, %d ended with [SEP]" % (
        len(texts), sum(g.finished for g in ours)) in report

    # docs/export.md's transformers call, run as written (only the export path is this test's).
    snippet = documented_snippet("export.md", "AutoModelForCausalLM", '"exports/lm/4/hf"')
    assert 'text = "%s"' % texts[0] in snippet
    code = snippet.replace('"exports/lm/4/hf"', repr(os.path.join(out, "hf")))
    done = subprocess.run([hf_python, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ours[0].ids.tolist()


def export_files_of(directory):
    export = ExportDir(directory)
    return export.config_path, export.prefix


def test_transformers_loads_a_sentencepiece_export(hf_python, tmp_path):
    """A SentencePiece vocabulary goes out as tokenizer.json: transformers gives our ids."""
    texts = sentencepiece_texts()
    spm = str(tmp_path / "sp.model")
    tok = vocab_builder.build_sentencepiece(texts * 3, spm, vocab_size=400, character_coverage=1.0)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    values = {k: v.numpy() for k, v in google_variables(build_model(config, with_nsp=False)).items()}
    google = tmp_path / "google"
    google.mkdir()
    google_checkpoint.write_checkpoint(values, str(google / "bert_model.ckpt"))
    (google / "bert_config.json").write_text(json.dumps(config.to_dict()))
    out = str(tmp_path / "hf")
    hf_format.write_hf_dir(out, values, config, spm, False, "mlm")
    assert os.path.exists(os.path.join(out, "tokenizer.json"))
    cases, probs = write_cases(str(google / "bert_config.json"), str(google / "bert_model.ckpt"),
                               spm, False, "encoder", str(tmp_path))
    run_check(hf_python, "load", out, cases, probs)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_we_load_what_transformers_wrote(wordpiece_vocab, hf_python, tmp_path, kind):
    """A directory that transformers itself wrote (save_pretrained) -> read_hf_dir -> a Google
    checkpoint -> our model: the MLM probabilities transformers computed."""
    directory = str(tmp_path / kind)
    run_check(hf_python, "make", kind, directory, wordpiece_vocab, tmp_path / "hf.npz")
    expected = np.load(tmp_path / "hf.npz")
    values, config, vocab = hf_format.read_hf_dir(directory, vocab_output=str(tmp_path / "vocab.txt"))
    if kind == "bert":   # transformers 5 saved only tokenizer.json: its vocabulary, written out
        assert open(vocab, "rb").read() == open(wordpiece_vocab, "rb").read()
    else:
        assert vocab is None and config.max_position_embeddings == 40
    google = tmp_path / "google"
    google.mkdir()
    google_checkpoint.write_checkpoint(values, str(google / "bert_model.ckpt"))
    (google / "bert_config.json").write_text(json.dumps(config.to_dict()))
    model = build_transformer_model(str(google / "bert_config.json"), str(google / "bert_model.ckpt"),
                                    with_mlm=True)
    ours = model([expected["ids"], expected["segments"]]).numpy()
    print("max |dp| = %.3g" % np.abs(ours - expected["probs"]).max())
    np.testing.assert_allclose(ours, expected["probs"], **PROBABILITY)
    shutil.rmtree(directory)


def test_sentence_transformers_gives_our_simbert_vectors(exported, hf_python, tmp_path):
    """export --format=sentence_transformers of SimBERT weights: SentenceTransformer(OUTPUT/hf)
    .encode equals downstream.SimBERT.encode (pooled [CLS] with tanh, L2-normalised)."""
    from downstream.simbert import SimBERT
    from pretrain import export

    source = ExportDir(exported)
    model = build_model(source.config)
    google_checkpoint.load_weights(model, source.prefix)
    out = str(tmp_path / "simbert")
    manifest = export.export_model(model, out, source.require_vocab(), "simbert", {"export": exported},
                                   lower_case=source.lower_case, formats="sentence_transformers")
    assert manifest.formats == {"google": ".", "hf": "hf", "sentence_transformers": "hf"}
    assert "hf/modules.json" in manifest.files and "hf/2_Dense/model.safetensors" in manifest.files
    texts = [a for a, _ in SENTENCES] + ["hello world", "今天天气很好"]
    with pytest.warns(UserWarning, match="did not train its pooler"):   # export_model's heads say so
        vectors = SimBERT.from_export(out).encode(texts)
    np.savez(str(tmp_path / "vectors.npz"), texts=np.array(texts), vectors=vectors)
    report = run_check(hf_python, "st", os.path.join(out, "hf"), tmp_path / "vectors.npz")
    assert "Transformer, Pooling, Dense, Normalize" in report


def test_the_documented_transformers_fine_tuning_snippet_runs(exported_hf, hf_python):
    """docs/downstream.md's transformers 5 example, run as written on an `--format=hf` export (only
    the export path is this test's)."""
    snippet = documented_snippet("downstream.md", "AutoModelForSequenceClassification",
                                 '"exports/base/1000000/hf"')
    code = snippet.replace('"exports/base/1000000/hf"', repr(os.path.join(exported_hf, "hf")))
    done = subprocess.run([hf_python, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "torch.Size([2, 2])" in done.stdout
