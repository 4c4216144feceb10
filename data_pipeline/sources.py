"""Streams documents out of raw corpora: plain text, JSON lines, .gz, globs, gs:// and TFDS.

A document is a list of sentences (strings). Conventions:
  * plain text (Google's): one sentence per line, a blank line between documents;
  * JSON lines: one document per line, its text in `text_field`, sentences split at newlines;
  * `tfds:name[/config][:version]`: one document per example, text in `text_field`.

Nothing is held beyond one document, and a document is cut into pieces of at most
`max_document_chars` (lines longer than that are cut too), so memory stays bounded whatever the
input looks like (a 10 GB file without blank lines is not one document).
"""

import dataclasses
import gzip
import io
import json
import math
import os
import re
from typing import Iterator, List, Optional

from storage import fs

TFDS_PREFIX = "tfds:"
DEDUP = ("none", "documents")
# A named, weighted source: NAME:PATTERN:WEIGHT (e.g. wiki:gs://b/wiki/*.txt:1.0). Whatever
# follows the last colon is the weight (checked), unless it holds a slash (a path's colon).
_WEIGHTED = re.compile(r"^([A-Za-z_][\w.-]*):(?!//)(.+):([^:/]*)$")
_GLOB_CHARS = re.compile(r"[*?[]")
NAMES_HELP = ("Entries are comma-separated; an existing local file is read as named, commas, "
              "[ ] * ? and colons included. Otherwise quote an entry holding a comma "
              "(--input='\"gs://b/a,b.txt\",c.txt') and write a literal [ in a glob as [[] "
              "(a[[]1]*.txt matches a[1]x.txt).")
_INVALID_BYTE = re.compile("[\udc80-\udcff]")  # How surrogateescape decoding marks a bad byte.
MAX_REPORTED = 5   # bad lines or records named by file:line in messages; counts cover the rest


class InputError(ValueError):
    """Raised for inputs that cannot be read or hold nothing to build from."""


@dataclasses.dataclass(frozen=True)
class SourceConfig:
    inputs: tuple                     # Paths, globs (local or gs://) and tfds:NAME entries.
    input_format: str = "auto"        # auto | text | jsonl  (auto: by extension, .jsonl/.json)
    text_field: str = "text"
    tfds_data_dir: Optional[str] = None
    tfds_split: str = "train"
    max_document_chars: int = 1_000_000
    allow_empty_files: bool = False
    dedup: str = "none"               # none | documents (exact duplicates after normalisation)


@dataclasses.dataclass
class ReadStats:
    """Counts of what the reader saw; `problems` keeps the first few (file, line, reason)."""

    documents: int = 0
    lines: int = 0
    bytes: int = 0
    invalid_utf8_lines: int = 0
    bad_json_lines: int = 0
    documents_cut: int = 0
    bad_records: int = 0              # JSON records of a structured task that cannot be used
    groups_too_small: int = 0         # SimBERT groups with fewer than two members
    problems: List[tuple] = dataclasses.field(default_factory=list)

    def note(self, path, line, reason):
        if len(self.problems) < MAX_REPORTED:
            self.problems.append((path, line, reason))


@dataclasses.dataclass(frozen=True)
class Source:
    """One input of a build: a path, glob or tfds: entry, with a name and a weight when mixed."""
    name: str
    pattern: str
    weight: float = 1.0


def parse_inputs(inputs) -> List[Source]:
    """--input entries -> Sources. An entry is PATTERN (weight 1), or NAME:PATTERN:WEIGHT to mix
    corpora: a weight above 1 repeats a source's documents, below 1 samples them. An entry that
    names an existing local file is that file, whatever it holds (colons, commas: entries that
    --input's comma split cut out of one file name are put back together)."""
    out = []
    for k, entry in enumerate(_rejoin_file_names(list(inputs))):
        m = None if _is_local_file(entry) else _WEIGHTED.match(entry)
        if m and m.group(1) != TFDS_PREFIX[:-1]:
            source = Source(m.group(1), m.group(2), _weight(entry, m.group(3)))
        else:
            source = Source("input%d" % k, entry)
        out.append(source)
    names = [s.name for s in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError("--input names %s more than once: give each source its own name."
                         % ", ".join(twice))
    return out


def _weight(entry, text):
    try:
        weight = float(text)
    except ValueError:
        weight = None
    if weight is None or not math.isfinite(weight) or weight <= 0:
        raise InputError("--input %r: weight %r is not a number > 0: weights must be finite and > 0 "
                         "(NAME:PATTERN:WEIGHT, e.g. wiki:wiki/*.txt:1.5; leave a source out rather "
                         "than weigh it 0)." % (entry, text))
    return weight


def _is_local_file(path):
    return not fs.is_remote(path) and not path.startswith(TFDS_PREFIX) and os.path.isfile(path)


def _rejoin_file_names(entries):
    """Entries as given, except that consecutive ones whose comma-joined text is an existing
    local file (`a[1],b.txt`, cut in two by the flag's comma split) become that one entry."""
    out, i = [], 0
    while i < len(entries):
        j = next((j for j in range(len(entries), i + 1, -1)
                  if _is_local_file(",".join(entries[i:j]))), i + 1)
        out.append(",".join(entries[i:j]))
        i = j
    return out


def resolve_inputs(inputs) -> List[str]:
    """Expands the --input entries (names and weights aside) into paths, in order; errors name
    the pattern that matched nothing."""
    if not inputs:
        raise InputError("No input given: pass --input=FILE[,GLOB,tfds:NAME,...].")
    paths = []
    for pattern in (s.pattern for s in parse_inputs(inputs)):
        if pattern.startswith(TFDS_PREFIX):
            paths.append(pattern)
            continue
        if _GLOB_CHARS.search(pattern) and _is_local_file(pattern):
            matches = [pattern]     # a file named with [ ], * or ?: itself, not what it matches
        else:
            matches = [p for p in fs.glob(pattern) if not fs.isdir(p)]
        if not matches:
            raise InputError("Input %r matches no file (check --input; paths are relative to %s)."
                             % (pattern, os.getcwd()))
        paths.extend(matches)
    return paths


def iter_documents(config: SourceConfig, paths: List[str], stats: ReadStats) -> Iterator[List[str]]:
    """Yields every document of every path, in order."""
    for path in paths:
        if path.startswith(TFDS_PREFIX):
            docs = _tfds_documents(config, path)
        elif is_jsonl(config, path):
            docs = _jsonl_documents(config, path, stats)
        else:
            docs = _text_documents(config, path, stats)
        found = 0
        for doc in docs:
            for piece in _cut(doc, config.max_document_chars, stats):
                found += 1
                stats.documents += 1
                yield piece
        if not found and not config.allow_empty_files:
            raise InputError("Input file %s holds no text (empty or whitespace only). Remove it or "
                             "pass --allow_empty_files to skip such files." % path)


def count_tfds_documents(config: SourceConfig, path: str) -> int:
    splits = _tfds_builder(config, path).info.splits
    if splits and config.tfds_split in splits:
        return splits[config.tfds_split].num_examples
    # No split metadata (a dataset mocked in tests, or not prepared: then reading says so).
    return sum(1 for _ in _tfds_documents(config, path))


def is_jsonl(config, path):
    if config.input_format != "auto":
        return config.input_format == "jsonl"
    name = path[:-3] if path.endswith(".gz") else path
    return name.endswith((".jsonl", ".json", ".ndjson"))


def _open_text(path):
    try:
        raw = fs.open_read(path)
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        raise InputError("Cannot read input %s: %s" % (path, e))
    if path.endswith(".gz"):
        raw = gzip.GzipFile(fileobj=raw)
    # surrogateescape keeps going through invalid UTF-8 and marks each bad byte, so we can count it.
    return io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="\n")


def _lines(path, stats, limit):
    """Yields (line number, text without its newline), each invalid UTF-8 byte dropped and counted."""
    with _open_text(path) as f:
        number = 0
        while True:
            try:
                line = f.readline(limit)
            except (OSError, EOFError) as e:  # A truncated .gz, a vanished remote file.
                raise InputError("Input %s is unreadable after line %d: %s" % (path, number, e))
            if not line:
                return
            number += 1
            stats.lines += 1
            stats.bytes += len(line)
            if not line.isascii() and _INVALID_BYTE.search(line):
                stats.invalid_utf8_lines += 1
                stats.note(path, number, "invalid UTF-8")
                line = _INVALID_BYTE.sub("", line)
            yield number, line.rstrip("\r\n")


def _text_documents(config, path, stats):
    doc = []
    for _, line in _lines(path, stats, config.max_document_chars):
        line = line.strip()
        if line:
            doc.append(line)
        elif doc:
            yield doc
            doc = []
    if doc:
        yield doc


def iter_json_objects(path: str, stats: ReadStats) -> Iterator[tuple]:
    """Yields (line number, dict) for each JSON-object line; other non-blank lines are counted
    (`bad_json_lines`) and the first few noted."""
    # A JSON record cannot be cut mid-line, so lines are read whole here.
    for number, line in _lines(path, stats, -1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            stats.bad_json_lines += 1
            stats.note(path, number, "not a JSON object")
            continue
        yield number, obj


def _jsonl_documents(config, path, stats):
    for number, obj in iter_json_objects(path, stats):
        if config.text_field not in obj:
            stats.bad_json_lines += 1
            stats.note(path, number, "no %r field" % config.text_field)
            continue
        doc = _split_text(obj[config.text_field])
        if doc:
            yield doc


def _split_text(text):
    if not isinstance(text, str):
        return []
    return [s.strip() for s in text.split("\n") if s.strip()]


def _cut(doc, max_chars, stats):
    """Cuts a document into pieces of at most max_chars characters, at line boundaries."""
    total = sum(len(s) for s in doc)
    if total <= max_chars:
        yield doc
        return
    stats.documents_cut += 1
    piece, size = [], 0
    for sentence in doc:
        if piece and size + len(sentence) > max_chars:
            yield piece
            piece, size = [], 0
        piece.append(sentence)
        size += len(sentence)
    if piece:
        yield piece


def _tfds_builder(config, path):
    import tensorflow_datasets as tfds  # Deferred: imports TensorFlow.

    name = path[len(TFDS_PREFIX):]
    try:
        return tfds.builder(name, data_dir=config.tfds_data_dir)
    except Exception as e:  # TFDS raises several types (DatasetNotFoundError, ValueError, ...).
        raise InputError("TFDS dataset %r cannot be opened (check the name and --tfds_data_dir=%s): %s"
                         % (name, config.tfds_data_dir, str(e).splitlines()[0] if str(e) else e))


def _tfds_documents(config, path):
    import tensorflow_datasets as tfds

    builder = _tfds_builder(config, path)
    if builder.info.splits and config.tfds_split not in builder.info.splits:
        raise InputError("TFDS dataset %s has no split %r (it has: %s)."
                         % (path, config.tfds_split, ", ".join(builder.info.splits)))
    features = builder.info.features
    if config.text_field not in features:
        raise InputError("TFDS dataset %s has no feature %r (it has: %s); set --text_field."
                         % (path, config.text_field, ", ".join(features)))
    try:
        dataset = builder.as_dataset(split=config.tfds_split, shuffle_files=False)
    except Exception as e:  # not downloaded/prepared, wrong split: TFDS raises assorted types
        raise InputError("TFDS dataset %s cannot be read from --tfds_data_dir=%s (prepare it first "
                         "with `tfds build`): %s" % (path, config.tfds_data_dir, e))
    for example in tfds.as_numpy(dataset):
        value = example[config.text_field]
        doc = _split_text(value.decode("utf-8", "ignore") if isinstance(value, bytes) else value)
        if doc:
            yield doc
