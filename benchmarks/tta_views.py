"""Test-time views, rescored on the weights of finished runs: which sizes and mirrors to average.

    python benchmarks/tta_views.py RUN [RUN ...] [--extra 72] [--sets 1.125+1,1.125+1+1.25]

Each RUN is an `imgclf train` run folder of a model that takes any size (fastcnn). For every run
and split (val, test) it prints the accuracy of: flip TTA at the evaluation size (the run's
input size), at the training size, both averaged with the second view decoded from its own cache
(`Recipe.tta_scales` 1.0) or resized down from the evaluation image on the batch (antialiased
bilinear, what runs before `tta_decode` do, or bicubic); with --extra, the evaluation size averaged
with another cached size; with --sets, each set of cached sizes (multiples of the training size,
so that runs at 64 and 160 px read alike) averaged. The weights are fixed, so the differences are
the views' alone.
"""

from __future__ import annotations

import argparse
import functools
import os
from pathlib import Path

os.environ.setdefault("IMGCLF_QUIET", "1")

from common import machine, table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--extra", type=int, help="a further cached size to average with the evaluation size")
    ap.add_argument("--sets", default="", help="sets of cached sizes to average, as multiples of the training "
                    "size joined by +, comma-separated: 1.125+1,1.125+1+1.25")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F

    from imgclf.cache import open_cache
    from imgclf.device import autocast
    from imgclf.views import tta_logits
    from imgclf.load import batches, input_fn
    from imgclf.manifest import load_dataset
    from imgclf.runfolder import load_model, read_config

    cpu = torch.device("cpu")
    rows = []
    for run in args.runs:
        model, meta = load_model(run, cpu)
        model = model.to(memory_format=torch.channels_last)
        ds = load_dataset(read_config(run)["data"])
        ev, tr = meta["input_size"], meta["train_size"]
        to_input = input_fn(cpu, meta["mean"], meta["std"], True)

        @torch.no_grad()
        def probs(split, sizes=(), transform=None):  # mean softmax of the views, (N, classes)
            out = []
            for x, _ in batches(split, 256, shuffle=False):
                x = to_input(x) if transform is None else transform(to_input(x))
                with autocast(cpu, "bf16"):
                    out.append(tta_logits(model, x, True, sizes).softmax(1))
            return torch.cat(out)

        def bicubic(x):  # the second view resized with a sharper filter than the library's
            return F.interpolate(x, size=(tr, tr), mode="bicubic", antialias=True)

        for name in ("val", "test"):
            at = lambda size: open_cache(ds, size)[name]  # noqa: E731
            y = torch.from_numpy(at(ev).labels)
            cached = functools.cache(lambda size: probs(at(size)))  # each size scored once per split
            p_ev, p_tr = cached(ev), cached(tr)
            views = {
                f"flip @{ev}": p_ev,
                f"flip @{tr}": p_tr,
                f"@{ev} + resized to {tr}, bilinear": probs(at(ev), [tr]),
                f"@{ev} + resized to {tr}, bicubic": (p_ev + probs(at(ev), transform=bicubic)) / 2,
                f"@{ev} + cached @{tr}": (p_ev + p_tr) / 2,
            }
            if args.extra:
                views[f"@{ev} + cached @{args.extra}"] = (p_ev + cached(args.extra)) / 2
            for scales in filter(None, args.sets.split(",")):
                sizes = [round(tr * float(k)) for k in scales.split("+")]
                views[f"cached @{'+'.join(map(str, sizes))}"] = sum(map(cached, sizes)) / len(sizes)
            base = float((p_ev.argmax(1) == y).float().mean())
            for label, p in views.items():
                acc = float((p.argmax(1) == y).float().mean())
                rows.append([run.name, name, label, f"{acc:.2%}", f"{(acc - base) * 100:+.2f}"])
            print(*rows[-len(views):], sep="\n", flush=True)
    print(f"\nmachine: {machine()}\n")
    print(table(["run", "split", "views (each with its mirror)", "accuracy", "vs flip @eval size"], rows))


if __name__ == "__main__":
    main()
