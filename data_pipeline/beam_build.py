"""The data builder on Apache Beam: the same shards and manifest as `builder.build`, byte for byte,
from one laptop (FnApiRunner, DirectRunner) to a Dataflow fleet.

    build(BuildConfig(..., engine="beam", beam_options="--runner=FnApiRunner"))

Only the orchestration is Beam's; reading, tokenization, instances, masking and TFRecord encoding
are the local builder's own code. One pipeline (a runner's start-up is paid once: ~3 s for the
multi-processing DirectRunner here), in two passes over the files, as the local builder makes:
  1. count: every input file is read by one worker (a file is never split, so documents keep
     their boundaries): its items, its read statistics, and (with --dedup) the normalised-text
     key of every item, grouped across files to find the duplicates. One step then checks the
     statistics (bad records, bad lines) exactly as the local builder does, and plans the chunks
     and shards from the counts: the layout, a side input of the second pass.
  2. build: every file is read again and its stream entries (mixing.entries_of) numbered
     globally, in runs of consecutive entries per chunk (a few shuffled elements per chunk, not
     one per document); runs are grouped into chunks of docs_per_chunk; each chunk goes through
     the ChunkProcessor (loaded once per worker, in DoFn.setup) and its split's bytes are written
     to a temporary file; each shard then concatenates its chunks, in order, through the same
     RecordFile (gzip included) into a temporary shard, with its size and CRC32C.
The launcher moves the shards into place and writes manifest.json last. A failed pipeline leaves
no manifest and no shard; re-running the same command builds again, or does nothing when the
build is complete; a directory holding another build is refused before the pipeline starts, as
with the local engine.

Memory per worker: one chunk of documents, or one chunk's bytes, at a time. (The local runners
keep what a GroupByKey shuffles in the launching process; Dataflow's shuffle service does not.)
Progress is reported through Beam metrics (documents, bytes, examples) and printed at the end,
with the local builder's summary.
"""

import collections
import json
import logging
import shlex
import time
from concurrent.futures import ThreadPoolExecutor

import apache_beam as beam
import numpy as np
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from data_pipeline import build_steps as steps
from data_pipeline import mixing, sources, tasks
from data_pipeline.build_config import BuildConfig, BuildError, validate
from data_pipeline.build_state import FinishedShard, Plan, state_path
from data_pipeline.chunks import ChunkProcessor
from data_pipeline.manifest import Manifest
from data_pipeline.tfrecord import RecordFile
from storage import fs
from storage.fs import ChecksummedWriter

_NAMESPACE = "bert_tf_pretrain.build"
_MOVERS = 16   # shards moved at once: each move is a request (a copy on Cloud Storage), I/O-bound


def build(config: BuildConfig):
    """Builds the dataset described by `config` with Beam; returns its manifest."""
    validate(config)
    options = _pipeline_options(config.beam_options)
    lock = steps.lock_output(config, "launch.build_data --engine=beam")
    try:
        return _build(config, options)
    finally:
        lock.release()


def _pipeline_options(text):
    """--beam_options -> PipelineOptions, checked here: Beam itself ignores an option it does
    not know (a typo) and answers a bad value with its whole usage text, then exits."""
    args = shlex.split(text or "")
    if not any(a.startswith("--runner") for a in args):
        # Beam's default runner may fetch a runner binary; name one (FnApiRunner runs here).
        raise BuildError("--beam_options must name the runner, e.g. --beam_options=\"--runner="
                         "FnApiRunner\" (this machine), \"--runner=DirectRunner "
                         "--direct_running_mode=multi_processing --direct_num_workers=8\", or "
                         "\"--runner=DataflowRunner --project=P --region=R --temp_location=gs://...\".")
    options = PipelineOptions(args)
    parser = _options_parser(options)
    known, unknown = parser.parse_known_args(args)
    if unknown:
        raise BuildError("--beam_options: unknown Beam option %s (check its spelling, and that "
                         "the runner %s takes it)." % (" ".join(unknown), known.runner))
    return options


class _Parser(Exception):
    """Carries Beam's option parser out of `get_all_options`, before it parses anything."""


def _options_parser(options):
    """Beam's parser of every pipeline option known once the runner's module is imported (as
    the pipeline imports it), whose errors are one BuildError line instead of usage and exit."""
    try:
        beam.runners.create_runner(options.view_as(StandardOptions).runner)
    except ValueError as e:   # an unknown runner name: Beam lists the known ones
        raise BuildError("--beam_options: %s" % e)

    def grab(parser):
        raise _Parser(parser)
    try:
        options.get_all_options(add_extra_args_fn=grab)
    except _Parser as e:
        parser = e.args[0]

    def error(message):
        if not message.startswith("ambiguous option: "):   # Beam's parser ignores those too
            raise BuildError("--beam_options: %s" % message)
    parser.error = error
    return parser


def _build(c: BuildConfig, options):
    logging.getLogger("apache_beam").setLevel(logging.ERROR)   # its warnings are not the user's
    settings = steps.chunk_settings(c)
    try:
        processor = ChunkProcessor(settings)   # validates the vocabulary and segmenter here
    except ValueError as e:
        raise BuildError(str(e))
    started = time.time()
    mix = steps.resolve_sources(c)
    fingerprint = steps.fingerprint(c, mix.all_paths, processor.tokenizer.checksum())
    state = steps.prepare_output(c, fingerprint, None)   # the plan comes from the pipeline
    if state is None:
        manifest = Manifest.load(c.output_dir)
        steps.log("Nothing to do: %s already holds this build (%d train examples)."
                  % (c.output_dir, manifest.splits["train"].examples), c)
        return manifest
    created = not state.finished   # a fresh state file: this run's, removed if it fails
    temp = fs.join(c.output_dir, ".beam-work")
    fs.remove(temp)                            # what a killed launcher left
    try:
        layout, results, metrics = _pipeline(c, settings, mix, options, temp)
        counted, stats, plan = layout.counted, layout.stats, layout.plan
        _publish(c, plan, state, results)
    except BaseException:
        if created:
            fs.remove(state_path(c.output_dir))
        raise
    finally:
        fs.remove(temp)
    steps.log("Beam metrics: %s" % ", ".join("%s %s" % kv for kv in sorted(metrics.items())), c)
    return steps.finish(c, processor, mix, counted, plan, state, stats, fingerprint,
                        time.time() - started)


def _run(pipeline, what):
    """Runs a pipeline; a failure in a step becomes a BuildError carrying the step's own message."""
    try:
        result = pipeline.run()
        result.wait_until_finish()
        return result
    except (BuildError, sources.InputError) as e:
        raise BuildError(str(e))
    except Exception as e:   # runners wrap the user's exception; its message is the useful part
        text = str(e)
        for marker in ("InputError: ", "BuildError: ", "ValueError: "):
            if marker in text:
                raise BuildError(text.split(marker, 1)[1].split("\n")[0].split(" [while running")[0])
        raise BuildError("the Beam pipeline (%s) failed: %s" % (what, text.splitlines()[0] if text else e))


# ------------------------------------------------------------------------- 1. the count pass

class _CountFile:
    """A file's items, its read statistics, and (dedup) each item's text key."""

    def __init__(self, c: BuildConfig, dedup: bool):
        self.config, self.dedup = c, dedup

    def __call__(self, element):
        index, path = element
        stats = sources.ReadStats()
        if path.startswith(sources.TFDS_PREFIX) and not self.dedup:
            n = sources.count_tfds_documents(self.config.source, path)
        else:
            n = 0
            for item in tasks.iter_items(self.config.task, self.config.source, [path], stats):
                if self.dedup:
                    yield pvalue.TaggedOutput("keys", (mixing.text_key(mixing.item_text(item)), (index, n)))
                n += 1
        yield index, n, _stats_dict(stats)


def _duplicates(group):
    """All but the first (in stream order) of the items that share a text key."""
    _, positions = group
    positions = sorted(positions)
    for path_index, item_index in positions[1:]:
        yield path_index, item_index


class Layout:
    """What the count pass learns and plans: items per file (and those dedup drops), the merged
    read statistics, and the plan of chunks and shards. Made once, in the pipeline, from the
    files' counts; a side input of the build pass, and written to a file for the launcher."""

    def __init__(self, c, mix, counted, stats):
        self.counted, self.stats = counted, stats
        total = mixing.stream_length(mix, counted)
        per_path = mixing.entries_per_path(mix, counted)
        self.first_entry = np.concatenate([[0], np.cumsum(per_path)[:-1]]).astype(np.int64).tolist()
        self.plan = Plan.for_build(c, total)
        self.total = total

    @classmethod
    def of_counts(cls, c, mix, rows, duplicates):
        """rows: (file index, items, read statistics) per file; duplicates: (file index, item
        index) of every item dedup drops. Raises BuildError as the local builder would."""
        rows = sorted(rows)
        items = [n for _, n, _ in rows]
        stats = _merge_stats([s for _, _, s in rows])
        steps.check_read_stats(c, stats)
        keep = None
        if mix.dedup:
            keep = np.ones(sum(items), bool)
            starts = np.cumsum([0] + items[:-1]).astype(np.int64)
            for path_index, item_index in duplicates:
                keep[starts[path_index] + item_index] = False
        layout = cls(c, mix, mixing.Counted(items, keep), stats)
        if layout.total == 0:
            raise BuildError("The inputs hold no documents: %s" % ", ".join(mix.all_paths))
        return layout

    def to_json(self):
        keep = self.counted.keep
        return json.dumps({"items": self.counted.items_per_path, "stats": _stats_dict(self.stats),
                           "dropped": None if keep is None else np.flatnonzero(~keep).tolist()})

    @classmethod
    def from_json(cls, c, mix, text):
        d = json.loads(text)
        keep = None
        if d["dropped"] is not None:
            keep = np.ones(sum(d["items"]), bool)
            keep[np.asarray(d["dropped"], np.int64)] = False
        return cls(c, mix, mixing.Counted(d["items"], keep), _merge_stats([d["stats"]]))


def _stats_dict(stats):
    d = {k: v for k, v in stats.__dict__.items() if k != "problems"}
    d["problems"] = [list(p) for p in stats.problems]
    return d


def _merge_stats(dicts):
    """The files' read statistics as one ReadStats, problems in file order (the first five)."""
    total = sources.ReadStats()
    for d in dicts:
        for key, value in d.items():
            if key == "problems":
                for p in value:
                    total.note(*p)
            else:
                setattr(total, key, getattr(total, key) + value)
    return total


# ------------------------------------------------------------------------- 2. the build pass

class _ReadEntries(beam.DoFn):
    """A file -> (chunk, (global index of the first entry, [entries])) for each run of its
    stream entries that falls in one chunk."""

    def __init__(self, c, mix):
        self.config, self.mix = c, mix
        self._plans = None   # per worker, from the layout side input

    def process(self, element, layout):
        index, path = element
        if self._plans is None:
            self._plans = mixing.path_plans(self.mix, layout.counted)
        stats = sources.ReadStats()
        items = tasks.iter_items(self.config.task, self.config.source, [path], stats)
        size, position = self.config.docs_per_chunk, layout.first_entry[index]
        run, run_start = [], position
        for entry in mixing.entries_of(items, self._plans[index]):
            if run and position % size == 0:
                yield run_start // size, (run_start, run)
                run, run_start = [], position
            run.append(entry)
            position += 1
        if run:
            yield run_start // size, (run_start, run)
        Metrics.counter(_NAMESPACE, "documents").inc(stats.documents)
        Metrics.counter(_NAMESPACE, "bytes").inc(stats.bytes)


class _ProcessChunk(beam.DoFn):
    """A chunk's entries -> its records, written per split to a temporary file; emits, per split,
    (shard, (chunk, file or None, examples, statistics))."""

    def __init__(self, settings, mixed, chunks_dir):
        self.settings, self.mixed, self.chunks_dir = settings, mixed, chunks_dir
        self.processor = None

    def setup(self):
        self.processor = ChunkProcessor(self.settings)   # vocabulary and segmenter: once per worker

    def process(self, group, layout):
        chunk, runs = group
        entries = [entry for _, run in sorted(runs, key=lambda x: x[0]) for entry in run]
        _, data, counts, stats = mixing.process_entries(self.processor, chunk, entries, self.mixed)
        problems = stats.pop("problems", [])
        if problems:
            yield ("problems", 0), (chunk, None, 0, {"problems": [list(p) for p in problems]})
        for split, shards in layout.plan.splits.items():
            shard = next(k for k, s in enumerate(shards) if s.holds(chunk))
            path = None
            if data.get(split):
                path = fs.join(self.chunks_dir, "%s-%09d" % (split, chunk))
                fs.write_bytes_atomic(path, data[split])
            Metrics.counter(_NAMESPACE, "examples").inc(counts[split])
            yield (split, shard), (chunk, path, counts[split], stats if split == "train" else {})


class _WriteShard(beam.DoFn):
    """(split, shard) and its chunks -> the shard, in a temporary file, with its statistics."""

    def __init__(self, c, shards_dir):
        self.config, self.shards_dir = c, shards_dir

    def process(self, group, layout):
        (split, shard), chunks = group
        if split == "problems":
            yield "problems", [p for _, _, _, s in chunks for p in s["problems"]]
            return
        name = layout.plan.splits[split][shard].file
        # The temporary name ends like the local builder's: gzip records it in its header.
        tmp = fs.join(self.shards_dir, name + ".tmp")
        raw = ChecksummedWriter(fs.open_write(tmp))
        out = RecordFile(raw, self.config.compress)
        counter = collections.Counter()
        for _, path, examples, stats in sorted(chunks, key=lambda x: x[0]):
            if path:
                out.write(fs.read_bytes(path))
            counter["examples"] += examples
            counter.update(stats)
        out.close()
        yield "shard", {"file": name, "tmp": tmp, "counter": dict(counter),
                        "bytes": raw.bytes, "crc32c": raw.crc32c}


def _pipeline(c, settings, mix, options, temp):
    """Runs the count and build passes as one pipeline: (Layout, shard results, Beam metrics)."""
    chunks_dir, shards_dir, out = (fs.join(temp, d) for d in ("chunks", "shards", "results"))
    for d in (chunks_dir, shards_dir, out):
        fs.makedirs(d)
    pipeline = beam.Pipeline(options=options)
    files = pipeline | "Files" >> beam.Create(list(enumerate(mix.all_paths)))

    # 1. count, then the layout (a single value: checks, dedup, plan).
    counted = files | "Count" >> beam.FlatMap(_CountFile(c, mix.dedup)).with_outputs("keys", main="files")
    if mix.dedup:
        duplicates = (counted.keys | "ByKey" >> beam.GroupByKey()
                      | "Duplicates" >> beam.FlatMap(_duplicates) | "DuplicateList" >> beam.combiners.ToList())
    else:
        duplicates = pipeline | "NoDuplicates" >> beam.Create([[]])
    layout = (counted.files | "Counts" >> beam.combiners.ToList()
              | "Layout" >> beam.Map(lambda rows, dups: Layout.of_counts(c, mix, rows, dups),
                                     beam.pvalue.AsSingleton(duplicates)))
    (layout | "WriteLayout" >> beam.Map(lambda lay: fs.write_bytes_atomic(
        fs.join(out, "layout.json"), lay.to_json().encode())))
    side = beam.pvalue.AsSingleton(layout)

    # 2. build.
    (files
     | "Entries" >> beam.ParDo(_ReadEntries(c, mix), side)
     | "ByChunk" >> beam.GroupByKey()
     | "Chunks" >> beam.ParDo(_ProcessChunk(settings, mix.active, chunks_dir), side)
     | "ByShard" >> beam.GroupByKey()
     | "Shards" >> beam.ParDo(_WriteShard(c, shards_dir), side)
     | "All" >> beam.combiners.ToList()
     | "Results" >> beam.Map(lambda rows: fs.write_bytes_atomic(
         fs.join(out, "results.json"), json.dumps(rows).encode())))
    result = _run(pipeline, "count and build")
    rows = json.loads(fs.read_bytes(fs.join(out, "results.json")))
    problems = [p for kind, value in rows if kind == "problems" for p in value]
    if problems and c.task.on_bad_record == "stop":
        raise BuildError("%d bad record(s) in the chunks; the build stopped and removed its shards. "
                         "First ones: %s. Fix the input, or pass --on_bad_record=skip to skip and "
                         "count them." % (len(problems), "; ".join(
                             "%s %s" % tuple(p) for p in problems[:sources.MAX_REPORTED])))
    for origin, reason in problems[:sources.MAX_REPORTED]:
        steps.log("skipped bad record %s: %s" % (origin, reason), c)
    metrics = {m.key.metric.name: m.committed for m in
               result.metrics().query(MetricsFilter().with_namespace(_NAMESPACE))["counters"]}
    layout = Layout.from_json(c, mix, fs.read_bytes(fs.join(out, "layout.json")))
    return layout, [value for kind, value in rows if kind == "shard"], metrics


def _publish(c, plan, state, results):
    """Moves the shards into place (in parallel: on Cloud Storage a move is a copy) and fills the
    build state the manifest is made from."""
    expected = set(plan.files())
    found = {r["file"] for r in results}
    if found != expected:
        raise BuildError("the Beam pipeline wrote %d of %d shards (missing: %s)"
                         % (len(found & expected), len(expected), ", ".join(sorted(expected - found))))
    with ThreadPoolExecutor(_MOVERS) as pool:
        list(pool.map(lambda r: fs.rename(r["tmp"], fs.join(c.output_dir, r["file"])), results))
    for r in results:
        state.finished[r["file"]] = FinishedShard(r["counter"], r["bytes"], r["crc32c"])
