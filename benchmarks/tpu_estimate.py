r"""Expected pretraining throughput on TPU slices, COMPUTED (not measured): model FLOPs per sequence
times the chips' peak at a stated utilisation. For WORKSPACE.md's TPU table.

    python -m benchmarks.tpu_estimate [--mfu=0.35] [--markdown]

FLOPs per trained sequence = 3 x forward (the backward pass costs twice the forward), forward =
per layer 8*L*H^2 (Q, K, V, output projections) + 4*L*H*I (feed-forward) + 4*L^2*H (scores and
context), plus the MLM head at the P masked positions (2*P*H^2 + 2*P*H*V). Embedding lookups,
norms, softmax and the optimizer are left out (a few percent).

The utilisation is anchored on two published runs, recomputed with the same FLOP count:
  * LAMB (You et al. 2019, arXiv:1904.00962): BERT-large in 76.19 minutes on 1,024 TPUv3 chips,
    batch 65,536 at seq 128 then 32,768 at seq 512, 8,599 steps (7,038 + 1,561): about 28% of
    the chips' bfloat16 peak;
  * NVIDIA DeepLearningExamples TensorFlow2 BERT (21.02 container): 485.6 sequences/s per A100
    80GB for BERT-large at seq 128, mixed precision: about 37% of 312 TFLOP/s.
Chip peaks: dense bfloat16 TFLOP/s per chip from Google's system-architecture pages.
"""

import argparse
import json

MODELS = {   # hidden, layers, intermediate, vocab
    "bert_base": (768, 12, 3072, 30522),
    "bert_large": (1024, 24, 4096, 30522),
}
# Peak dense bfloat16 TFLOP/s per chip (cloud.google.com/tpu/docs/v2 ... /v6e).
CHIPS = {"v2": 45.0, "v3": 123.0, "v4": 275.0, "v5e": 197.0, "v5p": 459.0, "v6e": 918.0}
# (accelerator type, generation, chips): v2-v4 and v5p count TensorCores (2 per chip), v5e and
# v6e count chips.
SLICES = [("v2-8", "v2", 4), ("v3-8", "v3", 4), ("v4-8", "v4", 4), ("v4-32", "v4", 16),
          ("v4-128", "v4", 64), ("v5e-8", "v5e", 8), ("v5e-64", "v5e", 64), ("v5p-8", "v5p", 4),
          ("v5p-128", "v5p", 64), ("v6e-8", "v6e", 8), ("v6e-64", "v6e", 64)]


def train_flops(model, seq_len, predictions):
    """FLOPs to train on one sequence (forward + backward). `model`: a name of MODELS, or its
    (hidden, layers, intermediate, vocab)."""
    h, layers, inter, vocab = MODELS[model] if isinstance(model, str) else model
    per_layer = 8 * seq_len * h * h + 4 * seq_len * h * inter + 4 * seq_len * seq_len * h
    head = 2 * predictions * h * h + 2 * predictions * h * vocab
    return 3 * (layers * per_layer + head)


def published_utilisation():
    large_128, large_512 = train_flops("bert_large", 128, 20), train_flops("bert_large", 512, 80)
    lamb = (65536 * 7038 * large_128 + 32768 * 1561 * large_512) / (76.19 * 60) / (1024 * 123e12)
    nvidia = 485.6 * large_128 / 312e12
    return {"lamb_tpuv3_1024": round(lamb, 3), "nvidia_tf2_a100": round(nvidia, 3)}


def estimate(mfu):
    rows = []
    for name, generation, chips in SLICES:
        flops = chips * CHIPS[generation] * 1e12 * mfu
        rows.append({
            "slice": name, "chips": chips, "peak_pflops": round(chips * CHIPS[generation] / 1000, 2),
            "bert_base_seq128": round(flops / train_flops("bert_base", 128, 20)),
            "bert_large_seq128": round(flops / train_flops("bert_large", 128, 20)),
            "bert_large_seq512": round(flops / train_flops("bert_large", 512, 80)),
        })
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mfu", type=float, default=0.35, help="model FLOPs utilisation assumed")
    parser.add_argument("--markdown", action="store_true", help="print WORKSPACE.md's table")
    args = parser.parse_args()
    rows = estimate(args.mfu)
    if args.markdown:
        print("| slice | chips | peak bf16 PFLOP/s | BERT-base seq 128 | BERT-large seq 128 | "
              "BERT-large seq 512 |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print("| %s | %d | %.2f | %s | %s | %s |" % (
                r["slice"], r["chips"], r["peak_pflops"], *("{:,}".format(r[k]) for k in (
                    "bert_base_seq128", "bert_large_seq128", "bert_large_seq512"))))
        return
    print(json.dumps({"computed_not_measured": True, "mfu": args.mfu,
                      "gflop_per_sequence": {
                          "bert_base_seq128": round(train_flops("bert_base", 128, 20) / 1e9, 1),
                          "bert_large_seq128": round(train_flops("bert_large", 128, 20) / 1e9, 1),
                          "bert_large_seq512": round(train_flops("bert_large", 512, 80) / 1e9, 1)},
                      "published_utilisation": published_utilisation(),
                      "sequences_per_second": rows}, indent=2))


if __name__ == "__main__":
    main()
