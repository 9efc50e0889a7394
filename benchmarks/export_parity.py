"""Does an exported model score what its run scored? ONNX and .pt2 against PyTorch, and the
torch-free preprocessing (predict_onnx.py: Pillow's decode and resize) against imgclf's.

    python benchmarks/export_parity.py RUN [RUN ...]

Per run and format: `imgclf export`'s own verification over the whole test split (top-1 flips
and the largest probability difference against PyTorch fp32, accuracies beside metrics.json's),
then the same ONNX model fed by Pillow instead of imgclf's decoder.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from common import machine, table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args()
    from imgclf.export import export
    from imgclf.files import read_csv
    from imgclf.onnx_predict import OnnxClassifier

    rows = []
    for run in args.runs:
        tmp = Path(tempfile.mkdtemp())
        for fmt, views in (("onnx", "all"), ("onnx", "none"), ("pt2", "all")):
            r = export(run, tmp / f"{fmt}-{views}", fmt=fmt, views=views)
            v = r.verification
            rows.append([run.name, v["n"], f"{fmt}, views {views}", "imgclf", f"{v['flips']}",
                         f"{v['max_prob_diff']:.1e}", f"{v['accuracy_export']:.2%}", f"{v['accuracy_torch_fp32']:.2%}",
                         f"{v['accuracy_run']:.2%} ({v['run_precision']})" if views == "all" else "-"])
            print(table(["run", "test images", "export", "decode", "flips", "max |dp|", "acc export",
                         "acc PyTorch fp32", "metrics.json"], rows[-1:]), flush=True)
            if fmt == "onnx" and views == "all":
                preds = read_csv(run / "predictions.csv")
                clf = OnnxClassifier(r.path)
                got = clf.predict([p["path"] for p in preds])
                ok = [g for g in got if not g["error"]]
                ref = np.array([p["pred"] for p, g in zip(preds, got) if not g["error"]])
                true = np.array([p["true"] for p, g in zip(preds, got) if not g["error"]])
                flips = int((np.array([g["class"] for g in ok]) != ref).sum())  # against the run's own answers
                acc = float((np.array([g["class"] for g in ok]) == true).mean())
                rows.append([run.name, len(ok), "onnx, views all", "Pillow (no torch)", f"{flips} vs run",
                             "", f"{acc:.2%}", "", ""])
    print(f"\n{machine()}\n")
    print(table(["run", "test images", "export", "decode", "flips", "max |dp|", "acc export", "acc PyTorch fp32",
                 "metrics.json"], rows))


if __name__ == "__main__":
    main()
