"""Multi-tensor LARS in two launches per step, whatever the number of tensors or param groups.

Bytes per element for fp32 params (p = param bytes, 2 for bf16/fp16; the momentum buffer is always fp32):
- pass A: reads w, g; per-program partial sums of w² and g²                           8 B   (2p)
- pass B: reduces the partial sums per tensor into the trust ratio; reads w, g, b;
  writes b, w                                                                         20 B  (3p + 8)
Total 28 B, the two-pass bound; bf16/fp16 params: 18 B. Without momentum: 20 B (12 B). Tensors that take no
trust ratio (weight_decay == 0 and not always_adapt) skip pass A: 20 B. With fp32 master weights for bf16/fp16
params, w is the fp32 master and pass B also writes the param as its rounded copy: 26 B (4 + 2 + 4+2+4+4+4+2).

Under `torch.amp.GradScaler` (see `LARS._step_supports_amp_scaling`), grads are unscaled as they are read and a
step with an inf/NaN grad leaves params and buffers untouched, decided on the device.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._round import round_to
from ._table import (
    CONFIG,
    amp_scalars,
    check_tensors,
    count_launch,
    numel_table,
    pointer_table,
    row_table,
    work_split,
)
from ._units import tensor_norm, unit_of

_LR, _MOMENTUM, _DAMPENING, _WD, _TRUST_COEFF, _EPS, _NESTEROV, _ADAPT, _TRUST_CLIP, _SIGN, _FIRST = range(11)
_NROW = 11
_NPTR = 4  # param (or its fp32 master), grad, momentum buffer, param behind the master


@triton.jit
def _lars_norms_kernel(
    ptrs_ptr,  # int64 [T, NPTR]
    numel_ptr,  # int64 [T]
    rows_ptr,  # fp64 [T, NROW]
    unit_tensor_ptr,  # int32 [U]
    unit_slot_ptr,  # int32 [U]
    nslots_ptr,  # int32 [T]
    slot_base_ptr,  # int32 [T]
    w_sq_ptr,  # fp32 [total_slots]
    g_sq_ptr,  # fp32 [total_slots]
    param_like_ptr,
    grad_like_ptr,
    amp_ptr,  # fp32 [2]: 1 / grad scale, found inf (read when AMP)
    NROW: tl.constexpr,
    NPTR: tl.constexpr,
    AMP: tl.constexpr,
    BLOCK: tl.constexpr,
):
    i_u = tl.program_id(0)
    i_t, slot, ns, n = unit_of(i_u, unit_tensor_ptr, unit_slot_ptr, nslots_ptr, numel_ptr)
    adapt = tl.load(rows_ptr + i_t * NROW + 7)
    p_w = tl.load(ptrs_ptr + i_t * NPTR + 0).to(tl.pointer_type(param_like_ptr.dtype.element_ty))
    p_g = tl.load(ptrs_ptr + i_t * NPTR + 1).to(tl.pointer_type(grad_like_ptr.dtype.element_ty))
    n_eff = tl.where(adapt != 0, n, 0)
    inv_scale = 1.0
    if AMP:
        inv_scale = tl.load(amp_ptr)
    o_b = tl.arange(0, BLOCK)
    b_w_sq = tl.zeros([BLOCK], dtype=tl.float32)
    b_g_sq = tl.zeros([BLOCK], dtype=tl.float32)
    for i_blk in range(slot, tl.cdiv(n_eff, BLOCK), ns):
        o_x = i_blk * BLOCK + o_b
        m_x = o_x < n
        b_w = tl.load(p_w + o_x, mask=m_x, other=0.0).to(tl.float32)
        b_g = tl.load(p_g + o_x, mask=m_x, other=0.0).to(tl.float32) * inv_scale
        b_w_sq += b_w * b_w
        b_g_sq += b_g * b_g
    base = tl.load(slot_base_ptr + i_t)
    tl.store(w_sq_ptr + base + slot, tl.sum(b_w_sq, axis=0))
    tl.store(g_sq_ptr + base + slot, tl.sum(b_g_sq, axis=0))


@triton.jit
def _lars_apply_kernel(
    ptrs_ptr,  # int64 [T, NPTR]
    numel_ptr,  # int64 [T]
    rows_ptr,  # fp64 [T, NROW]
    unit_tensor_ptr,  # int32 [U]
    unit_slot_ptr,  # int32 [U]
    nslots_ptr,  # int32 [T]
    slot_base_ptr,  # int32 [T]
    w_sq_ptr,  # fp32 [total_slots]
    g_sq_ptr,  # fp32 [total_slots]
    param_like_ptr,
    grad_like_ptr,
    copy_like_ptr,  # a param of the launch when COPY (w is then its fp32 master)
    amp_ptr,  # fp32 [2]: 1 / grad scale, found inf (read when AMP)
    NROW: tl.constexpr,
    NPTR: tl.constexpr,
    COPY: tl.constexpr,
    AMP: tl.constexpr,
    MAX_SLOTS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    i_u = tl.program_id(0)
    i_t, slot, ns, n = unit_of(i_u, unit_tensor_ptr, unit_slot_ptr, nslots_ptr, numel_ptr)
    p_w = tl.load(ptrs_ptr + i_t * NPTR + 0).to(tl.pointer_type(param_like_ptr.dtype.element_ty))
    p_g = tl.load(ptrs_ptr + i_t * NPTR + 1).to(tl.pointer_type(grad_like_ptr.dtype.element_ty))
    p_b = tl.load(ptrs_ptr + i_t * NPTR + 2).to(tl.pointer_type(tl.float32))
    p_c = tl.load(ptrs_ptr + i_t * NPTR + 3).to(tl.pointer_type(copy_like_ptr.dtype.element_ty))
    p_row = rows_ptr + i_t * NROW
    lr = tl.load(p_row + 0).to(tl.float32)
    momentum = tl.load(p_row + 1).to(tl.float32)
    one_minus_dampening = (1.0 - tl.load(p_row + 2)).to(tl.float32)
    wd = tl.load(p_row + 3).to(tl.float32)
    trust_coeff = tl.load(p_row + 4).to(tl.float32)
    eps = tl.load(p_row + 5).to(tl.float32)
    nesterov = tl.load(p_row + 6)
    adapt = tl.load(p_row + 7)
    trust_clip = tl.load(p_row + 8)
    sign = tl.load(p_row + 9).to(tl.float32)
    first = tl.load(p_row + 10)
    g_scale = sign
    if AMP:
        g_scale = sign * tl.load(amp_ptr)
        # A skipped step touches nothing.
        n = tl.where(tl.load(amp_ptr + 1) != 0.0, 0, n)
    has_momentum = momentum != 0.0
    # Masks as bounds (scalar flags): the buffer is written when there is momentum, read after its first step.
    n_buf = tl.where(has_momentum, n, 0)
    n_buf_old = tl.where(first == 0, n_buf, 0)

    w_norm = tensor_norm(w_sq_ptr, slot_base_ptr, i_t, ns, MAX_SLOTS)
    g_norm = tensor_norm(g_sq_ptr, slot_base_ptr, i_t, ns, MAX_SLOTS)
    ratio = trust_coeff * w_norm / (g_norm + wd * w_norm + eps)
    ratio = tl.where((w_norm > 0.0) & (g_norm > 0.0), ratio, 1.0)
    ratio = tl.where(trust_clip != 0, tl.minimum(ratio / lr, 1.0), ratio)
    ratio = tl.where(adapt != 0, ratio, 1.0)

    o_b = tl.arange(0, BLOCK)
    for i_blk in range(slot, tl.cdiv(n, BLOCK), ns):
        o_x = i_blk * BLOCK + o_b
        m_x = o_x < n
        b_w = tl.load(p_w + o_x, mask=m_x, other=0.0).to(tl.float32)
        b_g = g_scale * tl.load(p_g + o_x, mask=m_x, other=0.0).to(tl.float32)
        b_d = tl.where(adapt != 0, (b_g + wd * b_w) * ratio, b_g)
        b_b = tl.load(p_b + o_x, mask=o_x < n_buf_old, other=0.0)
        b_b = tl.where(first != 0, b_d, momentum * b_b + one_minus_dampening * b_d)
        tl.store(p_b + o_x, b_b, mask=o_x < n_buf)
        b_step = tl.where(nesterov != 0, b_d + momentum * b_b, b_b)
        b_step = tl.where(has_momentum, b_step, b_d)
        b_new = b_w - lr * b_step
        tl.store(p_w + o_x, round_to(b_new, p_w), mask=m_x)
        if COPY:
            tl.store(p_c + o_x, round_to(b_new, p_c), mask=m_x)


def lars_step_(calls, *, grad_scale: torch.Tensor | None = None, found_inf: torch.Tensor | None = None) -> None:
    """One LARS step for several param groups: `calls` is a list of ((params, grads, momentum_buffers), hyper)
    with `hyper` the keyword arguments of `fused_optim.lars` for that group (`master_params` included). Missing
    momentum buffers (None) are created in place in the lists. `grad_scale` / `found_inf` (GradScaler's device
    scalars): grads are divided by the scale, and the step is skipped on device where `found_inf` != 0."""
    amp = grad_scale is not None or found_inf is not None
    entries = []  # (param or its master, grad, buf, row, param when mastered)
    for (params, grads, bufs), h in calls:
        masters = h.get("master_params")
        lr = h["lr"]
        if isinstance(lr, torch.Tensor) and lr.device.type != "cpu":
            raise RuntimeError("LARS(fused=True) takes lr as a float or a CPU tensor")
        momentum = h["momentum"]
        check_tensors("LARS", list(params), [list(grads)] + ([[b for b in bufs]] if momentum != 0 else [])
                      + ([list(masters)] if masters is not None else []))
        for i, p in enumerate(params):
            row = [0.0] * _NROW
            row[_LR], row[_MOMENTUM], row[_DAMPENING] = float(lr), momentum, h["dampening"]
            row[_WD], row[_TRUST_COEFF], row[_EPS] = h["weight_decay"], h["trust_coeff"], h["eps"]
            row[_NESTEROV] = float(h["nesterov"])
            row[_ADAPT] = float(h["weight_decay"] != 0 or h["always_adapt"])
            row[_TRUST_CLIP] = float(h["trust_clip"])
            row[_SIGN] = -1.0 if h["maximize"] else 1.0
            buf = None
            if momentum != 0:
                buf = bufs[i]
                if buf is not None and buf.dtype != torch.float32:
                    raise RuntimeError(f"LARS fused kernels keep momentum in float32, got {buf.dtype}")
                if buf is None and amp:
                    # The step may be skipped on the device: a zero buffer, for which the regular update
                    # (dampening 0) gives b = d exactly as a first step does.
                    if h["dampening"] != 0:
                        raise RuntimeError("LARS(fused=True) under a GradScaler needs dampening=0")
                    buf = bufs[i] = torch.zeros_like(p, dtype=torch.float32, memory_format=torch.contiguous_format)
                elif buf is None:
                    buf = bufs[i] = torch.empty_like(p, dtype=torch.float32, memory_format=torch.contiguous_format)
                    row[_FIRST] = 1.0
            if masters is None:
                entries.append((p, grads[i], buf, row, None))
            else:
                entries.append((masters[i], grads[i], buf, row, p))
    if not entries:
        return
    sets: dict[tuple, list] = {}
    for e in entries:
        sets.setdefault((e[0].device, e[0].dtype, e[1].dtype, e[4] is not None and e[4].dtype), []).append(e)
    for key, es in sets.items():
        _lars_launch(es, CONFIG, amp_scalars(key[0], grad_scale, found_inf))


def _lars_launch(es, cfg, amp: torch.Tensor | None) -> None:
    device = es[0][0].device
    split = work_split(tuple(e[0].numel() for e in es), device, cfg)
    ptrs = pointer_table([[e[i] for e in es] for i in range(3)] + [[e[4] for e in es]], device)
    numel = numel_table([e[0] for e in es], device)
    rows = row_table([e[3] for e in es], device)
    w_sq = torch.empty(split.total_slots, dtype=torch.float32, device=device)
    g_sq = torch.empty(split.total_slots, dtype=torch.float32, device=device)
    amp_arg = w_sq if amp is None else amp  # not read without AMP
    grid = (split.units,)
    count_launch()
    _lars_norms_kernel[grid](
        ptrs, numel, rows, split.unit_tensor, split.unit_slot, split.nslots, split.slot_base, w_sq, g_sq,
        es[0][0], es[0][1], amp_arg,
        NROW=_NROW, NPTR=_NPTR, AMP=amp is not None, BLOCK=cfg.block, num_warps=cfg.num_warps,
    )
    count_launch()
    _lars_apply_kernel[grid](
        ptrs, numel, rows, split.unit_tensor, split.unit_slot, split.nslots, split.slot_base, w_sq, g_sq,
        es[0][0], es[0][1], es[0][4] if es[0][4] is not None else es[0][0], amp_arg,
        NROW=_NROW, NPTR=_NPTR, COPY=es[0][4] is not None, AMP=amp is not None, MAX_SLOTS=cfg.max_slots,
        BLOCK=cfg.block, num_warps=cfg.num_warps,
    )
