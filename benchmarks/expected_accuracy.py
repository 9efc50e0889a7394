"""Measure what the planner expects: src/imgclf/expected_accuracy.csv.

    python benchmarks/expected_accuracy.py [--images 200,600,2000,10000] [--candidates all]
                                           [--seeds 0,1,2] [--budget 300] [--dry-run]
    python benchmarks/expected_accuracy.py --images 10000 --candidates "efficientnet-lite0 fine-tune" --budget 1800
    python benchmarks/expected_accuracy.py --images 10000 --candidates "efficientnet-lite-ensemble probe+fine-tune" --budget 1800

For each folder size N (the first N/2 cats and N/2 dogs of ../shared/data/petimages, as
symlinks; 10000: all of it) and each candidate the planner weighs, one `imgclf train FOLDER`
per seed from the raw JPEGs, every second counted (prepare, caches, features, training, test).
Each seed is its own split. The from-scratch candidate is the planned ladder (`--from-scratch`)
under `--budget seconds=B`; a probe is the fixed recipe plan.py runs (`plan.probe_args`); a
fine-tune is the recipe plan.py runs for its minimum epochs, under the budget as a hard stop
(`plan.finetune_args`; run it with the --budget that affords those epochs: 1800 on 10,000 images);
an ensemble likewise, its fine-tuned part for those epochs (`plan.ensemble_args`).

The rows measured replace the table's rows of the same candidate, size and budget; the others
stay. Full regeneration (4 sizes x 4 candidates x 3 seeds) takes about two hours on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from common import ROOT, imgclf, machine, need_shared, subset, table

from imgclf.expected import COLUMNS, TABLE
from imgclf.plan import (ENSEMBLES, FINETUNE_MIN_EPOCHS, FINETUNES, PROBES, SCRATCH, ensemble_args, finetune_args,
                         probe_args)


def candidates(budget: int) -> dict[str, list[str]]:
    return {SCRATCH: ["--from-scratch", "--budget", f"seconds={budget}"],
            **{f"{name} probe": probe_args(name) for name in PROBES},
            **{f"{name} fine-tune": [*finetune_args(name, FINETUNE_MIN_EPOCHS), "--budget", f"seconds={budget}"]
               for name in FINETUNES},
            **{f"{name} probe+fine-tune": [*ensemble_args(name, FINETUNE_MIN_EPOCHS), "--budget", f"seconds={budget}"]
               for name in ENSEMBLES}}


def run(folder: Path, args: list[str], seed: int) -> tuple[float, float]:
    """(seconds end to end, test accuracy) of one `imgclf train` from the raw folder."""
    tmp = Path(tempfile.mkdtemp(prefix="imgclf-expected-"))
    try:
        t = time.perf_counter()
        imgclf("train", folder, "--out", tmp / "run", *args, "--seed", str(seed))
        return time.perf_counter() - t, json.loads((tmp / "run" / "metrics.json").read_text())["accuracy"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", default="200,600,2000,10000")
    ap.add_argument("--candidates", default="all", help=f"all ({SCRATCH} and the probes) or comma-separated, of: "
                                                         f"{SCRATCH}, <model> probe, <model> fine-tune, <model> probe+fine-tune")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--budget", type=int, default=300, help="seconds for the from-scratch and fine-tune candidates")
    ap.add_argument("--dry-run", action="store_true", help="print the rows, leave the table as it is")
    a = ap.parse_args()
    pets = need_shared() / "petimages"
    every = candidates(a.budget)
    names = [n for n in every if not n.endswith("fine-tune")] if a.candidates == "all" else a.candidates.split(",")
    seeds = [int(s) for s in a.seeds.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="imgclf-folders-"))
    new = []
    try:
        for n in map(int, a.images.split(",")):
            folder = pets if n >= 10_000 else subset(pets, tmp / f"pets{n}", n // 2)
            images = sum(1 for c in folder.iterdir() for _ in c.iterdir())
            for name in names:
                runs = [run(folder, every[name], s) for s in seeds]
                accs = [acc for _, acc in runs]
                new.append({"candidate": name, "images": images,
                            "budget_seconds": "" if name.endswith(" probe") else a.budget,
                            "seconds": round(statistics.mean(s for s, _ in runs)),
                            "test_accuracy": round(statistics.mean(accs), 4), "seeds": " ".join(map(str, seeds)),
                            "accuracies": " ".join(f"{x:.4f}" for x in accs),
                            "command": f"imgclf train FOLDER --out RUN {' '.join(every[name])} --seed S"})
                print(new[-1], flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nmachine: {machine()}\n")
    print(table(COLUMNS, [[r[c] for c in COLUMNS] for r in new]))
    if not a.dry_run:
        write(new)


def write(new: list[dict]) -> None:
    """Merge: a measured row replaces the one of the same candidate, size and budget."""
    key = lambda r: (r["candidate"], int(r["images"]), str(r["budget_seconds"]))  # noqa: E731
    with open(TABLE, newline="") as f:
        rows = {key(r): r for r in csv.DictReader(f)}
    rows.update({key(r): r for r in new})
    with open(TABLE, "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        w.writerows(sorted(rows.values(), key=lambda r: (r["candidate"], int(r["images"]), str(r["budget_seconds"]))))
    print(f"wrote {TABLE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
