"""A data build's plan (which chunks each shard holds) and its state (which shards are finished),
for both engines (`builder`: local processes; `beam_build`: Apache Beam).

    plan = Plan.for_build(config, total_docs)
    state = BuildState.load(output_dir)            # None when the directory has no state file
    state.finished[name] = FinishedShard(stats, bytes, crc32c); state.save(output_dir)

The documents are cut into chunks of `docs_per_chunk` (the unit of work); shard k of a split holds
a fixed, contiguous range of chunks. The state file (`_build_state.json`) is written when a build
starts and again each time the local builder finishes a shard, so an interrupted build resumes
where it stopped; the finished build's manifest is made from it, and it is removed then. Its
layouts, each read (a build interrupted by an older version of this code resumes):
  1  {"fingerprint", "plan", "done": {shard file: its chunk statistics}}: the first builders;
     their statistics may hold "examples" only;
  2  the same + "shards": {shard file: {"bytes", "crc32c"}}: the shard's size and checksum for the
     manifest (a layout-1 shard's are read back from the file).
"plan" is null where the build did not know it when it started (the Beam engine plans inside its
pipeline; the local builder always plans afresh and only records it).
"""

import collections
import dataclasses
import json
from typing import Dict, List, Optional

from data_pipeline.build_config import BuildConfig
from storage import fs

STATE_FILE = "_build_state.json"


@dataclasses.dataclass(frozen=True)
class PlannedShard:
    file: str       # its name in the output directory
    first: int      # it holds chunks [first, last)
    last: int

    def holds(self, chunk: int) -> bool:
        return self.first <= chunk < self.last


@dataclasses.dataclass(frozen=True)
class Plan:
    """The shards of every split ("train", and "eval" with --eval_fraction) and their chunks."""
    num_chunks: int
    splits: Dict[str, List[PlannedShard]]

    @classmethod
    def for_build(cls, c: BuildConfig, total_docs: int) -> "Plan":
        """Splits are planned independently; a split gets at most one shard per chunk."""
        num_chunks = -(-total_docs // c.docs_per_chunk)
        ext = ".tfrecord.gz" if c.compress else ".tfrecord"
        wanted = {"train": c.num_shards}
        if c.eval_fraction > 0:
            wanted["eval"] = c.num_eval_shards
        splits = {}
        for split, n in wanted.items():
            n = min(n, num_chunks)
            splits[split] = [PlannedShard("%s-%05d-of-%05d%s" % (split, k, n, ext),
                                          k * num_chunks // n, (k + 1) * num_chunks // n)
                             for k in range(n)]
        return cls(num_chunks, splits)

    def files(self) -> List[str]:
        return [s.file for shards in self.splits.values() for s in shards]

    def to_dict(self) -> dict:
        return {"num_chunks": self.num_chunks,
                "splits": {split: [dataclasses.asdict(s) for s in shards]
                           for split, shards in self.splits.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        return cls(d["num_chunks"], {split: [PlannedShard(**s) for s in shards]
                                     for split, shards in d["splits"].items()})


@dataclasses.dataclass
class FinishedShard:
    """A shard in place under its final name."""
    stats: Dict[str, int]             # its chunks' statistics, summed: examples, documents, ...
    bytes: Optional[int] = None       # None: recorded by a layout-1 state (read back from the file)
    crc32c: Optional[str] = None      # base64, as storage.fs.crc32c


@dataclasses.dataclass
class BuildState:
    """The state of one build of one output directory: owned by the engine that runs it, made by
    `build_steps.prepare_output` (new, or loaded to resume), filled as shards are finished, saved
    by the local builder after each one, and removed once the manifest is written."""
    fingerprint: Optional[str]        # the build's (`build_steps.fingerprint`); None: unknown
    plan: Optional[Plan]              # as recorded; None: not known when the build started
    finished: Dict[str, FinishedShard] = dataclasses.field(default_factory=dict)   # by file name

    def to_json(self) -> str:
        """The state file's text (layout 2), as the engines have always written it."""
        return json.dumps({
            "fingerprint": self.fingerprint,
            "plan": self.plan.to_dict() if self.plan is not None else None,
            "done": {name: s.stats for name, s in self.finished.items()},
            "shards": {name: {"bytes": s.bytes, "crc32c": s.crc32c}
                       for name, s in self.finished.items() if s.bytes is not None}})

    @classmethod
    def from_json(cls, text) -> "BuildState":
        """Reads either layout (see the module docstring)."""
        d = json.loads(text)
        sizes = d.get("shards", {})
        finished = {name: FinishedShard(stats, **sizes.get(name, {}))
                    for name, stats in d.get("done", {}).items()}
        plan = Plan.from_dict(d["plan"]) if d.get("plan") is not None else None
        return cls(d.get("fingerprint"), plan, finished)

    def save(self, output_dir: str):
        fs.write_bytes_atomic(state_path(output_dir), self.to_json().encode())

    @classmethod
    def load(cls, output_dir: str) -> Optional["BuildState"]:
        path = state_path(output_dir)
        return cls.from_json(fs.read_bytes(path)) if fs.exists(path) else None

    def train_stats(self, plan: Plan) -> collections.Counter:
        """Every chunk statistic, summed over the train shards (all finished): the build's, since
        a chunk keeps its statistics with its train shard."""
        total = collections.Counter()
        for s in plan.splits["train"]:
            total.update(self.finished[s.file].stats)
        return total


def state_path(output_dir: str) -> str:
    return fs.join(output_dir, STATE_FILE)
