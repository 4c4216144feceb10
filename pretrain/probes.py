"""Downstream probes: how well the encoder's features serve a user's own task, while it trains.

    config.probes = [{"name": "sentiment", "train": "reviews_train.csv", "eval": "reviews_eval.csv"}]

A probe is two labelled CSV files (`data_pipeline.labelled`: a text column, optionally a second
one, and a label). At every evaluation (`train.eval_every`, the end of the run, and step 0 of a
new run, so that the curve starts from the untrained network) the trainer runs the encoder over
both files' rows with the strategy it trains with (`Trainer.probe_features`: the same forward
pass as its evaluation, on any device and any number of workers), then fits a linear classifier
to the train rows' features on the host and scores it on the eval rows (every worker fits the
same one; the chief reports it). The features of a row are its [CLS] vector and the mean of its
tokens' vectors, from the last layer ([2H]). Logged as `probe/<name>/accuracy` and
`probe/<name>/macro_f1` (metrics.jsonl rows of split "probe", TensorBoard's probe/ run); the
run's summary names each probe's best step.

The classifier is multinomial logistic regression on standardised features (the train rows'
mean and deviation), fitted in NumPy by L-BFGS (`fit_softmax`; its objective is checked against
SciPy's L-BFGS in the tests). Its L2 strength is the one of `L2_GRID` with the lowest
cross-entropy on a seeded fifth of the train rows, held out; the classifier is then refitted on
all of them. The eval rows are only ever scored, so a probe cannot tune itself to them (a probe
with random labels stays at chance; tested). At BERT-base width (2 x 768 features) a few
thousand rows fit in seconds on one CPU core.

Everything that can be wrong with a probe's files (unreadable, not UTF-8, a missing column, an
empty field, one class, an eval label never trained on) or settings (a max_len past the model's
positions) fails when the trainer is built, before the first step, naming the file and the line.
Rows longer than max_len are cut, the longer text of a pair first.
"""

import dataclasses
from typing import List, Sequence

import numpy as np

from data_pipeline.labelled import LabelledDataError, check_labels, read_labelled_csv
from data_pipeline.schema import sequence_padding

# The classifier: the L2 strengths tried (on the mean cross-entropy of standardised features), the
# share of train rows held out to choose one, and the most L-BFGS steps of each fit.
L2_GRID = (1e-1, 1e-2, 1e-3, 1e-4)
HELD_OUT_SHARE = 0.2
FIT_STEPS = 100          # L-BFGS steps: the objective within ~1e-5 of its optimum (tested)
_MEMORY = 10             # L-BFGS curvature pairs
_ARMIJO = 1e-4           # the sufficient decrease a step must make
_MAX_HALVINGS = 40
_FLAT_GRADIENT = 1e-7    # largest gradient entry at which a fit is done


class ProbeError(ValueError):
    """A probe that cannot run; the message names the file and line, or the setting."""


@dataclasses.dataclass
class ProbeData:
    """One probe's rows, tokenized: ids and segments [N, max_len] int32 (padded with the pad id
    and segment 0), labels [N] (indices into `labels`)."""
    name: str
    labels: List[str]
    train_ids: np.ndarray
    train_segments: np.ndarray
    train_labels: np.ndarray
    eval_ids: np.ndarray
    eval_segments: np.ndarray
    eval_labels: np.ndarray


def load(configs, tokenizer, max_positions: int, default_len: int) -> List[ProbeData]:
    """Reads and tokenizes every probe (`run_config.ProbeConfig`s) with the data's tokenizer;
    ProbeError at the first problem. A probe's max_len 0 means `default_len` (the data's seq_len)."""
    out = []
    for c in configs:
        max_len = c.max_len or default_len
        if max_len > max_positions:
            raise ProbeError("probe %r: max_len %d exceeds model.max_position_embeddings %d"
                             % (c.name, max_len, max_positions))
        try:
            train = read_labelled_csv(c.train, c.text, c.label, c.text_b or None)
            held_out = read_labelled_csv(c.eval, c.text, c.label, c.text_b or None)
            labels = check_labels(train, held_out, c.train, c.eval)
        except LabelledDataError as e:
            raise ProbeError("probe %r: %s" % (c.name, e))
        index = {label: i for i, label in enumerate(labels)}
        tr_ids, tr_seg = encode(train, tokenizer, max_len)
        ev_ids, ev_seg = encode(held_out, tokenizer, max_len)
        out.append(ProbeData(c.name, labels, tr_ids, tr_seg, np.array([index[r.label] for r in train]),
                             ev_ids, ev_seg, np.array([index[r.label] for r in held_out])))
    return out


def encode(rows, tokenizer, max_len: int):
    """[CLS] text [SEP] (text_b [SEP]) per row, the longer text cut first to fit `max_len`:
    (ids, segments) [N, max_len] int32, padded with the tokenizer's pad id and segment 0."""
    special = tokenizer.special_ids
    ids, segments = [], []
    for row, a, b in zip(rows, tokenizer.encode_batch([r.text for r in rows]),
                         tokenizer.encode_batch([r.text_b or "" for r in rows])):
        if row.text_b is None:
            a = a[:max_len - 2]
            tokens = [special.cls] + a + [special.sep]
            segs = [0] * len(tokens)
        else:
            a, b = _truncate_pair(list(a), list(b), max_len - 3)
            tokens = [special.cls] + a + [special.sep] + b + [special.sep]
            segs = [0] * (len(a) + 2) + [1] * (len(b) + 1)
        ids.append(tokens)
        segments.append(segs)
    return (sequence_padding(ids, max_len, special.pad).astype(np.int32),
            sequence_padding(segments, max_len, 0).astype(np.int32))


def _truncate_pair(a, b, budget):
    while len(a) + len(b) > budget:
        (a if len(a) >= len(b) else b).pop()
    return a, b


# ------------------------------------------------------------------------------ the classifier

def standardise(train, *others):
    """Features minus the train rows' mean, over their deviation (constant features stay 0)."""
    mean = train.mean(0)
    scale = train.std(0)
    scale[scale == 0] = 1.0
    return [(x - mean) / scale for x in (train,) + others]


def fit_softmax(x, y, num_classes: int, l2: float, max_steps: int = FIT_STEPS, start=None):
    """Multinomial logistic regression: argmin over W [D, C], b [C] of
    mean_i CE(softmax(x_i W + b), y_i) + l2/2 |W|^2 (b not penalised), by L-BFGS (the last
    `_MEMORY` steps' curvature pairs) with a backtracking (Armijo) line search, from zero or
    from `start` (a (W, b) of an earlier fit). Deterministic. Stops when the gradient is flat or
    after `max_steps`. Returns (W, b), float64."""
    x = np.asarray(x, np.float64)
    d = x.shape[1]
    size = d * num_classes

    def value_and_grad(params):
        w, b = params[:size].reshape(d, num_classes), params[size:]
        value, dlogits = _cross_entropy(x @ w + b, y)
        grad = np.concatenate([(x.T @ dlogits + l2 * w).ravel(), dlogits.sum(0)])
        return value + 0.5 * l2 * float(np.sum(w * w)), grad

    params = (np.zeros(size + num_classes) if start is None
              else np.concatenate([np.ravel(start[0]), start[1]]).astype(np.float64))
    value, grad = value_and_grad(params)
    pairs = []                                  # (s, y): steps and their gradient changes
    for _ in range(max_steps):
        if np.max(np.abs(grad)) < _FLAT_GRADIENT:
            break
        direction = -_inverse_hessian_times(pairs, grad)
        slope = float(grad @ direction)
        if slope >= 0:                          # lost curvature information: start afresh
            pairs, direction = [], -grad
            slope = float(grad @ direction)
        step = 1.0 if pairs else 1.0 / max(np.linalg.norm(grad), 1.0)
        for _ in range(_MAX_HALVINGS):
            new_value, new_grad = value_and_grad(params + step * direction)
            if new_value <= value + _ARMIJO * step * slope:
                break
            step *= 0.5
        else:
            break                               # no decrease left at float64 precision
        s, g_change = step * direction, new_grad - grad
        if float(s @ g_change) > 1e-12:
            pairs = (pairs + [(s, g_change)])[-_MEMORY:]
        params, value, grad = params + s, new_value, new_grad
    return params[:size].reshape(d, num_classes), params[size:]


def _inverse_hessian_times(pairs, grad):
    """L-BFGS's two-loop recursion: the inverse-Hessian estimate times `grad`."""
    q = grad.copy()
    alphas = []
    for s, g in reversed(pairs):
        rho = 1.0 / float(g @ s)
        alpha = rho * float(s @ q)
        q -= alpha * g
        alphas.append((rho, alpha))
    if pairs:
        s, g = pairs[-1]
        q *= float(s @ g) / float(g @ g)
    for (s, g), (rho, alpha) in zip(pairs, reversed(alphas)):
        q += s * (alpha - rho * float(g @ q))
    return q


def _cross_entropy(logits, y):
    """(mean cross-entropy, its gradient with respect to the logits [N, C])."""
    top = logits.max(1, keepdims=True)
    e = np.exp(logits - top)
    total = e.sum(1, keepdims=True)
    rows = np.arange(len(y))
    value = float(np.mean(np.log(total[:, 0]) + top[:, 0] - logits[rows, y]))
    dlogits = e / total
    dlogits[rows, y] -= 1.0
    return value, dlogits / len(y)


def objective(x, y, w, b, l2):
    """The quantity `fit_softmax` minimises (the tests compare it with SciPy's optimum)."""
    return _cross_entropy(np.asarray(x, np.float64) @ w + b, y)[0] + 0.5 * l2 * float(np.sum(w * w))


def scores(y_true, y_pred, num_classes: int) -> dict:
    """Accuracy and macro-F1 (the unweighted mean of the classes' F1; a class never predicted
    nor present scores 0)."""
    accuracy = float(np.mean(y_true == y_pred))
    f1 = []
    for c in range(num_classes):
        tp = np.sum((y_pred == c) & (y_true == c))
        predicted, actual = np.sum(y_pred == c), np.sum(y_true == c)
        f1.append(0.0 if tp == 0 else 2.0 * tp / (predicted + actual))
    return {"accuracy": accuracy, "macro_f1": float(np.mean(f1))}


def fit_and_score(train_features, train_labels, eval_features, eval_labels, num_classes: int,
                  seed: int) -> dict:
    """The probe's classifier on `train_*` (its L2 chosen on a seeded held-out fifth of them),
    scored on `eval_*`: {"accuracy", "macro_f1", "l2"}. Labels are 0..num_classes-1."""
    train_labels, eval_labels = np.asarray(train_labels), np.asarray(eval_labels)
    order = np.random.default_rng(seed).permutation(len(train_labels))
    held = order[:max(1, int(len(order) * HELD_OUT_SHARE))]
    fit = order[len(held):]
    best, start = None, None
    if len(fit) and len(set(train_labels[fit])) > 1:
        x_fit, x_held = standardise(train_features[fit], train_features[held])
        for l2 in L2_GRID:     # each fit starts from the last one's solution (a stronger penalty's)
            start = fit_softmax(x_fit, train_labels[fit], num_classes, l2, start=start)
            # Chosen by the held-out rows' cross-entropy: unlike their accuracy, it has no ties.
            loss = _cross_entropy(x_held @ start[0] + start[1], train_labels[held])[0]
            if best is None or loss < best[0]:
                best = (loss, l2, start)
    l2, start = (best[1], best[2]) if best else (L2_GRID[0], None)
    x_train, x_eval = standardise(train_features, eval_features)
    w, b = fit_softmax(x_train, train_labels, num_classes, l2, start=start)
    return dict(scores(eval_labels, np.argmax(x_eval @ w + b, 1), num_classes), l2=l2)


def evaluate(probes: Sequence[ProbeData], features, seed: int) -> dict:
    """{"probe/<name>/accuracy", "probe/<name>/macro_f1"} of every probe; `features(ids,
    segments)` gives the rows' features [N, F]."""
    out = {}
    for p in probes:
        result = fit_and_score(features(p.train_ids, p.train_segments), p.train_labels,
                               features(p.eval_ids, p.eval_segments), p.eval_labels,
                               len(p.labels), seed)
        out["probe/%s/accuracy" % p.name] = result["accuracy"]
        out["probe/%s/macro_f1" % p.name] = result["macro_f1"]
    return out


def best_steps(rows) -> dict:
    """{probe name: (best accuracy, its step, last accuracy, its step)} from metrics rows; the
    earliest step wins a tie."""
    best, last = {}, {}
    for row in rows:
        if row.get("split") != "probe":
            continue
        for key, value in row.items():
            if key.startswith("probe/") and key.endswith("/accuracy"):
                name = key[len("probe/"):-len("/accuracy")]
                if name not in best or value > best[name][0]:
                    best[name] = (value, row["step"])
                last[name] = (value, row["step"])
    return {name: best[name] + last[name] for name in best}
