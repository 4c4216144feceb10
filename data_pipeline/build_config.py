"""The settings of a data build: `BuildConfig`, whose dataclass defaults are the only place the
defaults are written, and its two other forms.

    config = BuildConfig(output_dir="data/x", vocab="vocab.txt", source=SourceConfig(("a.txt",)))
    cd = to_config_dict(config)          # ml_collections.ConfigDict: configs/data/*.py start here
    config = from_config_dict(cd)        # back, after --config.x= overrides
    validate(config)                     # BuildError naming the setting at fault

`launch.build_data --config=configs/data/<name>.py` builds from a ConfigDict; its other flags
(--input, --seq_len, ...) are shortcuts for fields of it (`SHORTCUTS` in launch/build_data.py).
"""

import dataclasses
import typing
from typing import Optional

from data_pipeline import segmenter, sources, tasks
from data_pipeline.instances import InstanceConfig
from data_pipeline.masking import MaskingConfig

ENGINES = ("local", "beam")
MODES = ("dynamic", "static")


class BuildError(ValueError):
    """Bad settings, inputs or output directory; the message names the flag or file at fault."""


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    """Every setting of one data build; its defaults are the project's defaults.

    Owns: the output directory, the vocabulary, the sources and how their text becomes records
    (task, instance, masking, mode) and shards. Lifecycle: made from flags or a configs/data
    recipe (`from_config_dict`), checked once by `validate` (which the engines call first), then
    read, never changed (frozen): the fields that change the output bytes (all but `VOLATILE`)
    make the build's fingerprint, and the manifest records them all under `args`.
    """
    output_dir: str
    vocab: str
    source: sources.SourceConfig
    task: tasks.TaskConfig = tasks.TaskConfig()
    instance: InstanceConfig = InstanceConfig()
    masking: MaskingConfig = MaskingConfig()
    mode: str = "dynamic"              # dynamic (loader masks each epoch) | static (Google layout)
    dupe_factor: int = 5               # static only: masked copies of each instance
    lower_case: Optional[bool] = None
    segmenter: Optional[str] = None    # rjieba | jieba | jieba_fast: Chinese whole-word masking
    seed: int = 12345                  # google-research/bert's create_pretraining_data default
    num_shards: int = 16               # files that many input pipelines (hosts) can read apart
    eval_fraction: float = 0.0         # documents held out for the eval split
    num_eval_shards: int = 1
    docs_per_chunk: int = 256          # the unit of work: big enough to pay a worker's round trip
    num_workers: int = 1
    compress: bool = False             # GZIP shards
    max_bad_line_fraction: float = 0.01   # a corpus's noise; more is a wrong format or encoding
    overwrite: bool = False
    progress: bool = True
    engine: str = "local"              # local (processes on this machine) | beam (Apache Beam)
    beam_options: str = ""             # Beam pipeline options, one string: "--runner=... ..."


# Fields that do not change the output bytes (so not part of a build's fingerprint).
VOLATILE = ("output_dir", "num_workers", "overwrite", "progress", "engine", "beam_options")


def validate(c: BuildConfig):
    checks = [
        (c.mode in MODES, "--mode must be 'dynamic' or 'static', got %r" % (c.mode,)),
        (c.engine in ENGINES, "--engine must be 'local' or 'beam', got %r" % (c.engine,)),
        (bool(c.output_dir), "--output_dir is required"),
        (bool(c.vocab), "--vocab is required (a vocab.txt or SentencePiece .model)"),
        (bool(c.source.inputs), "--input is required: files, globs, or tfds:NAME"),
        (c.num_shards >= 1, "--num_shards must be >= 1, got %d" % c.num_shards),
        (c.num_eval_shards >= 1, "--num_eval_shards must be >= 1, got %d" % c.num_eval_shards),
        (c.num_workers >= 1, "--num_workers must be >= 1, got %d" % c.num_workers),
        (c.dupe_factor >= 1, "--dupe_factor must be >= 1, got %d" % c.dupe_factor),
        (c.docs_per_chunk >= 1, "--docs_per_chunk must be >= 1, got %d" % c.docs_per_chunk),
        (0.0 <= c.eval_fraction < 1.0, "--eval_fraction must be in [0, 1), got %r" % c.eval_fraction),
        (0.0 <= c.max_bad_line_fraction <= 1.0,
         "--max_bad_line_fraction must be in [0, 1], got %r" % c.max_bad_line_fraction),
        (c.source.max_document_chars >= 1, "--max_document_chars must be >= 1"),
        (c.source.dedup in sources.DEDUP, "--dedup must be one of %s, got %r"
         % (", ".join(sources.DEDUP), c.source.dedup)),
    ]
    for ok, message in checks:
        if not ok:
            raise BuildError(message)
    if c.task.task != tasks.MLM and c.mode != "dynamic":
        raise BuildError("--mode=static writes masked MLM samples; --task=%s has no masks (leave "
                         "--mode at its default)." % c.task.task)
    try:
        sources.parse_inputs(c.source.inputs)
        if c.segmenter:
            segmenter.Segmenter(c.segmenter)   # a known name whose package is installed
        c.task.validate(c.instance.seq_len)
        if c.task.task == tasks.MLM:
            c.instance.validate()
            c.masking.validate(c.instance.seq_len)
    except ValueError as e:
        raise BuildError(str(e))


# ----------------------------------------------------------------------- ConfigDict forms

def to_config_dict(config: BuildConfig = None):
    """The config as an ml_collections.ConfigDict (the defaults when `config` is None; then
    output_dir, vocab and source.inputs are empty and must be given)."""
    import ml_collections

    if config is None:
        config = BuildConfig(output_dir="", vocab="", source=sources.SourceConfig(inputs=()))
    return ml_collections.ConfigDict(_as_dict(config), type_safe=True)


def _as_dict(instance):
    import ml_collections

    out = {}
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = _as_dict(value)
        elif value is None:   # an Optional field: typed, so an override is parsed to its type
            out[f.name] = ml_collections.config_dict.placeholder(_optional_type(f.type))
        elif isinstance(value, tuple):
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out


def _optional_type(annotation):
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else str


def from_config_dict(cd) -> BuildConfig:
    """A BuildConfig from a ConfigDict (or a plain dict) of the shape `to_config_dict` makes;
    BuildError for a field that BuildConfig does not have."""
    d = cd.to_dict() if hasattr(cd, "to_dict") else dict(cd)
    return _build(BuildConfig, d, "")


def _build(cls, d, prefix):
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise BuildError("unknown build setting(s) %s (the %s has: %s)" % (
            ", ".join(prefix + u for u in unknown), prefix.rstrip(".") or "config",
            ", ".join(sorted(known))))
    kwargs = {}
    for name, value in d.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            kwargs[name] = _build(kind, value or {}, prefix + name + ".")
        elif isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)
