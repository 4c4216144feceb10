"""What a pretraining config may say, checked before anything is built (and before TensorFlow is
imported, so a mistyped value fails in a second).

    errors = problems(config)      # ["train.steps_per_loop=0: must be an integer >= 1", ...]
    check(config)                  # ConfigError listing every problem

The fields are those of `configs/base.py`, the one place their defaults are written; a config
file or a --config.x override may not add others (a typo would silently do nothing). The
choices below (tasks, activations, strategies, optimizers, schedules) are defined here once and
imported by the modules that implement them.
"""

import re

TASKS = ("mlm", "unilm", "lm", "simbert")
ACTIVATIONS = ("gelu", "gelu_new", "relu", "tanh")
STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored", "tpu")
OPTIMIZERS = ("adamw", "lamb", "adam", "sgd")
SCHEDULES = ("warmup_decay", "piecewise")
DECAY_SHAPES = ("linear", "polynomial", "cosine", "constant")
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
WORKER_SPLITS = ("files", "rows")
# Fields renamed since earlier releases: old path -> new path.
RENAMED = {"optimizer.decay": "optimizer.decay_shape"}


class ConfigError(ValueError):
    """A config that cannot train; the message lists every field at fault and what is allowed."""


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


RULES = {
    "task": _choice(TASKS), "seed": _int(0), "init_checkpoint": _text, "init_vocab_map": _text,
    "model.vocab_size": _int(0), "model.hidden_size": _int(1), "model.num_hidden_layers": _int(1),
    "model.num_attention_heads": _int(1), "model.intermediate_size": _int(1),
    "model.hidden_act": _choice(ACTIVATIONS),
    "model.hidden_dropout_prob": _float(0, 1, high_open=True),
    "model.attention_probs_dropout_prob": _float(0, 1, high_open=True),
    "model.max_position_embeddings": _int(2), "model.type_vocab_size": _int(1),
    "model.initializer_range": _float(0, None, low_open=True), "model.embedding_size": _int(0),
    "data.train_dir": _text, "data.shuffle_buffer": _int(1), "data.worker_split": _choice(WORKER_SPLITS),
    "data.skip_bad_shards": _bool,
    "train.global_batch_size": _int(1), "train.micro_batches": _int(1), "train.steps": _int(1),
    "train.steps_per_loop": _int(1), "train.checkpoint_every": _int(1), "train.keep_checkpoints": _int(1),
    "train.eval_every": _int(0), "train.eval_steps": _int(0), "train.recompute": _bool,
    "train.precision": _choice(PRECISIONS), "train.jit_compile": _bool, "train.clip_norm": _float(0),
    "train.max_nonfinite_in_a_row": _int(1), "train.with_nsp": _bool,
    "optimizer.name": _choice(OPTIMIZERS), "optimizer.learning_rate": _float(0, None, low_open=True),
    "optimizer.schedule": _choice(SCHEDULES), "optimizer.warmup_steps": _int(0),
    "optimizer.decay_shape": _choice(DECAY_SHAPES), "optimizer.decay_steps": _int(0),
    "optimizer.power": _float(0, None, low_open=True), "optimizer.end_learning_rate": _float(0),
    "optimizer.piecewise": _piecewise, "optimizer.step_offset": _int(0),
    "optimizer.weight_decay": _float(0), "optimizer.beta_1": _float(0, 1, high_open=True),
    "optimizer.beta_2": _float(0, 1, high_open=True), "optimizer.epsilon": _float(0, None, low_open=True),
    "optimizer.bias_correction": _bool, "optimizer.momentum": _float(0, 1, high_open=True),
    "optimizer.exclude_from_weight_decay": _patterns,
    "optimizer.exclude_from_layer_adaptation": _patterns, "optimizer.lazy": _patterns,
    "optimizer.lr_multipliers": _multipliers, "optimizer.layer_decay": _float(0, 1),
    "optimizer.lookahead.k": _int(0), "optimizer.lookahead.alpha": _float(0, 1, low_open=True),
    "optimizer.ema_decay": _float(0, 1, high_open=True), "optimizer.gradient_transforms": _transforms,
    "distribute.name": _choice(STRATEGIES), "distribute.device": _text, "distribute.devices": _patterns,
    "distribute.tpu": _text,
}


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
    """Every problem of `config` as "field=value: what is allowed" lines (empty: it is fine)."""
    values = _leaves(config)
    out = unknown_fields(config)
    for path in sorted(set(RULES) - set(values)):
        out.append("%s: missing (configs start from configs/base.py's get_config())" % path)
    for path, rule in RULES.items():
        if path in values:
            message = rule(values[path])
            if message:
                out.append("%s=%r: %s" % (path, values[path], message))
    model = config.get("model", {})
    heads, hidden = model.get("num_attention_heads"), model.get("hidden_size")
    if isinstance(heads, int) and isinstance(hidden, int) and heads > 0 and hidden % heads:
        out.append("model.hidden_size=%d: must be a multiple of model.num_attention_heads=%d"
                   % (hidden, heads))
    optimizer = config.get("optimizer", {})
    if optimizer.get("name") in ("adam", "sgd") and (optimizer.get("weight_decay") or optimizer.get("lazy")):
        out.append("optimizer.name=%r: Keras's %s has no decoupled weight decay or lazy rows here; "
                   "set optimizer.weight_decay=0 and optimizer.lazy=[] or use adamw/lamb"
                   % (optimizer.get("name"), optimizer.get("name")))
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
