"""The evaluation's statistics: pure functions of counts, no I/O.

- `wilson_interval`: Wilson's (1927) score interval of one binomial proportion.
- `clustered_interval`: a proportion over answers grouped by input, where one input's n samples are correlated
  (a word the model can spell, it spells in most samples): the input is the unit. Wilson's interval at the
  effective sample size, answers / design effect, with the design effect estimated from the between-input
  variance of the ratio estimator (Kish 1965; Korn & Graubard 1998, Survey Methodology 24:193, who also truncate
  the effective size at the actual one). Never narrower than Wilson's interval over all answers; with one answer
  per input it is that interval.
- `mcnemar_exact_p`: McNemar's test, exact form: two-sided binomial(b + c, 1/2) on the discordant pairs.
- `paired_difference_interval`: Newcombe's (1998, Statistics in Medicine 17:2635, method 10) hybrid score
  interval for the difference of two paired proportions: each proportion's Wilson interval, combined with the
  correlation of the pairs (phi, continuity-corrected as Newcombe gives it).
- `paired_comparison`: both for two systems' outcomes on the same inputs, matched by input id.
- `format_p`, `format_difference`: how reports write a p-value and a paired difference.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(correct: float, total: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% for the default z); sane at 0%, 100% and small totals.
    `total` may be an effective sample size (not a whole number)."""
    if total <= 0:
        return 0.0, 1.0
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    low = 0.0 if p <= 0 else max(0.0, centre - half)  # exact ends: centre and half cancel only up to rounding
    return low, 1.0 if p >= 1 else min(1.0, centre + half)


@dataclass(frozen=True)
class Clustered:
    rate: float  # hits / answers
    low: float  # 95% interval with the input as the unit
    high: float
    answers: int
    inputs: int
    effective: float  # answers / design effect, truncated at answers


def clustered_interval(groups: Iterable[tuple[int, int]], z: float = Z95) -> Clustered:
    """`groups`: (hits, answers) per input. The proportion of hits over all answers, with Wilson's interval at the
    effective sample size (see the module's docstring). Where every input has one answer this is plain Wilson; where
    the rate is 0 or 1 the data say nothing of the correlation, and the input count is the sample size."""
    pairs = [(int(hits), int(answers)) for hits, answers in groups if answers > 0]
    inputs, answers, hits = len(pairs), sum(m for _, m in pairs), sum(y for y, _ in pairs)
    if not answers:
        return Clustered(0.0, 0.0, 1.0, 0, 0, 0.0)
    rate = hits / answers
    if max(m for _, m in pairs) == 1:
        effective = float(answers)
    elif inputs < 2 or rate in (0.0, 1.0):
        effective = float(inputs)
    else:
        # linearised variance of the ratio estimator sum(y) / sum(m), inputs as independent clusters
        residual = sum((y - rate * m) ** 2 for y, m in pairs)
        variance = inputs / (inputs - 1) * residual / answers**2
        effective = min(float(answers), rate * (1 - rate) / variance) if variance > 0 else float(answers)
    low, high = wilson_interval(rate * effective, effective, z)
    return Clustered(rate, low, high, answers, inputs, effective)


def mcnemar_exact_p(first_only: int, second_only: int) -> float:
    """Exact two-sided McNemar p-value: under no difference, each discordant pair falls either way with
    probability 1/2; the p-value doubles the smaller tail of binomial(b + c, 1/2), capped at 1."""
    n = first_only + second_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(first_only, second_only) + 1))
    return min(1.0, 2 * tail / 2**n)


def paired_difference_interval(
    both: int, first_only: int, second_only: int, neither: int, z: float = Z95
) -> tuple[float, float]:
    """Newcombe's (1998) method 10 interval for p1 - p2, where p1 = (both + first_only) / n and
    p2 = (both + second_only) / n on the same n pairs."""
    n = both + first_only + second_only + neither
    if n == 0:
        return -1.0, 1.0
    p1, p2 = (both + first_only) / n, (both + second_only) / n
    l1, u1 = wilson_interval(both + first_only, n, z)
    l2, u2 = wilson_interval(both + second_only, n, z)
    margins = (both + first_only) * (second_only + neither) * (both + second_only) * (first_only + neither)
    phi = 0.0
    if margins:
        cross = both * neither - first_only * second_only
        corrected = cross - n / 2 if cross > n / 2 else (0.0 if cross >= 0 else cross)
        phi = corrected / math.sqrt(margins)
    difference = p1 - p2
    low = difference - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    high = difference + math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    return max(-1.0, low), min(1.0, high)


@dataclass(frozen=True)
class PairedComparison:
    inputs: int
    both: int  # inputs where both systems count (right, or agreeing)
    first_only: int
    second_only: int
    neither: int
    difference: float  # first's rate - second's rate
    low: float  # Newcombe's 95% interval of the difference
    high: float
    p_value: float  # exact two-sided McNemar


def paired_comparison(first: Mapping[str, bool], second: Mapping[str, bool], z: float = Z95) -> PairedComparison:
    """Two systems' outcomes (input id -> counts) on the same inputs: a paired difference, never two intervals."""
    if first.keys() != second.keys():
        missing = len(first.keys() ^ second.keys())
        raise ValueError(f"a paired comparison needs both systems on the same inputs ({missing} ids are in one only)")
    counts = {(True, True): 0, (True, False): 0, (False, True): 0, (False, False): 0}
    for key, outcome in first.items():
        counts[bool(outcome), bool(second[key])] += 1
    both, first_only = counts[True, True], counts[True, False]
    second_only, neither = counts[False, True], counts[False, False]
    low, high = paired_difference_interval(both, first_only, second_only, neither, z)
    inputs = len(first)
    return PairedComparison(
        inputs,
        both,
        first_only,
        second_only,
        neither,
        (first_only - second_only) / inputs if inputs else 0.0,
        low,
        high,
        mcnemar_exact_p(first_only, second_only),
    )


def format_rate(value: float | None, low: float | None = None, high: float | None = None) -> str:
    """'12.3% [8.1%, 18.0%]' ('12.3%' without an interval, 'n/a' without a value)."""
    if value is None:
        return "n/a"
    return f"{value:.1%}" + (f" [{low:.1%}, {high:.1%}]" if low is not None and high is not None else "")


def format_p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def format_difference(comparison: Mapping[str, float]) -> str:
    """'+17.0 pts [+10.6, +23.2]'"""
    difference, low, high = (100 * comparison[key] for key in ("difference", "low", "high"))
    return f"{difference:+.1f} pts [{low:+.1f}, {high:+.1f}]"
