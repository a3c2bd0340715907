"""Answer-vs-reference metrics of LLaMA-Factory's `do_predict` (train/sft/metric.py ComputeSimilarity), in plain Python.

LLaMA-Factory needs jieba, nltk and rouge_chinese for them (none is in its environment here); these give the same
kind of numbers, on LF's 0-100 scale:
- bleu-4: sentence BLEU-4 over characters with NLTK's smoothing method 3, as LF computes it (`list(label)`);
- rouge-l: ROUGE-L F1 (longest common subsequence) over words, CJK characters counted as words (LF segments
  with jieba);
- exact_match: the answer equals the reference after trimming spaces.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
_TOKEN = re.compile(f"[{_CJK}]|[^\\s{_CJK}]+")


def words(text: str) -> list[str]:
    """Words separated by spaces; each CJK character is a word of its own."""
    return _TOKEN.findall(text)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (one row of the DP table at a time)."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 of `prediction` against `reference`, 0-100."""
    hyp, ref = words(prediction), words(reference)
    lcs = lcs_length(hyp, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(hyp), lcs / len(ref)
    return 100.0 * 2 * precision * recall / (precision + recall)


def bleu4(prediction: str, reference: str) -> float:
    """Sentence BLEU-4 over characters with smoothing method 3 (NLTK's `sentence_bleu` + `method3`), 0-100."""
    hyp, ref = list(prediction), list(reference)
    if not hyp:
        return 0.0
    precisions: list[tuple[int, int]] = []
    for n in range(1, 5):
        hyp_ngrams = Counter(tuple(hyp[i: i + n]) for i in range(len(hyp) - n + 1))
        ref_ngrams = Counter(tuple(ref[i: i + n]) for i in range(len(ref) - n + 1))
        clipped = sum(min(count, ref_ngrams[g]) for g, count in hyp_ngrams.items())
        precisions.append((clipped, max(1, sum(hyp_ngrams.values()))))
    if precisions[0][0] == 0:
        return 0.0
    log_sum, zeros = 0.0, 1
    for numerator, denominator in precisions:
        if numerator == 0:  # method 3: 1 / (2^k * denominator) for the k-th n-gram order without a match
            value = 1 / (2**zeros * denominator)
            zeros += 1
        else:
            value = numerator / denominator
        log_sum += 0.25 * math.log(value)
    brevity = 1.0 if len(hyp) > len(ref) else math.exp(1 - len(ref) / len(hyp))
    return 100.0 * brevity * math.exp(log_sum)


def exact_match(prediction: str, reference: str) -> float:
    """100 when the answer is the reference (spaces at the ends ignored), else 0."""
    return 100.0 if prediction.strip() == reference.strip() else 0.0


def score(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean exact_match, rouge-l and bleu-4 (0-100) of the answers against the references."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        return {}
    pairs = list(zip(predictions, references, strict=True))
    return {name: round(sum(fn(p, r) for p, r in pairs) / len(pairs), 4)
            for name, fn in (("exact_match", exact_match), ("rouge-l", rouge_l), ("bleu-4", bleu4))}  # fmt: skip
