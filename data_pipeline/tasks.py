"""Sample types beyond MLM: UniLM seq2seq, SimBERT synonym groups and causal-LM streams.

Each task turns the items the reader yields into record columns (`schema` defines the features):

  * `unilm` from JSON fields: `{"source": ..., "target": ...}` -> `[CLS] source [SEP] target [SEP]`,
    segment ids 0 (source part) / 1 (target part), [PAD] after. Truncation policy with budget
    B = seq_len - 3: the target is cut to `max_target_len` when that is set (counted); a target that
    still leaves no room for one source token is a bad record (never cut silently); the source is cut
    to min(`max_source_len`, B - target) (counted).
  * `unilm` from plain text: sentences of a document are packed to at most B tokens and the packed
    segment is split at a point drawn inside its real length (1 <= point < length): source before,
    target after.
  * `simbert`: `{"text": ..., "synonyms": [...]}` -> the group's distinct members, tokenized without
    special tokens; the loader draws a different pair every epoch (docs/FORMATS.md §5).
  * `lm`: documents, each followed by [SEP], concatenated and cut into windows of seq_len tokens.

Bad records (missing fields, empty texts, a target over the budget, duplicates-only groups) are
reported by origin (file:line); whether they stop the build is the builder's `on_bad_record`.
"""

import dataclasses
from typing import Iterator, List, Optional

import numpy as np

from data_pipeline import schema, sources
from data_pipeline.tokenizer import count_unknown

MLM, UNILM, SIMBERT, LM = "mlm", "unilm", "simbert", "lm"
TASKS = (MLM, UNILM, SIMBERT, LM)
RECORD_FORMAT = {UNILM: schema.SEQ2SEQ, SIMBERT: schema.GROUPS, LM: schema.LM}


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    task: str = MLM
    unilm_from: str = "fields"          # unilm: fields (JSON source/target) | text (split packed text)
    source_field: str = "source"
    target_field: str = "target"
    synonyms_field: str = "synonyms"    # simbert; the group's first member is in SourceConfig.text_field
    max_source_len: Optional[int] = None
    max_target_len: Optional[int] = None
    on_bad_record: str = "stop"         # stop | skip

    def validate(self, seq_len: int):
        if self.task not in TASKS:
            raise ValueError("--task must be one of %s, got %r" % (", ".join(TASKS), self.task))
        if self.unilm_from not in ("fields", "text"):
            raise ValueError("--unilm_from must be 'fields' or 'text', got %r" % self.unilm_from)
        if self.on_bad_record not in ("stop", "skip"):
            raise ValueError("--on_bad_record must be 'stop' or 'skip', got %r" % self.on_bad_record)
        budget = seq_len - 3
        if self.task in (UNILM, SIMBERT) and budget < 2:
            raise ValueError("seq_len=%d is too small for %s: [CLS] a [SEP] b [SEP] needs at least 5 "
                             "positions." % (seq_len, self.task))
        if self.task == LM and seq_len < 2:
            raise ValueError("seq_len=%d is too small for a language model (at least 2)." % seq_len)
        for name in ("max_source_len", "max_target_len"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= budget - 1:
                raise ValueError("--%s=%d must be between 1 and seq_len - 4 = %d."
                                 % (name, value, budget - 1))

    @property
    def reads_json_records(self) -> bool:
        """Tasks whose items are single JSON records (not documents of text)."""
        return self.task == SIMBERT or (self.task == UNILM and self.unilm_from == "fields")


@dataclasses.dataclass(frozen=True)
class Record:
    """One JSON record of a structured task: where it came from, and its texts."""
    origin: str                 # "file:line", for error messages
    texts: tuple                # unilm: (source, target); simbert: the distinct members


def iter_items(task: TaskConfig, source: sources.SourceConfig, paths: List[str],
               stats: sources.ReadStats) -> Iterator:
    """The items a task is built from: documents (lists of sentences) or `Record`s.

    Bad records are counted in `stats.bad_records` (first few noted) and not yielded.
    """
    if not task.reads_json_records:
        yield from sources.iter_documents(source, paths, stats)
        return
    for path in paths:
        if path.startswith(sources.TFDS_PREFIX) or not sources.is_jsonl(source, path):
            raise sources.InputError(
                "--task=%s%s reads JSON lines, but %s is not (.jsonl/.json, or pass "
                "--input_format=jsonl)." % (task.task, "" if task.task == SIMBERT else
                                            " --unilm_from=fields", path))
        found = 0
        for number, obj in sources.iter_json_objects(path, stats):
            origin = "%s:%d" % (path, number)
            try:
                texts = (_seq2seq_texts(obj, task) if task.task == UNILM
                         else _group_texts(obj, task, source.text_field))
            except _TooSmall:
                stats.groups_too_small += 1
                continue
            except BadRecord as e:
                stats.bad_records += 1
                stats.note(path, number, str(e))
                continue
            found += 1
            stats.documents += 1
            yield Record(origin, texts)
        if not found and not source.allow_empty_files and not stats.bad_records:
            raise sources.InputError("Input file %s holds no usable record. Remove it or pass "
                                     "--allow_empty_files to skip such files." % path)


class BadRecord(ValueError):
    """A record that cannot make a sample; the message says why."""


class _TooSmall(Exception):
    """A SimBERT group with fewer than two members: skipped and counted, not an error."""


def _text_field(obj, field, what):
    if field not in obj:
        raise BadRecord("no %r field (%s)" % (field, what))
    value = obj[field]
    if not isinstance(value, str):
        raise BadRecord("%r is a %s, not a string" % (field, type(value).__name__))
    if not value.strip():
        raise BadRecord("empty %s (%r)" % (what, field))
    return value.strip()


def _seq2seq_texts(obj, task):
    return (_text_field(obj, task.source_field, "source"), _text_field(obj, task.target_field, "target"))


def _group_texts(obj, task, text_field):
    first = _text_field(obj, text_field, "text")
    synonyms = obj.get(task.synonyms_field, [])
    if task.synonyms_field not in obj:
        raise BadRecord("no %r field (synonyms)" % task.synonyms_field)
    if not isinstance(synonyms, list) or not all(isinstance(x, str) for x in synonyms):
        raise BadRecord("%r must be a list of strings" % task.synonyms_field)
    members = [first] + [s.strip() for s in synonyms if s.strip()]
    if len(members) < 2:
        raise _TooSmall()
    distinct = list(dict.fromkeys(members))
    if len(distinct) < 2:
        raise BadRecord("group of %d duplicates only (%r)" % (len(members), first[:40]))   # its start
    return tuple(distinct)


# ----------------------------------------------------------------------------- record columns

class TaskBuilder:
    """Makes the record columns of one task from a chunk's items (in a worker process)."""

    def __init__(self, task: TaskConfig, seq_len: int, tokenizer, specials):
        self.task, self.seq_len = task, seq_len
        self.tokenizer, self.specials = tokenizer, specials
        self.features = schema.features(RECORD_FORMAT[task.task], seq_len)

    def columns(self, items, rng, stats: dict, problems: list):
        """(columns, record count) for the items of one split. `stats` accumulates counters;
        `problems` receives (origin, reason) of records found bad here."""
        if not items:
            return None, 0
        if self.task.task == LM:
            rows = self._lm_rows(items, stats)
        elif self.task.task == SIMBERT:
            return self._groups(items, stats, problems)
        elif self.task.unilm_from == "fields":
            rows = self._seq2seq_rows(items, stats, problems)
        else:
            rows = self._text_seq2seq_rows(items, rng, stats)
        if not rows:
            return None, 0
        L, pad = self.seq_len, self.specials.pad
        ids = schema.sequence_padding([row_ids for row_ids, _ in rows], L, pad, np.int64)
        segments = schema.sequence_padding([row_segments for _, row_segments in rows], L, 0, np.int64)
        stats["instances"] = stats.get("instances", 0) + len(rows)
        stats["tokens"] = stats.get("tokens", 0) + int((ids != pad).sum())
        _count_unknown(stats, [row_ids for row_ids, _ in rows], self.specials.unk)
        out = {"input_ids": ids}
        if self.task.task == UNILM:
            out["segment_ids"] = segments
        return out, len(rows)

    def _encode(self, texts):
        return [ids.astype(np.int64) for ids in self.tokenizer.encode_arrays(list(texts))]

    def _seq2seq(self, source, target):
        return schema.unilm_row(source, target, self.specials.cls, self.specials.sep)

    def _seq2seq_rows(self, records, stats, problems):
        encoded = self._encode(t for r in records for t in r.texts)
        budget = self.seq_len - 3
        t = self.task
        rows = []
        for k, record in enumerate(records):
            source, target = encoded[2 * k], encoded[2 * k + 1]
            if not len(source) or not len(target):
                problems.append((record.origin, "the %s has no tokens"
                                 % ("source" if not len(source) else "target")))
                continue
            if t.max_target_len is not None and len(target) > t.max_target_len:
                _add_count(stats, "targets_truncated", 1)
                _add_count(stats, "target_tokens_cut", len(target) - t.max_target_len)
                target = target[:t.max_target_len]
            if len(target) > budget - 1:
                problems.append((record.origin, "target of %d tokens leaves no room for the source "
                                 "(seq_len %d holds %d tokens of text; set --max_target_len to cut "
                                 "targets)" % (len(target), self.seq_len, budget)))
                continue
            room = budget - len(target)
            if t.max_source_len is not None:
                room = min(room, t.max_source_len)
            if len(source) > room:
                _add_count(stats, "sources_truncated", 1)
                _add_count(stats, "source_tokens_cut", len(source) - room)
                source = source[:room]
            rows.append(self._seq2seq(source, target))
        return rows

    def _text_seq2seq_rows(self, documents, rng, stats):
        budget = self.seq_len - 3
        rows = []
        for doc in documents:
            segment = []
            for ids in self._encode(doc):
                for begin in range(0, max(len(ids), 1), budget):  # over-long sentences are split
                    piece = ids[begin:begin + budget]
                    if len(segment) + len(piece) > budget and len(segment):
                        rows.extend(self._split(segment, rng, stats))
                        segment = []
                    segment = np.concatenate([segment, piece]).astype(np.int64)
            rows.extend(self._split(segment, rng, stats))
        return rows

    def _split(self, tokens, rng, stats):
        if len(tokens) < 2:
            _add_count(stats, "segments_too_short", 1)
            return []
        point = rng.randint(1, len(tokens) - 1)  # inside the real length: both sides non-empty
        return [self._seq2seq(tokens[:point], tokens[point:])]

    def _lm_rows(self, documents, stats):
        sep = np.array([self.specials.sep], np.int64)
        stream = np.concatenate([part for doc in documents for part in (*self._encode(doc), sep)])
        L = self.seq_len
        rows = [(stream[b:b + L], np.zeros(0, np.int64)) for b in range(0, len(stream), L)]
        if rows and len(rows[-1][0]) < 2:  # nothing to predict in a one-token tail
            rows.pop()
        return rows

    def _groups(self, records, stats, problems):
        encoded = self._encode(t for r in records for t in r.texts)
        limit = self.seq_len - 4  # a member must leave room for at least one partner token
        members, lengths, k = [], [], 0
        for record in records:
            group = []
            for ids in encoded[k:k + len(record.texts)]:
                if len(ids) > limit:
                    _add_count(stats, "members_truncated", 1)
                    ids = ids[:limit]
                if len(ids) and not any(np.array_equal(ids, g) for g in group):
                    group.append(ids)
            k += len(record.texts)
            if len(group) < 2:
                problems.append((record.origin, "fewer than two members with distinct tokens"))
                continue
            members.append(np.concatenate(group))
            lengths.append(np.array([len(g) for g in group], np.int64))
        if not members:
            return None, 0
        stats["instances"] = stats.get("instances", 0) + len(members)
        stats["tokens"] = stats.get("tokens", 0) + int(sum(len(m) for m in members))
        _count_unknown(stats, members, self.specials.unk)
        _add_count(stats, "group_members", int(sum(len(x) for x in lengths)))
        return {"member_ids": members, "member_lengths": lengths}, len(members)


def _count_unknown(stats, id_lists, unk_id):
    """Adds the [UNK] and all tokens of the rows to the unknown_tokens / tokens_read counters (the
    build's summary warns when too many are unknown)."""
    unknown, total = count_unknown(id_lists, unk_id)
    _add_count(stats, "unknown_tokens", unknown)
    _add_count(stats, "tokens_read", total)


def _add_count(stats, key, n):
    stats[key] = stats.get(key, 0) + n
