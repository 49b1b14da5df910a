"""Training on ColossalAI's Booster: one process (`python`) or several (`torchrun`), gloo on CPU, NCCL on GPU."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import TensorDataset

from . import optimizers
from .model import LeNet5
from .trust import TrustProbe


@dataclass
class Context:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mean(self, value: float) -> float:
        """The mean of `value` over all processes (every process gets it, so all take the same decisions)."""
        if self.world_size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t) / self.world_size

    def total(self, values: list[float]) -> list[float]:
        if self.world_size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(seed: int) -> Context:
    """Start ColossalAI: from torchrun's environment when there is one, else as a single process."""
    import colossalai

    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        colossalai.launch_from_torch(seed=seed, verbose=False)
    else:
        colossalai.launch(rank=0, world_size=1, host="127.0.0.1", port=_free_port(), seed=seed, verbose=False)
    from colossalai.accelerator import get_accelerator

    device = get_accelerator().get_current_device()
    return Context(rank=dist.get_rank(), world_size=dist.get_world_size(), device=torch.device(device))


def batches_per_epoch(num_samples: int, batch_size: int, world_size: int, limit: int | None = None) -> int:
    """Batches each process sees per epoch (DistributedSampler pads to equal shards; the last batch may be short)."""
    per_rank = -(-num_samples // world_size)
    local = batch_size // world_size
    n = -(-per_rank // local)
    return min(n, limit) if limit else n


@dataclass
class Data:
    train: TensorDataset
    test_x: torch.Tensor
    test_y: torch.Tensor


class Run:
    """A freshly initialised LeNet5 with one optimizer, boosted (DDP plugin) with its dataloader."""

    def __init__(
        self,
        ctx: Context,
        data: Data,
        name: str,
        impl: str,
        lr: float,
        *,
        batch_size: int,
        seed: int,
        limit_batches: int | None = None,
        scheduler: Callable[[torch.optim.Optimizer], object] | None = None,
        momentum: float | None = None,
    ) -> None:
        from colossalai.booster import Booster
        from colossalai.booster.plugin import TorchDDPPlugin

        if batch_size % ctx.world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by the {ctx.world_size} processes")
        self.ctx, self.data, self.name = ctx, data, name
        torch.manual_seed(seed)  # the same initial weights for every optimizer
        model = LeNet5()
        optimizer = optimizers.make(name, model.parameters(), lr, impl, momentum=momentum)
        lr_scheduler = scheduler(optimizer) if scheduler is not None else None
        plugin = TorchDDPPlugin()
        self.booster = Booster(plugin=plugin)
        dataloader = plugin.prepare_dataloader(
            data.train, batch_size=batch_size // ctx.world_size, shuffle=True, drop_last=False, seed=seed
        )
        self.criterion = torch.nn.CrossEntropyLoss()
        self.model, self.optimizer, _, self.dataloader, self.scheduler = self.booster.boost(
            model, optimizer, self.criterion, dataloader, lr_scheduler
        )
        self.raw_optimizer = optimizer
        self.limit_batches = limit_batches
        self.batches_per_epoch = batches_per_epoch(len(data.train), batch_size, ctx.world_size, limit_batches)
        self.epoch = 0
        self.iteration = 0
        self._batches = self._cycle()
        self.probe = TrustProbe(self.module, optimizer, name) if name in ("lars", "lamb") else None

    @property
    def module(self) -> torch.nn.Module:
        return self.model.unwrap()

    def _cycle(self) -> Iterator:
        while True:
            self.dataloader.sampler.set_epoch(self.epoch)
            for i, batch in enumerate(self.dataloader):
                if i >= self.batches_per_epoch:
                    break
                yield batch
            self.epoch += 1

    def lr(self) -> float:
        return float(self.raw_optimizer.param_groups[0]["lr"])

    def set_lr(self, lr: float) -> None:
        for group in self.raw_optimizer.param_groups:
            group["lr"] = lr

    def train_step(self, update: bool = True, lr: float | None = None, probe: bool = False):
        """One batch. Returns its loss (mean over processes, computed before any update) and, with `probe`, the
        per-layer trust rows. With `update`, the weights are updated, at `lr` when given (else at the lr the
        optimizer or its scheduler holds)."""
        x, y = next(self._batches)
        x, y = x.to(self.ctx.device), y.to(self.ctx.device)
        self.model.train()
        loss = self.criterion(self.model(x), y)
        rows = None
        if update:
            if lr is not None:
                self.set_lr(lr)
            self.booster.backward(loss, self.optimizer)
            if probe and self.probe is not None:
                self.probe.capture()
            self.optimizer.step()
            if probe and self.probe is not None:
                rows = self.probe.measure()
            self.optimizer.zero_grad()
            self.iteration += 1
        return self.ctx.mean(float(loss.detach())), rows

    @torch.no_grad()
    def evaluate(self, batch_size: int = 1000) -> float:
        """The true mean test loss: sum of per-sample losses over all test images / their number."""
        self.model.eval()
        x_all, y_all = self.data.test_x, self.data.test_y
        idx = torch.arange(self.ctx.rank, len(x_all), self.ctx.world_size)
        total, count = 0.0, 0
        for start in range(0, len(idx), batch_size):
            sel = idx[start : start + batch_size]
            x, y = x_all[sel].to(self.ctx.device), y_all[sel].to(self.ctx.device)
            total += float(torch.nn.functional.cross_entropy(self.module(x), y, reduction="sum"))
            count += len(sel)
        total, count = self.ctx.total([total, float(count)])
        return total / count
