"""Multi-tensor LAMB in three launches per step, whatever the number of tensors or param groups.

Bytes per element for fp32 params (p = param bytes, 2 for bf16/fp16; state is always fp32):
- grad-norm pass (only with max_grad_norm): reads g                                  4 B   (p)
- pass A: reads g, w, m, v; writes m, v; per-program partial sums of w² and u²       24 B  (2p + 16)
- pass B: reduces the partial sums per tensor into the trust ratio; reads m, v, w
  (u is recomputed in fp32), writes w                                                16 B  (2p + 8)
Total 40 B (44 B with clipping), the two-pass bound; bf16/fp16 params: 32 B (34 B).
Tensors that take no trust ratio (weight_decay == 0 and not always_adapt) are updated in pass A: 28 B.
With fp32 master weights for bf16/fp16 params, w is the fp32 master and the param is written as its rounded copy
(+2 B in the pass that writes w), grads are read at 2 B: 40 B (42 B with clipping).

`step` counters stay on the device: pass A reads them (t + 1 goes to a scratch row), pass B writes them.

Under `torch.amp.GradScaler` (see `LAMB._step_supports_amp_scaling`), the kernels take the scaler's scale and
inf flag as device scalars: grads are unscaled as they are read, and a step with an inf/NaN grad leaves params,
state and `step` untouched, without the host ever reading the flag.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

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

# Columns of the pointer table and of the hyper-parameter rows.
_P, _G, _M, _V, _STEP, _COPY = range(6)
_NPTR = 6
_LR, _BETA1, _BETA2, _BETA3, _EPS, _WD, _BIAS_CORRECTION, _ADAPT, _TRUST_CLIP, _SIGN = range(10)
_NROW = 10


@triton.jit
def _lamb_grad_norm_kernel(
    ptrs_ptr,  # int64 [T, NPTR]
    numel_ptr,  # int64 [T]
    unit_tensor_ptr,  # int32 [U]
    unit_slot_ptr,  # int32 [U]
    nslots_ptr,  # int32 [T]
    partial_ptr,  # fp32 [num_programs]
    n_units,
    grad_like_ptr,  # any grad of the launch, for its dtype
    amp_ptr,  # fp32 [2]: 1 / grad scale, found inf (read when AMP)
    NPTR: tl.constexpr,
    AMP: tl.constexpr,
    BLOCK: tl.constexpr,
):
    i_p = tl.program_id(0)
    inv_scale = 1.0
    if AMP:
        inv_scale = tl.load(amp_ptr)
    o_b = tl.arange(0, BLOCK)
    b_acc = tl.zeros([BLOCK], dtype=tl.float32)
    for i_u in range(i_p, n_units, tl.num_programs(0)):
        i_t, slot, ns, n = unit_of(i_u, unit_tensor_ptr, unit_slot_ptr, nslots_ptr, numel_ptr)
        p_g = tl.load(ptrs_ptr + i_t * NPTR + 1).to(tl.pointer_type(grad_like_ptr.dtype.element_ty))
        for i_blk in range(slot, tl.cdiv(n, BLOCK), ns):
            o_x = i_blk * BLOCK + o_b
            b_g = tl.load(p_g + o_x, mask=o_x < n, other=0.0).to(tl.float32) * inv_scale
            b_acc += b_g * b_g
    tl.store(partial_ptr + i_p, tl.sum(b_acc, axis=0))


@triton.jit
def _lamb_update(b_m, b_v, b_w, bc1, bc2, eps, wd):
    return (b_m / bc1) / (tl.sqrt(b_v / bc2) + eps) + wd * b_w


@triton.jit
def _bias_correction(beta, t, on):
    # In fp64: in fp32, 1 - beta^t loses most of its digits at the first steps (beta2 = 0.999).
    return tl.where(on != 0, 1.0 - tl.exp2(t * tl.log2(beta)), 1.0).to(tl.float32)


@triton.jit
def _lamb_moments_kernel(
    ptrs_ptr,  # int64 [T, NPTR]
    numel_ptr,  # int64 [T]
    rows_ptr,  # fp64 [T, NROW]
    unit_tensor_ptr,  # int32 [U]
    unit_slot_ptr,  # int32 [U]
    nslots_ptr,  # int32 [T]
    slot_base_ptr,  # int32 [T]
    w_sq_ptr,  # fp32 [total_slots]
    u_sq_ptr,  # fp32 [total_slots]
    new_step_ptr,  # fp32 [T]
    gnorm_partial_ptr,  # fp32 [n_gnorm]
    n_gnorm,
    max_grad_norm,
    param_like_ptr,
    grad_like_ptr,
    copy_like_ptr,  # a param of the launch when COPY (w is then its fp32 master)
    amp_ptr,  # fp32 [2]: 1 / grad scale, found inf (read when AMP)
    NROW: tl.constexpr,
    NPTR: tl.constexpr,
    COPY: tl.constexpr,
    CLIP: tl.constexpr,
    AMP: tl.constexpr,
    MAX_SLOTS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    i_u = tl.program_id(0)
    i_t, slot, ns, n = unit_of(i_u, unit_tensor_ptr, unit_slot_ptr, nslots_ptr, numel_ptr)
    p_w = tl.load(ptrs_ptr + i_t * NPTR + 0).to(tl.pointer_type(param_like_ptr.dtype.element_ty))
    p_g = tl.load(ptrs_ptr + i_t * NPTR + 1).to(tl.pointer_type(grad_like_ptr.dtype.element_ty))
    p_m = tl.load(ptrs_ptr + i_t * NPTR + 2).to(tl.pointer_type(tl.float32))
    p_v = tl.load(ptrs_ptr + i_t * NPTR + 3).to(tl.pointer_type(tl.float32))
    p_step = tl.load(ptrs_ptr + i_t * NPTR + 4).to(tl.pointer_type(tl.float32))
    p_c = tl.load(ptrs_ptr + i_t * NPTR + 5).to(tl.pointer_type(copy_like_ptr.dtype.element_ty))
    p_row = rows_ptr + i_t * NROW
    lr = tl.load(p_row + 0).to(tl.float32)
    beta1 = tl.load(p_row + 1)
    beta2 = tl.load(p_row + 2)
    beta3 = tl.load(p_row + 3).to(tl.float32)
    eps = tl.load(p_row + 4).to(tl.float32)
    wd = tl.load(p_row + 5).to(tl.float32)
    bias_correction = tl.load(p_row + 6)
    adapt = tl.load(p_row + 7)
    sign = tl.load(p_row + 9).to(tl.float32)

    t_old = tl.load(p_step)
    t = t_old.to(tl.float64) + 1.0
    bc1 = _bias_correction(beta1, t, bias_correction)
    bc2 = _bias_correction(beta2, t, bias_correction)

    g_scale = sign
    new_t = t.to(tl.float32)
    if AMP:
        g_scale = sign * tl.load(amp_ptr)
        skip = tl.load(amp_ptr + 1) != 0.0
        # A skipped step touches nothing: no blocks, and `step` keeps its value.
        n = tl.where(skip, 0, n)
        new_t = tl.where(skip, t_old, new_t)
    if slot == 0:
        tl.store(new_step_ptr + i_t, new_t)
    if CLIP:
        o_s = tl.arange(0, MAX_SLOTS)
        b_part = tl.load(gnorm_partial_ptr + o_s, mask=o_s < n_gnorm, other=0.0)
        gnorm = tl.sqrt(tl.sum(b_part, axis=0))
        # NaN propagates as in the other paths: a non-finite global norm poisons every grad.
        g_scale = g_scale / tl.maximum(gnorm / max_grad_norm, 1.0, propagate_nan=tl.PropagateNan.ALL)

    beta1_f = beta1.to(tl.float32)
    beta2_f = beta2.to(tl.float32)
    # 1 - beta2 rounded once from fp64, as the reference's Python scalar is (not 1 - fp32(beta2)).
    one_minus_beta2 = (1.0 - beta2).to(tl.float32)
    # Tensors without a trust ratio are done in this pass: their w is stored below.
    n_direct = tl.where(adapt == 0, n, 0)
    o_b = tl.arange(0, BLOCK)
    b_w_sq = tl.zeros([BLOCK], dtype=tl.float32)
    b_u_sq = tl.zeros([BLOCK], dtype=tl.float32)
    for i_blk in range(slot, tl.cdiv(n, BLOCK), ns):
        o_x = i_blk * BLOCK + o_b
        m_x = o_x < n
        b_g = tl.load(p_g + o_x, mask=m_x, other=0.0).to(tl.float32) * g_scale
        b_m = beta1_f * tl.load(p_m + o_x, mask=m_x, other=0.0) + beta3 * b_g
        b_v = beta2_f * tl.load(p_v + o_x, mask=m_x, other=0.0) + one_minus_beta2 * b_g * b_g
        tl.store(p_m + o_x, b_m, mask=m_x)
        tl.store(p_v + o_x, b_v, mask=m_x)
        b_w = tl.load(p_w + o_x, mask=m_x, other=0.0).to(tl.float32)
        b_u = _lamb_update(b_m, b_v, b_w, bc1, bc2, eps, wd)
        b_w_sq += b_w * b_w
        b_u_sq += b_u * b_u
        b_new = b_w - lr * b_u
        tl.store(p_w + o_x, round_to(b_new, p_w), mask=o_x < n_direct)
        if COPY:
            tl.store(p_c + o_x, round_to(b_new, p_c), mask=o_x < n_direct)
    base = tl.load(slot_base_ptr + i_t)
    tl.store(w_sq_ptr + base + slot, tl.sum(b_w_sq, axis=0))
    tl.store(u_sq_ptr + base + slot, tl.sum(b_u_sq, axis=0))


@triton.jit
def _lamb_apply_kernel(
    ptrs_ptr,  # int64 [T, NPTR]
    numel_ptr,  # int64 [T]
    rows_ptr,  # fp64 [T, NROW]
    unit_tensor_ptr,  # int32 [U]
    unit_slot_ptr,  # int32 [U]
    nslots_ptr,  # int32 [T]
    slot_base_ptr,  # int32 [T]
    w_sq_ptr,  # fp32 [total_slots]
    u_sq_ptr,  # fp32 [total_slots]
    new_step_ptr,  # fp32 [T]
    param_like_ptr,
    copy_like_ptr,
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
    p_m = tl.load(ptrs_ptr + i_t * NPTR + 2).to(tl.pointer_type(tl.float32))
    p_v = tl.load(ptrs_ptr + i_t * NPTR + 3).to(tl.pointer_type(tl.float32))
    p_step = tl.load(ptrs_ptr + i_t * NPTR + 4).to(tl.pointer_type(tl.float32))
    p_c = tl.load(ptrs_ptr + i_t * NPTR + 5).to(tl.pointer_type(copy_like_ptr.dtype.element_ty))
    p_row = rows_ptr + i_t * NROW
    lr = tl.load(p_row + 0).to(tl.float32)
    beta1 = tl.load(p_row + 1)
    beta2 = tl.load(p_row + 2)
    eps = tl.load(p_row + 4).to(tl.float32)
    wd = tl.load(p_row + 5).to(tl.float32)
    bias_correction = tl.load(p_row + 6)
    adapt = tl.load(p_row + 7)
    trust_clip = tl.load(p_row + 8)

    t = tl.load(new_step_ptr + i_t)
    if slot == 0:
        tl.store(p_step, t)
    t64 = t.to(tl.float64)
    bc1 = _bias_correction(beta1, t64, bias_correction)
    bc2 = _bias_correction(beta2, t64, bias_correction)

    w_norm = tensor_norm(w_sq_ptr, slot_base_ptr, i_t, ns, MAX_SLOTS)
    u_norm = tensor_norm(u_sq_ptr, slot_base_ptr, i_t, ns, MAX_SLOTS)
    ratio = tl.where((w_norm > 0.0) & (u_norm > 0.0), w_norm / tl.where(u_norm > 0.0, u_norm, 1.0), 1.0)
    ratio = tl.where(trust_clip != 0, tl.minimum(ratio, 1.0), ratio)

    # Tensors without a trust ratio were written in pass A: no blocks here.
    n_eff = tl.where(adapt != 0, n, 0)
    if AMP:
        n_eff = tl.where(tl.load(amp_ptr + 1) != 0.0, 0, n_eff)
    o_b = tl.arange(0, BLOCK)
    for i_blk in range(slot, tl.cdiv(n_eff, BLOCK), ns):
        o_x = i_blk * BLOCK + o_b
        m_x = o_x < n
        b_m = tl.load(p_m + o_x, mask=m_x, other=0.0)
        b_v = tl.load(p_v + o_x, mask=m_x, other=0.0)
        b_w = tl.load(p_w + o_x, mask=m_x, other=0.0).to(tl.float32)
        b_u = _lamb_update(b_m, b_v, b_w, bc1, bc2, eps, wd)
        b_new = b_w - lr * (b_u * ratio)
        tl.store(p_w + o_x, round_to(b_new, p_w), mask=m_x)
        if COPY:
            tl.store(p_c + o_x, round_to(b_new, p_c), mask=m_x)


def lamb_step_(
    calls,
    *,
    max_grad_norm: float | None,
    grad_norm: Tensor | None = None,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
) -> None:
    """One LAMB step for several param groups: `calls` is a list of
    ((params, grads, exp_avgs, exp_avg_sqs, steps), hyper) with `hyper` the keyword arguments of
    `fused_optim.lamb` for that group (`master_params` included). With `max_grad_norm`, grads are clipped by
    `grad_norm` when given, else by the norm over all grads of `calls`. `grad_scale` / `found_inf` (GradScaler's
    device scalars): grads are divided by the scale, and the step is skipped on device where `found_inf` != 0."""
    entries = []  # (param or its master, grad, m, v, step, row, param when mastered)
    for (params, grads, exp_avgs, exp_avg_sqs, steps), h in calls:
        masters = h.get("master_params")
        others = [list(grads), list(exp_avgs), list(exp_avg_sqs)] + ([list(masters)] if masters is not None else [])
        check_tensors("LAMB", list(params), others)
        for m in list(exp_avgs) + list(exp_avg_sqs):
            if m.dtype != torch.float32:
                raise RuntimeError(f"LAMB fused kernels keep state in float32, got {m.dtype}")
        lr = h["lr"]
        if isinstance(lr, Tensor) and lr.device.type != "cpu":
            raise RuntimeError("LAMB(fused=True) takes lr as a float or a CPU tensor")
        row = [0.0] * _NROW
        row[_LR] = float(lr)
        row[_BETA1], row[_BETA2] = h["beta1"], h["beta2"]
        row[_BETA3] = 1.0 - h["beta1"] if h["grad_averaging"] else 1.0
        row[_EPS], row[_WD] = h["eps"], h["weight_decay"]
        row[_BIAS_CORRECTION] = float(h["bias_correction"])
        row[_ADAPT] = float(h["weight_decay"] != 0 or h["always_adapt"])
        row[_TRUST_CLIP] = float(h["trust_clip"])
        row[_SIGN] = -1.0 if h["maximize"] else 1.0
        for i in range(len(params)):
            if masters is None:
                entries.append((params[i], grads[i], exp_avgs[i], exp_avg_sqs[i], steps[i], row, None))
            else:
                entries.append((masters[i], grads[i], exp_avgs[i], exp_avg_sqs[i], steps[i], row, params[i]))
    if not entries:
        return
    for e in entries:
        if e[4].device != e[0].device or e[4].dtype != torch.float32:
            raise RuntimeError("LAMB fused kernels need float32 `step` tensors on the param's device")

    cfg = CONFIG
    # One launch set per (device, param dtype, grad dtype, dtype of the param behind a master).
    sets: dict[tuple, list] = {}
    for e in entries:
        sets.setdefault((e[0].device, e[0].dtype, e[1].dtype, e[6] is not None and e[6].dtype), []).append(e)

    amp = {key: amp_scalars(key[0], grad_scale, found_inf) for key in sets}
    clip = bool(max_grad_norm)
    gnorm_partials: dict[tuple, Tensor] = {}
    if clip and grad_norm is None:
        gnorm_partials = {key: _grad_norm_partials(es, cfg, amp[key]) for key, es in sets.items()}
        if len(gnorm_partials) > 1:
            # Several dtypes or devices: every launch set reads the same total.
            first = next(iter(sets))[0]
            total = torch.stack([part.sum().to(first) for part in gnorm_partials.values()]).sum()
            gnorm_partials = {key: total.reshape(1).to(key[0]) for key in sets}
    elif clip:
        gnorm_partials = {key: (grad_norm.to(device=key[0], dtype=torch.float32) ** 2).reshape(1) for key in sets}

    for key, es in sets.items():
        _lamb_launch(es, cfg, gnorm_partials.get(key), max_grad_norm if clip else 0.0, amp[key])


def _grad_norm_partials(es, cfg, amp: Tensor | None) -> Tensor:
    device = es[0][0].device
    split = work_split(tuple(e[0].numel() for e in es), device, cfg)
    ptrs = pointer_table(_columns(es), device)
    numel = numel_table([e[0] for e in es], device)
    n_prog = min(split.units, cfg.max_slots)
    partials = torch.empty(n_prog, dtype=torch.float32, device=device)
    count_launch()
    _lamb_grad_norm_kernel[(n_prog,)](
        ptrs, numel, split.unit_tensor, split.unit_slot, split.nslots, partials, split.units, es[0][1],
        partials if amp is None else amp,
        NPTR=_NPTR, AMP=amp is not None, BLOCK=cfg.block, num_warps=cfg.num_warps,
    )
    return partials


def _columns(es) -> list[list]:
    return [[e[i] for e in es] for i in range(5)] + [[e[6] for e in es]]


def _lamb_launch(es, cfg, gnorm_partials: Tensor | None, max_grad_norm: float, amp: Tensor | None) -> None:
    device = es[0][0].device
    split = work_split(tuple(e[0].numel() for e in es), device, cfg)
    ptrs = pointer_table(_columns(es), device)
    numel = numel_table([e[0] for e in es], device)
    rows = row_table([e[5] for e in es], device)
    w_sq = torch.empty(split.total_slots, dtype=torch.float32, device=device)
    u_sq = torch.empty(split.total_slots, dtype=torch.float32, device=device)
    new_step = torch.empty(len(es), dtype=torch.float32, device=device)
    clip = gnorm_partials is not None
    copy = es[0][6] is not None
    copy_like = es[0][6] if copy else es[0][0]
    if not clip:
        gnorm_partials = w_sq  # not read
    amp_arg = w_sq if amp is None else amp  # not read without AMP
    grid = (split.units,)
    count_launch()
    _lamb_moments_kernel[grid](
        ptrs, numel, rows, split.unit_tensor, split.unit_slot, split.nslots, split.slot_base, w_sq, u_sq,
        new_step, gnorm_partials, gnorm_partials.numel(), max_grad_norm, es[0][0], es[0][1], copy_like, amp_arg,
        NROW=_NROW, NPTR=_NPTR, COPY=copy, CLIP=clip, AMP=amp is not None, MAX_SLOTS=cfg.max_slots, BLOCK=cfg.block,
        num_warps=cfg.num_warps,
    )
    count_launch()
    _lamb_apply_kernel[grid](
        ptrs, numel, rows, split.unit_tensor, split.unit_slot, split.nslots, split.slot_base, w_sq, u_sq,
        new_step, es[0][0], copy_like, amp_arg,
        NROW=_NROW, NPTR=_NPTR, COPY=copy, AMP=amp is not None, MAX_SLOTS=cfg.max_slots, BLOCK=cfg.block,
        num_warps=cfg.num_warps,
    )
