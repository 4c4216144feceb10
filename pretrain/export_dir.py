"""An export directory (docs/FORMATS.md §2), or a Google release directory, as one typed object.

    export = ExportDir("exports/base/100000")       # or chinese_L-12_H-768_A-12/, or …/bert_model.ckpt
    export.config_path, export.prefix               # bert_config.json, the checkpoint prefix
    export.require_vocab()                          # vocab.txt | sentencepiece.model, or a clear error
    export.manifest.vocab.lower_case                # export_manifest.json; None for a release

    exports/base/100000/
      bert_config.json                      Google's keys (+ embedding_size when factorized)
      bert_model.ckpt.index, bert_model.ckpt.data-00000-of-00001
      vocab.txt | sentencepiece.model       named by the manifest; a release has vocab.txt
      export_manifest.json                  `ExportManifest`; absent from a release
      hf/                                   only where the manifest's `formats` names it: the same
                                            weights as a transformers directory (`hf_format`), and
                                            with sentence_transformers, its modules too
      keras_hub/                            likewise: a KerasHub preset (`keras_hub_format`)

The file names are defined here and nowhere else (`google_checkpoint` takes CHECKPOINT from here).
`ExportDir` opens a directory once: the checkpoint prefix is resolved once, the manifest and the
config are read once, the checkpoint's reader is opened once, whatever each loader asks of them.

Importing this module does not load TensorFlow: `google_checkpoint`, which does (and which imports
the names above), is imported when a directory is opened.
"""

import dataclasses
import datetime
import json
import os
from typing import Optional

from storage import fs
from data_pipeline.tokenizer import VocabRecord

CHECKPOINT = "bert_model.ckpt"
BERT_CONFIG = "bert_config.json"
EXPORT_MANIFEST = "export_manifest.json"
# The vocabulary's name by kind, in an export and in a run's vocab/ copy; vocab.txt is also the
# name of Google's releases.
VOCAB_FILES = {"wordpiece": "vocab.txt", "sentencepiece": "sentencepiece.model"}

FORMAT = "google-bert-checkpoint"
# 1: format_version recorded. Manifests written before it have none and load as version 0; their
# keys are the same. The optional `formats` key does not change the version: the Google layout is
# at the top of every export, so a reader that does not know the key reads what it always read.
FORMAT_VERSION = 1
# The formats an export can hold, by name, and the subdirectory each is written to ("." the top).
# sentence_transformers adds its files (modules.json, 1_Pooling/, ...) to the transformers directory.
FORMAT_DIRS = {"google": ".", "hf": "hf", "sentence_transformers": "hf", "keras_hub": "keras_hub"}
GOOGLE_ONLY = {"google": "."}


@dataclasses.dataclass
class ExportManifest:
    """export_manifest.json: what an export holds and where its weights came from.

    Keys this code does not know (a newer writer's) are kept in `extra` and written back after the
    known ones, and a newer format_version is read as far as the known keys go: the files an
    export's readers load are Google's layout, which a manifest version does not change.
    """
    source: dict            # {"workdir", "checkpoint", "step", "ema", "index_sha256"} of a run;
                            # {"export": DIR} of a model fine-tuned from an export
    task: Optional[str]     # mlm | unilm | lm | simbert | what a fine-tuning trained for
    heads: dict             # {"mlm", "pooler", "nsp", "pooler_trained"}: bools
    bert_config: dict       # bert_config.json's keys
    vocab: VocabRecord      # `file` names the vocabulary in the directory
    variables: dict         # {Google name: shape}
    files: dict             # {file name: {"bytes", "sha256"}}, the manifest excepted
    metrics: dict = dataclasses.field(default_factory=dict)      # {split: {name: value}}
    run_config: dict = dataclasses.field(default_factory=dict)   # the run's config.json
    created: str = dataclasses.field(default_factory=lambda: datetime.datetime.now(
        datetime.timezone.utc).isoformat(timespec="seconds"))
    checkpoint: str = CHECKPOINT
    # {format name: subdirectory} of what the directory holds; left out of the file when it is only
    # the Google layout at the top, so such exports are the bytes they have always been.
    formats: dict = dataclasses.field(default_factory=lambda: dict(GOOGLE_ONLY))
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    extra: dict = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        """The manifest's JSON object, keys in the order exports have always written them."""
        d = {"format": self.format, "format_version": self.format_version, "created": self.created,
             "source": self.source, "task": self.task, "heads": self.heads,
             "bert_config": self.bert_config, "vocab": self.vocab.to_export_dict(),
             "checkpoint": self.checkpoint, "variables": self.variables, "metrics": self.metrics,
             "files": self.files, "run_config": self.run_config}
        if self.formats != GOOGLE_ONLY:
            d["formats"] = self.formats
        d.update(self.extra)
        return d

    @classmethod
    def from_json(cls, d: dict, where: str = "the export manifest") -> "ExportManifest":
        try:
            known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
            fields = {k: d[k] for k in known if k not in ("format_version", "formats")}
            fields["formats"] = d.get("formats", dict(GOOGLE_ONLY))   # older exports: Google's only
            fields["vocab"] = VocabRecord.from_export_dict(d["vocab"])
            return cls(format_version=d.get("format_version", 0),
                       extra={k: v for k, v in d.items() if k not in known}, **fields)
        except (KeyError, TypeError) as e:
            raise _checkpoint_error("%s is not an export manifest this code can read (%s: %s). "
                                    "Re-export the model, or delete the manifest to load the "
                                    "directory as a Google release." % (where, type(e).__name__, e))

    @classmethod
    def parse(cls, data: bytes, where: str) -> "ExportManifest":
        """The manifest in `data`, the bytes of the file `where`."""
        try:
            d = json.loads(data)
        except ValueError as e:
            raise _checkpoint_error("%s is not valid JSON (%s): the export did not finish, or the "
                                    "file was edited. Re-export the model." % (where, e))
        return cls.from_json(d, where)

    @classmethod
    def load(cls, directory: str) -> Optional["ExportManifest"]:
        """The manifest of the export in `directory`; None where there is none (a release)."""
        path = fs.join(directory, EXPORT_MANIFEST)
        return cls.parse(fs.read_bytes(path), path) if fs.exists(path) else None


class ExportDir:
    """An export or a Google release directory, opened once.

    Args:
      path: the directory, or a checkpoint prefix in it (see `google_checkpoint.resolve`).

    Raises:
      CheckpointError: no checkpoint there, or a manifest that cannot be read. A directory without a
        vocabulary opens (continued pretraining does without one); `require_vocab` raises then.
    """

    def __init__(self, path: str):
        self.prefix = _checkpoints().resolve(path)
        self.directory = os.path.dirname(self.prefix)
        self.config_path = fs.join(self.directory, BERT_CONFIG)
        self.manifest = ExportManifest.load(self.directory)
        self.vocab_path = self._find_vocab()
        self._config = self._reader = self._variables = None

    @classmethod
    def of(cls, export) -> "ExportDir":
        """`export` if it is an ExportDir, else the directory at that path, opened."""
        return export if isinstance(export, cls) else cls(export)

    def _find_vocab(self):
        """The manifest's vocabulary file, else vocab.txt; None where neither is there."""
        for name in (self.manifest.vocab.file if self.manifest else None, VOCAB_FILES["wordpiece"]):
            if name and fs.exists(fs.join(self.directory, name)):
                return fs.join(self.directory, name)
        return None

    def require_vocab(self) -> str:
        """The vocabulary's path; a CheckpointError naming the directory where there is none."""
        if self.vocab_path is None:
            named = self.manifest.vocab.file if self.manifest else None
            raise _checkpoint_error(
                "%s holds no vocabulary (%s). Copy the vocabulary the checkpoint was trained with "
                "into it as %s (Google's releases ship vocab.txt beside bert_model.ckpt)."
                % (self.directory, "its %s names %s, which is missing" % (EXPORT_MANIFEST, named)
                   if named else "no vocab.txt", named or VOCAB_FILES["wordpiece"]))
        return self.vocab_path

    @property
    def lower_case(self) -> Optional[bool]:
        """The case folding the vocabulary was used with; None for a release (the tokenizer's
        default)."""
        return self.manifest.vocab.lower_case if self.manifest else None

    @property
    def task(self) -> Optional[str]:
        return self.manifest.task if self.manifest else None

    @property
    def config(self):
        """bert_config.json as a `modeling.BertConfig` (read on first use)."""
        if self._config is None:
            self._config = _checkpoints().read_bert_config(self.config_path)
        return self._config

    @property
    def reader(self):
        """The checkpoint's `tf.train.CheckpointReader` (opened on first use)."""
        if self._reader is None:
            self._reader = _checkpoints().open_reader(self.prefix)
        return self._reader

    @property
    def variables(self) -> dict:
        """{name: shape} of every variable in the checkpoint."""
        if self._variables is None:
            self._variables = self.reader.get_variable_to_shape_map()
        return self._variables

    def has_head(self, head: str) -> bool:
        """Whether the checkpoint holds `head` ("pooler", "mlm" or "nsp")."""
        return any(name.startswith(_checkpoints().HEADS[head]) for name in self.variables)


def _checkpoints():
    """`pretrain.google_checkpoint`, imported on first use: it imports this module's names, and
    TensorFlow."""
    from pretrain import google_checkpoint

    return google_checkpoint


def _checkpoint_error(text):
    return _checkpoints().CheckpointError(text)
