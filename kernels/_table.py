"""Multi-tensor tables: everything a kernel needs to find every tensor of a step, in a handful of small arrays.

A step's tensors (one row per parameter) are described by
- `ptrs`  int64 [T, K]: data pointers (param, grad, state...),
- `numel` int64 [T],
- `rows`  float64 [T, H]: per-tensor hyper-parameters, so param groups do not multiply launches,
- a work split: tensor t is processed by `nslots[t]` programs; program `u` of a launch handles tensor
  `unit_tensor[u]`, blocks `unit_slot[u], unit_slot[u] + nslots[t], ...`; each program writes its partial sums to
  slot `slot_base[t] + unit_slot[u]`, which the next pass reduces in a fixed order (deterministic norms, no atomics).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import Tensor

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


@dataclass
class Config:
    block: int  # elements per block (one vectorised iteration of a program)
    blocks_per_program: int  # target work per program before a tensor gets another program
    max_slots: int  # most programs (and partial sums) per tensor; a power of two
    num_warps: int


# The interpreter pays per program, so it gets few, large programs.
CONFIG = Config(block=4096, blocks_per_program=4, max_slots=64, num_warps=4) if INTERPRET else Config(
    block=2048, blocks_per_program=4, max_slots=1024, num_warps=8
)

launches = 0  # kernel launches so far, for tests that count them


def count_launch() -> None:
    global launches
    launches += 1


@dataclass
class Split:
    unit_tensor: Tensor  # int32 [U]
    unit_slot: Tensor  # int32 [U]
    nslots: Tensor  # int32 [T]
    slot_base: Tensor  # int32 [T]
    units: int
    total_slots: int


_split_cache: OrderedDict = OrderedDict()


def work_split(numels: tuple[int, ...], device: torch.device, cfg: Config) -> Split:
    """The program → (tensor, slot) map for these sizes; cached, since sizes rarely change between steps."""
    key = (numels, str(device), cfg.block, cfg.blocks_per_program, cfg.max_slots)
    hit = _split_cache.get(key)
    if hit is not None:
        _split_cache.move_to_end(key)
        return hit
    nslots = []
    for n in numels:
        blocks = -(-n // cfg.block)
        nslots.append(max(1, min(cfg.max_slots, -(-blocks // cfg.blocks_per_program))))
    ns = torch.tensor(nslots, dtype=torch.int32)
    base = torch.cumsum(ns, 0, dtype=torch.int32) - ns
    unit_tensor = torch.repeat_interleave(torch.arange(len(numels), dtype=torch.int32), ns)
    unit_slot = torch.arange(int(ns.sum()), dtype=torch.int32) - torch.repeat_interleave(base, ns)
    split = Split(
        unit_tensor=_to(unit_tensor, device),
        unit_slot=_to(unit_slot, device),
        nslots=_to(ns, device),
        slot_base=_to(base, device),
        units=int(ns.sum()),
        total_slots=int(ns.sum()),
    )
    _split_cache[key] = split
    if len(_split_cache) > 16:
        _split_cache.popitem(last=False)
    return split


def _to(t: Tensor, device: torch.device) -> Tensor:
    """Host → device without waiting: pinned staging and a non-blocking copy (the pinned block is not reused
    before the copy has run: torch's host allocator records the copy's stream)."""
    if device.type == "cpu":
        return t
    return t.pin_memory().to(device, non_blocking=True)


def pointer_table(columns: list[list[Tensor | None]], device: torch.device) -> Tensor:
    """int64 [T, K] of data pointers; a missing tensor (None) gets 0 and must be masked off by the kernel."""
    rows = [[0 if t is None else t.data_ptr() for t in col] for col in zip(*columns)]
    return _to(torch.tensor(rows, dtype=torch.int64).reshape(-1, len(columns)), device)


def numel_table(params: list[Tensor], device: torch.device) -> Tensor:
    return _to(torch.tensor([p.numel() for p in params], dtype=torch.int64), device)


def row_table(rows: list[list[float]], device: torch.device) -> Tensor:
    return _to(torch.tensor(rows, dtype=torch.float64), device)


def check_tensors(name: str, params: list[Tensor], others: list[list[Tensor]]) -> None:
    """The kernels address tensors as flat arrays: every tensor must be dense and match its param's layout."""
    for p in params:
        if p.dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise RuntimeError(f"{name} fused kernels support float32, bfloat16 and float16 params, got {p.dtype}")
    for col in [params, *others]:
        for t, p in zip(col, params):
            if t is None:
                continue
            if t.device != p.device:
                raise RuntimeError(f"{name} fused kernels need every tensor on its param's device")
            if not t.is_contiguous():
                raise RuntimeError(
                    f"{name} fused kernels need contiguous tensors (got a tensor of shape {tuple(t.shape)} "
                    f"with strides {t.stride()}); use fused=False"
                )


def amp_scalars(device: torch.device, grad_scale: Tensor | None, found_inf: Tensor | None) -> Tensor | None:
    """fp32 [2] on `device`: (1 / grad_scale, found_inf), computed on the device (no host sync); None without a
    scaler. The reciprocal is taken in fp64 and rounded once, as GradScaler's own unscale does."""
    if grad_scale is None and found_inf is None:
        return None
    inv = (torch.ones((), dtype=torch.float32, device=device) if grad_scale is None
           else grad_scale.to(device, non_blocking=True).double().reciprocal().float().reshape(()))
    inf = (torch.zeros((), dtype=torch.float32, device=device) if found_inf is None
           else found_inf.to(device, non_blocking=True).float().reshape(()))
    return torch.stack([inv, inf])
