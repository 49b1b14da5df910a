"""The optimizers compared, each with the same hyper-parameters (clipping off)."""

from __future__ import annotations

import torch

import fused_optim

LAMB_HP = dict(lr=1e-3, weight_decay=0.01)
LARS_HP = dict(lr=0.1, momentum=0.9, weight_decay=1e-4, trust_coeff=1e-3)

# provider -> (what it is, the op whose memory floor it has)
PROVIDERS = {
    "lamb": ["ours", "reference", "timm", "colossalai", "torch-adamw"],
    "lars": ["ours", "reference", "timm", "colossalai", "torch-sgd"],
}


def make(op: str, provider: str, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    cuda = params[0].is_cuda
    if op == "lamb":
        if provider == "ours":
            return fused_optim.LAMB(params, **LAMB_HP, max_grad_norm=None)
        if provider == "reference":
            return fused_optim.LAMB(params, **LAMB_HP, max_grad_norm=None, foreach=False)
        if provider == "timm":
            from timm.optim import Lamb

            return Lamb(params, **LAMB_HP, max_grad_norm=None)
        if provider == "colossalai":
            from colossalai.nn.optimizer import Lamb

            return Lamb(params, **LAMB_HP, bias_correction=True)
        if provider == "colossalai-fused":
            from colossalai.nn.optimizer import FusedLAMB

            return FusedLAMB(params, **LAMB_HP, max_grad_norm=0.0)
        if provider == "torch-adamw":
            return torch.optim.AdamW(params, **LAMB_HP, **(dict(fused=True) if cuda else dict(foreach=True)))
    if op == "lars":
        if provider == "ours":
            return fused_optim.LARS(params, **LARS_HP)
        if provider == "reference":
            return fused_optim.LARS(params, **LARS_HP, foreach=False)
        if provider == "timm":
            from timm.optim import Lars

            return Lars(params, **LARS_HP)
        if provider == "colossalai":
            from colossalai.nn.optimizer import Lars

            hp = dict(LARS_HP)
            return Lars(params, lr=hp["lr"], momentum=hp["momentum"], weight_decay=hp["weight_decay"],
                        eeta=hp["trust_coeff"])
        if provider == "torch-sgd":
            return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4,
                                   **(dict(fused=True) if cuda else dict(foreach=True)))
    raise ValueError(f"unknown provider {provider!r} for {op}")


def floor_op(op: str, provider: str) -> str:
    """The memory model a provider's bytes are counted with."""
    return {"torch-adamw": "adamw", "torch-sgd": "sgd"}.get(provider, op)
