"""PyTorch reference of Adan, written from Algorithm 1 of Xie et al. 2022 (arXiv:2208.06677) in
the official code's conventions (sail-sg/Adan, which PLIP trains with).

Conventions taken from the official code rather than the paper's text: betas are decays
(x <- b * x + (1 - b) * input, defaults 0.98/0.92/0.99, i.e. the paper's 1 - beta), each moment is
bias-corrected by 1 - b^t, eps is added outside the square root, the gradient difference is zero
on the first step, and the weight decay is proximal, p <- (p - lr * d) / (1 + lr * wd), or with
no_prox=True p <- p * (1 - lr * wd) - lr * d. No gradient clipping (the training chain clips).
Param groups may carry their own lr and weight_decay (e.g. a no-decay group).
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch.optim import Optimizer


class Adan(Optimizer):
    """Adan (adaptive Nesterov momentum) with the official code's update and weight decay."""

    def __init__(self, params: Iterable, lr: float = 1e-3,
                 betas: tuple[float, float, float] = (0.98, 0.92, 0.99), eps: float = 1e-8,
                 weight_decay: float = 0.0, no_prox: bool = False) -> None:
        if lr < 0.0 or eps < 0.0 or weight_decay < 0.0:
            raise ValueError(f"Adan: lr, eps and weight_decay must be >= 0, got {lr}, {eps}, {weight_decay}")
        if len(betas) != 3 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Adan: betas must be three numbers in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, no_prox=no_prox))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2, b3 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["m"] = torch.zeros_like(p)        # EMA of gradients
                    st["v"] = torch.zeros_like(p)        # EMA of gradient differences
                    st["n"] = torch.zeros_like(p)        # EMA of the squared look-ahead gradient
                    st["prev"] = g.clone()               # so the first difference is zero
                st["step"] += 1
                k = st["step"]
                diff = g - st["prev"]
                st["m"] = b1 * st["m"] + (1 - b1) * g
                st["v"] = b2 * st["v"] + (1 - b2) * diff
                look = g + b2 * diff
                st["n"] = b3 * st["n"] + (1 - b3) * look * look
                st["prev"] = g.clone()
                m_hat = st["m"] / (1 - b1 ** k)
                v_hat = st["v"] / (1 - b2 ** k)
                n_hat = st["n"] / (1 - b3 ** k)
                direction = (m_hat + b2 * v_hat) / (n_hat.sqrt() + eps)
                if group["no_prox"]:
                    p.mul_(1 - lr * wd).sub_(lr * direction)
                else:
                    p.sub_(lr * direction).div_(1 + lr * wd)
        return loss
