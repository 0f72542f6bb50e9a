"""Per-document metrics and their aggregation, as lm-evaluation-harness computes them (lm_eval/api/metrics.py);
standard errors: mean → sample stddev / sqrt(n); perplexity → delta method (lm-eval bootstraps it, which
gives the same value to about two digits); corpus perplexities → none (lm-eval reports N/A)."""

from __future__ import annotations

import math
import re
from typing import Sequence


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def mean_stderr(xs: Sequence[float]) -> float | None:
    if len(xs) < 2:
        return None
    mu = mean(xs)
    return math.sqrt(sum((x - mu) ** 2 for x in xs) / (len(xs) - 1)) / math.sqrt(len(xs))


def argmax(xs: Sequence[float]) -> int:
    best = 0
    for i, x in enumerate(xs):
        if x > xs[best]:
            best = i
    return best


def multiple_choice(lls: Sequence[float], choices: Sequence[str], gold: int, metrics: Sequence[str]) -> dict:
    out = {"acc": float(argmax(lls) == gold)}
    if "acc_norm" in metrics:
        out["acc_norm"] = float(argmax([ll / len(c) for ll, c in zip(lls, choices)]) == gold)
    return out


# gsm8k's filters and exact_match settings (lm_eval/tasks/gsm8k/gsm8k.yaml)
GSM8K_FILTERS = {
    "strict-match": (r"#### (\-?[0-9\.\,]+)", 0),
    "flexible-extract": (r"(-?[$0-9.,]{2,})|(-?[0-9]+)", -1),
}
GSM8K_IGNORE = [",", "\\$", "(?s).*#### ", "\\.$"]


def regex_filter(text: str, pattern: str, group_select: int, fallback: str = "[invalid]") -> str:
    match = re.findall(pattern, text)
    if not match:
        return fallback
    m = match[group_select]
    if isinstance(m, tuple):
        m = next((x for x in m if x), fallback)
    return m.strip()


def exact_match(prediction: str, reference: str, ignore: Sequence[str] = GSM8K_IGNORE) -> float:
    for pattern in ignore:
        prediction, reference = re.sub(pattern, "", prediction), re.sub(pattern, "", reference)
    return float(prediction.lower() == reference.lower())


def aggregate(metric: str, values: list) -> tuple[float, float | None]:
    """(value, stderr) over documents for one metric."""
    if metric == "perplexity":
        mu = mean(values)
        se = mean_stderr(values)
        return math.exp(-mu), (math.exp(-mu) * se if se is not None else None)
    if metric in ("word_perplexity", "byte_perplexity"):
        return math.exp(-sum(v[0] for v in values) / sum(v[1] for v in values)), None
    if metric == "bits_per_byte":
        return -sum(v[0] for v in values) / sum(v[1] for v in values) / math.log(2), None
    return mean(values), mean_stderr(values)


def pooled_stderr(stderrs: Sequence[float], sizes: Sequence[int]) -> float:
    """lm-eval's pooled_sample_stderr, for size-weighted groups (mmlu)."""
    var = sum((n - 1) * se**2 * n for n, se in zip(sizes, stderrs)) / (sum(sizes) - len(sizes))
    return math.sqrt(var / sum(sizes))


def unweighted_stderr(stderrs: Sequence[float]) -> float:
    return math.sqrt(sum(se**2 for se in stderrs)) / len(stderrs)
