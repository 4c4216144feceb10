"""ROUGE-1/2/L and BLEU of generated text against references, and the lead-N baseline.

    text_metrics.scores(["generated title"], ["reference title"])
    # {"rouge1": 57.1, "rouge2": 0.0, "rougeL": 57.1, "bleu": 0.0, "pairs": 1}

The scores are Google's `rouge-score` (mean F1 over pairs) and `sacrebleu` (corpus BLEU), both fed
one tokenization so that they count the same units: every CJK character is a token (Chinese is
scored at character level, as is usual), other text is lower-cased runs of letters and digits
(English at word level); punctuation is dropped. Scores are percentages (0-100).
"""

import re
from typing import Sequence

_TOKEN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002a6df]|[^\W_]+")


def tokens(text: str):
    """The units the metrics count: CJK characters one by one, other words lower-cased."""
    return _TOKEN.findall(text.lower())


class _Units:
    """The tokenizer interface rouge-score takes."""

    @staticmethod
    def tokenize(text):
        return tokens(text)


def scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
    """{"rouge1", "rouge2", "rougeL": mean F1 x 100, "bleu": corpus BLEU, "pairs": n}.

    Example:
      scores(["数据分片"], ["数据的分片"])["rouge1"]   # 88.9: 4 of 5 characters, all 4 right
    """
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import BLEU

    if len(hypotheses) != len(references) or not references:
        raise ValueError("%d hypotheses for %d references: need one per reference, at least one."
                         % (len(hypotheses), len(references)))
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=_Units())
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for hypothesis, reference in zip(hypotheses, references):
        for name, score in scorer.score(reference, hypothesis).items():
            totals[name] += score.fmeasure
    out = {name: round(100.0 * total / len(references), 2) for name, total in totals.items()}
    bleu = BLEU(tokenize="none").corpus_score([" ".join(tokens(h)) for h in hypotheses],
                                              [[" ".join(tokens(r)) for r in references]])
    out["bleu"] = round(bleu.score, 2)
    out["pairs"] = len(references)
    return out


def lead(source: str, n: int) -> str:
    """The lead-N baseline: the first n metric units of the source (a headline's usual guess)."""
    return " ".join(tokens(source)[:n])


def lead_length(targets: Sequence[str]) -> int:
    """N for the lead baseline: the mean length of the targets, in metric units (at least 1)."""
    return max(1, round(sum(len(tokens(t)) for t in targets) / max(len(targets), 1)))
