"""The steps both data-build engines share (builder: local processes; beam_build: Apache Beam):
check the output, resolve and count the inputs, fingerprint the build, prepare the output
directory (a new build state, or the one to resume: `build_state`), and make the manifest and the
summary from what was written.
"""

import dataclasses
import hashlib
import json
import os
import sys
from typing import Optional

from data_pipeline import mixing, schema, sources, tasks
from data_pipeline.build_config import VOLATILE, BuildConfig, BuildError
from data_pipeline.build_state import STATE_FILE, BuildState, FinishedShard, Plan, state_path
from data_pipeline.chunks import ChunkSettings
from data_pipeline.manifest import MANIFEST_FILE, Manifest, Shard, Split
from data_pipeline.tokenizer import unknown_warning
from storage import fs
from storage.lock import READERS, DirectoryLock, LockError, live_holders

BUILDER_VERSION = "1.0"
DUPLICATE_WARNING = 0.5   # warn when more than this fraction of the documents were duplicates


def lock_output(c: BuildConfig, command: str) -> DirectoryLock:
    """Checks that the output directory can be written (now, not after the counting pass) and
    takes its lock, so that two builds never write one directory; the caller releases it."""
    probe = fs.join(c.output_dir, ".write-probe-%d" % os.getpid())
    try:
        fs.makedirs(c.output_dir)
        fs.write_bytes_atomic(probe, b"")
        fs.remove(probe)
    except OSError as e:
        raise BuildError("cannot write to --output_dir=%s: %s" % (c.output_dir, e.strerror or e))
    try:
        return DirectoryLock(c.output_dir, command, log=lambda text: log(text, c)).acquire()
    except LockError as e:
        raise BuildError("another build writes here: %s" % e)

# ------------------------------------------------------------------------------ settings, inputs

def chunk_settings(c: BuildConfig) -> ChunkSettings:
    return ChunkSettings(vocab=c.vocab, lower_case=c.lower_case, instance=c.instance,
                         masking=c.masking,
                         record_format=schema.GOOGLE if c.mode == "static" else schema.DYNAMIC,
                         dupe_factor=c.dupe_factor if c.mode == "static" else 1, seed=c.seed,
                         eval_fraction=c.eval_fraction, docs_per_chunk=c.docs_per_chunk,
                         segmenter=c.segmenter, task=c.task)


def resolve_sources(c) -> mixing.Mix:
    try:
        return mixing.resolve(c.source, c.seed)
    except sources.InputError as e:
        raise BuildError(str(e))


# --------------------------------------------------------------------------------- 2. counting

def _problems(problems):
    return "; ".join("%s:%d %s" % p for p in problems)


def count_documents(c: BuildConfig, mix: mixing.Mix):
    """The counting pass: (stream entries, input bytes, read statistics, mixing.Counted). It
    reads every item once, so bad inputs stop the build before anything is written."""
    stats = sources.ReadStats()
    try:
        counted = mixing.count(c.task, c.source, mix, stats)
    except sources.InputError as e:
        raise BuildError(str(e))
    check_read_stats(c, stats)
    total = mixing.stream_length(mix, counted)
    if total == 0:
        raise BuildError("The inputs hold no documents: %s" % ", ".join(mix.all_paths))
    return total, stats.bytes, stats, counted


def check_read_stats(c: BuildConfig, stats):
    """Bad records (JSON tasks, --on_bad_record=stop) and too many bad lines stop the build."""
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


def fingerprint(c: BuildConfig, paths, vocab_sha):
    """Identifies a build: settings that change the output, the inputs' names/sizes/times, vocab."""
    settings = dataclasses.asdict(c)
    for volatile in VOLATILE:
        settings.pop(volatile)
    if settings["source"]["dedup"] == "none":   # builds from before the option: same fingerprint
        settings["source"].pop("dedup")
    inputs = [(p, None, None) if p.startswith(sources.TFDS_PREFIX) else (p, fs.size(p), fs.mtime(p))
              for p in paths]
    blob = json.dumps([settings, inputs, vocab_sha, BUILDER_VERSION], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]   # 64 bits: short, and never alike by chance


# ------------------------------------------------------------------------ 3. output directory

def prepare_output(c: BuildConfig, fingerprint, plan: Optional[Plan]) -> Optional[BuildState]:
    """Returns the build state to continue from, or None when the identical build is complete.
    `plan` is recorded in a new state (None where it is not known yet: the Beam engine plans in
    its pipeline; the local builder always plans afresh)."""
    out = c.output_dir
    fs.makedirs(out)
    manifest_path = fs.join(out, MANIFEST_FILE)
    ours = [n for n in fs.listdir(out) if ".tfrecord" in n or n in (MANIFEST_FILE, STATE_FILE)]
    if c.overwrite and ours:
        readers = live_holders(fs.glob(fs.join(out, READERS, "*.lock")))
        if readers:
            raise BuildError("--overwrite would replace the data that a run reads: %s is read by %s. "
                             "Wait for the run to finish or stop it, or build into a new --output_dir."
                             % (out, "; ".join(readers)))
        for name in ours:
            fs.remove(fs.join(out, name))
        ours = []
    previous = None
    if fs.exists(manifest_path):
        previous = fs.read_json(manifest_path).get("fingerprint")
        if previous == fingerprint:
            return None
    elif fs.exists(state_path(out)):
        state = BuildState.load(out)
        if state.fingerprint == fingerprint:
            for name in ours:  # partial shards of the interrupted run
                if ".tmp" in name:
                    fs.remove(fs.join(out, name))
            return state
        previous = state.fingerprint
    if ours:
        raise BuildError("Output directory %s already holds shards of a different build (build %s, "
                         "this one is %s). Use a new --output_dir, or --overwrite to replace them."
                         % (out, previous or "of unknown origin", fingerprint))
    state = BuildState(fingerprint, plan)
    state.save(out)
    return state


# ------------------------------------------------------------------------------- 5. manifest

def finish(c: BuildConfig, processor, mix, counted, plan: Plan, state: BuildState, read_stats,
           fingerprint, seconds) -> Manifest:
    """Every shard is in place: the manifest is written (last: its presence marks a complete
    build), the build state removed and the summary printed."""
    manifest = make_manifest(c, processor, mix.all_paths, plan, state, read_stats, fingerprint,
                             seconds)
    if mix.active:
        manifest.sources = mixing.manifest_sources(mix, mixing.per_source_counts(mix, counted),
                                                   state.train_stats(plan))
    manifest.save(c.output_dir)
    fs.remove(state_path(c.output_dir))
    summary(manifest, c)
    train = state.train_stats(plan)   # (builds resumed from a layout-1 state lack the counters)
    warning = unknown_warning(train.get("unknown_tokens", 0), train.get("tokens_read", 0),
                              "the training text", processor.tokenizer.path)
    if warning:
        log(warning, c)
    return manifest


def make_manifest(c, processor, paths, plan: Plan, state: BuildState, read_stats, fingerprint,
                  seconds) -> Manifest:
    pairs = c.instance.layout == "pairs"
    splits = {}
    for split, shards in plan.splits.items():
        entries = [_manifest_shard(c, s.file, state.finished[s.file]) for s in shards]
        splits[split] = Split(entries, sum(e.examples for e in entries))
    train = state.train_stats(plan)
    mlm = c.task.task == tasks.MLM
    task_stats = {k: train.get(k, 0) for k in _TASK_COUNTERS.get(c.task.task, ())}
    if c.task.reads_json_records:
        task_stats["bad_records_skipped"] = (read_stats.bad_records + read_stats.bad_json_lines
                                             + train.get("bad_records", 0))
    if c.task.task == tasks.SIMBERT:
        task_stats["groups_too_small"] = read_stats.groups_too_small
    info = processor.tokenizer.describe()
    # The vocabulary's path is recorded absolute (a gs:// or file:// one as it is): the manifest
    # is read from other working directories (a run, an export), where a path as typed would
    # name nothing.
    vocab = dataclasses.replace(info, path=info.path if "://" in info.path else os.path.abspath(info.path),
                                random_replacement_ids=tuple(processor.replacement_ids.tolist()))
    return Manifest(
        builder_version=BUILDER_VERSION,
        fingerprint=fingerprint,
        task=c.task.task,
        task_config=dataclasses.asdict(c.task),
        mode=c.mode,
        record_format=processor.settings.record_format if mlm else tasks.RECORD_FORMAT[c.task.task],
        compression="GZIP" if c.compress else None,
        seq_len=c.instance.seq_len,
        max_predictions_per_seq=c.masking.max_predictions if mlm else None,
        masked_lm_prob=c.masking.masked_lm_prob if mlm else None,
        layout=c.instance.layout if mlm else None,
        sentence_task=c.instance.sentence_task if pairs and mlm else None,
        dupe_factor=c.dupe_factor if c.mode == "static" else None,
        seed=c.seed,
        features=list(processor.features),
        vocab=vocab,
        splits=splits,
        stats={"documents": train.get("documents", 0),
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
        inputs=paths,
        args=json.loads(json.dumps(dataclasses.asdict(c), default=str)),
        data_dir=c.output_dir,
    )


def _manifest_shard(c, name, finished: FinishedShard) -> Shard:
    """A shard's manifest entry: its bytes and CRC32C as written, read back for a shard that a
    layout-1 state recorded (before they were)."""
    examples = finished.stats.get("examples", 0)
    if finished.bytes is not None:
        return Shard(name, examples, finished.bytes, finished.crc32c)
    path = fs.join(c.output_dir, name)
    return Shard(name, examples, fs.size(path), fs.crc32c(path))


_TASK_COUNTERS = {
    tasks.UNILM: ("sources_truncated", "source_tokens_cut", "targets_truncated", "target_tokens_cut",
                  "segments_too_short"),
    tasks.SIMBERT: ("group_members", "members_truncated"),
}


def summary(m: Manifest, c):
    st = m.stats
    mlm = m.task == tasks.MLM
    masked = ("%.4f" % (st["masked_tokens"] / st["tokens"])) if (
        c.mode == "static" and st["tokens"]) else "drawn by the loader each epoch"
    kind = "%s, %s" % (m.mode, m.layout) if mlm else m.record_format
    lines = ["Built %s (task %s: %s) in %.1f s" % (c.output_dir, m.task, kind, st["seconds"]),
             "  %s: %d (%d held out for eval), %.1f MB read"
             % ("documents" if not c.task.reads_json_records else "records", st["documents"],
                st["eval_documents"], st["input_bytes"] / 1e6)]
    for split, info in m.splits.items():
        lines.append("  %s examples: %d in %d shards" % (split, info.examples, len(info.shards)))
    if mlm:
        lines += ["  tokens: %d   masked fraction: %s" % (st["tokens"], masked),
                  "  sentences split: %d   tokens trimmed (pairs): %d   documents cut: %d"
                  % (st["sentences_split"], st["tokens_trimmed"], st["documents_cut"])]
    else:
        lines.append("  tokens: %d" % st["tokens"])
        extra = {k: v for k, v in st.items() if k in _TASK_COUNTERS.get(m.task, ())
                 or k in ("bad_records_skipped", "groups_too_small")}
        if extra:
            lines.append("  " + "   ".join("%s: %d" % kv for kv in extra.items()))
    if st["invalid_utf8_lines"] or st["bad_json_lines"]:
        lines.append("  skipped bad input: %d invalid UTF-8 lines, %d bad JSON lines (first: %s)"
                     % (st["invalid_utf8_lines"], st["bad_json_lines"], "; ".join(st["first_problems"])))
    read = sum(s["documents_read"] for s in m.sources)
    dropped = sum(s["duplicates_dropped"] for s in m.sources)
    if c.source.dedup != "none":
        lines.append("  duplicates dropped (--dedup=%s): %d of %d" % (c.source.dedup, dropped, read))
    log("\n".join(lines), c)
    # Warnings are printed whatever --progress says: they are about what the build holds.
    warnings = []
    if read and dropped > DUPLICATE_WARNING * read:
        warnings.append("%d of the %d documents read (%d%%) were duplicates and were dropped "
                        "(--dedup=%s): check the inputs (the same file given twice?)."
                        % (dropped, read, 100 * dropped // read, c.source.dedup))
    asked = {"train": c.num_shards, "eval": c.num_eval_shards}
    for split, info in m.splits.items():
        empty = sum(1 for shard in info.shards if not shard.examples)
        if info.examples < asked[split] or empty:
            warnings.append("%s: %d example(s) in %d shard(s), %d of them empty, where --%s=%d "
                            "were asked: the input is too small for that many shards."
                            % (split, info.examples, len(info.shards), empty,
                               "num_shards" if split == "train" else "num_eval_shards", asked[split]))
    for warning in warnings:
        print("build_data: warning: %s" % warning, file=sys.stderr, flush=True)


def log(text, c):
    if c.progress:
        print(text, file=sys.stderr, flush=True)

