"""What a pretraining config says: each field once, with its default and its check, in the typed
sections below (`PretrainConfig`); the ConfigDict form that configs/*.py and --config.x=value
overrides work on; and the checks, made before TensorFlow is imported (a typo fails in a second).

    cd = to_config_dict()                 # the defaults as a ConfigDict (configs/base.py)
    errors = problems(cd)                 # ["train.steps_per_loop=0: must be an integer >= 1", ...]
    config = parse(cd)                    # ConfigError listing every problem, else a PretrainConfig
    optimizer = section(OptimizerConfig, {"learning_rate": 1e-3}, "optimizer.")   # defaults filled in

A field is declared as `name: type = _field(default, check)`; nothing else writes its default:
the engine takes its typed section (build_optimizer and build_schedule an `OptimizerConfig`,
the train step and the trainer a `PretrainConfig`), and the constructors whose arguments are
config fields default to these. A config file or an override may not add fields (a typo would
silently do nothing). The choices (tasks, activations, strategies, optimizers, schedules, ...)
are the lists of `pretrain.choices`, which the modules implementing them import too.
"""

import dataclasses
import re
from typing import Optional, Tuple

from pretrain.choices import (ACTIVATIONS, DECAY_SHAPES, DECOUPLED, OPTIMIZERS, PRECISIONS, SCHEDULES,
                              STRATEGIES, TASKS, WORKER_SPLITS)

# Fields renamed since earlier releases: old path -> new path.
RENAMED = {"optimizer.decay": "optimizer.decay_shape"}


class ConfigError(ValueError):
    """A config that cannot train; the message lists every field at fault and what is allowed."""


# ------------------------------------------------------------------------------ value checks
# Each returns what is wrong with a value (None: nothing); launch's flag checks use them too.

def _int(low=None, high=None):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int):
            return "must be an integer"
        if low is not None and v < low:
            return "must be an integer >= %d" % low
        if high is not None and v > high:
            return "must be an integer <= %d" % high
    return check


def _float(low=None, high=None, low_open=False, high_open=False):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return "must be a number"
        if (low is not None and (v < low or (low_open and v == low))) or (
                high is not None and (v > high or (high_open and v == high))):
            return "must be in %s%s, %s%s" % ("(" if low_open else "[", "-inf" if low is None else low,
                                                "inf" if high is None else high, ")" if high_open else "]")
    return check


def _choice(options):
    return lambda v: None if v in options else "must be one of %s" % ", ".join(options)


def _bool(v):
    return None if isinstance(v, bool) else "must be true or false"


def _text(v):
    return None if isinstance(v, str) else "must be a string"


def _patterns(v):
    if not isinstance(v, (list, tuple)) or not all(isinstance(p, str) for p in v):
        return "must be a list of regular expressions"
    for p in v:
        try:
            re.compile(p)
        except re.error as e:
            return "%r is not a regular expression (%s)" % (p, e)


def _multipliers(v):
    if not isinstance(v, (list, tuple)):
        return "must be a list of [pattern, multiplier] pairs"
    for pair in v:
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2 or not isinstance(pair[0], str)
                or isinstance(pair[1], bool) or not isinstance(pair[1], (int, float)) or pair[1] < 0):
            return "must be a list of [pattern, multiplier >= 0] pairs, got %r" % (pair,)
        if _patterns([pair[0]]):
            return _patterns([pair[0]])


def _piecewise(v):
    if hasattr(v, "items"):
        v = list(v.items())
    if not isinstance(v, (list, tuple)) or not all(
            isinstance(p, (list, tuple)) and len(p) == 2 for p in v):
        return "must be a list of [step, multiplier] pairs"


def _transforms(v):
    if not isinstance(v, (list, tuple)) or not all(hasattr(t, "get") and t.get("name") for t in v):
        return "must be a list of {\"name\": ..., \"pattern\": ..., ...} entries"


def _required_text(v):
    return None if isinstance(v, str) and v else "must be a non-empty string"


def _probe_name(v):
    if not isinstance(v, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", v):
        return "must be a name of letters, digits, _ . or - (it names the metrics probe/<name>/...)"


def _probes(v):
    """Every problem of the probe entries, as one message (entries are named by index)."""
    if not isinstance(v, (list, tuple)):
        return "must be a list of {\"name\": ..., \"train\": ..., \"eval\": ...} entries"
    found, names = [], []
    for i, entry in enumerate(v):
        if not hasattr(entry, "items"):
            found.append("[%d] is %r, not a mapping of ProbeConfig fields" % (i, entry))
            continue
        entry = dict(entry.items())
        known = {f.name: f for f in dataclasses.fields(ProbeConfig)}
        for key in sorted(set(entry) - set(known)):
            found.append("[%d].%s: no such field (a typo?); a probe has: %s" % (i, key, ", ".join(known)))
        for key, f in known.items():
            value = entry.get(key, f.default)
            message = f.metadata["check"](value)
            if message:
                found.append("[%d].%s=%r: %s" % (i, key, value, message))
        names.append(entry.get("name"))
    duplicated = sorted({n for n in names if isinstance(n, str) and names.count(n) > 1})
    if duplicated:
        found.append("names %s occur more than once" % ", ".join(duplicated))
    return "; ".join(found) or None


def probe_from_flag(text: str) -> dict:
    """launch.pretrain's --probe=NAME=TRAIN,EVAL[,KEY=VALUE...] -> a `probes` entry (checked with
    the config); ValueError naming the flag when it is not of that shape."""
    name, _, rest = text.partition("=")
    parts = rest.split(",") if rest else []
    if not name or len(parts) < 2 or "=" in parts[0] or "=" in parts[1]:
        raise ValueError("--probe=%s: expected NAME=TRAIN.csv,EVAL.csv[,KEY=VALUE...]" % text)
    entry = {"name": name, "train": parts[0], "eval": parts[1]}
    for part in parts[2:]:
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError("--probe=%s: %r is not KEY=VALUE" % (text, part))
        entry[key] = int(value) if key == "max_len" and value.isdigit() else value
    return entry


def decay_problem(name, weight_decay, lazy) -> Optional[str]:
    """Why an optimizer without decoupled weight decay (Keras's adam, sgd) cannot take the
    weight decay or lazy rows asked for; None when it can."""
    if name in OPTIMIZERS and name not in DECOUPLED and (weight_decay or lazy):
        return ("optimizer.name=%r: Keras's %s has no decoupled weight decay or lazy rows here; set "
                "optimizer.weight_decay=0 and optimizer.lazy=[] or use %s"
                % (name, name, "/".join(DECOUPLED)))
    return None


# ---------------------------------------------------------------------------- the sections

def _field(default, check, items=None):
    """A config field: its default (a list is written as a tuple, the typed form's) and its check;
    `items`: the section type of a list field's entries (each a mapping in the ConfigDict form)."""
    return dataclasses.field(default=tuple(default) if isinstance(default, list) else default,
                             metadata={"check": check, "items": items})


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Google bert_config.json fields (pretrain.modeling.BertConfig; a run's model is BERT-base
    unless its config says otherwise)."""
    vocab_size: int = _field(0, _int(0))                    # 0: from the data manifest
    hidden_size: int = _field(768, _int(1))
    num_hidden_layers: int = _field(12, _int(1))
    num_attention_heads: int = _field(12, _int(1))
    intermediate_size: int = _field(3072, _int(1))
    hidden_act: str = _field("gelu", _choice(ACTIVATIONS))
    hidden_dropout_prob: float = _field(0.1, _float(0, 1, high_open=True))
    attention_probs_dropout_prob: float = _field(0.1, _float(0, 1, high_open=True))
    max_position_embeddings: int = _field(512, _int(2))
    type_vocab_size: int = _field(2, _int(1))
    initializer_range: float = _field(0.02, _float(0, None, low_open=True))
    embedding_size: int = _field(0, _int(0))                # 0: hidden_size (no factorization)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """The data build the run trains on (`launch.build_data`'s output directory) and how it is read.

    worker_split: how hosts of a multi-worker run (launch.run) share the training stream.
      "files": each worker reads its own subset of the shard files (batch = global / workers):
               input work is split, so it scales to many hosts; needs >= as many train shards as
               workers, and a run must resume with the same number of workers.
      "rows":  every worker reads the whole stream at the global batch size and keeps its own
               rows of each batch: the batches (and so the weights, dropout aside) equal a
               single-process run's for any number of workers, which may change on resume;
               costs each worker the parsing/masking of the whole global batch (W x in total).
    skip_bad_shards: shards that do not match the manifest (missing, truncated, changed bytes)
      stop the run with an error naming them (False), or are left out, logged and counted (True;
      local shards are then read once at start-up to check their CRC32C).
    """
    train_dir: str = _field("", _text)
    shuffle_buffer: int = _field(10000, _int(1))
    worker_split: str = _field("files", _choice(WORKER_SPLITS))
    skip_bad_shards: bool = _field(False, _bool)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Batching, accumulation, precision, checkpoints and evaluation."""
    global_batch_size: int = _field(256, _int(1))
    micro_batches: int = _field(1, _int(1))                # gradient accumulation: k micro-batches per update
    steps: int = _field(1_000_000, _int(1))
    steps_per_loop: int = _field(100, _int(1))             # updates per tf.function call
    checkpoint_every: int = _field(1000, _int(1))
    keep_checkpoints: int = _field(3, _int(1))
    eval_every: int = _field(10000, _int(0))               # 0: only at the end
    eval_steps: int = _field(100, _int(0))                 # 0: the whole eval split
    recompute: bool = _field(False, _bool)                 # tf.recompute_grad per transformer block
    # float32 | bfloat16 | float16 (dynamic loss scaling) | auto (bfloat16 on TPUs, else float32)
    precision: str = _field("float32", _choice(PRECISIONS))
    jit_compile: bool = _field(False, _bool)
    clip_norm: float = _field(1.0, _float(0))              # global-norm clipping (0: off)
    max_nonfinite_in_a_row: int = _field(20, _int(1))
    with_nsp: bool = _field(True, _bool)                   # NSP/SOP loss when the data has sentence pairs


@dataclasses.dataclass(frozen=True)
class LookaheadConfig:
    k: int = _field(0, _int(0))                            # 0: no Lookahead
    alpha: float = _field(0.5, _float(0, 1, low_open=True))


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """The optimizer, its schedule and the wrappers around it (pretrain/optimizers.py,
    schedules.py, updates.py).

    name: adamw | lamb | adam | sgd (Keras's; no weight decay there). schedule "warmup_decay":
    learning_rate reached after warmup_steps, then along `decay_shape` (linear | polynomial with
    `power` | cosine | constant) to end_learning_rate at decay_steps (0: the run's steps).
    schedule "piecewise": learning_rate x a multiplier interpolated between the points of
    `piecewise`, [[step, multiplier], ...] (bert4keras's piecewise_linear). step_offset: steps
    already done by an earlier phase (phase 2 of a 128 -> 512 recipe continues the schedule).
    Name patterns are regular expressions searched in variable paths (e.g.
    bert/layer_3/query/kernel).
    """
    name: str = _field("adamw", _choice(OPTIMIZERS))
    learning_rate: float = _field(1e-4, _float(0, None, low_open=True))
    schedule: str = _field("warmup_decay", _choice(SCHEDULES))
    warmup_steps: int = _field(10000, _int(0))
    decay_shape: str = _field("linear", _choice(DECAY_SHAPES))
    decay_steps: int = _field(0, _int(0))
    power: float = _field(1.0, _float(0, None, low_open=True))
    end_learning_rate: float = _field(0.0, _float(0))
    piecewise: tuple = _field([], _piecewise)
    step_offset: int = _field(0, _int(0))
    weight_decay: float = _field(0.01, _float(0))
    beta_1: float = _field(0.9, _float(0, 1, high_open=True))
    beta_2: float = _field(0.999, _float(0, 1, high_open=True))
    epsilon: float = _field(1e-6, _float(0, None, low_open=True))
    bias_correction: bool = _field(True, _bool)   # adamw: False = google-research/bert's AdamWeightDecay
    momentum: float = _field(0.0, _float(0, 1, high_open=True))   # sgd
    # Google BERT, NVIDIA and Model Garden exclude LayerNorm and bias parameters.
    exclude_from_weight_decay: Tuple[str, ...] = _field(["LayerNorm", "bias"], _patterns)
    exclude_from_layer_adaptation: Tuple[str, ...] = _field(["LayerNorm", "bias"], _patterns)   # lamb
    # Embedding tables updated lazily: rows absent from the batch keep their values and state.
    lazy: Tuple[str, ...] = _field([], _patterns)
    lr_multipliers: tuple = _field([], _multipliers)       # [[pattern, multiplier], ...]; first match wins
    layer_decay: float = _field(0.0, _float(0, 1))         # layer-wise LR decay factor in (0, 1] (0: off)
    lookahead: LookaheadConfig = LookaheadConfig()
    # An exponential moving average of the weights, kept for export (0: off).
    ema_decay: float = _field(0.0, _float(0, 1, high_open=True))
    # Per-variable gradient hooks after the all-reduce, before global-norm clipping, e.g.
    # [{"name": "clip_by_norm", "max_norm": 1.0, "pattern": "embeddings"}].
    gradient_transforms: tuple = _field([], _transforms)


@dataclasses.dataclass(frozen=True)
class DistributeConfig:
    """The tf.distribute strategy (pretrain/distribute.py)."""
    name: str = _field("default", _choice(STRATEGIES))
    device: str = _field("", _text)                        # one_device ("": /cpu:0)
    devices: Tuple[str, ...] = _field([], _patterns)       # mirrored ([]: every local GPU)
    tpu: str = _field("", _text)                           # tpu: "local", or the TPU's name


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    """One downstream probe (`config.probes`, pretrain/probes.py): two labelled CSV files, local or
    gs://, whose first row names the columns. At each evaluation a linear classifier on the
    encoder's features of the `train` rows is scored on the `eval` rows. text_b: a second text
    column, for sentence pairs ("": none). max_len: tokens per row, [CLS] and [SEP]s included
    (0: the data's seq_len)."""
    name: str = _field("", _probe_name)
    train: str = _field("", _required_text)
    eval: str = _field("", _required_text)
    text: str = _field("text", _required_text)
    text_b: str = _field("", _text)
    label: str = _field("label", _required_text)
    max_len: int = _field(0, _int(0))


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """A whole pretraining config. init_checkpoint, for continued pretraining: a Google-layout
    checkpoint (prefix or export directory), or a local transformers BERT/RoBERTa directory
    (config.json, *.safetensors), that a new run starts from; ignored once the workdir has
    checkpoints. Its vocabulary must be the data's, or init_vocab_map says how to map rows:
    "by_token", or a file of checkpoint ids (one per line)."""
    task: str = _field("mlm", _choice(TASKS))
    seed: int = _field(0, _int(0))
    init_checkpoint: str = _field("", _text)
    init_vocab_map: str = _field("", _text)
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    distribute: DistributeConfig = DistributeConfig()
    # Downstream probes ([{"name": ..., "train": ..., "eval": ...}, ...]: ProbeConfig fields).
    probes: Tuple[ProbeConfig, ...] = _field([], _probes, items=ProbeConfig)


def _is_section(f):
    return dataclasses.is_dataclass(f.default)


def _checks(cls, prefix=""):
    out = {}
    for f in dataclasses.fields(cls):
        if _is_section(f):
            out.update(_checks(type(f.default), prefix + f.name + "."))
        else:
            out[prefix + f.name] = f.metadata["check"]
    return out


# {dotted path: check} of every field.
RULES = _checks(PretrainConfig)


# ----------------------------------------------------------------------------- config checks

def _leaves(d, prefix=""):
    """{dotted path: value} of a (nested) ConfigDict or dict; dict-valued fields whose rule takes
    the dict (piecewise) count as leaves."""
    out = {}
    for key, value in d.items():
        path = prefix + key
        if hasattr(value, "items") and path not in RULES:
            out.update(_leaves(value, path + "."))
        else:
            out[path] = value
    return out


def unknown_fields(config, prefix=""):
    """A line for each field of `config` that no rule knows: a renamed field with its new name,
    any other with the fields its section has. `prefix` places a section of a config (e.g.
    "optimizer." for the `optimizer` section that `build_optimizer` takes)."""
    values = _leaves(config, prefix)
    return ["%s: %s" % (path, "renamed to %s" % RENAMED[path] if path in RENAMED
                         else "no such field (a typo?); %s" % _siblings(path))
            for path in sorted(set(values) - set(RULES))]


def problems(config):
    """Every problem of `config` (a ConfigDict, a dict or a PretrainConfig) as "field=value: what
    is allowed" lines (empty: it is fine)."""
    if isinstance(config, PretrainConfig):
        config = as_dict(config)
    values = _leaves(config)
    out = unknown_fields(config)
    for path in sorted(set(RULES) - set(values)):
        out.append("%s: missing (configs start from configs/base.py's get_config())" % path)
    for path, rule in RULES.items():
        if path in values:
            message = rule(values[path])
            if message:
                out.append("%s=%r: %s" % (path, values[path], message))
    heads, hidden = values.get("model.num_attention_heads"), values.get("model.hidden_size")
    if isinstance(heads, int) and isinstance(hidden, int) and heads > 0 and hidden % heads:
        out.append("model.hidden_size=%d: must be a multiple of model.num_attention_heads=%d"
                   % (hidden, heads))
    decay = decay_problem(values.get("optimizer.name"), values.get("optimizer.weight_decay"),
                          values.get("optimizer.lazy"))
    if decay:
        out.append(decay)
    return out


def _siblings(path):
    section = path.rsplit(".", 1)[0] if "." in path else ""
    names = sorted({p[len(section) + 1:].split(".")[0] if section else p.split(".")[0]
                    for p in RULES if not section or p.startswith(section + ".")})
    return "%s has: %s" % ("the %s section" % section if section else "the top level", ", ".join(names))


def check(config):
    found = problems(config)
    if found:
        raise ConfigError("the config has %d problem(s):\n  %s" % (len(found), "\n  ".join(found)))


# ------------------------------------------------------------------------------- conversions

def to_config_dict(config: PretrainConfig = None):
    """The config (default: the defaults) as an ml_collections.ConfigDict, the form configs/*.py
    edit and --config.x=value overrides change; its lists are lists."""
    import ml_collections

    return ml_collections.ConfigDict(as_dict(config or PretrainConfig()))


def as_dict(config) -> dict:
    """A typed config or section as plain JSON values, fields in their declared order (what
    the run's config.json holds)."""
    return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _plain(value):
    if dataclasses.is_dataclass(value):
        return as_dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def parse(config) -> PretrainConfig:
    """The typed form of a checked config (a ConfigDict, a dict, or a PretrainConfig, returned
    as it is); ConfigError listing every problem."""
    check(config)
    if isinstance(config, PretrainConfig):
        return config
    return _build(PretrainConfig, config)


def section(cls, values, prefix):
    """A typed section (e.g. `OptimizerConfig`) from a mapping that may leave fields out (they
    take their defaults); a `cls` instance is returned as it is. ValueError for a field that
    `cls` does not have (its values are checked where they are used). `prefix` places the
    section in a whole config ("optimizer.") for the messages."""
    if isinstance(values, cls):
        return values
    unknown = unknown_fields(values, prefix)
    if unknown:   # e.g. the old `decay` (now decay_shape) would silently keep the linear decay
        raise ValueError("; ".join(unknown))
    return _build(cls, values)


def _build(cls, values):
    values = values.to_dict() if hasattr(values, "to_dict") else dict(values)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        if _is_section(f):
            kwargs[f.name] = _build(type(f.default), value)
        elif f.metadata.get("items"):
            kwargs[f.name] = tuple(_build(f.metadata["items"], entry) for entry in value)
        elif isinstance(value, list):
            kwargs[f.name] = tuple(value)
        else:
            kwargs[f.name] = value
    return cls(**kwargs)
