"""How much more training the from-scratch targets ask for, from the planned runs already measured.

Reads the 5- and 30-minute from-scratch rows of results/time_to_accuracy.txt (each `imgclf
train --budget seconds=N` on 10,000 PetImages, its own split per seed), puts each run's training
at epochs x the pixels of the grid after the stem (the planner's cost model, ModelSpec.grid: an
epoch's seconds follow it within 2-6%), fits test error = a * compute^-b through them (least
squares on the logs) and prints the compute each target accuracy asks for, as a multiple of what
the 5- and 30-minute runs trained.

    python benchmarks/scratch_scaling.py [--targets 96,97.5]
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

from common import table

RESULTS = Path(__file__).resolve().parent / "results" / "time_to_accuracy.txt"
# a table row: | fastcnn-5min | --budget seconds=300 | 0 | fastcnn-s-p3 120px, 14 epochs | 282 | 94.86% |
ROW = re.compile(r"^\| (fastcnn-\w+) +\|[^|]+\| +(\d+) \| +([\w-]+) (\d+)px, (\d+) epochs \|[^|]+\| +([\d.]+)% \|$")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", default="96,97.5")
    args = ap.parse_args()

    from imgclf.models import get_spec

    runs = {}  # (contestant, seed) -> its row; a rerun's table repeats rows
    for line in RESULTS.read_text().splitlines():
        if m := ROW.match(line):
            who, seed, model, size, epochs, acc = m.groups()
            compute = int(epochs) * get_spec(model).grid(int(size))
            runs[who, int(seed)] = (who, f"{model} {size} px, {epochs} epochs", compute, 100 - float(acc))
    xs = [math.log(c) for _, _, c, _ in runs.values()]
    ys = [math.log(e) for _, _, _, e in runs.values()]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    log_a = my - slope * mx
    print(table(["run", "trained", "grid px x epochs", "test error", "fit"],
                [[who, trained, f"{c:,.0f}", f"{e:.2f}%", f"{math.exp(log_a + slope * math.log(c)):.2f}%"]
                 for who, trained, c, e in runs.values()]))
    print(f"\ntest error = {math.exp(log_a):.1f}% x compute^{slope:.3f} ({len(runs)} runs)\n")
    by_budget = {}  # contestant -> its runs' computes
    for who, _, c, _ in runs.values():
        by_budget.setdefault(who, []).append(c)
    reference = {who: sum(cs) / len(cs) for who, cs in by_budget.items()}
    rows = []
    for target in map(float, args.targets.split(",")):
        need = math.exp((math.log(100 - target) - log_a) / slope)
        rows.append([f"{target:g}%", f"{need:,.0f}", *(f"{need / c:.1f}x" for c in reference.values())])
    print(table(["target", "grid px x epochs", *(f"vs {who}" for who in reference)], rows))


if __name__ == "__main__":
    main()
