"""The LR range test itself, independent of how a training step is run.

An exponential sweep from `start_lr` to `end_lr`: iteration i trains one batch at lr_i; the point recorded for lr_i is
the loss of the next batch, the first loss that reflects the update made at lr_i. Losses are smoothed with an
exponential moving average corrected for its start (as fastai and Lightning do) and the sweep stops when the smoothed
loss exceeds `diverge_factor` times the best one so far, or is not finite.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch


def exponential_lrs(start_lr: float, end_lr: float, num_iter: int) -> list[float]:
    """lr_i = start * (end / start) ** (i / (num_iter - 1)), i = 0 .. num_iter - 1."""
    if not 0 < start_lr < end_lr:
        raise ValueError(f"need 0 < start_lr < end_lr, got start_lr={start_lr}, end_lr={end_lr}")
    if num_iter < 2:
        raise ValueError(f"need at least 2 iterations, got {num_iter}")
    ratio = math.log(end_lr / start_lr)
    return [start_lr * math.exp(ratio * i / (num_iter - 1)) for i in range(num_iter)]


class Smoother:
    """EMA with bias correction: after k values, sum_j (1-b) b^(k-1-j) x_j / (1 - b^k)."""

    def __init__(self, beta: float = 0.98) -> None:
        if not 0 <= beta < 1:
            raise ValueError(f"smoothing beta must be in [0, 1), got {beta}")
        self.beta = beta
        self.avg = 0.0
        self.count = 0

    def update(self, value: float) -> float:
        self.count += 1
        self.avg = self.beta * self.avg + (1 - self.beta) * value
        return self.avg / (1 - self.beta**self.count)


def smooth_log_lr(lrs: list[float], losses: list[float], width: float = 0.15) -> list[float]:
    """Gaussian smoothing of a finished curve along log10(lr), `width` decades wide (one standard deviation).

    Centred, so without the EMA's lag of about 1 / (1 - beta) points (on a few-hundred-point sweep that shifts
    every feature of the curve by most of a decade), and local, so the divergence at the end of a sweep does not
    smear into the minimum. For reading a finished curve; the stop test has to use the causal EMA."""
    x = np.log10(np.asarray(lrs, dtype=np.float64))
    y = np.asarray(losses, dtype=np.float64)
    weights = np.exp(-0.5 * ((x[:, None] - x[None, :]) / width) ** 2)
    return list(weights @ y / weights.sum(axis=1))


@dataclass
class SweepResult:
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    stop_reason: str = "end of sweep"
    diverge_lr: float | None = None

    @property
    def best_loss(self) -> float:
        finite = [s for s in self.smoothed if math.isfinite(s)]
        return min(finite) if finite else float("nan")


def run_sweep(
    train_step: Callable[[float | None], float],
    lrs: list[float],
    *,
    beta: float = 0.98,
    diverge_factor: float = 4.0,
    on_point: Callable[[int, float, float, float], None] | None = None,
) -> SweepResult:
    """Sweep `lrs`. `train_step(lr)` returns the loss of its batch computed before it updates the weights at `lr`;
    `train_step(None)` only computes a loss. `on_point(i, lr, loss, smoothed)` sees every recorded point."""
    if diverge_factor <= 1:
        raise ValueError(f"diverge_factor must be > 1, got {diverge_factor}")
    result = SweepResult()
    smoother = Smoother(beta)
    best = math.inf
    train_step(lrs[0])
    for i, lr in enumerate(lrs):
        loss = train_step(lrs[i + 1] if i + 1 < len(lrs) else None)
        smoothed = smoother.update(loss) if math.isfinite(loss) else math.nan
        result.lrs.append(lr)
        result.losses.append(loss)
        result.smoothed.append(smoothed)
        if on_point is not None:
            on_point(i, lr, loss, smoothed)
        if not math.isfinite(smoothed):
            result.stop_reason = "loss is not finite"
            result.diverge_lr = lr
            break
        best = min(best, smoothed)
        if smoothed > diverge_factor * best:
            result.stop_reason = f"smoothed loss above {diverge_factor:g}x its best"
            result.diverge_lr = lr
            break
    return result


class Snapshot:
    """Everything a range test changes: model and optimizer state (momentum, moments, step counts, param-group
    options such as lr and momentum that a schedule rewrites) and the random number generators."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model, self.optimizer = model, optimizer
        self.model_state = copy.deepcopy(model.state_dict())
        self.optim_state = copy.deepcopy(optimizer.state_dict())
        self.rng = (
            torch.get_rng_state(),
            torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            np.random.get_state(),
            random.getstate(),
        )

    def restore(self) -> None:
        self.model.load_state_dict(self.model_state)
        self.optimizer.load_state_dict(copy.deepcopy(self.optim_state))
        cpu, cuda, np_state, py_state = self.rng
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        np.random.set_state(np_state)
        random.setstate(py_state)
