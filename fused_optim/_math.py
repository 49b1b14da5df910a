"""The per-tensor formulas of LAMB and LARS, shared by every path."""

from __future__ import annotations

import torch
from torch import Tensor


def lamb_direction(exp_avg: Tensor, exp_avg_sq: Tensor, w: Tensor, bc1, bc2, eps: float, weight_decay: float):
    """LAMB's update direction u (before the trust ratio) from the updated moments and the current weights."""
    return (exp_avg / bc1) / ((exp_avg_sq / bc2).sqrt() + eps) + weight_decay * w


def lamb_trust_ratio(w_norm: Tensor, u_norm: Tensor, trust_clip: bool) -> Tensor:
    """||w|| / ||u||, 1 where either norm is 0, at most 1 with trust_clip; elementwise over stacked norms."""
    trust_ratio = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, 1.0)
    return torch.clamp(trust_ratio, max=1.0) if trust_clip else trust_ratio


def bias_corrections(step: Tensor, beta1: float, beta2: float, bias_correction: bool) -> tuple[float, float]:
    # `step` lives on the host for these paths: reading it does not wait for a device.
    if not bias_correction:
        return 1.0, 1.0
    t = float(step)
    return 1.0 - beta1**t, 1.0 - beta2**t


def lars_trust_ratio(w_norm, g_norm, trust_coeff: float, weight_decay: float, eps: float, trust_clip: bool, lr):
    """trust_coeff * ||w|| / (||g|| + wd * ||w|| + eps), 1 where either norm is 0, LARC-clipped with trust_clip;
    elementwise over stacked norms."""
    trust_ratio = trust_coeff * w_norm / (g_norm + weight_decay * w_norm + eps)
    trust_ratio = torch.where((w_norm > 0) & (g_norm > 0), trust_ratio, 1.0)
    return torch.clamp(trust_ratio / lr, max=1.0) if trust_clip else trust_ratio
