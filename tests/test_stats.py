"""stats: mean, std and a t-interval over seeds, paired tests with Holm's correction."""

import math

import pytest
from scipy import stats as sps

from imgclf.stats import better_than, describe, paired_tests


def test_describe_is_the_t_interval_of_the_mean():
    xs = [0.91, 0.93, 0.92, 0.95]
    d = describe(xs)
    mean, sd = sum(xs) / 4, math.sqrt(sum((x - sum(xs) / 4) ** 2 for x in xs) / 3)
    half = sps.t.ppf(0.975, 3) * sd / 2
    assert d["mean"] == pytest.approx(mean) and d["std"] == pytest.approx(sd)
    assert (d["ci_low"], d["ci_high"]) == (pytest.approx(mean - half), pytest.approx(mean + half))
    one = describe([0.5])
    assert one["mean"] == 0.5 and one["std"] == 0.0


def test_paired_tests_are_holm_adjusted_and_say_who_is_better():
    acc = {"a": {0: 0.90, 1: 0.91, 2: 0.92, 3: 0.93},
           "b": {0: 0.80, 1: 0.815, 2: 0.82, 3: 0.835},
           "c": {0: 0.905, 1: 0.905, 2: 0.925, 3: 0.925}}
    tests = {(t["a"], t["b"]): t for t in paired_tests(acc)}
    assert len(tests) == 3
    ab = tests[("a", "b")] if ("a", "b") in tests else tests[("b", "a")]
    raw = sps.ttest_rel([0.90, 0.91, 0.92, 0.93], [0.80, 0.815, 0.82, 0.835]).pvalue
    assert ab["p"] == pytest.approx(raw) and ab["p_holm"] >= ab["p"] and ab["significant"]
    assert all(t["p_holm"] <= 1 for t in tests.values())
    assert "b" in better_than(list(tests.values()), "a") and better_than(list(tests.values()), "b") == []
