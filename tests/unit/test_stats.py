"""The evaluation's statistics (engine/core/stats.py) against published values and hand-computed sums."""

from __future__ import annotations

import math
import random

import pytest

from s2d.engine.core.stats import (
    clustered_interval,
    format_rate,
    mcnemar_exact_p,
    paired_comparison,
    paired_difference_interval,
    wilson_interval,
)


def test_wilson_interval_matches_the_formula_and_stays_in_0_1():
    low, high = wilson_interval(16, 32)
    assert (round(low, 3), round(high, 3)) == (0.336, 0.664)
    assert wilson_interval(0, 32)[0] == 0.0 and round(wilson_interval(0, 32)[1], 3) == 0.107
    assert wilson_interval(32, 32)[1] == 1.0 and wilson_interval(32, 32)[0] > 0.89
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_mcnemar_exact_p_known_values():
    # b=10, c=2: 2 * (C(12,0) + C(12,1) + C(12,2)) / 2^12 = 2 * 79 / 4096
    assert mcnemar_exact_p(10, 2) == pytest.approx(0.0386, abs=1e-4)
    assert mcnemar_exact_p(10, 2) == 2 * 79 / 4096 == mcnemar_exact_p(2, 10)
    # Bentur et al. (2009) in Fagerland, Lydersen & Laake (2013, BMC Med Res Methodol 13:91): exact p = 0.070
    assert mcnemar_exact_p(1, 7) == pytest.approx(0.0703, abs=1e-4)
    # Cavo et al. (2012), the same paper's second example: exact p = 0.052
    assert mcnemar_exact_p(6, 16) == pytest.approx(0.0525, abs=1e-4)
    assert mcnemar_exact_p(0, 0) == 1.0 and mcnemar_exact_p(5, 5) == 1.0  # capped at 1
    assert mcnemar_exact_p(0, 20) == pytest.approx(2 / 2**20)
    assert 0 < mcnemar_exact_p(0, 2000) < 1e-300 or mcnemar_exact_p(0, 2000) == 0.0  # big n: no overflow


def test_newcombe_paired_interval_matches_the_published_example():
    # Cavo et al. (2012) 2x2 [[59, 6], [16, 80]]: Newcombe square-and-add -0.0621 (-0.1186 to -0.0046) in
    # Fagerland, Lydersen & Laake, Statistical Analysis of Contingency Tables (2017), chapter 8
    low, high = paired_difference_interval(59, 6, 16, 80)
    assert (round(low, 4), round(high, 4)) == (-0.1186, -0.0046)
    # swapping the systems mirrors the interval
    assert paired_difference_interval(59, 16, 6, 80) == pytest.approx((0.0046, 0.1186), abs=1e-4)


def test_paired_interval_degenerate_tables_stay_in_range():
    assert paired_difference_interval(0, 0, 0, 0) == (-1.0, 1.0)
    low, high = paired_difference_interval(0, 0, 0, 50)  # both always wrong: no difference, a narrow interval
    assert low < 0 < high and high - low < 0.15
    low, high = paired_difference_interval(0, 50, 0, 0)  # first always right, second never
    assert 0.89 < low <= high == 1.0


def test_paired_comparison_pairs_by_id_and_counts_discordant_inputs():
    first = {"a": True, "b": True, "c": False, "d": True, "e": False}
    second = {"e": False, "d": False, "c": True, "b": False, "a": True}  # another order: pairs by id
    result = paired_comparison(first, second)
    assert (result.both, result.first_only, result.second_only, result.neither) == (1, 2, 1, 1)
    assert result.difference == pytest.approx(0.2) and result.p_value == 1.0 and result.low < 0.2 < result.high
    with pytest.raises(ValueError, match="same inputs"):
        paired_comparison(first, {"a": True})


def test_paired_test_finds_what_overlapping_intervals_miss():
    # 200 inputs, 16 right before and 34 after, every input right before stays right: intervals of the two
    # rates overlap, the paired test does not hesitate
    first = {str(i): i < 34 for i in range(200)}
    second = {str(i): i < 16 for i in range(200)}
    assert wilson_interval(34, 200)[0] < wilson_interval(16, 200)[1]
    result = paired_comparison(first, second)
    assert result.p_value == pytest.approx(2 / 2**18) and result.low > 0.05


def test_clustered_interval_is_wilson_with_one_answer_per_input():
    groups = [(1, 1)] * 16 + [(0, 1)] * 184
    interval = clustered_interval(groups)
    assert (interval.low, interval.high) == wilson_interval(16, 200) and interval.effective == 200


def test_clustered_interval_widens_when_an_inputs_samples_agree():
    # every input's 8 samples are all right or all wrong: 8 x 200 answers hold only 200 inputs' information
    correlated = clustered_interval([(8, 8)] * 25 + [(0, 8)] * 175)
    naive = wilson_interval(200, 1600)
    assert correlated.rate == 0.125 and correlated.inputs == 200 and correlated.answers == 1600
    assert correlated.low < naive[0] and correlated.high > naive[1]
    assert correlated.effective == pytest.approx(199, abs=1)  # the input count (less its degree of freedom)
    assert correlated.high - correlated.low == pytest.approx(
        wilson_interval(25, 200)[1] - wilson_interval(25, 200)[0], rel=0.01
    )


def test_clustered_interval_is_never_narrower_than_the_naive_one():
    # samples independent of the input: no widening beyond noise, and truncated at the naive interval
    rng = random.Random(0)
    independent = [(sum(rng.random() < 0.125 for _ in range(8)), 8) for _ in range(200)]
    interval = clustered_interval(independent)
    hits = sum(h for h, _ in independent)
    naive = wilson_interval(hits, 1600)
    assert interval.effective <= 1600 and interval.low <= naive[0] and interval.high >= naive[1]
    assert interval.effective > 800  # little correlation, little widening
    same_share = clustered_interval([(1, 8)] * 200)  # no between-input variance at all: the naive interval
    assert (same_share.low, same_share.high) == wilson_interval(200, 1600)


def test_clustered_interval_at_0_and_100_percent_uses_the_input_count():
    none_right = clustered_interval([(0, 8)] * 200)
    assert none_right.low == 0.0 and none_right.high == pytest.approx(wilson_interval(0, 200)[1])
    assert none_right.high > wilson_interval(0, 1600)[1]
    all_right = clustered_interval([(8, 8)] * 50)
    assert all_right.high == 1.0 and all_right.low == pytest.approx(wilson_interval(50, 50)[0])
    assert clustered_interval([]).answers == 0 and clustered_interval([]).high == 1.0


def test_clustered_interval_handles_unequal_cluster_sizes():
    groups = [(3, 4), (0, 2), (5, 8), (1, 1), (0, 6), (2, 3)]
    interval = clustered_interval(groups)
    assert interval.rate == pytest.approx(11 / 24) and interval.answers == 24 and interval.inputs == 6
    residual = sum((y - 11 / 24 * m) ** 2 for y, m in groups)
    variance = 6 / 5 * residual / 24**2
    assert interval.effective == pytest.approx(min(24, (11 / 24) * (13 / 24) / variance))
    assert math.isfinite(interval.low) and 0 <= interval.low < interval.rate < interval.high <= 1


def test_a_rate_reads_with_its_interval_without_one_or_as_missing():
    assert format_rate(0.1234, 0.081, 0.18) == "12.3% [8.1%, 18.0%]"
    assert format_rate(0.25) == "25.0%"
    assert format_rate(None, 0.1, 0.2) == "n/a"
