"""The usual large-batch recipe: no weight decay and no trust-ratio adaptation for biases and norm weights."""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import Any

from torch import nn


def param_groups(
    model: nn.Module,
    weight_decay: float,
    *,
    exclude_1d: bool = True,
    exclude: Iterable[str] = (),
    **options: Any,
) -> list[dict[str, Any]]:
    """Split `model`'s trainable parameters into a decayed group and an excluded group.

    Excluded parameters (1-D tensors such as biases and normalisation weights when `exclude_1d`, and every name
    matching one of the `exclude` glob patterns, e.g. ``"*.bias"`` or ``"embed.*"``) get ``weight_decay=0`` and
    ``always_adapt=False``, so LAMB and LARS take plain Adam / SGD steps on them. Extra `options` (e.g. ``lr``)
    go into both groups. Empty groups are left out. Pass the result to :class:`fused_optim.LAMB` or
    :class:`fused_optim.LARS`.
    """
    if not weight_decay >= 0.0:
        raise ValueError(f"Invalid weight_decay value: {weight_decay}")
    if "params" in options or "weight_decay" in options:
        raise ValueError("param_groups sets `params` and `weight_decay` itself")
    patterns = [exclude] if isinstance(exclude, str) else list(exclude)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if (exclude_1d and p.ndim <= 1) or any(fnmatchcase(name, pat) for pat in patterns):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay, **options})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "always_adapt": False, **options})
    return groups
