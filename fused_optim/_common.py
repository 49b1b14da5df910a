"""Pieces shared by LAMB and LARS: implementation choice, input checks, state placement, chunked views."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

# Elements per chunk of the CPU multi-tensor path: small enough that the temporaries of a chunk stay in the
# last-level cache, large enough that the per-op overhead stays small (2^16..2^20 measured on ResNet-50 shapes).
CHUNK_ELEMENTS = 1 << 19

IMPLS = ("reference", "foreach", "fused")
LOW_PRECISION = (torch.bfloat16, torch.float16)


def interpreter_enabled() -> bool:
    """True when Triton kernels run on CPU tensors through the Triton interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def select_impl(params: Sequence[Tensor], foreach: bool | None, fused: bool | None, name: str) -> str:
    """Resolve torch's `foreach` / `fused` flags into one of IMPLS for these params.

    fused=None picks the Triton kernels for CUDA tensors when triton is importable, else the foreach path;
    fused=True on CPU tensors is allowed only under the Triton interpreter (TRITON_INTERPRET=1).
    """
    if fused and foreach:
        raise ValueError(f"{name}: `fused` and `foreach` cannot both be True")
    if fused:
        bad = [p for p in params if not (p.is_cuda or (p.device.type == "cpu" and interpreter_enabled()))]
        if bad:
            raise RuntimeError(
                f"{name}(fused=True) needs CUDA tensors (or CPU tensors with TRITON_INTERPRET=1 set before "
                f"fused_optim is imported), got a tensor on {bad[0].device}; use fused=False for the foreach path"
            )
        if not triton_available():
            raise RuntimeError(f"{name}(fused=True) needs triton, which is not installed")
        return "fused"
    if fused is None and foreach is None:
        if params and all(p.is_cuda for p in params) and triton_available():
            return "fused"
        return "foreach"
    if foreach is False:
        return "reference"
    return "foreach"


def check_step_inputs(name: str, params: Iterable[Tensor], grads: Iterable[Tensor]) -> None:
    """Raise before anything is modified when a param or grad cannot be handled."""
    for p, g in zip(params, grads):
        if g.is_sparse:
            raise RuntimeError(f"{name} does not support sparse gradients")
        if torch.is_complex(p) or torch.is_complex(g):
            raise RuntimeError(f"{name} does not support complex parameters or gradients")
        if not p.is_floating_point():
            raise RuntimeError(f"{name} needs floating-point parameters, got {p.dtype}")
        if g.shape != p.shape:
            raise RuntimeError(f"{name}: gradient of shape {tuple(g.shape)} for a parameter of shape {tuple(p.shape)}")
        if g.device != p.device:
            raise RuntimeError(f"{name}: gradient on {g.device} for a parameter on {p.device}")


def check_param(name: str, p: Any) -> None:
    if not isinstance(p, Tensor):
        raise TypeError(f"{name} can only optimize Tensors, got {type(p).__name__}")
    if torch.is_complex(p):
        raise ValueError(f"{name} does not support complex parameters (got {p.dtype})")
    if not p.is_floating_point():
        raise ValueError(f"{name} needs floating-point parameters, got {p.dtype}")


def state_zeros(p: Tensor) -> Tensor:
    """Optimizer state is fp32 whatever the param dtype (fp64 params keep fp64)."""
    dtype = torch.float64 if p.dtype == torch.float64 else torch.float32
    return torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)


def state_dtype(p: Tensor) -> torch.dtype:
    return torch.float64 if p.dtype == torch.float64 else torch.float32


def step_device(p: Tensor, impl: str) -> torch.device:
    """Where a param's `step` counter lives: on the param's device for the kernels, on the host otherwise."""
    return p.device if impl == "fused" else torch.device("cpu")


def uniform_groups(params: Sequence[Tensor], grads: Sequence[Tensor]) -> list[list[int]]:
    """Indices of `params` grouped by (device, param dtype, grad dtype), in order of first appearance."""
    groups: dict[tuple, list[int]] = {}
    for i, (p, g) in enumerate(zip(params, grads)):
        groups.setdefault((p.device, p.dtype, g.dtype), []).append(i)
    return list(groups.values())


def check_masters(name: str, params: Sequence[Tensor], masters: Sequence[Tensor] | None) -> None:
    """fp32 master copies: one per param, same shape and device."""
    if masters is None:
        return
    if len(masters) != len(params):
        raise ValueError(f"{name}: {len(params)} params but {len(masters)} master params")
    for p, m in zip(params, masters):
        if not isinstance(m, Tensor) or m.dtype != torch.float32 or m.shape != p.shape or m.device != p.device:
            raise ValueError(
                f"{name}: master params must be float32 tensors of their param's shape and device, got "
                f"{getattr(m, 'dtype', type(m).__name__)} {tuple(getattr(m, 'shape', ()))} for a param of shape "
                f"{tuple(p.shape)}"
            )


class Buckets:
    """Flat, chunk-sized views over lists of same-shaped tensors, for the CPU multi-tensor path.

    Tensors of `CHUNK_ELEMENTS` or more are cut into chunks; smaller ones are packed together. Each bucket is a
    list of slices with the index of the tensor each slice belongs to (`owners`), so per-tensor scalars can be
    repeated per slice and per-slice reductions combined per tensor.
    """

    def __init__(self, tensor_lists: Sequence[Sequence[Tensor]], chunk: int | None = None) -> None:
        chunk = chunk or CHUNK_ELEMENTS
        self.owners: list[list[int]] = []
        self.views: list[list[list[Tensor]]] = []
        cur_owners: list[int] = []
        cur_views: list[list[Tensor]] = [[] for _ in tensor_lists]
        total = 0

        def flush() -> None:
            nonlocal cur_owners, cur_views, total
            if cur_owners:
                self.owners.append(cur_owners)
                self.views.append(cur_views)
            cur_owners, cur_views, total = [], [[] for _ in tensor_lists], 0

        for i, group in enumerate(zip(*tensor_lists)):
            n = group[0].numel()
            if n == 0:
                continue
            if n >= chunk and all(t.is_contiguous() for t in group):
                flush()
                flat = [t.view(-1) for t in group]
                for start in range(0, n, chunk):
                    self.owners.append([i])
                    self.views.append([[f[start : start + chunk]] for f in flat])
                continue
            if total + n > chunk:
                flush()
            cur_owners.append(i)
            for lst, t in zip(cur_views, group):
                lst.append(t)
            total += n
        flush()

    def __iter__(self):
        return iter(zip(self.owners, self.views))

    def __len__(self) -> int:
        return len(self.owners)


def combine_norms(num: int, owners: Sequence[Sequence[int]], slice_norms: Sequence[Sequence[Tensor]], like: Tensor):
    """Per-tensor L2 norms (one vector, fp32; fp64 for fp64 tensors) from the norms of their slices; empty tensors
    get 0."""
    parts: list[list[Tensor]] = [[] for _ in range(num)]
    for idx, norms in zip(owners, slice_norms):
        for i, n in zip(idx, norms):
            parts[i].append(n)
    dtype = state_dtype(like)
    zero = torch.zeros((), dtype=dtype, device=like.device)
    out = []
    for ps in parts:
        if not ps:
            out.append(zero)
        elif len(ps) == 1:
            out.append(ps[0])
        else:
            out.append(torch.linalg.vector_norm(torch.stack(ps)))
    return torch.stack([n.to(dtype) for n in out])


def global_grad_norm(grads: Sequence[Tensor]) -> Tensor:
    """L2 norm over all gradients (accumulated in fp32, fp64 for fp64 grads), without waiting for the device."""
    by_kind: dict[tuple, list[Tensor]] = {}
    for g in grads:
        by_kind.setdefault((g.device, g.dtype), []).append(g)
    first = grads[0].device
    norms = [
        torch.linalg.vector_norm(
            torch.stack(torch._foreach_norm(gs, 2, dtype=None if dtype == torch.float64 else torch.float32))
        ).to(device=first, dtype=torch.float32)
        for (_, dtype), gs in by_kind.items()
    ]
    return torch.linalg.vector_norm(torch.stack(norms))
