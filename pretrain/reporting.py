"""What a run reports: metrics.jsonl, TensorBoard scalars and progress lines (chief only).

Every row of metrics.jsonl is one report: {"split": "train" | "eval" | "probe", "step", the
metrics..., "time": seconds since this process started training}; TensorBoard has a run per split
(probe rows only with config.probes). The ETA counts the steps this process has
run, so a run resumed at step 500,000 of 1,000,000 estimates from its own pace, not from zero.
"""

import json
import math
import sys
import time

from pretrain import objectives, probes

# A diverging run's perplexity is reported as at most exp(50) (~5e21): math.exp of a loss past
# ~709 raises OverflowError, and an inf would be no valid JSON in metrics.jsonl.
_MAX_LOG_PERPLEXITY = 50.0


def summarise(totals, task, with_nsp):
    """Per-update metric sums -> losses and accuracies (sum / count), perplexity, total loss."""
    out, loss = {}, 0.0
    for name in objectives.loss_names(task, with_nsp):
        count = max(totals[name + "_count"], 1.0)
        out[name + "_loss"] = totals[name + "_loss"] / count
        out[name + "_accuracy"] = totals[name + "_correct"] / count
        loss += out[name + "_loss"]
    first = objectives.loss_names(task, with_nsp)[0]
    out["perplexity"] = math.exp(min(out[first + "_loss"], _MAX_LOG_PERPLEXITY))
    out["loss"] = loss
    return out


def duration(seconds):
    seconds = int(seconds)
    return "%d:%02d:%02d" % (seconds // 3600, seconds // 60 % 60, seconds % 60)


class Reporter:
    def __init__(self, rundir, total_steps, enabled: bool, progress: bool):
        """`enabled`: write metrics and TensorBoard (the chief); `progress`: print lines too."""
        self.rundir, self.total_steps = rundir, total_steps
        self.enabled, self.progress = enabled, progress and enabled
        self.started = time.time()
        self.first_step = None       # the step this process started from, and when
        self.first_time = None
        self._writers = None

    def start(self, step):
        self.first_step, self.first_time = step, time.time()

    def _tensorboard(self, split):
        import tensorflow as tf

        if self._writers is None:
            self._writers = {s: tf.summary.create_file_writer(self.rundir.tensorboard(s))
                             for s in ("train", "eval")}
        if split not in self._writers:   # probe: only in runs with probes
            self._writers[split] = tf.summary.create_file_writer(self.rundir.tensorboard(split))
        return self._writers[split]

    def report(self, metrics, split, step):
        if not self.enabled:
            return
        import tensorflow as tf

        with self._tensorboard(split).as_default(step=step):
            for k, v in metrics.items():
                if k != "step" and isinstance(v, (int, float)):
                    tf.summary.scalar(k, v)
        row = dict(metrics, split=split, step=step, time=round(time.time() - self.started, 2))
        with tf.io.gfile.GFile(self.rundir.metrics, "a") as f:
            f.write(json.dumps(row) + "\n")
        if split == "train":
            done = step - self.first_step
            elapsed = time.time() - self.first_time
            eta = elapsed / done * (self.total_steps - step) if done > 0 else 0
            acc = next((metrics[k] for k in ("mlm_accuracy", "seq2seq_accuracy") if k in metrics), 0.0)
            self.log("step %d/%d  loss %.4f  acc %.4f  lr %.2e  %.0f ex/s  %.0f tok/s  ETA %s"
                     % (step, self.total_steps, metrics["loss"], acc, metrics["lr"],
                        metrics["examples_per_s"], metrics["tokens_per_s"], duration(eta)))
        else:
            self.log("%s at step %d: %s" % (split, step, "  ".join(
                "%s %.4f" % (k, v) for k, v in metrics.items()
                if k != "step" and isinstance(v, float))))

    def final(self, result, checkpoints):
        lines = ["Run %s: %s at step %d in %s" % (self.rundir.workdir, result.status, result.step,
                                                  duration(result.seconds))]
        if result.metrics:
            lines.append("  last train: loss %.4f  %s" % (result.metrics["loss"], "  ".join(
                "%s %.4f" % (k, v) for k, v in result.metrics.items() if k.endswith("accuracy"))))
        if result.eval_metrics:
            lines.append("  eval: " + "  ".join("%s %.4f" % (k, v) for k, v in result.eval_metrics.items()
                                                if k != "step" and isinstance(v, float)))
        rows = self.rundir.metrics_rows() if self.progress else []   # the run's, from every process
        for name, (best, best_step, last, last_step) in sorted(probes.best_steps(rows).items()):
            lines.append("  probe %s: best accuracy %.4f at step %d (last %.4f at step %d)"
                         % (name, best, best_step, last, last_step))
        lines.append("  checkpoints: %s   metrics: %s   tensorboard: %s" % (
            checkpoints, self.rundir.metrics, self.rundir.tensorboard("")[:-1]))
        self.log("\n".join(lines))

    def log(self, text):
        if self.progress:
            print(text, file=sys.stderr, flush=True)
