"""Per-layer trust ratios of LARS / LAMB during a sweep: the effective per-layer learning rate is lr x ratio.

The ratios follow fused_optim's definitions (the same functions its reference loop uses):
- LARS: trust_coeff * ||w|| / (||g|| + wd * ||w|| + eps), from the weights and grads before the step;
- LAMB: ||w|| / ||u|| with u = m_hat / (sqrt(v_hat) + eps) + wd * w, from the moments after the step.
For every optimizer the measured relative update ||w_after - w_before|| / ||w_before|| is recorded too.
"""

from __future__ import annotations

import math

import torch

from fused_optim.lamb import lamb_direction, lamb_trust_ratio
from fused_optim.lars import lars_trust_ratio


class TrustProbe:
    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, kind: str) -> None:
        self.params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.optimizer = optimizer
        self.kind = kind
        self.before: dict[str, torch.Tensor] = {}

    def capture(self) -> None:
        """Call after backward and before the step."""
        self.before = {name: p.detach().float().clone() for name, p in self.params}

    def measure(self) -> list[dict]:
        """Call after the step: one row per layer."""
        rows = []
        groups = {id(p): g for g in self.optimizer.param_groups for p in g["params"]}
        for name, p in self.params:
            w0 = self.before[name]
            w_norm = torch.linalg.vector_norm(w0)
            rel = float(torch.linalg.vector_norm(p.detach().float() - w0) / w_norm) if w_norm > 0 else math.nan
            group = groups.get(id(p), {})
            lr = float(group.get("lr", math.nan))
            ratio = self._ratio(p, w0, w_norm, group)
            rows.append(
                {"layer": name, "trust_ratio": ratio, "effective_lr": lr * ratio, "relative_update": rel}
            )
        return rows

    def _ratio(self, p, w0, w_norm, group) -> float:
        wd = group.get("weight_decay", 0.0)
        if self.kind == "lars" and p.grad is not None:
            g_norm = torch.linalg.vector_norm(p.grad.float())
            coeff = group.get("trust_coeff", group.get("eeta", 1e-3))
            eps = group.get("eps", group.get("epsilon", 1e-8))
            return float(lars_trust_ratio(w_norm, g_norm, coeff, wd, eps, False, group["lr"]))
        if self.kind == "lamb":
            state = self.optimizer.state.get(p, {})
            if "exp_avg" not in state:
                return math.nan
            beta1, beta2 = group["betas"]
            step = state.get("step", group.get("step"))
            if step is None or not group.get("bias_correction", True):
                bc1 = bc2 = 1.0
            else:
                t = float(step)
                bc1, bc2 = 1 - beta1**t, 1 - beta2**t
            u = lamb_direction(state["exp_avg"].float(), state["exp_avg_sq"].float(), w0, bc1, bc2, group["eps"], wd)
            return float(lamb_trust_ratio(w_norm, torch.linalg.vector_norm(u), False))
        return 1.0
