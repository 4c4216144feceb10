"""The transformers side of the HF interop tests, run by the Python of a separate environment that
has torch and transformers 5 (and no need for TensorFlow): tests/export/test_hf_format.py starts it.

    python hf_check.py load DIR CASES.json PROBS.npz
        Loads DIR with AutoTokenizer and AutoModelForMaskedLM (AutoModelForCausalLM when
        config.json says is_decoder) and checks, case by case, that the tokenizer gives our
        ids and segment ids and the model our MLM probabilities (max |dp| <= 1e-5).
    python hf_check.py generate DIR CASES.json
        Loads DIR (an LM export: BertLMHeadModel) with AutoModelForCausalLM and AutoTokenizer and
        checks, case by case, that the tokenizer makes our LM prompt of the case's text and that
        greedy `generate` continues it with our tokens (launch.generate --application=lm
        --strategy=greedy), id for id, [SEP] ending a sequence as ours does; and that every
        tensor of the file has its place in the model and none is missing.
    python hf_check.py make KIND DIR VOCAB OUT.npz
        Writes a small randomly initialised BertForMaskedLM (KIND "bert") or RobertaForMaskedLM
        ("roberta") of VOCAB's size to DIR with save_pretrained (a BertTokenizer over VOCAB with
        the BERT one), then saves random
        input ids and the model's MLM probabilities on them to OUT.npz.
    python hf_check.py st DIR VECTORS.npz
        Loads DIR with sentence-transformers' SentenceTransformer and checks that `encode` of the
        npz's `texts` gives its `vectors` (ours, downstream.SimBERT's): cosine >= 0.99999 each.

Imports neither TensorFlow nor the project. Exit status 0 when every check holds; the failures
are printed otherwise.
"""

import json
import sys

import numpy as np

PROB_TOLERANCE = 1e-5
MIN_COSINE = 0.99999


def load(directory, cases_path, probs_path):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    config = AutoConfig.from_pretrained(directory)
    auto = AutoModelForCausalLM if config.is_decoder else AutoModelForMaskedLM
    model, info = auto.from_pretrained(directory, output_loading_info=True)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    failures = ["%s: %s" % (k, sorted(v)) for k, v in info.items() if v and k != "error_msgs"]
    with open(cases_path, encoding="utf-8") as f:
        cases = json.load(f)
    ours = np.load(probs_path)
    worst = 0.0
    for n, case in enumerate(cases):
        args = [case["a"]] + ([case["b"]] if case["b"] is not None else [])
        encoded = tokenizer(*args)
        if encoded["input_ids"] != case["ids"] or encoded["token_type_ids"] != case["segments"]:
            failures.append("case %d %r: transformers' ids %s / %s, ours %s / %s" % (
                n, args, encoded["input_ids"], encoded["token_type_ids"], case["ids"], case["segments"]))
            continue
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([case["ids"]]),
                           token_type_ids=torch.tensor([case["segments"]]),
                           attention_mask=torch.ones(1, len(case["ids"]), dtype=torch.long)).logits
        probs = torch.softmax(logits[0].double(), dim=-1).numpy()
        delta = float(np.abs(probs - ours["case%d" % n]).max())
        worst = max(worst, delta)
        if delta > PROB_TOLERANCE:
            failures.append("case %d %r: max |dp| = %.3g" % (n, args, delta))
    print("%s (%s): %d cases, max |dp| = %.3g" % (type(model).__name__, type(tokenizer).__name__,
                                                   len(cases), worst))
    return failures


def generate(directory, cases_path):
    """CASES.json: {"max_new_tokens": N, "cases": [{"text", "prompt": our prompt ids, "generated":
    our generated ids (ending with [SEP] when it ended the sequence), "logprobs": ours of each}]}.
    The log-probabilities are compared for the report only: how far the frameworks' round-off is
    from the smallest margin a greedy pick had."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, info = AutoModelForCausalLM.from_pretrained(directory, output_loading_info=True)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    with open(cases_path, encoding="utf-8") as f:
        spec = json.load(f)
    failures = ["%s: %s" % (k, sorted(v)) for k, v in info.items() if v and k != "error_msgs"]
    gaps, finished, worst = [], 0, 0.0
    for n, case in enumerate(spec["cases"]):
        # Our LM prompt is a document start of the LM training stream: [SEP] and the text's tokens,
        # no [CLS] and no closing [SEP] (downstream.generation.prefix_ids).
        prompt = [tokenizer.sep_token_id] + tokenizer(case["text"], add_special_tokens=False)["input_ids"]
        if prompt != case["prompt"]:
            failures.append("case %d %r: transformers' prompt %s, ours %s" % (n, case["text"], prompt,
                                                                             case["prompt"]))
            continue
        ids = torch.tensor([prompt])
        with torch.no_grad():   # one prompt per call: no padding, so positions count from 0 as ours
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1,
                                 max_new_tokens=spec["max_new_tokens"], eos_token_id=tokenizer.sep_token_id,
                                 pad_token_id=tokenizer.pad_token_id,
                                 output_logits=True, return_dict_in_generate=True)
        theirs = out.sequences[0, len(prompt):].tolist()
        # The margin of every greedy pick (top-1 minus top-2 logit): a tie, or a gap float round-off
        # could cross, would make the two frameworks pick differently for no fault of either.
        top2 = [torch.topk(step[0].double(), 2).values for step in out.logits]
        gaps += [float(v[0] - v[1]) for v in top2]
        logp = [float(torch.log_softmax(step[0].double(), -1)[t]) for step, t in zip(out.logits, theirs)]
        shared = min(len(theirs), len(case["generated"]))
        worst = max([worst] + [abs(a - b) for a, b in zip(logp[:shared], case["logprobs"][:shared])])
        finished += int(theirs[-1:] == [tokenizer.sep_token_id])
        if theirs != case["generated"]:
            at = next((i for i, (a, b) in enumerate(zip(theirs, case["generated"])) if a != b),
                      min(len(theirs), len(case["generated"])))
            failures.append("case %d %r: transformers generated %s, ours %s (first difference at "
                            "token %d, its top-2 logit gap there %.3g)"
                            % (n, case["text"], theirs, case["generated"], at,
                               gaps[len(gaps) - len(theirs) + at] if at < len(theirs) else float("nan")))
    print("%s greedy generate: %d prompts, %d ended with [SEP], smallest top-2 logit gap %.3g, "
          "max |d log p| of the picks %.3g" % (type(model).__name__, len(spec["cases"]), finished,
                                              min(gaps) if gaps else float("nan"), worst))
    return failures


def make(kind, directory, vocab, out):
    import torch
    from transformers import (BertConfig, BertForMaskedLM, BertTokenizer, RobertaConfig,
                              RobertaForMaskedLM)

    torch.manual_seed(0)
    with open(vocab, encoding="utf-8") as f:
        size = len(f.read().split("\n")) - 1
    shape = dict(vocab_size=size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64, hidden_act="gelu")
    if kind == "roberta":   # Google's LayerNorm epsilon, so that outputs can be compared exactly
        model = RobertaForMaskedLM(RobertaConfig(max_position_embeddings=42, type_vocab_size=1,
                                                 layer_norm_eps=1e-12, **shape))
    else:
        model = BertForMaskedLM(BertConfig(max_position_embeddings=40, **shape))
    with torch.no_grad():   # weights far from the initialisation, so that the outputs say something
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)
    model.eval()
    model.save_pretrained(directory)
    if kind == "bert":   # transformers 5 saves tokenizer.json and no vocab.txt
        BertTokenizer(vocab, do_lower_case=True).save_pretrained(directory)
    rng = np.random.default_rng(0)
    # No [PAD] (0, our padding) and, for RoBERTa, no id 1 (its padding_idx) among the inputs.
    ids = rng.integers(2, size, size=(3, 12))
    segments = rng.integers(0, 2, size=(3, 12)) if kind == "bert" else np.zeros((3, 12), np.int64)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(ids), token_type_ids=torch.tensor(segments)).logits
    np.savez(out, ids=ids, segments=segments, probs=torch.softmax(logits.double(), -1).numpy())
    print("wrote %s (%s) to %s" % (type(model).__name__, kind, directory))
    return []


def sentence_vectors(directory, vectors_path):
    from sentence_transformers import SentenceTransformer

    ours = np.load(vectors_path)
    model = SentenceTransformer(directory, device="cpu")
    theirs = model.encode([str(t) for t in ours["texts"]], convert_to_numpy=True)
    cosine = (theirs * ours["vectors"]).sum(-1) / (np.linalg.norm(theirs, axis=-1) *
                                                   np.linalg.norm(ours["vectors"], axis=-1))
    print("SentenceTransformer (%s): %d texts, min cosine %.8f, max |norm - 1| %.2g" % (
        ", ".join(type(m).__name__ for m in model), len(cosine), cosine.min(),
        np.abs(np.linalg.norm(theirs, axis=-1) - 1).max()))
    return ["text %d %r: cosine %.8f" % (n, str(ours["texts"][n]), c)
            for n, c in enumerate(cosine) if c < MIN_COSINE]


def main(argv):
    import torch

    torch.set_num_threads(1)
    commands = {"load": load, "generate": generate, "make": make, "st": sentence_vectors}
    failures = commands[argv[0]](*argv[1:])
    for failure in failures:
        print("FAIL", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
