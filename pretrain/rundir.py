"""A pretraining run's directory: every path a run writes or reads, defined once.

    workdir/
      config.json                         the resolved config the run trains with
      data.json                           the data build it trains on (the manifest's
                                          fingerprint): a rebuilt data directory is refused
      command.txt                         every command line that ran here (launch.*)
      .lock                               held by the process that trains here (storage.lock)
      vocab/vocab.txt | sentencepiece.model, vocab/vocab.json
                                          the data's vocabulary, copied at the start of the run
                                          (and its record: kind, sha256, special ids, ...)
      checkpoints/ckpt-<step>.index, .data-*
                                          model, optimizer, step, loss scale, data position
      checkpoints/data-worker-<i>-of-<n>/ckpt-<step>.*
                                          each worker's own data position (data.worker_split=files)
      metrics.jsonl                       one JSON line per report: split train | eval
      tensorboard/train, tensorboard/eval TensorBoard event files

`launch.export` needs nothing but this directory. Runs written before the vocabulary was copied
here have no vocab/: export then takes it from the data directory the run's config names.
"""

import dataclasses
import os
import re
from typing import List, Optional

from storage import fs
from data_pipeline.tokenizer import VocabRecord
from pretrain.export_dir import VOCAB_FILES   # the run's copy has the name an export gives it

CONFIG_FILE = "config.json"
DATA_FILE = "data.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
VOCAB_DIR = "vocab"
VOCAB_RECORD = "vocab.json"
_CHECKPOINT = re.compile(r"ckpt-(\d+)\.index$")


class RunDir:
    """The layout above for one workdir: every path a run writes or reads there, and the small
    records it keeps (config.json, data.json, the vocabulary copy and its record, metrics rows).

    It holds nothing but the workdir's path and opens nothing: it is built wherever a workdir is
    read or written (the trainer, its checkpoints and reporter, launch.export) and lives as long
    as its user. The checkpoint files themselves are written by `checkpoints.Checkpoints`.
    """

    def __init__(self, workdir: str):
        self.workdir = workdir

    @property
    def config(self) -> str:
        return fs.join(self.workdir, CONFIG_FILE)

    @property
    def metrics(self) -> str:
        return fs.join(self.workdir, METRICS_FILE)

    @property
    def checkpoints(self) -> str:
        return fs.join(self.workdir, CHECKPOINTS)

    def tensorboard(self, split: str) -> str:
        return fs.join(self.workdir, TENSORBOARD, split)

    def checkpoint(self, step: int) -> str:
        """The prefix of the checkpoint of `step` (…/checkpoints/ckpt-<step>)."""
        return fs.join(self.checkpoints, "ckpt-%d" % step)

    def data_positions(self, task_id, num_workers) -> str:
        """Where worker `task_id` of `num_workers` keeps its own data position ("*": a glob)."""
        return fs.join(self.checkpoints, "data-worker-%s-of-%s" % (task_id, num_workers))

    def checkpoint_steps(self) -> List[int]:
        """Steps that have a checkpoint (an index file), oldest first."""
        if not fs.exists(self.checkpoints):
            return []
        return sorted(int(m.group(1)) for m in (_CHECKPOINT.search(os.path.basename(p))
                                                for p in fs.glob(fs.join(self.checkpoints, "ckpt-*.index")))
                      if m)

    @staticmethod
    def step_of(prefix: str) -> int:
        return int(prefix.rsplit("-", 1)[1])

    # ------------------------------------------------------------------------------ config

    def read_run_config(self) -> Optional[dict]:
        """The resolved config the run saved (config.json; not a Google bert_config.json, which
        is `google_checkpoint.read_bert_config`'s); None before a run has started here."""
        return fs.read_json(self.config) if fs.exists(self.config) else None

    def write_run_config(self, resolved: dict):
        """Writes config.json once, when the run starts (a resumed run keeps the first)."""
        fs.makedirs(self.workdir)
        if not fs.exists(self.config):
            fs.write_json_atomic(self.config, resolved)

    def data_build(self) -> Optional[dict]:
        """{"train_dir", "fingerprint"} of the data build the run trains on; None for a new run
        (or one from before this record)."""
        path = fs.join(self.workdir, DATA_FILE)
        return fs.read_json(path) if fs.exists(path) else None

    def write_data_build(self, manifest):
        fs.write_json_atomic(fs.join(self.workdir, DATA_FILE),
                             {"train_dir": manifest.data_dir, "fingerprint": manifest.fingerprint})

    # ---------------------------------------------------------------------------- vocabulary

    @property
    def vocab_record(self) -> str:
        return fs.join(self.workdir, VOCAB_DIR, VOCAB_RECORD)

    def copy_vocab(self, vocab: VocabRecord) -> str:
        """Copies the data's vocabulary (its manifest's record) into the run, checked by sha256;
        returns the copy's path. A run that already holds it keeps it."""
        name = VOCAB_FILES[vocab.kind]
        target = fs.join(self.workdir, VOCAB_DIR, name)
        if fs.exists(self.vocab_record) and fs.exists(target):
            if self.vocab().sha256 == vocab.sha256:
                return target
        if not fs.exists(vocab.path):
            raise FileNotFoundError("the data's vocabulary %s does not exist here; it is copied into "
                                    "the run directory when a run starts" % vocab.path)
        if fs.sha256(vocab.path) != vocab.sha256:
            raise ValueError("%s is not the vocabulary the data was built with (its sha256 differs "
                             "from the data manifest's): rebuild the data, or restore that file"
                             % vocab.path)
        fs.makedirs(fs.join(self.workdir, VOCAB_DIR))
        fs.copy(vocab.path, target)
        fs.write_json_atomic(self.vocab_record,
                             dataclasses.replace(vocab, file=name, source_path=vocab.path).to_dict())
        return target

    def vocab(self) -> Optional[VocabRecord]:
        """The vocabulary record copied at the start of the run, with `path` pointing at the copy;
        None for runs from before copies were made."""
        if not fs.exists(self.vocab_record):
            return None
        record = VocabRecord.from_dict(fs.read_json(self.vocab_record))
        return dataclasses.replace(record, path=fs.join(self.workdir, VOCAB_DIR, record.file))

    # ------------------------------------------------------------------------------ metrics

    def metrics_rows(self) -> List[dict]:
        import json

        if not fs.exists(self.metrics):
            return []
        return [json.loads(line) for line in fs.read_bytes(self.metrics).decode("utf-8").splitlines()
                if line.strip()]

    def drop_metrics_after(self, step: int) -> int:
        """Removes the rows of steps after `step` (written by a run that stopped before it could
        checkpoint them: a resumed run computes those steps again); returns how many."""
        import json

        rows = self.metrics_rows()
        kept = [r for r in rows if r.get("step", 0) <= step]
        if len(kept) != len(rows):
            fs.write_bytes_atomic(self.metrics, "".join(json.dumps(r) + "\n" for r in kept).encode())
        return len(rows) - len(kept)
