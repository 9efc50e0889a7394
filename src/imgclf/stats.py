"""Statistics for multi-seed comparisons: mean, std, a t-based 95% CI, paired tests across seeds.

Why paired t-tests: every seed gives all recipes the same initial weights (and split), so the
per-seed difference between two recipes cancels the seed's own luck; with the 3-10 seeds people
can afford, rank tests are powerless (Wilcoxon's smallest two-sided p with 3 pairs is 0.25),
while the t-test on differences is the standard choice (as in DeepOBS's reports). Holm's method
then keeps the chance of any false "significant" across all pairs at 5%.
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np

ALPHA = 0.05


def describe(values: list[float]) -> dict:
    """mean, std (ddof=1), and the 95% t interval of the mean; a single value has no spread."""
    a = np.asarray(values, dtype=float)
    n = len(a)
    mean = float(a.mean()) if n else float("nan")
    if n < 2:
        return {"n": n, "mean": mean, "std": 0.0 if n else float("nan"), "ci_low": mean, "ci_high": mean}
    std = float(a.std(ddof=1))
    from scipy import stats  # 1.3 s to import: only where there is a spread to describe

    half = float(stats.t.ppf(1 - ALPHA / 2, n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half}


def paired_tests(per_seed: dict[str, dict[int, float]]) -> list[dict]:
    """All pairs of recipes, on the seeds both finished: mean difference, p, Holm-adjusted p."""
    out = []
    for a, b in combinations(sorted(per_seed), 2):
        seeds = sorted(set(per_seed[a]) & set(per_seed[b]))
        da = np.array([per_seed[a][s] for s in seeds])
        db = np.array([per_seed[b][s] for s in seeds])
        diff = da - db
        if len(seeds) < 2 or np.allclose(diff, diff[0]):
            p = float("nan")  # one seed, or no spread in the differences: the t statistic is undefined
        else:
            from scipy import stats

            p = float(stats.ttest_rel(da, db).pvalue)
        out.append({"a": a, "b": b, "seeds": len(seeds), "mean_diff": float(diff.mean()) if len(seeds) else float("nan"),
                    "p": p})
    _holm(out)
    return out


def _holm(tests: list[dict]) -> None:
    valid = sorted((t for t in tests if not math.isnan(t["p"])), key=lambda t: t["p"])
    m, running = len(valid), 0.0
    for i, t in enumerate(valid):
        running = max(running, min(1.0, (m - i) * t["p"]))
        t["p_holm"] = running
        t["significant"] = running < ALPHA
    for t in tests:
        t.setdefault("p_holm", float("nan"))
        t.setdefault("significant", False)


def better_than(tests: list[dict], recipe: str) -> list[str]:
    """Recipes that `recipe` beats significantly."""
    out = []
    for t in tests:
        if t["significant"]:
            if t["a"] == recipe and t["mean_diff"] > 0:
                out.append(t["b"])
            elif t["b"] == recipe and t["mean_diff"] < 0:
                out.append(t["a"])
    return sorted(out)
