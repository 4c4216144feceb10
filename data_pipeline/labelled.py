"""Labelled text in CSV files: the rows a downstream probe (or a classifier) trains and scores on.

    rows = read_labelled_csv("reviews_train.csv", text="text", label="label")          # local or gs://
    rows = read_labelled_csv("pairs.csv", text="question", text_b="answer", label="match")
    rows[0]    # LabelledRow(line=2, text="...", text_b=None, label="pos")

The first row names the columns (any order, others ignored). Every other row must have a text
(and text_b, when one is named) and a label: a row without one is an error naming the file and
its line, not a row silently dropped, so that a file cut short by a bad quote or an export with
an empty column is found before anything trains on it. Lines are the file's physical lines (a
quoted field may span several; a row is named by the line it starts on).
"""

import csv
import dataclasses
import io
from typing import List, Optional, Sequence

from storage import fs


class LabelledDataError(ValueError):
    """A labelled file that cannot be used; the message names the file and the line."""


@dataclasses.dataclass(frozen=True)
class LabelledRow:
    line: int                    # the line of the file the row starts on (the header is line 1)
    text: str
    text_b: Optional[str]
    label: str


def read_labelled_csv(path: str, text: str = "text", label: str = "label",
                      text_b: Optional[str] = None) -> List[LabelledRow]:
    """The rows of a UTF-8 CSV file; LabelledDataError naming `path` and the line at fault."""
    try:
        raw = fs.read_bytes(path)
    except Exception as e:  # noqa: BLE001 - any storage error (missing, permission, gs://) is the file's
        raise LabelledDataError("%s: cannot be read (%s)" % (path, str(e).splitlines()[0] if str(e)
                                                              else type(e).__name__))
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise LabelledDataError("%s:%d: not UTF-8 (byte 0x%02x); save the file as UTF-8"
                                % (path, line, raw[e.start]))
    wanted = [c for c in (text, text_b, label) if c]
    reader = csv.reader(io.StringIO(content, newline=""), strict=True)
    rows: List[LabelledRow] = []
    try:
        header = next(reader, None)
        if header is None:
            raise LabelledDataError("%s: the file is empty; its first row must name the columns %s"
                                    % (path, ",".join(wanted)))
        missing = [c for c in wanted if c not in header]
        if missing:
            raise LabelledDataError("%s:1: no column %s (the header has: %s)"
                                    % (path, ", ".join(repr(c) for c in missing), ", ".join(header)))
        index = {c: header.index(c) for c in wanted}
        start = reader.line_num + 1
        for fields in reader:
            line, start = start, reader.line_num + 1
            if not fields or fields == [""]:
                continue                                   # a blank line
            if len(fields) != len(header):
                raise LabelledDataError("%s:%d: %d fields, the header has %d (a stray comma or quote?)"
                                        % (path, line, len(fields), len(header)))
            values = {c: fields[i].strip() for c, i in index.items()}
            empty = [c for c in wanted if not values[c]]
            if empty:
                raise LabelledDataError("%s:%d: empty %s" % (path, line, " and ".join(empty)))
            rows.append(LabelledRow(line, values[text], values[text_b] if text_b else None, values[label]))
    except csv.Error as e:
        raise LabelledDataError("%s:%d: %s" % (path, reader.line_num, e))
    if not rows:
        raise LabelledDataError("%s: no rows after the header" % path)
    return rows


def check_labels(train: Sequence[LabelledRow], held_out: Sequence[LabelledRow], train_path: str,
                 held_out_path: str) -> List[str]:
    """The sorted labels of `train`; LabelledDataError when it has fewer than two, or when a
    held-out row has a label the training rows never have (named with its line)."""
    labels = sorted({r.label for r in train})
    if len(labels) < 2:
        raise LabelledDataError("%s: every row has the label %r; a classifier needs at least two "
                                "classes" % (train_path, labels[0]))
    known = set(labels)
    for r in held_out:
        if r.label not in known:
            raise LabelledDataError("%s:%d: label %r never occurs in %s (its labels: %s)"
                                    % (held_out_path, r.line, r.label, train_path, ", ".join(labels)))
    return labels
