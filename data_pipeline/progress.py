"""A dependency-free progress line: documents, docs/s, MB/s, examples and ETA.

On a terminal it redraws one line; in a log (not a TTY) it prints a line every 30 seconds.
"""

import sys
import time


def _duration(seconds):
    seconds = int(seconds)
    if seconds >= 3600:
        return "%dh%02dm" % (seconds // 3600, seconds % 3600 // 60)
    return "%dm%02ds" % (seconds // 60, seconds % 60) if seconds >= 60 else "%ds" % seconds


class Progress:
    def __init__(self, total_docs, total_bytes, enabled=True, stream=None):
        self.total_docs, self.total_bytes = max(1, total_docs), max(1, total_bytes)
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.start = self.last = time.time()
        self.line = ""

    def update(self, docs, nbytes, examples, force=False):
        now = time.time()
        # A terminal's line is redrawn twice a second; a log file gets a line every 30 s.
        if not self.enabled or (not force and now - self.last < (0.5 if self.tty else 30.0)):
            return
        self.last = now
        elapsed = max(now - self.start, 1e-6)
        done = docs / self.total_docs
        eta = elapsed * (1 - done) / done if done > 0 else float("nan")
        self.line = ("%5.1f%% | %d/%d docs | %.0f docs/s | %.2f MB/s | %d examples | ETA %s"
                     % (100 * done, docs, self.total_docs, docs / elapsed, nbytes / elapsed / 1e6,
                        examples, _duration(eta) if eta == eta else "?"))
        if self.tty:
            self.stream.write("\r" + self.line)
        else:
            self.stream.write(self.line + "\n")
        self.stream.flush()

    def close(self):
        if self.tty and self.line:
            self.stream.write("\n")
            self.stream.flush()
