"""The KerasHub side of the keras_hub interop tests, run in a separate process whose PYTHONPATH
holds keras-hub 0.32 and tensorflow-text (BERT_KERAS_HUB_PATH): tests/export/test_keras_hub_format.py
starts it.

    python keras_hub_check.py load DIR CASES.json OURS.npz HEAD_TOLERANCE
        CASES.json: [{"a", "b" (or null), "ids", "segments"}], ours; OURS.npz: our hidden states,
        pooled outputs and MLM probabilities of case n as hidden<n>, pooled<n>, probs<n>.
        Loads DIR with BertTokenizer, BertBackbone and BertMaskedLM `.from_preset` and checks, case
        by case, that
          - the tokenizer's ids, as [CLS] a [SEP] (b [SEP]), are our ids;
          - BertBackbone's sequence_output and pooled_output are our hidden states and pooled
            output (max |d| <= 1e-5), and our MLM head on its sequence_output (the head weights
            BertMaskedLM loaded, our gelu_new and LayerNorm epsilon 1e-12) gives our MLM
            probabilities (max |dp| <= 1e-5);
          - BertMaskedLM's probabilities at every position are ours within HEAD_TOLERANCE (its
            head applies the exact GELU and epsilon 1e-5, which KerasHub fixes);
        and that BertMaskedLM's `save_to_preset` of what it loaded writes the same JSON files,
        vocabulary and weights (every dataset of the .weights.h5 files, by path) as DIR holds.

Imports neither the project nor anything but KerasHub (and its Keras), h5py and numpy. Exit
status 0 when every check holds; the failures are printed otherwise.
"""

import json
import math
import sys

import numpy as np

TOLERANCE = 1e-5   # tests/tolerances.py's UNIT and PROBABILITY (this script cannot import the project)
OUR_LAYER_NORM_EPSILON = 1e-12


def _softmax(logits):
    logits = logits.astype(np.float64)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _our_head(masked_lm, hidden):
    """Our MLM head (docs/FORMATS.md §2: dense, gelu_new, LayerNorm 1e-12, tied output) in numpy,
    with the weights BertMaskedLM loaded from the preset: probabilities [L, V]."""
    head = masked_lm.masked_lm_head
    kernel, bias = (np.asarray(w) for w in head._intermediate_dense.weights)
    gamma, beta = (np.asarray(w) for w in head._intermediate_layer_norm.weights)
    x = hidden.astype(np.float64) @ kernel + bias
    x = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + OUR_LAYER_NORM_EPSILON)
    x = x * gamma + beta
    embeddings = np.asarray(masked_lm.backbone.token_embedding.embeddings)
    return _softmax(x @ embeddings.T + np.asarray(head._bias))


def load(directory, cases_path, ours_path, head_tolerance):
    import keras_hub

    tokenizer = keras_hub.models.BertTokenizer.from_preset(directory)
    backbone = keras_hub.models.BertBackbone.from_preset(directory)
    masked_lm = keras_hub.models.BertMaskedLM.from_preset(directory, preprocessor=None)
    with open(cases_path, encoding="utf-8") as f:
        cases = json.load(f)
    ours = np.load(ours_path)
    failures, worst = [], {"hidden": 0.0, "pooled": 0.0, "backbone_probs": 0.0, "masked_lm_probs": 0.0}
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    for n, case in enumerate(cases):
        texts = [case["a"]] + ([case["b"]] if case["b"] is not None else [])
        pieces = [[int(i) for i in tokenizer(text)] for text in texts]
        ids = [cls] + pieces[0] + [sep] + (pieces[1] + [sep] if len(pieces) > 1 else [])
        segments = [0] * (len(pieces[0]) + 2) + ([1] * (len(pieces[1]) + 1) if len(pieces) > 1 else [])
        if ids != case["ids"] or segments != case["segments"]:
            failures.append("case %d %r: KerasHub's ids %s / %s, ours %s / %s"
                            % (n, texts, ids, segments, case["ids"], case["segments"]))
            continue
        inputs = {"token_ids": np.array([ids], np.int32), "segment_ids": np.array([segments], np.int32),
                  "padding_mask": np.ones((1, len(ids)), np.int32)}
        outputs = backbone(inputs)
        hidden = np.asarray(outputs["sequence_output"])[0]
        deltas = {"hidden": np.abs(hidden - ours["hidden%d" % n]).max(),
                  "pooled": np.abs(np.asarray(outputs["pooled_output"])[0] - ours["pooled%d" % n]).max(),
                  "backbone_probs": np.abs(_our_head(masked_lm, hidden) - ours["probs%d" % n]).max()}
        logits = masked_lm(dict(inputs, mask_positions=np.arange(len(ids), dtype=np.int32)[None]))
        deltas["masked_lm_probs"] = np.abs(_softmax(np.asarray(logits)[0]) - ours["probs%d" % n]).max()
        for name, delta in deltas.items():
            worst[name] = max(worst[name], float(delta))
            limit = head_tolerance if name == "masked_lm_probs" else TOLERANCE
            if delta > limit:
                failures.append("case %d %r: max |d %s| = %.3g > %g" % (n, texts, name, delta, limit))
    failures += _same_as_saved(directory)
    print("%s, %s, %s: %d cases, max |d| %s" % (
        type(tokenizer).__name__, type(backbone).__name__, type(masked_lm).__name__, len(cases),
        ", ".join("%s %.3g" % item for item in worst.items())))
    return failures


def _same_as_saved(directory):
    """Differences between DIR and what KerasHub's own save_to_preset writes for the model loaded
    from it (metadata.json's date and the README excepted; empty groups are not compared)."""
    import os
    import tempfile

    import h5py
    import keras_hub

    failures = []
    with tempfile.TemporaryDirectory() as saved:
        keras_hub.models.BertMaskedLM.from_preset(directory).save_to_preset(saved)
        for name in ("config.json", "task.json", "tokenizer.json", "preprocessor.json", "metadata.json",
                     "assets/tokenizer/vocabulary.txt"):
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                ours = f.read()
            with open(os.path.join(saved, name), encoding="utf-8") as f:
                theirs = f.read()
            if name.endswith(".json"):
                ours, theirs = json.loads(ours), json.loads(theirs)
                theirs.pop("date_saved", None)
            if ours != theirs:
                failures.append("%s differs from what save_to_preset writes" % name)
        for name in ("model.weights.h5", "task.weights.h5"):
            with h5py.File(os.path.join(directory, name), "r") as a, \
                    h5py.File(os.path.join(saved, name), "r") as b:
                ours, theirs = _datasets(a), _datasets(b)
            if sorted(ours) != sorted(theirs):
                failures.append("%s: datasets %s here, %s in save_to_preset's" % (
                    name, sorted(set(ours) - set(theirs))[:4], sorted(set(theirs) - set(ours))[:4]))
            failures += ["%s: %s differs from save_to_preset's" % (name, path) for path in sorted(ours)
                         if path in theirs and not np.array_equal(ours[path], theirs[path])]
    return failures


def _datasets(h5):
    out = {}
    h5.visititems(lambda path, node: out.update({path: node[()]}) if hasattr(node, "dtype") else None)
    return out


def main(argv):
    commands = {"load": lambda d, c, o, t: load(d, c, o, float(t))}
    failures = commands[argv[0]](*argv[1:])
    for failure in failures:
        print("FAIL", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
