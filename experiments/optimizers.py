"""The study's optimizers, their hyper-parameters, and a sweep range that makes sense for each."""

from __future__ import annotations

from dataclasses import dataclass

import torch

import fused_optim

OPTIMIZERS = ("sgd", "adam", "lars", "lamb")
IMPLS = ("fused", "reference", "timm", "colossalai")


@dataclass(frozen=True)
class Sweep:
    start_lr: float
    end_lr: float
    why: str


# The study swept every optimizer from 1e-6 to 1.0. LAMB's lr is the fraction of each layer's weight norm changed per
# step, and LARS's raw lr is scaled by trust_coeff (1e-3) times ||w|| / ||g||: one scale for all four is wrong.
SWEEPS = {
    "sgd": Sweep(1e-4, 10.0, "plain SGD on LeNet5 learns from ~1e-2 and diverges at O(1)"),
    "adam": Sweep(1e-6, 1.0, "Adam's step is ~lr per weight: useful from ~1e-4, diverges near 1e-1"),
    "lars": Sweep(1e-2, 1e4, "the step is lr * trust_coeff * ||w|| / ||g||: raw lr sits ~1/trust_coeff above SGD's"),
    "lamb": Sweep(1e-5, 1.0, "lr is the relative change of each layer's weights per step: 1 rewrites a layer"),
}

# The study's settings: lr 0.1 and weight decay 5e-4 for all; SGD without momentum.
WEIGHT_DECAY = 5e-4
LARS_MOMENTUM = 0.9
TRUST_COEFF = 1e-3


def make(name: str, params, lr: float, impl: str = "fused", momentum: float | None = None) -> torch.optim.Optimizer:
    """One of OPTIMIZERS; `impl` picks whose LARS/LAMB (ours, our reference loop, timm's, ColossalAI's)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
    if impl not in IMPLS:
        raise ValueError(f"unknown implementation {impl!r}; choose from {', '.join(IMPLS)}")
    params = list(params)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum or 0.0, weight_decay=WEIGHT_DECAY)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=WEIGHT_DECAY)
    mom = LARS_MOMENTUM if momentum is None else momentum
    if impl == "timm":
        from timm.optim import Lamb, Lars

        if name == "lamb":
            return Lamb(params, lr=lr, weight_decay=WEIGHT_DECAY)
        return Lars(params, lr=lr, momentum=mom, weight_decay=WEIGHT_DECAY, trust_coeff=TRUST_COEFF)
    if impl == "colossalai":
        from colossalai.nn.optimizer import Lamb, Lars

        if name == "lamb":
            return Lamb(params, lr=lr, weight_decay=WEIGHT_DECAY, bias_correction=True)
        return Lars(params, lr=float(lr), momentum=mom, weight_decay=WEIGHT_DECAY, eeta=TRUST_COEFF)
    path = dict(foreach=False) if impl == "reference" else {}
    if name == "lamb":
        return fused_optim.LAMB(params, lr=lr, weight_decay=WEIGHT_DECAY, **path)
    return fused_optim.LARS(params, lr=lr, momentum=mom, weight_decay=WEIGHT_DECAY, trust_coeff=TRUST_COEFF, **path)
