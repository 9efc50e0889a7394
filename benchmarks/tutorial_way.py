"""Baseline (a): the tutorial's experiment done the tutorial's way, for benchmarks/end_to_end.py.

PIL decode + resize of every image on every epoch inside a DataLoader with 2 workers, fp32,
NCHW; the same seed-cnn, initial weights, presets, epochs and split (read from imgclf's
manifest) as imgclf. Prints one JSON line per preset.

    python benchmarks/tutorial_way.py DATA --epochs 3
"""

from __future__ import annotations

import csv
import json
import time

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from common import baseline_args
from imgclf.models import create_model
from imgclf.optim import build_optimizer
from imgclf.recipes import PRESETS


class ImageFiles(Dataset):
    def __init__(self, rows, classes, train):
        self.rows, self.train = rows, train
        self.index = {c: i for i, c in enumerate(classes)}

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        r = self.rows[i]
        im = Image.open(r["path"]).convert("RGB").resize((224, 224), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float().div(255).sub(0.5).div(0.5)
        if self.train and torch.rand(1).item() < 0.5:
            x = x.flip(2)
        return x, self.index[r["class"]]


def accuracy(model, loader):
    model.eval()
    correct = n = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
            n += len(y)
    return correct / n


def main():
    args = baseline_args()
    rows = list(csv.DictReader(open(f"{args.data}/manifest.csv")))
    classes = json.load(open(f"{args.data}/dataset.json"))["classes"]
    split = lambda s: [r for r in rows if r["split"] == s]  # noqa: E731
    torch.manual_seed(0)
    init = create_model("seed-cnn", len(classes)).state_dict()
    for name in args.presets.split(","):
        recipe = PRESETS[name]
        t0 = time.perf_counter()
        model = create_model("seed-cnn", len(classes))
        model.load_state_dict(init)
        opt = build_optimizer(recipe, model.parameters())
        train = DataLoader(ImageFiles(split("train"), classes, True), batch_size=recipe.batch_size, shuffle=True,
                           num_workers=2, persistent_workers=True)
        val = DataLoader(ImageFiles(split("val"), classes, False), batch_size=100, num_workers=2)
        test = DataLoader(ImageFiles(split("test"), classes, False), batch_size=100, num_workers=2)
        loss_fn = nn.CrossEntropyLoss()
        for epoch in range(args.epochs):
            model.train()
            for x, y in train:
                loss = loss_fn(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            val_acc = accuracy(model, val)
        acc = accuracy(model, test)
        print(json.dumps({"preset": name, "test_accuracy": acc, "val_accuracy": val_acc,
                          "seconds": round(time.perf_counter() - t0, 2)}), flush=True)


if __name__ == "__main__":
    main()
