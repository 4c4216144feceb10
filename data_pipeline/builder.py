"""The local data-build engine: streaming, parallel (worker processes), resumable.
(`beam_build` is the Apache Beam engine; both share `build_steps` and write the same bytes.)

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
import time

from data_pipeline import mixing, sources, workers
from data_pipeline import build_steps as steps
from data_pipeline.build_config import BuildConfig, BuildError, validate
from data_pipeline.build_state import STATE_FILE, BuildState, FinishedShard, Plan
from data_pipeline.chunks import ChunkProcessor, init_worker
from data_pipeline.manifest import Manifest
from data_pipeline.progress import Progress
from data_pipeline.tfrecord import RecordFile
from storage import fs
from storage.fs import ChecksummedWriter


def build(config: BuildConfig) -> Manifest:
    """Builds the dataset described by `config`; returns its manifest."""
    validate(config)
    settings = steps.chunk_settings(config)
    lock = steps.lock_output(config, "launch.build_data")
    # Workers start first, so their start-up overlaps the checks and the counting pass below.
    pool = _start_workers(config, settings) if config.num_workers > 1 else None
    try:
        return _build(config, settings, pool)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        lock.release()


def _build(config, settings, pool):
    try:
        processor = ChunkProcessor(settings)  # also validates the vocabulary and segmenter
    except ValueError as e:
        raise BuildError(str(e))
    mix = steps.resolve_sources(config)
    paths = mix.all_paths
    started = time.time()
    total_docs, total_bytes, read_stats, counted = steps.count_documents(config, mix)
    fingerprint = steps.fingerprint(config, paths, processor.tokenizer.checksum())
    plan = Plan.for_build(config, total_docs)
    state = steps.prepare_output(config, fingerprint, plan)
    if state is None:  # already built, identical
        manifest = Manifest.load(config.output_dir)
        steps.log("Nothing to do: %s already holds this build (%d train examples)."
             % (config.output_dir, manifest.splits["train"].examples), config)
        return manifest
    _write_shards(config, processor, pool, mix, counted, plan, state, total_docs, total_bytes)
    return steps.finish(config, processor, mix, counted, plan, state, read_stats, fingerprint,
                        time.time() - started)


# ---------------------------------------------------------------------------------- 4. writing

class _ShardWriter:
    """Writes each split's shards in order; a shard is renamed into place once its chunks are in.

    Each shard's bytes and CRC32C are computed as it is written and kept in the build state, for
    the manifest."""

    def __init__(self, c: BuildConfig, plan: Plan, state: BuildState):
        self.config, self.state = c, state
        self.pending = {split: collections.deque(s for s in shards if s.file not in state.finished)
                        for split, shards in plan.splits.items()}
        self.open = {}  # split -> (PlannedShard, RecordFile, ChecksummedWriter, counters)

    def chunk_needed(self, chunk):
        return any(s.holds(chunk) for q in self.pending.values() for s in q)

    def write(self, chunk, data, counts, stats):
        for split, queue in self.pending.items():
            while queue and queue[0].last <= chunk:
                self._close(split)
            if not queue or not queue[0].holds(chunk):
                continue
            shard = queue[0]
            if split not in self.open:
                self.open[split] = (shard,) + self._create(shard) + (collections.Counter(),)
            _, f, _, counter = self.open[split]
            try:
                f.write(data[split])
            except OSError as e:
                e.filename = e.filename or self._tmp(shard)
                raise
            counter["examples"] += counts[split]
            if split == "train":  # chunk statistics are kept once, with the train shard
                counter.update(stats)
            if chunk == shard.last - 1:
                self._close(split)

    def _tmp(self, shard):
        return fs.join(self.config.output_dir, shard.file + ".tmp")

    def _create(self, shard):
        raw = ChecksummedWriter(fs.open_write(self._tmp(shard)))
        return RecordFile(raw, self.config.compress), raw

    def _close(self, split):
        queue = self.pending[split]
        shard = queue.popleft()
        if split not in self.open:  # a shard whose chunks produced nothing at all
            f, raw = self._create(shard)
            counter = collections.Counter()
        else:
            _, f, raw, counter = self.open.pop(split)
        f.close()
        fs.rename(self._tmp(shard), fs.join(self.config.output_dir, shard.file))
        self.state.finished[shard.file] = FinishedShard(dict(counter), raw.bytes, raw.crc32c)
        self.state.save(self.config.output_dir)

    def close_temporary(self):
        """Closes and removes the shards being written (after a write error: a full disk keeps
        nothing it does not need); finished shards stay, for a resumed build."""
        for shard, f, _, _ in self.open.values():
            try:
                f.close()
            except OSError:
                pass
            fs.remove(self._tmp(shard))
        self.open = {}

    def abort(self):
        """Removes everything this build wrote (temporary and finished shards, state)."""
        self.close_temporary()
        out = self.config.output_dir
        for name in fs.listdir(out):
            if ".tfrecord" in name or name == STATE_FILE:
                fs.remove(fs.join(out, name))

    def finish(self):
        for split, queue in self.pending.items():
            while queue:
                self._close(split)


def _chunks(c, mix, counted, writer, stats):
    """Yields (chunk index, stream entries) for chunks that still have an unfinished shard."""
    entries, index = [], 0
    for entry in mixing.stream(c.task, c.source, mix, counted, stats):
        entries.append(entry)
        if len(entries) == c.docs_per_chunk:
            if writer.chunk_needed(index):
                yield index, entries
            entries, index = [], index + 1
    if entries and writer.chunk_needed(index):
        yield index, entries


def _write_shards(c, processor, pool, mix, counted, plan, state, total_docs, total_bytes):
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
        for origin, reason in problems[:max(0, sources.MAX_REPORTED - skipped_reported)]:
            steps.log("skipped bad record %s: %s" % (origin, reason), c)
        skipped_reported += len(problems)
        writer.write(chunk, data, counts, stats)
        examples += sum(counts.values())
        progress.update(read_stats.documents, read_stats.bytes, examples)

    try:
        if pool is None:
            for chunk, entries in _chunks(c, mix, counted, writer, read_stats):
                consume(mixing.process_entries(processor, chunk, entries, mix.active))
        else:
            chunks = ((chunk, entries, mix.active) for chunk, entries in
                      _chunks(c, mix, counted, writer, read_stats))
            _run_parallel(c, pool, chunks, consume)
        writer.finish()
    except sources.InputError as e:
        raise BuildError(str(e))
    except OSError as e:   # a full disk, a lost mount: one line, and no temporary file left
        writer.close_temporary()
        progress.close()
        raise BuildError("cannot write %s: %s. Finished shards are kept: free space (or fix the "
                         "output) and re-run the same command to resume."
                         % (getattr(e, "filename", None) or c.output_dir, e.strerror or e))
    except _BadRecords as e:
        writer.abort()
        progress.close()
        raise BuildError("%d bad record(s) in a chunk; the build stopped and removed its shards. "
                         "First ones: %s. Fix the input, or pass --on_bad_record=skip to skip and "
                         "count them." % (len(e.problems), "; ".join(
                             "%s %s" % p for p in e.problems[:sources.MAX_REPORTED])))
    progress.close()


class _BadRecords(Exception):
    def __init__(self, problems):
        super().__init__(problems)
        self.problems = problems


def _start_workers(c, settings):
    """`num_workers` processes, each holding a ChunkProcessor, already starting up (and killed if
    this process dies)."""
    return workers.process_pool(c.num_workers, init_worker, (settings,))


def _run_parallel(c, pool, chunk_iter, consume):
    """Runs chunks on the worker processes; results are consumed in chunk order, few in flight."""
    in_flight = collections.deque()
    try:
        for item in chunk_iter:
            in_flight.append(pool.submit(mixing.run_entries, item))
            if len(in_flight) >= 2 * c.num_workers + 1:
                consume(in_flight.popleft().result())
        while in_flight:
            consume(in_flight.popleft().result())
    except concurrent.futures.process.BrokenProcessPool as e:
        raise BuildError("A worker process died (%s); finished shards are kept, re-run the same "
                         "command to resume." % e)

