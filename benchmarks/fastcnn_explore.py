"""Exploration harness for fastcnn's architecture (variants that are not in the registry).

    python benchmarks/fastcnn_explore.py --data DIR [--size 64] [--epochs 30] [--widths 64,128,256]
        [--pool_first 0|1] [--lr 0.05] [--translate 4] [--zoom 1.0] [--eval_sizes 72,80]
        [--whiten 1] [--altflip 1] [--bnmom 0.4]

DIR is a dataset from `imgclf prepare`. One self-contained training loop (the same loader,
shift augmentation, one-cycle nesterov SGD and flip TTA as imgclf's), so an architecture idea
costs one command; the ones that won moved into src/imgclf/models/fastcnn.py. Prints test
accuracy (and at --eval_sizes) and training seconds. Used for the exploration table in BENCHMARKS.md.
"""

import argparse
import time
import math
import copy
import torch
import torch.nn as nn
import torch.nn.functional as F
from imgclf.manifest import load_dataset
from imgclf.cache import open_cache
from imgclf.load import batches
from imgclf.device import keep_freed_memory


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/tmp/pets")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--widths", default="64,128,256")
    ap.add_argument("--stem", type=int, default=32)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--pool_first", type=int, default=0)
    ap.add_argument("--lr", type=float, default=0.2)
    ap.add_argument("--wd", type=float, default=5e-4)
    ap.add_argument("--bs", type=int, default=128)
    ap.add_argument("--ls", type=float, default=0.1)
    ap.add_argument("--translate", type=int, default=4)
    ap.add_argument("--tta", type=int, default=1, help="0: none, 1: flip, 2: flip x (none, +d, -d shifts)")
    ap.add_argument("--tta_shift", type=float, default=1 / 32, help="level 2's shift d, a fraction of the side")
    ap.add_argument("--save", default="", help="save the trained weights here")
    ap.add_argument("--load", default="", help="evaluate these weights instead of training")
    ap.add_argument("--ema", type=float, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warm", type=float, default=0.2)
    ap.add_argument("--nesterov", type=int, default=1)
    ap.add_argument("--bnwd", type=int, default=0)
    ap.add_argument("--eval_sizes", default="")
    ap.add_argument("--zoom", type=float, default=1.0)
    ap.add_argument("--src", type=int, default=0)
    ap.add_argument("--drop", type=float, default=0)
    ap.add_argument("--scale", type=float, default=0)
    ap.add_argument(
        "--cutmix",
        type=float,
        default=0,
        help="probability of a CutMix batch (one box per batch)",
    )
    ap.add_argument("--prog", type=int, default=0, help="progressive resizing: start at this size")
    ap.add_argument("--whiten", type=int, default=0, help="1: frozen 2x2 PCA-whitening stem (airbench), 24 channels")
    ap.add_argument("--whiten_eps", type=float, default=5e-4)
    ap.add_argument("--bnmom", type=float, default=0.1, help="BatchNorm momentum (torch's convention)")
    ap.add_argument("--altflip", type=int, default=0, help="1: each image flipped on alternate epochs (airbench)")
    ap.add_argument(
        "--prog_ramp",
        default="0.5,0.85",
        help="ramp from --prog to --size over these epoch fractions",
    )
    a = ap.parse_args()
    keep_freed_memory()  # as imgclf's train does (BENCHMARKS.md, "Training step")
    torch.manual_seed(a.seed)
    ds = load_dataset(a.data)
    sp = open_cache(ds, a.size)
    src = open_cache(ds, a.src) if a.src else sp
    tr = src["train"]

    def BN(c):
        return nn.BatchNorm2d(c, momentum=a.bnmom)

    def cbr(ci, co):
        return [
            nn.Conv2d(ci, co, 3, padding=1, bias=False),
            BN(co),
            nn.GELU(),
        ]

    if a.whiten:
        stem = nn.Conv2d(3, 24, 2, stride=2, bias=True)
        L = [stem, nn.GELU()]
        ci = 24
    else:
        L = [
            nn.Conv2d(3, a.stem, 2, stride=2, bias=False),
            BN(a.stem),
            nn.GELU(),
        ]
        ci = a.stem
    for w in map(int, a.widths.split(",")):
        if a.pool_first:
            L += [nn.MaxPool2d(2)] + cbr(ci, w)
        else:
            L += [
                nn.Conv2d(ci, w, 3, padding=1, bias=False),
                nn.MaxPool2d(2),
                BN(w),
                nn.GELU(),
            ]
        L += sum([cbr(w, w) for _ in range(a.depth - 1)], [])
        ci = w
    L += [
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Dropout(a.drop),
        nn.Linear(ci, 2, bias=False),
    ]
    mean = torch.tensor([0.5] * 3).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.25] * 3).view(1, 3, 1, 1) * 255

    def inp(x):
        return ((x.permute(0, 3, 1, 2).float() - mean) / std).contiguous(memory_format=torch.channels_last)

    m = nn.Sequential(*L).to(memory_format=torch.channels_last)
    if a.whiten:
        # PCA whitening of 2x2 patches (airbench): eigenvectors scaled by 1/sqrt(eigenvalue), and
        # their negatives (GELU follows), frozen. Computed on up to 5,000 training images.
        # Accumulated 500 images at a time: all 5,000 images' patches at once are 3 GiB at 80 px.
        with torch.no_grad():
            n, total, outer = 0, torch.zeros(12, dtype=torch.float64), torch.zeros(12, 12, dtype=torch.float64)
            for i in range(0, min(5000, len(tr)), 500):
                xs = inp(torch.from_numpy(tr.images[i : min(i + 500, 5000, len(tr))])).float()
                pt = xs.unfold(2, 2, 1).unfold(3, 2, 1)  # B,C,H-1,W-1,2,2
                pt = pt.permute(0, 2, 3, 1, 4, 5).reshape(-1, 12).double()
                n, total, outer = n + len(pt), total + pt.sum(0), outer + pt.T @ pt
            cov = outer / n - torch.outer(total / n, total / n)
            ev, vec = torch.linalg.eigh(cov)
            w = (vec.T / (ev + a.whiten_eps).sqrt()[:, None]).reshape(12, 3, 2, 2).float()
            stem.weight.copy_(torch.cat([w, -w]))
            stem.bias.zero_()
        stem.weight.requires_grad_(False)
    params = [(n, p) for n, p in m.named_parameters() if p.requires_grad]
    decay = [p for n, p in params if p.ndim > 1 or a.bnwd]
    nod = [p for n, p in params if not (p.ndim > 1 or a.bnwd)]
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": a.wd}, {"params": nod, "weight_decay": 0}],
        lr=a.lr,
        momentum=0.9,
        nesterov=bool(a.nesterov),
    )
    spe = math.ceil(len(tr) / a.bs)
    total = spe * a.epochs
    warm = max(1, int(a.warm * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (s + 1) / warm if s < warm else max(0, (total - s) / (total - warm)),
    )
    g = torch.Generator().manual_seed(a.seed)
    ga = torch.Generator().manual_seed(a.seed + 1)

    flip0 = torch.rand(len(tr), generator=ga) < 0.5  # --altflip: each image's flip in even epochs

    def aug(x, idx=None, ep=0):
        b, h, w, _ = x.shape
        m_ = torch.rand(b, generator=ga) < 0.5
        if a.altflip and idx is not None:
            m_ = flip0[idx] ^ bool(ep % 2)
        x = torch.where(m_.view(b, 1, 1, 1), x.flip(2), x)
        p = a.translate
        if p:
            xp = torch.nn.functional.pad(x, (0, 0, p, p, p, p))  # zero pad
            dy = torch.randint(0, 2 * p + 1, (b,), generator=ga)
            dx = torch.randint(0, 2 * p + 1, (b,), generator=ga)
            ar = torch.arange(h)
            x = xp[
                torch.arange(b)[:, None, None],
                (dy[:, None] + ar)[:, :, None],
                (dx[:, None] + ar)[:, None, :],
            ]
        return x

    ema = copy.deepcopy(m) if a.ema else None

    def evaluate(model, split):
        model.eval()
        correct = 0
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            for x, y in batches(split, 512, shuffle=False):
                xi = inp(x)
                views = [xi, xi.flip(3)] if a.tta else [xi]
                if a.tta >= 2:  # the same, shifted by d pixels down-right and up-left (zero-filled)
                    d = max(1, round(a.tta_shift * xi.shape[-1]))
                    pad = F.pad(xi, (d, d, d, d))
                    h, w = xi.shape[-2:]
                    views += [v[..., o : o + h, o : o + w] for o in (0, 2 * d) for v in (pad, pad.flip(3))]
                lo = sum(model(v.contiguous(memory_format=torch.channels_last)).float().softmax(1) for v in views)
                correct += (lo.argmax(1) == y).sum().item()
        return correct / len(split)

    def train_size(ep):
        """Progressive resizing: --prog px until the ramp starts, then linearly up to --size (multiples of 8)."""
        if not a.prog:
            return a.size
        r0, r1 = (float(v) for v in a.prog_ramp.split(","))
        f = min(1.0, max(0.0, (ep / a.epochs - r0) / max(1e-9, r1 - r0)))
        return int(round((a.prog + f * (a.size - a.prog)) / 8) * 8)

    t0 = time.perf_counter()
    step = 0
    if a.load:
        m.load_state_dict(torch.load(a.load, weights_only=True))
    for ep in range(0 if a.load else a.epochs):
        m.train()
        size = train_size(ep)
        tl = 0
        n = 0
        # --altflip needs each batch's image indices: batches draws its order with randperm(g) first,
        # so the same draw on a copy of g gives them (checked against the labels below).
        order = torch.randperm(len(tr), generator=torch.Generator().set_state(g.get_state())) if a.altflip else None
        for bi, (x, y) in enumerate(batches(tr, a.bs, shuffle=True, generator=g, drop_last=True)):
            idx = None if order is None else order[bi * a.bs : (bi + 1) * a.bs]
            assert idx is None or torch.equal(torch.from_numpy(tr.labels[idx.numpy()]), y), "batch order changed"
            x = aug(x, idx, ep)
            xi = inp(x)
            if a.zoom < 1 or a.src:
                b = xi.shape[0]
                area = torch.empty(b).uniform_(a.zoom, 1, generator=ga)
                sc = area.sqrt()
                asp = torch.empty(b).uniform_(-0.2, 0.2, generator=ga).exp().sqrt() if a.zoom < 1 else torch.ones(b)
                sx = sc * asp
                sy = sc / asp
                sx = sx.clamp(max=1)
                sy = sy.clamp(max=1)
                tx = (torch.rand(b, generator=ga) * 2 - 1) * (1 - sx)
                ty = (torch.rand(b, generator=ga) * 2 - 1) * (1 - sy)
                th = torch.zeros(b, 2, 3)
                th[:, 0, 0] = sx
                th[:, 1, 1] = sy
                th[:, 0, 2] = tx
                th[:, 1, 2] = ty
                grid = F.affine_grid(th, (b, 3, a.size, a.size), align_corners=False)
                xi = F.grid_sample(
                    xi.contiguous(),
                    grid,
                    mode="bilinear",
                    padding_mode="reflection",
                    align_corners=False,
                ).contiguous(memory_format=torch.channels_last)
            if size != xi.shape[-1]:
                xi = F.interpolate(
                    xi,
                    size=(size, size),
                    mode="bilinear",
                    antialias=True,
                    align_corners=False,
                )
                xi = xi.contiguous(memory_format=torch.channels_last)
            lam = 1.0
            if a.cutmix and torch.rand(1, generator=ga).item() < a.cutmix:
                # CutMix (Yun et al. 2019): paste one random box from a shuffled copy of the batch and
                # mix the targets by the pasted area.
                perm = torch.randperm(xi.shape[0], generator=ga)
                hh, ww = xi.shape[-2:]
                lam = torch.rand(1, generator=ga).item()
                ch, cw = int(hh * math.sqrt(1 - lam)), int(ww * math.sqrt(1 - lam))
                cy, cx = (
                    torch.randint(0, hh, (1,), generator=ga).item(),
                    torch.randint(0, ww, (1,), generator=ga).item(),
                )
                y0, y1, x0, x1 = (
                    max(cy - ch // 2, 0),
                    min(cy + ch // 2, hh),
                    max(cx - cw // 2, 0),
                    min(cx + cw // 2, ww),
                )
                xi = xi.clone()
                xi[:, :, y0:y1, x0:x1] = xi[perm][:, :, y0:y1, x0:x1]
                lam = 1 - (y1 - y0) * (x1 - x0) / (hh * ww)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                lo = m(xi)
            loss = F.cross_entropy(lo.float(), y, label_smoothing=a.ls)
            if lam < 1:
                loss = lam * loss + (1 - lam) * F.cross_entropy(lo.float(), y[perm], label_smoothing=a.ls)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if ema is not None:
                with torch.no_grad():
                    for pe, pm in zip(ema.state_dict().values(), m.state_dict().values()):
                        if pe.dtype.is_floating_point:
                            pe.lerp_(pm, 1 - a.ema)
                        else:
                            pe.copy_(pm)
            tl += loss.item() * len(y)
            n += len(y)
        if ep == a.epochs - 1 or ep % 3 == 2:
            print(
                f"ep {ep + 1} size {size} loss {tl / n:.4f} val {evaluate(m, sp['val']):.4f} t {time.perf_counter() - t0:.0f}s",
                flush=True,
            )
    tt = time.perf_counter() - t0
    res = evaluate(m, sp["test"])
    s = f"TEST {res:.4f}"
    if ema is not None:
        s += f" ema {evaluate(ema, sp['test']):.4f}"
    if a.save:
        torch.save(m.state_dict(), a.save)
    print(vars(a))
    print(s, f"train {tt:.0f}s")
    for es in [int(v) for v in a.eval_sizes.split(",") if v]:
        print(f"TEST@{es} {evaluate(m, open_cache(ds, es)['test']):.4f}", flush=True)


# Cache-building worker processes re-import this file: they must not train.
if __name__ == "__main__":
    main()
