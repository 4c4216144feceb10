"""Streaming, parallel, resumable builder of MLM pretraining TFRecords.

Phases of `build()`:
  1. validate settings and open the vocabulary;
  2. count documents (a streaming pass that also finds empty files and bad lines before any work);
  3. check the output directory: a finished identical build is a no-op, an interrupted identical
     build resumes (finished shards are kept), anything else is refused;
  4. stream chunks of documents to `num_workers` processes, at most a few chunks in flight (memory
     does not grow with the corpus), and write their records in chunk order: shard k holds a fixed
     contiguous range of chunks, is written to a temporary name and renamed when complete;
  5. write `manifest.json` (atomically) and print a summary.
"""

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import multiprocessing
import sys
import time
from typing import Optional

from data_pipeline import fs, schema, sources, tasks
from data_pipeline.chunks import ChunkProcessor, ChunkSettings, init_worker, run_chunk
from data_pipeline.instances import InstanceConfig
from data_pipeline.masking import MaskingConfig
from data_pipeline.progress import Progress
from data_pipeline.tfrecord import RecordFile

BUILDER_VERSION = "1.0"
MANIFEST = "manifest.json"
_STATE = "_build_state.json"


class BuildError(ValueError):
    """Bad settings, inputs or output directory; the message names the flag or file at fault."""


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    output_dir: str
    vocab: str
    source: sources.SourceConfig
    task: tasks.TaskConfig = tasks.TaskConfig()
    instance: InstanceConfig = InstanceConfig()
    masking: MaskingConfig = MaskingConfig()
    mode: str = "dynamic"              # dynamic (loader masks each epoch) | static (Google layout)
    dupe_factor: int = 5               # static only: masked copies of each instance
    lower_case: Optional[bool] = None
    segmenter: Optional[str] = None    # e.g. "jieba" for Chinese whole-word masking
    seed: int = 12345
    num_shards: int = 16
    eval_fraction: float = 0.0         # documents held out for the eval split
    num_eval_shards: int = 1
    docs_per_chunk: int = 256
    num_workers: int = 1
    compress: bool = False             # GZIP shards
    max_bad_line_fraction: float = 0.01
    overwrite: bool = False
    progress: bool = True


def build(config: BuildConfig) -> dict:
    """Builds the dataset described by `config`; returns the manifest."""
    _validate(config)
    settings = _chunk_settings(config)
    # Workers start first, so their start-up overlaps the checks and the counting pass below.
    pool = _start_workers(config, settings) if config.num_workers > 1 else None
    try:
        return _build(config, settings, pool)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _build(config, settings, pool):
    try:
        processor = ChunkProcessor(settings)  # also validates the vocabulary and segmenter
    except ValueError as e:
        raise BuildError(str(e))
    paths = _resolve(config)
    started = time.time()
    total_docs, total_bytes, read_stats = _count(config, paths)
    fingerprint = _fingerprint(config, paths, processor.tokenizer.checksum())
    plan = _plan(config, total_docs)
    state = _prepare_output(config, fingerprint, plan)
    if state is None:  # already built, identical
        manifest = json.loads(fs.read_bytes(fs.join(config.output_dir, MANIFEST)))
        _log("Nothing to do: %s already holds this build (%d train examples)."
             % (config.output_dir, manifest["splits"]["train"]["examples"]), config)
        return manifest
    _write_shards(config, processor, pool, paths, plan, state, total_docs, total_bytes)
    manifest = _manifest(config, processor, paths, plan, state, read_stats, fingerprint,
                         time.time() - started)
    fs.write_bytes_atomic(fs.join(config.output_dir, MANIFEST),
                          json.dumps(manifest, indent=2).encode("utf-8"))
    fs.remove(fs.join(config.output_dir, _STATE))
    _summary(manifest, config)
    return manifest


# ------------------------------------------------------------------------------ 1. validation

def _validate(c: BuildConfig):
    checks = [
        (c.mode in ("dynamic", "static"), "--mode must be 'dynamic' or 'static', got %r" % c.mode),
        (c.num_shards >= 1, "--num_shards must be >= 1, got %d" % c.num_shards),
        (c.num_eval_shards >= 1, "--num_eval_shards must be >= 1, got %d" % c.num_eval_shards),
        (c.num_workers >= 1, "--num_workers must be >= 1, got %d" % c.num_workers),
        (c.dupe_factor >= 1, "--dupe_factor must be >= 1, got %d" % c.dupe_factor),
        (c.docs_per_chunk >= 1, "--docs_per_chunk must be >= 1, got %d" % c.docs_per_chunk),
        (0.0 <= c.eval_fraction < 1.0, "--eval_fraction must be in [0, 1), got %r" % c.eval_fraction),
        (c.source.max_document_chars >= 1, "--max_document_chars must be >= 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise BuildError(message)
    if c.task.task != tasks.MLM and c.mode != "dynamic":
        raise BuildError("--mode=static writes masked MLM samples; --task=%s has no masks (leave "
                         "--mode at its default)." % c.task.task)
    try:
        c.task.validate(c.instance.seq_len)
        if c.task.task == tasks.MLM:
            c.instance.validate()
            c.masking.validate(c.instance.seq_len)
    except ValueError as e:
        raise BuildError(str(e))


def _chunk_settings(c: BuildConfig) -> ChunkSettings:
    return ChunkSettings(vocab=c.vocab, lower_case=c.lower_case, instance=c.instance,
                         masking=c.masking,
                         record_format=schema.GOOGLE if c.mode == "static" else schema.DYNAMIC,
                         dupe_factor=c.dupe_factor if c.mode == "static" else 1, seed=c.seed,
                         eval_fraction=c.eval_fraction, docs_per_chunk=c.docs_per_chunk,
                         segmenter=c.segmenter, task=c.task)


def _resolve(c):
    try:
        return sources.resolve_inputs(c.source.inputs)
    except sources.InputError as e:
        raise BuildError(str(e))


# --------------------------------------------------------------------------------- 2. counting

def _problems(problems):
    return "; ".join("%s:%d %s" % p for p in problems)


def _count(c: BuildConfig, paths):
    stats = sources.ReadStats()
    total = 0
    try:
        for path in paths:
            if path.startswith(sources.TFDS_PREFIX):
                total += sources.count_tfds_documents(c.source, path)
            else:
                total += sum(1 for _ in tasks.iter_items(c.task, c.source, [path], stats))
    except sources.InputError as e:
        raise BuildError(str(e))
    lines = max(1, stats.lines)
    bad = stats.invalid_utf8_lines + stats.bad_json_lines
    if c.task.reads_json_records:
        bad_records = stats.bad_json_lines + stats.bad_records
        if bad_records and c.task.on_bad_record == "stop":
            raise BuildError("%d bad records (%d not JSON objects, %d unusable); nothing was written. "
                             "First ones: %s. Fix the input, or pass --on_bad_record=skip to skip and "
                             "count them." % (bad_records, stats.bad_json_lines, stats.bad_records,
                                              _problems(stats.problems)))
    elif bad and bad / lines > c.max_bad_line_fraction:
        where = _problems(stats.problems)
        raise BuildError("%d bad lines (invalid UTF-8 or JSON) is more than --max_bad_line_fraction=%g "
                         "of the input; first ones: %s" % (bad, c.max_bad_line_fraction, where))
    if total == 0:
        raise BuildError("The inputs hold no documents: %s" % ", ".join(paths))
    return total, stats.bytes, stats


def _fingerprint(c: BuildConfig, paths, vocab_sha):
    """Identifies a build: settings that change the output, the inputs' names/sizes/times, vocab."""
    settings = dataclasses.asdict(c)
    for volatile in ("output_dir", "num_workers", "overwrite", "progress"):
        settings.pop(volatile)
    inputs = [(p, None, None) if p.startswith(sources.TFDS_PREFIX) else (p, fs.size(p), fs.mtime(p))
              for p in paths]
    blob = json.dumps([settings, inputs, vocab_sha, BUILDER_VERSION], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------ 3. output directory

def _plan(c: BuildConfig, total_docs):
    """Shard k of a split holds chunks [first, last); splits are planned independently."""
    num_chunks = -(-total_docs // c.docs_per_chunk)
    plan = {"num_chunks": num_chunks, "splits": {}}
    ext = ".tfrecord.gz" if c.compress else ".tfrecord"
    wanted = {"train": c.num_shards}
    if c.eval_fraction > 0:
        wanted["eval"] = c.num_eval_shards
    for split, n in wanted.items():
        n = min(n, num_chunks)
        plan["splits"][split] = [
            {"file": "%s-%05d-of-%05d%s" % (split, k, n, ext),
             "first": k * num_chunks // n, "last": (k + 1) * num_chunks // n} for k in range(n)]
    return plan


def _prepare_output(c: BuildConfig, fingerprint, plan):
    """Returns the build state to continue from, or None when the identical build is complete."""
    out = c.output_dir
    fs.makedirs(out)
    manifest_path, state_path = fs.join(out, MANIFEST), fs.join(out, _STATE)
    ours = [n for n in fs.listdir(out) if ".tfrecord" in n or n in (MANIFEST, _STATE)]
    if c.overwrite:
        for name in ours:
            fs.remove(fs.join(out, name))
        ours = []
    previous = None
    if fs.exists(manifest_path):
        previous = json.loads(fs.read_bytes(manifest_path)).get("fingerprint")
        if previous == fingerprint:
            return None
    elif fs.exists(state_path):
        state = json.loads(fs.read_bytes(state_path))
        if state.get("fingerprint") == fingerprint:
            for name in ours:  # partial shards of the interrupted run
                if ".tmp" in name:
                    fs.remove(fs.join(out, name))
            return state
        previous = state.get("fingerprint")
    if ours:
        raise BuildError("Output directory %s already holds shards of a different build (build %s, "
                         "this one is %s). Use a new --output_dir, or --overwrite to replace them."
                         % (out, previous or "of unknown origin", fingerprint))
    state = {"fingerprint": fingerprint, "plan": plan, "done": {}}
    fs.write_bytes_atomic(state_path, json.dumps(state).encode())
    return state


# ---------------------------------------------------------------------------------- 4. writing

class _ShardWriter:
    """Writes each split's shards in order; a shard is renamed into place once its chunks are in."""

    def __init__(self, c: BuildConfig, plan, state):
        self.c, self.state = c, state
        self.pending = {split: collections.deque(s for s in shards if s["file"] not in state["done"])
                        for split, shards in plan["splits"].items()}
        self.open = {}  # split -> (shard, RecordFile, counters)

    def chunk_needed(self, chunk):
        return any(s["first"] <= chunk < s["last"] for q in self.pending.values() for s in q)

    def write(self, chunk, data, counts, stats):
        for split, queue in self.pending.items():
            while queue and queue[0]["last"] <= chunk:
                self._close(split)
            if not queue or not queue[0]["first"] <= chunk < queue[0]["last"]:
                continue
            shard = queue[0]
            if split not in self.open:
                tmp = fs.join(self.c.output_dir, shard["file"] + ".tmp")
                self.open[split] = (shard, RecordFile(fs.open_write(tmp), self.c.compress),
                                    collections.Counter())
            _, f, counter = self.open[split]
            f.write(data[split])
            counter["examples"] += counts[split]
            if split == "train":  # chunk statistics are kept once, with the train shard
                counter.update(stats)
            if chunk == shard["last"] - 1:
                self._close(split)

    def _close(self, split):
        queue = self.pending[split]
        shard = queue.popleft()
        if split not in self.open:  # a shard whose chunks produced nothing at all
            tmp = fs.join(self.c.output_dir, shard["file"] + ".tmp")
            RecordFile(fs.open_write(tmp), self.c.compress).close()
            counter = collections.Counter()
        else:
            _, f, counter = self.open.pop(split)
            f.close()
        fs.rename(fs.join(self.c.output_dir, shard["file"] + ".tmp"),
                  fs.join(self.c.output_dir, shard["file"]))
        self.state["done"][shard["file"]] = dict(counter)
        fs.write_bytes_atomic(fs.join(self.c.output_dir, _STATE), json.dumps(self.state).encode())

    def abort(self):
        """Removes everything this build wrote (temporary and finished shards, state)."""
        for _, f, _ in self.open.values():
            f.close()
        self.open = {}
        out = self.c.output_dir
        for name in fs.listdir(out):
            if ".tfrecord" in name or name == _STATE:
                fs.remove(fs.join(out, name))

    def finish(self):
        for split, queue in self.pending.items():
            while queue:
                self._close(split)


def _chunks(c, paths, writer, stats):
    """Yields (chunk index, documents) for chunks that still have an unfinished shard."""
    docs, index = [], 0
    for doc in tasks.iter_items(c.task, c.source, paths, stats):
        docs.append(doc)
        if len(docs) == c.docs_per_chunk:
            if writer.chunk_needed(index):
                yield index, docs
            docs, index = [], index + 1
    if docs and writer.chunk_needed(index):
        yield index, docs


def _write_shards(c, processor, pool, paths, plan, state, total_docs, total_bytes):
    writer = _ShardWriter(c, plan, state)
    read_stats = sources.ReadStats()
    skipped_reported = 0
    progress = Progress(total_docs, total_bytes, enabled=c.progress)
    examples = 0

    def consume(result):
        nonlocal examples, skipped_reported
        chunk, data, counts, stats = result
        problems = stats.pop("problems", [])
        if problems and c.task.on_bad_record == "stop":
            raise _BadRecords(problems)
        for origin, reason in problems[:max(0, 5 - skipped_reported)]:
            _log("skipped bad record %s: %s" % (origin, reason), c)
        skipped_reported += len(problems)
        writer.write(chunk, data, counts, stats)
        examples += sum(counts.values())
        progress.update(read_stats.documents, read_stats.bytes, examples)

    try:
        if pool is None:
            for chunk, docs in _chunks(c, paths, writer, read_stats):
                consume(processor.process(chunk, docs))
        else:
            _run_parallel(c, pool, _chunks(c, paths, writer, read_stats), consume)
    except sources.InputError as e:
        raise BuildError(str(e))
    except _BadRecords as e:
        writer.abort()
        progress.close()
        raise BuildError("%d bad record(s) in a chunk; the build stopped and removed its shards. "
                         "First ones: %s. Fix the input, or pass --on_bad_record=skip to skip and "
                         "count them." % (len(e.problems), "; ".join("%s %s" % p for p in e.problems[:5])))
    writer.finish()
    progress.close()


class _BadRecords(Exception):
    def __init__(self, problems):
        super().__init__(problems)
        self.problems = problems


def _start_workers(c, settings):
    """A pool of `num_workers` processes, each holding a ChunkProcessor, already starting up.

    Workers are forked (fast: nothing to re-import) unless TensorFlow is loaded in this process
    (TFDS or gs:// inputs in a caller that imported it), which must not be forked; then spawned.
    ProcessPoolExecutor, unlike multiprocessing.Pool, fails loudly when a worker dies.
    """
    method = "fork" if ("tensorflow" not in sys.modules
                        and "fork" in multiprocessing.get_all_start_methods()) else "spawn"
    pool = concurrent.futures.ProcessPoolExecutor(
        c.num_workers, mp_context=multiprocessing.get_context(method),
        initializer=init_worker, initargs=(settings,))
    for _ in range(c.num_workers):
        pool.submit(int)  # starts the processes now
    return pool


def _run_parallel(c, pool, chunk_iter, consume):
    """Runs chunks on the worker processes; results are consumed in chunk order, few in flight."""
    in_flight = collections.deque()
    try:
        for item in chunk_iter:
            in_flight.append(pool.submit(run_chunk, item))
            if len(in_flight) >= 2 * c.num_workers + 1:
                consume(in_flight.popleft().result())
        while in_flight:
            consume(in_flight.popleft().result())
    except concurrent.futures.process.BrokenProcessPool as e:
        raise BuildError("A worker process died (%s); finished shards are kept, re-run the same "
                         "command to resume." % e)


# ------------------------------------------------------------------------------- 5. manifest

def _manifest(c, processor, paths, plan, state, read_stats, fingerprint, seconds):
    done = state["done"]
    pairs = c.instance.layout == "pairs"
    splits = {}
    for split, shards in plan["splits"].items():
        splits[split] = {"files": [s["file"] for s in shards],
                         "examples": sum(done[s["file"]].get("examples", 0) for s in shards)}
    train = collections.Counter()
    for s in plan["splits"]["train"]:
        train.update(done[s["file"]])
    tok = processor.tokenizer
    specials = set(tok.special_ids.as_dict().values())
    replacement = set(processor.replacement_ids.tolist())
    mlm = c.task.task == tasks.MLM
    task_stats = {k: train.get(k, 0) for k in _TASK_COUNTERS.get(c.task.task, ())}
    if c.task.reads_json_records:
        task_stats["bad_records_skipped"] = (read_stats.bad_records + read_stats.bad_json_lines
                                             + train.get("bad_records", 0))
    if c.task.task == tasks.SIMBERT:
        task_stats["groups_too_small"] = read_stats.groups_too_small
    return {
        "builder_version": BUILDER_VERSION,
        "fingerprint": fingerprint,
        "task": c.task.task,
        "task_config": dataclasses.asdict(c.task),
        "mode": c.mode,
        "record_format": (processor.s.record_format if mlm
                          else tasks.RECORD_FORMAT[c.task.task]),
        "compression": "GZIP" if c.compress else None,
        "seq_len": c.instance.seq_len,
        "max_predictions_per_seq": c.masking.max_predictions if mlm else None,
        "masked_lm_prob": c.masking.masked_lm_prob if mlm else None,
        "layout": c.instance.layout if mlm else None,
        "sentence_task": c.instance.sentence_task if pairs and mlm else None,
        "dupe_factor": c.dupe_factor if c.mode == "static" else None,
        "seed": c.seed,
        "features": [f.as_dict() for f in processor.features],
        "vocab": dict(tok.describe(),
                      not_random_replacements=sorted(set(range(tok.vocab_size)) - replacement - specials)),
        "splits": splits,
        "stats": {"documents": train.get("documents", 0),
                  "eval_documents": train.get("eval_documents", 0),
                  "instances_made": train.get("instances", 0),
                  "tokens": train.get("tokens", 0),
                  "masked_tokens": train.get("masked_tokens", 0),
                  "sentences_split": train.get("sentences_split", 0),
                  "tokens_trimmed": train.get("tokens_trimmed", 0),
                  "documents_cut": read_stats.documents_cut,
                  "invalid_utf8_lines": read_stats.invalid_utf8_lines,
                  "bad_json_lines": read_stats.bad_json_lines,
                  "first_problems": ["%s:%d %s" % p for p in read_stats.problems],
                  "input_bytes": read_stats.bytes,
                  "seconds": round(seconds, 2),
                  **task_stats},
        "inputs": paths,
        "args": json.loads(json.dumps(dataclasses.asdict(c), default=str)),
    }


_TASK_COUNTERS = {
    tasks.UNILM: ("sources_truncated", "source_tokens_cut", "targets_truncated", "target_tokens_cut",
                  "segments_too_short"),
    tasks.SIMBERT: ("group_members", "members_truncated"),
}


def _summary(m, c):
    st = m["stats"]
    mlm = m["task"] == tasks.MLM
    masked = ("%.4f" % (st["masked_tokens"] / st["tokens"])) if (
        c.mode == "static" and st["tokens"]) else "drawn by the loader each epoch"
    kind = "%s, %s" % (m["mode"], m["layout"]) if mlm else m["record_format"]
    lines = ["Built %s (task %s: %s) in %.1f s" % (c.output_dir, m["task"], kind, st["seconds"]),
             "  %s: %d (%d held out for eval), %.1f MB read"
             % ("documents" if not c.task.reads_json_records else "records", st["documents"],
                st["eval_documents"], st["input_bytes"] / 1e6)]
    for split, info in m["splits"].items():
        lines.append("  %s examples: %d in %d shards" % (split, info["examples"], len(info["files"])))
    if mlm:
        lines += ["  tokens: %d   masked fraction: %s" % (st["tokens"], masked),
                  "  sentences split: %d   tokens trimmed (pairs): %d   documents cut: %d"
                  % (st["sentences_split"], st["tokens_trimmed"], st["documents_cut"])]
    else:
        lines.append("  tokens: %d" % st["tokens"])
        extra = {k: v for k, v in st.items() if k in _TASK_COUNTERS.get(m["task"], ())
                 or k in ("bad_records_skipped", "groups_too_small")}
        if extra:
            lines.append("  " + "   ".join("%s: %d" % kv for kv in extra.items()))
    if st["invalid_utf8_lines"] or st["bad_json_lines"]:
        lines.append("  skipped bad input: %d invalid UTF-8 lines, %d bad JSON lines (first: %s)"
                     % (st["invalid_utf8_lines"], st["bad_json_lines"], "; ".join(st["first_problems"])))
    _log("\n".join(lines), c)


def _log(text, c):
    if c.progress:
        print(text, file=sys.stderr, flush=True)

