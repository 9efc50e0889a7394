"""What lifts the linear probe on frozen ImageNet features: mirror views, longer head training,
several backbones' features side by side?

    python benchmarks/probe_levers.py [--models efficientnet-lite1] [--seeds 0,1,2] [--epochs 10,30]
    python benchmarks/probe_levers.py --models efficientnet-lite0,efficientnet-lite1,efficientnet-lite2 --plain --epochs 10

Every PetImages image goes through each frozen, BN-folded backbone, as decoded at the model's
input size and (unless --plain) mirrored (bf16, as `--mode probe` extracts them). Then, for each
seed's split (the one `imgclf prepare --seed S` makes), a linear head trains with the probe's
recipe (Adam, lr 1e-3, batch 64, cross-entropy) on the train split and is scored on the test split:
- base: trained and tested on the plain view (what `imgclf train --mode probe` does);
- +test mirror: the same head, each test image's logits averaged with its mirror's;
- +train mirror: trained on both views (each image twice), tested on the plain one;
- both;
- with several --models, every combination of two or more: one head on their features
  concatenated (the plain view).
Extraction costs what a probe run's does (twice with the mirror); the heads train in seconds.
Prints a table.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import machine, need_shared, table

from imgclf.decode import read_and_decode
from imgclf.device import autocast
from imgclf.models import create_model, get_spec
from imgclf.prepare import PrepareConfig, prepare
from imgclf.pretrained import load_pretrained, weights_file


@torch.no_grad()
def extract(name: str, paths: list[str], mirror: bool) -> np.ndarray:
    """(N, V, F) features: each image as decoded, and (V = 2) mirrored."""
    spec = get_spec(name)
    model = create_model(name, 2)
    load_pretrained(model, weights_file(name, None)[0], spec)
    net = spec.fold(model.eval()).to(memory_format=torch.channels_last)
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(spec.std).view(1, 3, 1, 1) * 255
    views = 2 if mirror else 1
    out = np.zeros((len(paths), views, spec.head_of(net).in_features), dtype=np.float32)
    t0 = time.perf_counter()
    for i in range(0, len(paths), 64):
        x = torch.from_numpy(np.stack([read_and_decode(p, spec.input_size) for p in paths[i : i + 64]]))
        x = ((x.permute(0, 3, 1, 2).float() - mean) / std).contiguous(memory_format=torch.channels_last)
        for v, view in enumerate((x, x.flip(3))[:views]):
            with autocast(torch.device("cpu"), "bf16"):
                out[i : i + len(x), v] = net.features(view).float().numpy()
    print(f"{name}: {len(paths)} images x {views} views in {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def head_accuracy(f_train, y_train, f_test, y_test, epochs: int, seed: int, train_views, test_mirror) -> float:
    torch.manual_seed(seed)
    x = torch.from_numpy(f_train[:, train_views].reshape(-1, f_train.shape[-1]))
    y = torch.from_numpy(np.repeat(y_train, len(train_views)))
    head = torch.nn.Linear(x.shape[1], int(y.max()) + 1)
    opt = torch.optim.Adam(head.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            loss = torch.nn.functional.cross_entropy(head(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        t = torch.from_numpy(f_test)
        logits = head(t[:, 0]) + (head(t[:, 1]) if test_mirror else 0)
    return float((logits.argmax(1).numpy() == y_test).mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="efficientnet-lite1")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", default="10,30")
    ap.add_argument("--plain", action="store_true", help="no mirrored view (the base and combination rows only)")
    a = ap.parse_args()
    pets = need_shared() / "petimages"
    tmp = Path(tempfile.mkdtemp(prefix="imgclf-levers-"))
    splits = {}
    for s in map(int, a.seeds.split(",")):
        ds = prepare(PrepareConfig(src=pets, out=tmp / f"seed{s}", seed=s))
        splits[s] = ({r["path"]: r["split"] for r in ds.rows}, ds.classes)
    paths = sorted(splits[int(a.seeds.split(",")[0])][0])
    models = a.models.split(",")
    feats = {m: extract(m, paths, mirror=not a.plain) for m in models}
    index = {p: i for i, p in enumerate(paths)}
    levers = [("base", [0], False)] + ([] if a.plain else [("+test mirror", [0], True), ("+train mirror", [0, 1], False),
                                                            ("both", [0, 1], True)])
    runs = [(m, feats[m], *lever) for m in models for lever in levers]
    for k in range(2, len(models) + 1):  # features side by side, the plain view
        for combo in itertools.combinations(models, k):
            runs.append(("+".join(combo), np.concatenate([feats[m][:, :1] for m in combo], axis=2), "base", [0], False))
    rows = []
    for epochs in map(int, a.epochs.split(",")):
        for model, f, label, train_views, test_mirror in runs:
            accs = []
            for s, (split_of, classes) in splits.items():
                pick = {sp: [index[p] for p in paths if split_of[p] == sp] for sp in ("train", "test")}
                label_of = {p: classes.index(Path(p).parent.name) for p in paths}
                y = {sp: np.array([label_of[paths[i]] for i in pick[sp]]) for sp in pick}
                accs.append(head_accuracy(f[pick["train"]], y["train"], f[pick["test"]], y["test"], epochs, s,
                                          train_views, test_mirror))
            rows.append([model, epochs, label, " / ".join(f"{x:.2%}" for x in accs), f"{np.mean(accs):.2%}"])
            print(rows[-1], flush=True)
    print(f"\nmachine: {machine()}\n")
    print(table(["model", "head epochs", "views", "test accuracy per seed", "mean"], rows))


if __name__ == "__main__":
    main()
