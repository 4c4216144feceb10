r"""Decoding speed: cached vs full-recompute decoding, and beam search against bert4keras.

    python -m benchmarks.generation [--export=DIR] [--peer_python=/path/to/venv-b4k/bin/python]

On one model (an export, or by default random weights of `--shape`, written as a Google-layout
export in a temp dir: `quickstart`, the quickstart model's hidden 128, 2 layers, 2 heads, vocab
3000, 128 positions; or `small`, hidden 256, 4 layers, 4 heads, vocab 8000):
  * 64 new tokens after 64-token sources, batch 1 and 8, beam 1 and 4: our decoder with the
    key/value cache (graph mode, and compiled with XLA) against the same decoder recomputing the
    whole sequence every step; same tokens required. Target: cached >= 5x faster;
  * beam search (beam 4, batch 8) tokens/s against bert4keras's AutoRegressiveDecoder.beam_search
    on the same export, run in the peer's own environment (bert4keras needs tf.keras: TF 2.15
    with Keras 2) by --peer_python, one input at a time as its API takes them, its step function
    written as bert4keras users write it for UniLM. Target: >= 2x. Skipped, with the reason, when
    --peer_python is not given or not there.
Nothing ends early: no end token (bert4keras: an id that never occurs), and the random model's
[PAD] logit is pushed down so that neither side writes the token bert4keras masks as padding.
Rounds alternate between the settings compared (machine noise spreads evenly); medians are kept.
TensorFlow runs --threads intra/inter-op threads on both sides. Prints JSON, with the CPU (lscpu's
model name and its SIMD flags).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.measure import describe_machine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_LEN, NEW_TOKENS = 64, 64
SHAPES = {   # random-weight models: the quickstart's, and the training benchmark's larger one
    "quickstart": dict(vocab_size=3000, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=512, max_position_embeddings=128),
    "small": dict(vocab_size=8000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                  intermediate_size=1024, max_position_embeddings=128),
}

# Run by the peer's Python: bert4keras's documented UniLM decoding (no code of it is copied here).
_PEER = r'''
import json, os, sys, time
os.environ["TF_KERAS"] = "1"
args = json.loads(sys.argv[1])
import tensorflow as tf
dir(tf.keras)           # resolves TF 2.15's lazy tf.keras before bert4keras installs it as `keras`
tf.config.threading.set_intra_op_parallelism_threads(args["threads"])
tf.config.threading.set_inter_op_parallelism_threads(args["threads"])
import numpy as np
from bert4keras.models import build_transformer_model
from bert4keras.snippets import AutoRegressiveDecoder

model = build_transformer_model(args["config"], args["checkpoint"], application="unilm")

class Decoder(AutoRegressiveDecoder):
    @AutoRegressiveDecoder.wraps(default_rtype="probas")
    def predict(self, inputs, output_ids, states):
        token_ids, segment_ids = inputs
        token_ids = np.concatenate([token_ids, output_ids], 1)
        segment_ids = np.concatenate([segment_ids, np.ones_like(output_ids)], 1)
        return self.last_token(model).predict([token_ids, segment_ids], verbose=0)

decoder = Decoder(start_id=None, end_id=-1, maxlen=args["new_tokens"])
decoder.beam_search([args["sources"][0], [0] * len(args["sources"][0])], topk=args["beam"])   # warm-up
times, outputs = [], None
for _ in range(args["rounds"]):
    start = time.time()
    outputs = [decoder.beam_search([s, [0] * len(s)], topk=args["beam"]).tolist() for s in args["sources"]]
    times.append(time.time() - start)
import keras   # bert4keras made this name tf.keras
print(json.dumps({"seconds": times, "outputs": outputs, "tensorflow": tf.__version__,
                  "keras": getattr(keras, "__version__", "tf.keras of TensorFlow " + tf.__version__)}))
'''


def random_export(directory, shape, seed=0):
    """Random weights of SHAPES[shape] as a Google-layout export; [PAD] never generated."""
    import keras

    from pretrain.google_checkpoint import write_checkpoint
    from pretrain.modeling import BertConfig, build_model, google_variables

    keras.utils.set_random_seed(seed)
    config = BertConfig(**SHAPES[shape])
    model = build_model(config, with_nsp=False)
    values = {name: v.numpy() for name, v in google_variables(model).items()}
    values["cls/predictions/output_bias"][0] = -1e4
    write_checkpoint(values, os.path.join(directory, "bert_model.ckpt"))
    with open(os.path.join(directory, "bert_config.json"), "w") as f:
        json.dump(config.to_dict(), f)
    return directory


def timed(function, rounds):
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        result = function()
        seconds.append(time.perf_counter() - start)
    return result, seconds


def ours(export, sources, rounds):
    """{setting: timings and outputs} for cached (graph, XLA) and recomputed decoding."""
    from downstream import build_transformer_model
    from downstream.generation import AutoRegressiveDecoder

    model = build_transformer_model(export.config_path, export, application="unilm", with_mlm=True)
    decoders = {"cached": AutoRegressiveDecoder(model, end_id=None, max_len=NEW_TOKENS),
                "cached_xla": AutoRegressiveDecoder(model, end_id=None, max_len=NEW_TOKENS, jit_compile=True),
                "recompute": AutoRegressiveDecoder(model, end_id=None, max_len=NEW_TOKENS, use_cache=False)}
    out = {}
    for batch in (1, 8):
        for beam in (1, 4):
            def run(name):
                return [g.ids.tolist() for g in decoders[name].generate(
                    sources[:batch], "beam", beam_size=beam, batch_size=batch)]
            cell = {}
            for name in decoders:        # warm-up: tracing (and the XLA compilation, timed)
                _, cell[name + "_first_call_s"] = timed(lambda: run(name), 1)
            seconds = {name: [] for name in decoders}
            outputs = {}
            for _ in range(rounds):      # alternating rounds
                for name in decoders:
                    outputs[name], t = timed(lambda: run(name), 1)
                    seconds[name] += t
            median = {name: statistics.median(s) for name, s in seconds.items()}
            cell.update({name + "_s": round(m, 4) for name, m in median.items()})
            cell.update({"speedup_cached": round(median["recompute"] / median["cached"], 1),
                         "speedup_cached_xla": round(median["recompute"] / median["cached_xla"], 1),
                         "same_tokens": outputs["cached"] == outputs["recompute"] == outputs["cached_xla"],
                         "tokens_per_s_cached": round(batch * NEW_TOKENS / median["cached"], 1),
                         "tokens_per_s_cached_xla": round(batch * NEW_TOKENS / median["cached_xla"], 1)})
            cell["first_call_s"] = {k[:-len("_first_call_s")]: round(v[0], 2)
                                    for k, v in list(cell.items()) if k.endswith("_first_call_s")}
            for name in decoders:
                cell.pop(name + "_first_call_s")
            out["batch%d_beam%d" % (batch, beam)] = dict(cell, outputs=outputs["cached"])
    return out


def peer(peer_python, export, sources, beam, threads, rounds):
    if not peer_python:
        return {"skipped": "pass --peer_python=<python of an environment with bert4keras and tf.keras>"}
    if not os.path.exists(peer_python):
        return {"skipped": "--peer_python %s does not exist" % peer_python}
    args = dict(config=export.config_path, checkpoint=export.prefix, sources=sources, beam=beam,
                new_tokens=NEW_TOKENS, threads=threads, rounds=rounds)
    done = subprocess.run([peer_python, "-c", _PEER, json.dumps(args)], capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES=""))
    if done.returncode:
        return {"skipped": "the peer run failed: %s" % done.stderr.strip()[-1500:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--export", help="an export directory (default: random weights of --shape)")
    ap.add_argument("--shape", default="quickstart", choices=sorted(SHAPES),
                    help="random model: quickstart (hidden 128, 2 layers) or small (256, 4 layers)")
    ap.add_argument("--peer_python", default=os.environ.get("B4K_PYTHON"),
                    help="Python of the bert4keras environment (or $B4K_PYTHON)")
    ap.add_argument("--threads", type=int, default=1, help="TensorFlow intra/inter-op threads, both sides")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per setting (median kept)")
    ap.add_argument("--peer_rounds", type=int, default=1, help="timed rounds of bert4keras")
    args = ap.parse_args()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    scratch = None if args.export else tempfile.mkdtemp(prefix="bench_generation_")
    try:
        result = run(args, args.export or random_export(scratch, args.shape))
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return 0


def run(args, directory):
    import numpy as np
    import tensorflow as tf

    from pretrain.export_dir import ExportDir

    export = ExportDir(directory)
    vocab = export.config.vocab_size
    rng = np.random.default_rng(0)   # sources: ids past the usual special tokens, never [PAD]
    sources = [[int(i) for i in rng.integers(5, vocab, SOURCE_LEN)] for _ in range(8)]
    result = {"machine": describe_machine(), "threads": args.threads, "model": directory if args.export else
              dict(SHAPES[args.shape], name=args.shape, weights="random"), "tensorflow": tf.__version__,
              "source_tokens": SOURCE_LEN, "new_tokens": NEW_TOKENS}
    result["ours"] = ours(export, sources, args.rounds)
    theirs = peer(args.peer_python, export, sources, 4, args.threads, args.peer_rounds)
    if "seconds" in theirs:
        seconds = statistics.median(theirs["seconds"])
        cell = result["ours"]["batch8_beam4"]
        result["bert4keras_beam4_batch8"] = {
            "seconds": round(seconds, 3), "tokens_per_s": round(8 * NEW_TOKENS / seconds, 1),
            "tensorflow": theirs["tensorflow"], "keras": theirs["keras"],
            "same_tokens_as_ours": sum(a == b for a, b in zip(theirs["outputs"], cell["outputs"])),
            "ours_vs_bert4keras": round(cell["tokens_per_s_cached"] / (8 * NEW_TOKENS / seconds), 1),
            "ours_xla_vs_bert4keras": round(cell["tokens_per_s_cached_xla"] / (8 * NEW_TOKENS / seconds), 1)}
    else:
        result["bert4keras_beam4_batch8"] = theirs
    for cell in result["ours"].values():
        cell.pop("outputs")
    return result


if __name__ == "__main__":
    sys.exit(main())
