"""Several corpora in one build: weights and exact deduplication, defined once for both engines.

The documents a build cuts into chunks come, in this order, from the sources as given, each
source's files in name order, each file's items (documents or JSON records) in order; then
  * duplicates are dropped (--dedup=documents): an item whose normalised text (NFC, whitespace
    collapsed) appeared earlier in that order is left out; the first one stays. Which items are
    duplicates does not depend on the engine or the number of workers;
  * weights apply: an item of a source with weight w appears floor(w) times, and once more with
    probability frac(w), drawn from (seed, source name, the item's index in its source); a weight
    below 1 thus samples. The copies follow each other (their masks differ: they are different
    examples). Items a weight leaves out stay in the stream as "count only" entries, tokenized
    for the per-source statistics (tokens before weighting) but never made into examples.
With a single source of weight 1 and no dedup, the stream is the inputs' items as they are.
"""

import dataclasses
import hashlib
import re
import unicodedata
from typing import Iterator, List

import numpy as np

from data_pipeline import masking, sources, tasks

COUNT_ONLY = -1        # the copy number of an entry a weight left out
_SPACE = re.compile(r"\s+")


@dataclasses.dataclass(frozen=True)
class Mix:
    """The sources of a build, resolved: names, weights and files."""
    sources: tuple            # sources.Source, in the order given
    paths: tuple              # per source: its files (or its tfds: entry)
    dedup: bool
    seed: int

    @property
    def active(self) -> bool:
        """Whether anything differs from reading the inputs as they are."""
        return self.dedup or len(self.sources) > 1 or any(s.weight != 1.0 for s in self.sources)

    @property
    def all_paths(self) -> List[str]:
        return [p for paths in self.paths for p in paths]

    def source_of_path(self) -> List[int]:
        return [i for i, paths in enumerate(self.paths) for _ in paths]


def resolve(source_config: sources.SourceConfig, seed: int) -> Mix:
    parsed = sources.parse_inputs(source_config.inputs)
    return Mix(tuple(parsed), tuple(tuple(sources.resolve_inputs([s.pattern])) for s in parsed),
               source_config.dedup == "documents", seed)


def copies(seed: int, name: str, weight: float, first: int, count: int) -> np.ndarray:
    """int [count]: how many times items first .. first+count-1 of source `name` appear (0: count
    only). The fractional part is a Bernoulli draw per item from (seed, name, index)."""
    whole, fraction = int(weight), weight - int(weight)
    if not fraction:
        return np.full(count, whole, np.int64)
    name_id = int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=4).digest(), "little")
    indices = np.arange(first, first + count, dtype=np.int64)
    u = masking.hash24_np(seed, name_id, indices, np.zeros((count, 1), np.int64),
                           masking.STREAM_BUILD)[:, 0]
    return whole + (u < int(fraction * (1 << 24))).astype(np.int64)


def item_text(item) -> str:
    """What deduplication compares: a document's sentences, or a record's texts."""
    if isinstance(item, tasks.Record):
        return "\x1f".join(item.texts)
    return " ".join(item)


def text_key(text: str) -> int:
    """64 bits of blake2b over the normalised text (NFC, whitespace collapsed, stripped)."""
    normal = _SPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()
    return int.from_bytes(hashlib.blake2b(normal.encode("utf-8"), digest_size=8).digest(), "little")


def first_occurrences(keys: np.ndarray) -> np.ndarray:
    """bool [n]: True where keys[i] is the first of its value in the order given."""
    keep = np.zeros(len(keys), bool)
    if len(keys):
        keep[np.unique(keys, return_index=True)[1]] = True
    return keep


# ---------------------------------------------------------------------- the local engine

@dataclasses.dataclass
class Counted:
    """What the counting pass learns: items per file, and per item whether it is kept."""
    items_per_path: List[int]
    keep: np.ndarray = None          # bool per item in stream order (None: no dedup, all kept)

    @property
    def raw_items(self):
        return sum(self.items_per_path)


def count(task: tasks.TaskConfig, source_config, mix: Mix, stats) -> Counted:
    """Reads every item once (the builder's counting pass); with dedup, finds the duplicates."""
    per_path, keys = [], []
    for path in mix.all_paths:
        if path.startswith(sources.TFDS_PREFIX) and not mix.dedup:
            per_path.append(sources.count_tfds_documents(source_config, path))
            continue
        n = 0
        for item in tasks.iter_items(task, source_config, [path], stats):
            if mix.dedup:
                keys.append(text_key(item_text(item)))
            n += 1
        per_path.append(n)
    keep = first_occurrences(np.array(keys, np.uint64)) if mix.dedup else None
    return Counted(per_path, keep)


def path_plans(mix: Mix, counted: Counted):
    """Per file, in stream order: (source index, kept bool [items], copies int [items]).
    Everything `stream` needs to know about a file before reading it (the Beam engine's readers
    get it this way too)."""
    plans, raw = [], 0
    index_in_source = [0] * len(mix.sources)
    for n_items, s in zip(counted.items_per_path, mix.source_of_path()):
        source = mix.sources[s]
        kept = np.ones(n_items, bool) if counted.keep is None else counted.keep[raw:raw + n_items]
        n = (copies(mix.seed, source.name, source.weight, index_in_source[s], n_items) if mix.active
             else np.ones(n_items, np.int64))
        plans.append((s, kept, n))
        raw += n_items
        index_in_source[s] += n_items
    return plans


def entries_of(items, plan):
    """A file's items -> its stream entries (item, source, copy), given its `path_plans` entry."""
    s, kept, n = plan
    for k, item in enumerate(items):
        if not kept[k]:
            continue
        if n[k] == 0:
            yield item, s, COUNT_ONLY
        for copy in range(n[k]):
            yield item, s, copy


def entries_per_path(mix: Mix, counted: Counted) -> List[int]:
    """How many stream entries each file makes (a weight-0 draw still makes one, count only)."""
    return [int(np.where(kept, np.maximum(n, 1), 0).sum()) for _, kept, n in path_plans(mix, counted)]


def stream(task: tasks.TaskConfig, source_config, mix: Mix, counted: Counted, stats) -> Iterator:
    """(item, source index, copy) in build order; copy COUNT_ONLY for items a weight left out."""
    for path, plan in zip(mix.all_paths, path_plans(mix, counted)):
        yield from entries_of(tasks.iter_items(task, source_config, [path], stats), plan)


def stream_length(mix: Mix, counted: Counted) -> int:
    """Entries `stream` yields, from the counts alone (for the build plan)."""
    return sum(entries_per_path(mix, counted))


# ------------------------------------------------------------------- in the chunk workers

def process_entries(processor, chunk_index, entries, mixed: bool):
    """A chunk of stream entries through the ChunkProcessor: the entries that are examples, plus
    (when corpora are mixed) the per-source statistics, under "source.<i>.<what>" keys."""
    result = processor.process(chunk_index, [item for item, _, copy in entries if copy != COUNT_ONLY])
    if mixed:
        result[3].update(source_stats(processor.tokenizer, entries))
    return result


def run_entries(args):
    """The worker-process entry point (the pool's workers hold a ChunkProcessor)."""
    from data_pipeline import chunks

    chunk_index, entries, mixed = args
    return process_entries(chunks.worker_processor(), chunk_index, entries, mixed)


def source_stats(tokenizer, entries) -> dict:
    texts, owner = [], []
    for k, (item, _, _) in enumerate(entries):
        parts = item.texts if isinstance(item, tasks.Record) else item
        texts.extend(parts)
        owner.extend([k] * len(parts))
    _, lengths = tokenizer.encode_flat(texts)
    tokens = np.bincount(np.asarray(owner, np.int64), weights=lengths, minlength=len(entries)) \
        if texts else np.zeros(len(entries))
    out = {}
    for k, (_, s, copy) in enumerate(entries):
        for key, value in (("documents", copy in (0, COUNT_ONLY)), ("examples_documents", copy >= 0),
                           ("tokens_before_weighting", tokens[k] if copy in (0, COUNT_ONLY) else 0),
                           ("tokens_after_weighting", tokens[k] if copy >= 0 else 0)):
            name = "source.%d.%s" % (s, key)
            out[name] = out.get(name, 0) + int(value)
    return out


def manifest_sources(mix: Mix, counted_per_source: dict, train_counter) -> list:
    """The manifest's per-source records (for mixed builds): what was read, dropped and kept."""
    out = []
    for s, source in enumerate(mix.sources):
        stat = lambda what: int(train_counter.get("source.%d.%s" % (s, what), 0))
        out.append({"name": source.name, "pattern": source.pattern, "weight": source.weight,
                    "files": len(mix.paths[s]), "documents_read": counted_per_source["read"][s],
                    "duplicates_dropped": counted_per_source["duplicates"][s],
                    "documents": stat("documents"),
                    "documents_after_weighting": stat("examples_documents"),
                    "tokens_before_weighting": stat("tokens_before_weighting"),
                    "tokens_after_weighting": stat("tokens_after_weighting")})
    return out


def per_source_counts(mix: Mix, counted: Counted) -> dict:
    """{"read": items per source, "duplicates": dropped per source}."""
    read = [0] * len(mix.sources)
    dropped = [0] * len(mix.sources)
    raw = 0
    for n_items, s in zip(counted.items_per_path, mix.source_of_path()):
        read[s] += n_items
        if counted.keep is not None:
            dropped[s] += int((~counted.keep[raw:raw + n_items]).sum())
        raw += n_items
    return {"read": read, "duplicates": dropped}
