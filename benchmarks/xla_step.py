r"""Exports the training step as the XLA computation a TPU or `jit_compile=True` runs, for any
PJRT runtime (`benchmarks/xla_run.py`: JAX on a GPU or a TPU VM, no TensorFlow there).

    python -m benchmarks.xla_step export --config=configs/bert_base.py --seq_len=128 \
        --per_replica_batch=64 --precision=bfloat16 --out=xla/bert_base_128_b64
    python benchmarks/xla_run.py xla/bert_base_128_b64 --device=gpu
    python -m benchmarks.xla_step suite --out=xla_suite   # what benchmarks/gpu_check.sh runs

The exported function is `TrainState.replica_step` of the trainer for that config: forward, the
task's losses, backward, global-norm clipping, the guarded optimizer update (the config's: LAMB,
AdamW...) and the counters, lowered with the shapes of one replica by TensorFlow's XLA bridge
(`experimental_get_compiler_ir(...)(stage="hlo_serialized")`). OUT gets:
  * step.hlo.pb.gz: the HLO module, gzipped. Parameters: the batch tensors (sorted by name), then
    every variable the step reads (model, optimizer slots, counters); outputs: the metrics and
    the gradient norm, then every updated variable, aliased to its parameter.
  * step.json: each argument's name, shape, dtype and seeded fill (`xla_run.make_argument`: the
    runner makes the weights on the device, nothing large travels), the outputs, the model FLOPs
    per step (`benchmarks.tpu_estimate.train_flops`), and TensorFlow's results for those inputs:
    the first step's metrics and a checksum of every output, and with --tf_steps its own
    `jit_compile` step time.
  * tensorflow_outputs.npz (--save_outputs, small models): every output of TensorFlow's first
    step, for an exact comparison.
"""

import argparse
import gzip
import importlib.util
import json
import math
import os
import sys
import time

import numpy as np

from benchmarks import measure, xla_run
from benchmarks.tpu_estimate import train_flops

DEFAULT_VOCAB = 30522   # Google's English uncased vocabulary, when the config leaves it to the data
# What `suite` exports for benchmarks/gpu_check.sh: (config, seq_len, per-replica batches). Sized
# for one lent H100/H200: at most ~45 GB of activations and a step under a second.
SUITE = [("bert_base", 128, (64, 128, 256)), ("bert_large", 128, (64, 128)),
         ("bert_large", 512, (16, 32))]


def load_config(path):
    spec = importlib.util.spec_from_file_location("exported_config", path)
    if spec is None or not os.path.exists(path):
        sys.exit("xla_step: no config file %s" % path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def batch_fills(task, with_nsp, vocab_size, seq_len, predictions):
    """{feature: (shape after the batch axis, dtype, fill)} of one batch of the task, as the
    loader gives it (data_pipeline/loader.py): full-length rows, segment 1 in the second half."""
    ids = {"fill": "randint", "low": 1, "high": vocab_size}
    halves = {"fill": "halves", "values": [0, 1]}
    rows = {"input_ids": ([seq_len], "int32", dict(ids, seed=1)),
            "input_mask": ([seq_len], "int32", {"fill": "constant", "value": 1})}
    if task == "mlm":
        rows.update(
            segment_ids=([seq_len], "int32", halves if with_nsp else {"fill": "constant", "value": 0}),
            masked_lm_positions=([predictions], "int32",
                                 {"fill": "randint", "low": 1, "high": seq_len, "seed": 2}),
            masked_lm_ids=([predictions], "int32", dict(ids, seed=3)),
            masked_lm_weights=([predictions], "float32", {"fill": "constant", "value": 1.0}),
            next_sentence_labels=([1], "int32", {"fill": "randint", "low": 0, "high": 2, "seed": 4}))
    elif task == "lm":
        rows.update(segment_ids=([seq_len], "int32", {"fill": "constant", "value": 0}),
                    target_mask=([seq_len], "float32", {"fill": "constant", "value": 1.0}))
    else:   # unilm, simbert: a source and a target segment
        rows.update(segment_ids=([seq_len], "int32", halves),
                    target_mask=([seq_len], "float32", {"fill": "halves", "values": [0.0, 1.0]}))
    return rows


def variable_fill(value, seed):
    """A variable's fill from its initial value: a constant stays that constant (LayerNorm gammas,
    biases, optimizer slots, counters); anything else becomes uniform noise of about its spread
    (the width a power of two, so that every value is exact in float32)."""
    flat = value.reshape(-1)
    if flat.size == 0 or np.all(flat == flat[0]):
        return {"fill": "constant", "value": flat[0].item() if flat.size else 0}
    width = float(np.std(value.astype(np.float64))) * math.sqrt(12.0)
    return {"fill": "uniform", "log2_width": int(round(math.log2(max(width, 1e-30)))), "seed": seed}


def export(config_path, out, seq_len, per_replica_batch, precision, task=None, with_nsp=None,
           vocab_size=None, max_predictions=None, micro_batches=None, tf_steps=0, save_outputs=False,
           reference=True, config=None):
    """Writes OUT (see the module docstring) and returns step.json's content. `reference`: run
    TensorFlow's first step on the seeded inputs (minutes on a CPU for BERT-large)."""
    import tensorflow as tf
    from tensorflow.compiler.xla.service import hlo_pb2

    from pretrain.modeling import BertConfig
    from pretrain.train_step import TrainState

    c = config if config is not None else load_config(config_path)
    c.task = task or c.task
    c.train.precision = precision
    c.train.micro_batches = micro_batches or c.train.micro_batches
    if per_replica_batch % c.train.micro_batches:
        sys.exit("xla_step: --per_replica_batch=%d is not a multiple of micro_batches=%d"
                 % (per_replica_batch, c.train.micro_batches))
    model = dict(c.model.to_dict(), embedding_size=c.model.get("embedding_size") or None)
    model["vocab_size"] = vocab_size or model["vocab_size"] or DEFAULT_VOCAB
    model_config = BertConfig.from_dict(model)
    if seq_len > model_config.max_position_embeddings:
        sys.exit("xla_step: --seq_len=%d exceeds max_position_embeddings=%d"
                 % (seq_len, model_config.max_position_embeddings))
    with_nsp = c.task == "mlm" and (c.train.with_nsp if with_nsp is None else with_nsp)
    predictions = (max_predictions or max(1, round(0.15 * seq_len))) if c.task == "mlm" else seq_len

    state = TrainState(c, model_config, tf.distribute.get_strategy(), c.task, with_nsp, precision,
                       on_tpu=False)
    fills = batch_fills(c.task, with_nsp, model_config.vocab_size, seq_len, predictions)
    batch = {name: tf.constant(xla_run.make_argument(np, fill, [per_replica_batch] + shape, dtype))
             for name, (shape, dtype, fill) in fills.items()}
    step = tf.function(state.replica_step, jit_compile=True)
    concrete = step.get_concrete_function(batch)
    by_handle = {id(v.handle): v for v in concrete.variables}
    variables = [by_handle[id(h)] for h in concrete.captured_inputs]

    arguments = [dict(name="batch/" + name, shape=[per_replica_batch] + fills[name][0],
                      dtype=fills[name][1], fill=fills[name][2], aliased_output=None)
                 for name in sorted(batch)]   # tf.nest flattens a dict in key order
    for v in variables:   # seeded values, assigned so that TensorFlow runs on the runner's inputs
        fill = variable_fill(v.numpy(), seed=len(arguments) + 100)
        value = xla_run.make_argument(np, fill, v.shape.as_list(), np.dtype(v.dtype.name))
        v.assign(value)
        arguments.append(dict(name=getattr(v, "path", v.name), shape=v.shape.as_list(),
                              dtype=v.dtype.name, fill=fill, aliased_output=None))

    hlo = step.experimental_get_compiler_ir(batch)(stage="hlo_serialized")
    module = hlo_pb2.HloModuleProto.FromString(hlo)
    parameters = module.host_program_shape.parameters
    if len(parameters) != len(arguments):
        sys.exit("xla_step: the HLO module has %d parameters, the step %d inputs"
                 % (len(parameters), len(arguments)))
    for a, p in zip(arguments, parameters):
        if list(p.dimensions) != a["shape"]:
            sys.exit("xla_step: parameter %s has shape %s in the HLO module, %s in TensorFlow"
                     % (a["name"], list(p.dimensions), a["shape"]))
    for entry in module.input_output_alias.entries:
        arguments[entry.parameter_number]["aliased_output"] = entry.output_shape_index[0]

    metric_names = sorted(concrete.structured_outputs[0])
    names = [None] * len(module.host_program_shape.result.tuple_shapes)
    names[:len(metric_names) + 1] = ["metrics/" + k for k in metric_names] + ["grad_norm"]
    for a in arguments:
        if a["aliased_output"] is not None:
            names[a["aliased_output"]] = "updated/" + a["name"]
    if None in names:
        sys.exit("xla_step: outputs %s of the HLO module are neither returned nor an updated "
                 "variable" % [i for i, n in enumerate(names) if n is None])
    values = []
    if reference:   # TensorFlow's first step on the seeded inputs
        metrics, norm = step(batch)
        updated = {"updated/" + a["name"]: v for a, v in zip(arguments[len(batch):], variables)}
        values = [metrics[n[len("metrics/"):]] if n.startswith("metrics/") else
                  norm if n == "grad_norm" else updated[n] for n in names]
        values = [np.asarray(v.numpy()) for v in values]

    step_seconds = None
    if tf_steps:
        times = []
        for _ in range(tf_steps):
            start = time.perf_counter()
            step(batch)[1].numpy()
            times.append(time.perf_counter() - start)
        step_seconds = float(np.median(times))

    name = os.path.basename(os.path.normpath(out))
    dims = (model_config.hidden_size, model_config.num_hidden_layers,
            model_config.intermediate_size, model_config.vocab_size)
    spec = {
        "format": xla_run.FORMAT, "name": name, "hlo": "step.hlo.pb.gz",
        "config": config_path, "task": c.task, "with_nsp": with_nsp, "precision": precision,
        "optimizer": c.optimizer.name, "seq_len": seq_len, "per_replica_batch": per_replica_batch,
        "micro_batches": c.train.micro_batches, "predictions_per_row": predictions,
        "model": dict(zip(("hidden", "layers", "intermediate", "vocab"), dims)),
        "arguments": arguments,
        "outputs": [{"name": n, "shape": list(s.dimensions)} for n, s in zip(
            names, module.host_program_shape.result.tuple_shapes)],
        "model_flops_per_step": per_replica_batch * train_flops(dims, seq_len, predictions),
        "flop_count": "analytic, benchmarks.tpu_estimate.train_flops: 3 x forward matmul FLOPs",
        "tensorflow": {
            "version": tf.__version__,
            "first_step": {n: float(v) for n, v in zip(names[:len(metric_names) + 1], values)},
            "checksums": {n: xla_run.checksum(v) for n, v in zip(names, values)},
            "step_seconds": step_seconds,
            # The machine TensorFlow's step was timed on (lscpu, measured matmul rate).
            "machine": measure.describe_machine() if tf_steps else None,
        },
    }
    os.makedirs(out, exist_ok=True)
    with gzip.open(os.path.join(out, "step.hlo.pb.gz"), "wb") as f:   # ~10x smaller to ship
        f.write(hlo)
    with open(os.path.join(out, "step.json"), "w") as f:
        json.dump(spec, f, indent=1)
    if save_outputs and values:
        np.savez(os.path.join(out, "tensorflow_outputs.npz"),
                 **{"out_%d" % i: v for i, v in enumerate(values)})
    return spec


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("export", help="one config and shape")
    one.add_argument("--config", required=True, help="a config file, e.g. configs/bert_base.py")
    one.add_argument("--seq_len", type=int, default=128)
    one.add_argument("--per_replica_batch", type=int, required=True,
                     help="rows of one replica's step (all micro-batches)")
    one.add_argument("--precision", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    one.add_argument("--task", choices=["mlm", "unilm", "lm", "simbert"], help="default: the config's")
    one.add_argument("--nsp", dest="with_nsp", action="store_true", default=None,
                     help="MLM with the next-sentence loss (default: the config's train.with_nsp)")
    one.add_argument("--no_nsp", dest="with_nsp", action="store_false")
    one.add_argument("--vocab_size", type=int, help="default: the config's, else %d" % DEFAULT_VOCAB)
    one.add_argument("--max_predictions", type=int, help="MLM targets a row (default 15%% of seq_len)")
    one.add_argument("--micro_batches", type=int, help="default: the config's")
    one.add_argument("--tf_steps", type=int, default=0, help="time TensorFlow's own jit step too")
    one.add_argument("--save_outputs", action="store_true", help="tensorflow_outputs.npz (small models)")
    one.add_argument("--no_reference", dest="reference", action="store_false",
                     help="skip TensorFlow's first step (minutes on a CPU for BERT-large)")
    one.add_argument("--out", required=True)
    suite = sub.add_parser("suite", help="the exports benchmarks/gpu_check.sh runs (%s)" % ", ".join(
        "%s seq %d batch %s" % (n, s, "/".join(map(str, b))) for n, s, b in SUITE))
    suite.add_argument("--out", required=True)
    suite.add_argument("--precision", default="bfloat16", choices=["float32", "bfloat16"])
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.command == "export":
        kw = {k: v for k, v in vars(args).items() if k not in ("command", "config", "out")}
        spec = export(args.config, args.out, **kw)
        summary = {k: spec[k] for k in ("name", "task", "with_nsp", "precision", "seq_len",
                                        "per_replica_batch", "model_flops_per_step")}
        summary.update(arguments=len(spec["arguments"]), tensorflow=spec["tensorflow"]["first_step"])
        print(json.dumps(summary))
        return
    for config, seq_len, batches in SUITE:
        for batch in batches:
            out = os.path.join(args.out, "%s_seq%d_b%d" % (config, seq_len, batch))
            # TensorFlow's reference step (CPU minutes) for the smallest batch of each shape.
            spec = export("configs/%s.py" % config, out, seq_len, batch, args.precision,
                          reference=batch == batches[0])
            size = os.path.getsize(os.path.join(out, spec["hlo"]))
            print(json.dumps({"exported": out, "arguments": len(spec["arguments"]),
                              "megabytes": round(size / 2**20, 1)}), flush=True)


if __name__ == "__main__":
    main()
