"""Muon for convolution filters, nesterov SGD for everything else, in one torch optimizer.

Muon (Jordan et al. 2024; airbench's newer optimizer) replaces a filter bank's momentum update by
the nearest orthogonal matrix (all singular values ~1, computed by a few Newton-Schulz steps), so
directions that plain SGD's updates leave starved train as fast as the dominant ones. Each filter
bank is followed by BatchNorm, so only its direction matters: Muon keeps its norm fixed, which
fixes the effective step size too, and takes no weight decay.
"""

from __future__ import annotations

import torch

from .device import resolve_precision

NS_STEPS = 3  # airbench's count: 3 quintic steps orthogonalise well enough, and each costs 3 matmuls


def ns_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the hardware multiplies it natively (a GPU that has it, a CPU with AVX512-BF16 or
    AMX): the iteration is precise enough in it. Elsewhere bf16 matmuls are emulated: on an AVX2-only
    EPYC, fastcnn-s-p3's 7 filter banks took 1,191 ms a step in bf16 against 39 ms in fp32, and it
    trained at 58 img/s instead of 135 (batch 128, 120 px; benchmarks/muon_dtype.py)."""
    return torch.bfloat16 if resolve_precision("auto", device) == "bf16" else torch.float32


def orthogonalize(g: torch.Tensor, steps: int = NS_STEPS, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """~U V^T of g (its rows flattened) by a quintic Newton-Schulz iteration, in `dtype`.

    The coefficients (3.4445, -4.7750, 2.0315) are Muon's: they push small singular values up
    fast, and leave the large ones in [0.7, 1.2] rather than exactly at 1, which trains as well."""
    x = g.reshape(len(g), -1).to(dtype)
    tall = x.size(0) > x.size(1)
    if tall:  # iterate on the smaller Gram matrix
        x = x.T
    x = x / (x.norm() + 1e-7)  # singular values into [0, 1], where the iteration converges
    for _ in range(steps):
        a = x @ x.T
        x = 3.4445 * x + (-4.7750 * a + 2.0315 * a @ a) @ x
    if tall:
        x = x.T
    return x.reshape(g.shape).to(g.dtype)


class MuonSGD(torch.optim.Optimizer):
    """Param groups with `muon: True` take orthogonalised nesterov steps at a fixed weight norm; the
    other groups take torch's nesterov SGD step (momentum buffer started at the first gradient,
    weight decay added to the gradient), so a recipe's SGD settings mean the same as with SGD."""

    def __init__(self, params, lr: float, momentum: float = 0.9, nesterov: bool = True, weight_decay: float = 0.0,
                 ns_steps: int = NS_STEPS):
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, muon=False,
                        ns_steps=ns_steps)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            m, muon = group["momentum"], group["muon"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["weight_decay"] and not muon:
                    g = g.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = g.clone()
                else:
                    state["momentum_buffer"].mul_(m).add_(g)
                buf = state["momentum_buffer"]
                g = g.add(buf, alpha=m) if group["nesterov"] else buf
                if muon:
                    # |W| = sqrt(out channels): each filter of unit norm on average, so a step of
                    # lr moves the bank by about lr of its size, whatever its shape
                    p.mul_(len(p) ** 0.5 / p.norm().clamp_min(1e-12))
                    g = orthogonalize(g, group["ns_steps"], ns_dtype(p.device))
                p.add_(g, alpha=-group["lr"])
