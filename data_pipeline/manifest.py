"""`manifest.json`: what a data directory holds, written by the builder and read by everyone else.

    m = Manifest.load("data/wiki_128")
    m.check(vocab_size=30522, seq_len=128, task="mlm")   # ManifestError when data and model disagree
    m.paths("train")                                      # full paths of the train shards
    m.vocab.special_ids.cls                               # special ids, looked up by name at build
    problems = m.verify()                                 # shards missing, truncated or changed

The builder writes it last, when every shard is in place, so a directory with a manifest is a
complete build. Format versions:
  1  builders up to this project's first release: no per-shard sizes or checksums. Still read;
     `verify` can then only check that the shards exist.
  2  every shard's examples, bytes and CRC32C (base64, as Cloud Storage reports an object's).
A manifest of a newer format than this code knows is refused with an error saying to update.
"""

import dataclasses
import json
import os
from typing import Dict, List, Optional

from data_pipeline import schema
from data_pipeline.tokenizer import SpecialIds, VocabRecord
from storage import fs

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 2


class ManifestError(ValueError):
    """The data directory is missing, unreadable, or does not fit the model or the run."""


@dataclasses.dataclass
class Shard:
    file: str                          # name in the data directory (or a full path: google())
    examples: Optional[int] = None     # None: format 1 (counts per split only)
    bytes: Optional[int] = None
    crc32c: Optional[str] = None


@dataclasses.dataclass
class Split:
    shards: List[Shard]
    examples: Optional[int] = None

    @property
    def files(self) -> List[str]:
        return [s.file for s in self.shards]


# The vocabulary the data was tokenized with: the tokenizer's record, with the ids MLM masking may
# draw as random replacements. `Vocab` is the name this module's readers have always imported.
Vocab = VocabRecord


@dataclasses.dataclass
class Manifest:
    """What one data directory holds: its task and record layout, the vocabulary it was
    tokenized with, every split's shards (examples, bytes, CRC32C) and the build's statistics.

    Lifecycle: the builder makes it from the finished build (`build_steps.make_manifest`) and
    `save`s it last, once every shard is in place; from then on it is read-only. Readers `load`
    it (or describe Google's records with `google`), `check` it against their model and run,
    take the shards from `paths`, and `verify` them. `data_dir` is where it was loaded from (not
    saved: the directory may move); the paths it gives are under it.
    """
    task: str                                   # mlm | unilm | simbert | lm
    record_format: str                          # schema.FORMATS
    seq_len: int
    features: List[schema.Feature]
    splits: Dict[str, Split]
    vocab: Optional[VocabRecord] = None         # None: records written by another tool
    mode: Optional[str] = None                  # dynamic | static (MLM)
    layout: Optional[str] = None                # pack | pairs (MLM)
    sentence_task: Optional[str] = None         # nsp | sop (pairs)
    max_predictions_per_seq: Optional[int] = None
    masked_lm_prob: Optional[float] = None
    dupe_factor: Optional[int] = None
    compression: Optional[str] = None           # None | "GZIP"
    seed: Optional[int] = None
    task_config: dict = dataclasses.field(default_factory=dict)
    stats: dict = dataclasses.field(default_factory=dict)
    sources: list = dataclasses.field(default_factory=list)   # per input source (mixing, dedup)
    inputs: list = dataclasses.field(default_factory=list)
    args: dict = dataclasses.field(default_factory=dict)
    fingerprint: Optional[str] = None           # identifies the build (settings, inputs, vocab)
    builder_version: Optional[str] = None
    format_version: int = FORMAT_VERSION
    data_dir: Optional[str] = dataclasses.field(default=None, compare=False)  # loaded from; not saved

    # ---------------------------------------------------------------------- files and JSON

    @classmethod
    def load(cls, data_dir: str) -> "Manifest":
        path = fs.join(data_dir, MANIFEST_FILE)
        if not fs.exists(path):
            raise ManifestError("%s has no %s: build it with `python -m launch.build_data`, or "
                                "describe records from google-research/bert with "
                                "data_pipeline.manifest.Manifest.google(...)." % (data_dir, MANIFEST_FILE))
        try:
            d = json.loads(fs.read_bytes(path))
        except ValueError as e:
            raise ManifestError("%s is not valid JSON (%s): the build did not finish writing it, or "
                                "it was edited. Re-run the build_data command." % (path, e))
        return cls.from_dict(d, data_dir)

    def save(self, directory: str):
        """Writes manifest.json atomically (readers never see half of it)."""
        fs.write_bytes_atomic(fs.join(directory, MANIFEST_FILE),
                              json.dumps(self.to_dict(), indent=2).encode("utf-8"))

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "data_dir"}
        d["features"] = [f.as_dict() for f in self.features]
        d["vocab"] = self.vocab.to_dict() if self.vocab else None
        d["splits"] = {name: {"files": s.files, "examples": s.examples,
                              "shards": [dataclasses.asdict(x) for x in s.shards]}
                       for name, s in self.splits.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict, data_dir: Optional[str] = None) -> "Manifest":
        where = data_dir or "the manifest"
        version = d.get("format_version", 1)
        if version > FORMAT_VERSION:
            raise ManifestError("%s was written by a newer version of this project (manifest format "
                                "%s; this code reads up to %d): update the code, or rebuild the data "
                                "with this version." % (where, version, FORMAT_VERSION))
        try:
            known = {f.name for f in dataclasses.fields(cls)}
            fields = {k: v for k, v in d.items() if k in known}
            fields["features"] = schema.from_manifest(d["features"])
            fields["vocab"] = VocabRecord.from_dict(d["vocab"]) if d.get("vocab") else None
            if fields["vocab"] and data_dir:
                fields["vocab"].path = _vocab_path(fields["vocab"].path, data_dir)
            fields["splits"] = {name: _split(s) for name, s in d["splits"].items()}
            fields["format_version"] = version
            return cls(data_dir=data_dir, **fields)
        except (KeyError, TypeError, ValueError) as e:
            raise ManifestError("%s is not a manifest this code can read (%s: %s); rebuild the data "
                                "with `python -m launch.build_data`." % (where, type(e).__name__, e))

    @classmethod
    def google(cls, files, seq_len: int, max_predictions: int,
               compression: Optional[str] = None) -> "Manifest":
        """Describes TFRecords written by google-research/bert's create_pretraining_data.py."""
        return cls(task="mlm", record_format=schema.GOOGLE, seq_len=seq_len,
                   features=schema.features(schema.GOOGLE, seq_len, max_predictions, pairs=True),
                   splits={"train": Split([Shard(f) for f in files])}, mode="static",
                   layout="pairs", max_predictions_per_seq=max_predictions, compression=compression)

    # ------------------------------------------------------------------------------- reading

    @property
    def special_ids(self) -> SpecialIds:
        return self.vocab.special_ids

    def paths(self, split: str) -> List[str]:
        """Full paths of a split's shards."""
        if split not in self.splits:
            raise ManifestError("%s has no %r split (it has %s)." % (self.data_dir, split,
                                                                      ", ".join(self.splits)))
        return [f if self.data_dir is None else fs.join(self.data_dir, f)
                for f in self.splits[split].files]

    def has_examples(self, split: str) -> bool:
        return split in self.splits and bool(self.splits[split].examples)

    def check(self, vocab_size: Optional[int] = None, seq_len: Optional[int] = None,
              task: Optional[str] = None):
        """Clear errors when the data does not fit the model or the run."""
        where = self.data_dir or "the records"
        if task is not None and self.task != task:
            raise ManifestError("%s holds %r samples but the run trains task %r; build data with "
                                "--task=%s." % (where, self.task, task, task))
        if seq_len is not None and self.seq_len != seq_len:
            raise ManifestError("%s was built with seq_len=%d but the run uses seq_len=%d; rebuild "
                                "the data or change the config." % (where, self.seq_len, seq_len))
        if vocab_size is not None and self.vocab and self.vocab.vocab_size != vocab_size:
            raise ManifestError("%s was tokenized with a %d-token vocabulary (%s) but the model has "
                                "vocab_size=%d." % (where, self.vocab.vocab_size, self.vocab.path,
                                                    vocab_size))

    def verify(self, splits=None, checksums: bool = False) -> List[tuple]:
        """[(path, problem)] for shards that are missing, of another size than recorded, or whose
        CRC32C differs: on Cloud Storage the object's CRC32C comes with the listing and is always
        compared; local files are read for it only with `checksums`. One listing per directory
        on Cloud Storage: seconds, whatever the size of the data."""
        pairs = [(shard, path) for split in (splits or list(self.splits))
                 for shard, path in zip(self.splits[split].shards, self.paths(split))]
        found = _sizes([path for _, path in pairs])
        problems = []
        for shard, path in pairs:
            size, crc = found.get(path, (None, None))
            if size is None:
                problems.append((path, "missing"))
            elif shard.bytes is not None and size != shard.bytes:
                problems.append((path, "%d bytes, %d when built (truncated or replaced)"
                                 % (size, shard.bytes)))
            elif shard.crc32c and (crc or checksums):
                crc = crc or fs.crc32c(path)
                if crc != shard.crc32c:
                    problems.append((path, "CRC32C %s, %s when built (its bytes changed)"
                                     % (crc, shard.crc32c)))
        return problems


def _vocab_path(path, data_dir):
    """Manifests written before vocabulary paths were made absolute hold the path as typed: it is
    taken from the working directory as before or, where nothing is there, from the data
    directory's."""
    if "://" in path or os.path.isabs(path) or fs.exists(path):
        return path
    beside = fs.join(data_dir, path)
    return beside if fs.exists(beside) else path


def _split(d):
    if "shards" in d:
        return Split([Shard(**s) for s in d["shards"]], d.get("examples"))
    return Split([Shard(f) for f in d["files"]], d.get("examples"))


def _sizes(paths):
    """{path: (bytes, CRC32C or None)} of the paths that exist."""
    out, remote = {}, {}
    for path in paths:
        if path.startswith("gs://"):
            remote.setdefault(path.rsplit("/", 1)[0], []).append(path)
        elif fs.exists(path):
            out[path] = (fs.size(path), None)
    if remote:
        from storage import gcs
        for directory, wanted in remote.items():
            listed = gcs.list_sizes(directory)
            for path in wanted:
                if path.rsplit("/", 1)[1] in listed:
                    out[path] = listed[path.rsplit("/", 1)[1]]
    return out
