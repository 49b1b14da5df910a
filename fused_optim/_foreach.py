"""The multi-tensor paths: compiled loops for fp32 CPU tensors (`_cpu`), else `torch._foreach_*` ops over
chunk-sized slices (`Buckets`)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from . import _cpu
from ._common import Buckets, combine_norms, state_dtype, uniform_groups
from ._math import bias_corrections, lamb_trust_ratio, lars_trust_ratio


def _multi_tensor_lamb(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    clip_coef: Tensor | None,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    bias_correction: bool,
    grad_averaging: bool,
    trust_clip: bool,
    always_adapt: bool,
    maximize: bool,
    copies: list[Tensor] | None = None,
) -> None:
    """Two passes per tensor: compiled loops for fp32 CPU tensors (see `_cpu`), else `torch._foreach_*` ops over
    chunk-sized slices (see `Buckets`).

    Pass A updates m and v and takes the norms of w and u per chunk; pass B recomputes u from m, v, w and applies
    lr * r. Working per chunk keeps u and the denominator in cache, so memory sees about the 40 B/param (fp32)
    of the two-pass bound instead of one round trip per elementwise op. `copies` (with fp32 master weights): the
    params behind `params`, each written as its master rounded once where the master is written.
    """
    if not params:
        return
    split = uniform_groups(params, grads)
    if len(split) > 1:
        for idx in split:
            _multi_tensor_lamb(*([t[i] for i in idx] for t in (params, grads, exp_avgs, exp_avg_sqs, state_steps)),
                               clip_coef=clip_coef, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                               weight_decay=weight_decay, bias_correction=bias_correction,
                               grad_averaging=grad_averaging, trust_clip=trust_clip, always_adapt=always_adapt,
                               maximize=maximize, copies=None if copies is None else [copies[i] for i in idx])
        return
    if _cpu.usable(params, grads, exp_avgs, exp_avg_sqs) and not (isinstance(lr, Tensor) and lr.is_cuda):
        _cpu.lamb(params, grads, exp_avgs, exp_avg_sqs, state_steps, clip_coef=clip_coef, lr=lr, beta1=beta1,
                  beta2=beta2, eps=eps, weight_decay=weight_decay, bias_correction=bias_correction,
                  grad_averaging=grad_averaging, trust_clip=trust_clip, always_adapt=always_adapt, maximize=maximize)
        if copies is not None:
            torch._foreach_copy_(copies, params)
        return
    torch._foreach_add_(state_steps, 1.0)
    # u = c * m / (sqrt(v) + eps * sqrt(b2)) + wd * w with c = sqrt(b2) / b1: the bias corrections become
    # per-tensor scalars instead of two extra passes.
    eps_hat, scale = [], []
    for step in state_steps:
        bc1, bc2 = bias_corrections(step, beta1, beta2, bias_correction)
        eps_hat.append(eps * math.sqrt(bc2))
        scale.append(math.sqrt(bc2) / bc1)
    adapt = weight_decay != 0 or always_adapt
    low_precision = params[0].dtype != exp_avgs[0].dtype
    low_precision_grads = grads[0].dtype != exp_avgs[0].dtype
    buckets = Buckets([params, grads, exp_avgs, exp_avg_sqs] + ([copies] if copies is not None else []))

    def fp32(ts: list[Tensor], convert: bool = low_precision) -> list[Tensor]:
        return [t.to(exp_avgs[0].dtype) for t in ts] if convert else ts

    def update_of(owners, w, m, v) -> list[Tensor]:
        den = torch._foreach_sqrt(v)
        torch._foreach_add_(den, [eps_hat[i] for i in owners])
        u = torch._foreach_div(m, den)
        if bias_correction:
            torch._foreach_mul_(u, [scale[i] for i in owners])
        if weight_decay != 0:
            torch._foreach_add_(u, w, alpha=weight_decay)
        return u

    w_norms, u_norms = [], []
    for owners, (p, g, m, v, *copy) in buckets:
        g = fp32(g, low_precision_grads)
        if maximize:
            g = torch._foreach_neg(g)
        if clip_coef is not None:
            g = torch._foreach_div(g, clip_coef)
        if grad_averaging:
            torch._foreach_lerp_(m, g, 1.0 - beta1)
        else:
            torch._foreach_mul_(m, beta1)
            torch._foreach_add_(m, g)
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, g, g, value=1.0 - beta2)
        w = fp32(p)
        u = update_of(owners, w, m, v)
        if adapt:
            w_norms.append(torch._foreach_norm(w))
            u_norms.append(torch._foreach_norm(u))
            continue
        _apply(p, w, u, -lr, low_precision, copy)

    if not adapt:
        return
    w_norm = combine_norms(len(params), buckets.owners, w_norms, params[0])
    u_norm = combine_norms(len(params), buckets.owners, u_norms, params[0])
    step_size = (lamb_trust_ratio(w_norm, u_norm, trust_clip) * -lr).unbind(0)
    for owners, (p, _, m, v, *copy) in buckets:
        w = fp32(p)
        u = update_of(owners, w, m, v)
        _apply(p, w, u, [step_size[i] for i in owners], low_precision, copy)


def _apply(p: list[Tensor], w: list[Tensor], u: list[Tensor], step_size, low_precision: bool, copy: list) -> None:
    """w += step_size * u, step_size a number or one scalar tensor per slice; rounded once into the param dtype
    (and into the param behind a master: `copy`, empty or one list of slices)."""
    if isinstance(step_size, list):
        torch._foreach_addcmul_(w, u, step_size)
    elif isinstance(step_size, Tensor):
        torch._foreach_add_(w, torch._foreach_mul(u, step_size))
    else:
        torch._foreach_add_(w, u, alpha=step_size)
    if low_precision:
        torch._foreach_copy_(p, w)
    for c in copy:
        torch._foreach_copy_(c, w)


def _multi_tensor_lars(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    lr: float | Tensor,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    trust_coeff: float,
    eps: float,
    trust_clip: bool,
    always_adapt: bool,
    maximize: bool,
    copies: list[Tensor] | None = None,
) -> None:
    """Two passes: the norms of w and g, then the update (28 B/param for fp32). Compiled loops for fp32 CPU
    tensors (see `_cpu`), else `torch._foreach_*` ops over chunk-sized slices (see `Buckets`). `copies`: as for
    `_multi_tensor_lamb`."""
    if not params:
        return
    split = uniform_groups(params, grads)
    if len(split) > 1:
        hyper = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                     trust_coeff=trust_coeff, eps=eps, trust_clip=trust_clip, always_adapt=always_adapt,
                     maximize=maximize)
        for idx in split:
            bufs = [momentum_buffers[i] for i in idx] if momentum != 0 else []
            _multi_tensor_lars([params[i] for i in idx], [grads[i] for i in idx], bufs, **hyper,
                               copies=None if copies is None else [copies[i] for i in idx])
            for j, i in enumerate(idx if momentum != 0 else []):
                momentum_buffers[i] = bufs[j]
        return
    buffers = [b for b in momentum_buffers if b is not None] if momentum != 0 else []
    if _cpu.usable(params, grads, buffers) and not (isinstance(lr, Tensor) and lr.is_cuda):
        _cpu.lars(params, grads, momentum_buffers, lr=lr, momentum=momentum, dampening=dampening,
                  weight_decay=weight_decay, nesterov=nesterov, trust_coeff=trust_coeff, eps=eps,
                  trust_clip=trust_clip, always_adapt=always_adapt, maximize=maximize)
        if copies is not None:
            torch._foreach_copy_(copies, params)
        return
    adapt = weight_decay != 0 or always_adapt
    low_precision = params[0].dtype != state_dtype(params[0])
    low_precision_grads = grads[0].dtype != state_dtype(params[0])
    fresh = set()
    if momentum != 0:
        for i, p in enumerate(params):
            if momentum_buffers[i] is None:
                momentum_buffers[i] = torch.empty_like(p, dtype=state_dtype(p))
                fresh.add(i)
    lists = [params, grads] + ([momentum_buffers] if momentum != 0 else []) + ([copies] if copies is not None else [])
    buckets = Buckets(lists)

    def fp32(ts: list[Tensor], convert: bool = low_precision) -> list[Tensor]:
        return [t.to(state_dtype(params[0])) for t in ts] if convert else ts

    if adapt:
        w_norms, g_norms = [], []
        for _, (p, g, *_) in buckets:
            w_norms.append(torch._foreach_norm(p, 2, dtype=state_dtype(params[0])))
            g_norms.append(torch._foreach_norm(g, 2, dtype=state_dtype(params[0])))
        w_norm = combine_norms(len(params), buckets.owners, w_norms, params[0])
        g_norm = combine_norms(len(params), buckets.owners, g_norms, params[0])
        trust_ratio = lars_trust_ratio(w_norm, g_norm, trust_coeff, weight_decay, eps, trust_clip, lr)
        # maximize: d = -r (g - wd * w); the sign rides on the ratio.
        trust_ratio = (-trust_ratio if maximize else trust_ratio).to(state_dtype(params[0])).unbind(0)

    for owners, (p, g, *rest) in buckets:
        g = fp32(g, low_precision_grads)
        w = fp32(p)
        if adapt:
            d = torch._foreach_add(g, w, alpha=-weight_decay if maximize else weight_decay)
            torch._foreach_mul_(d, [trust_ratio[i] for i in owners])
        elif maximize:
            d = torch._foreach_neg(g)
        else:
            d = g
        if momentum != 0:
            buf = rest[0]
            new = [j for j, i in enumerate(owners) if i in fresh]
            old = [j for j, i in enumerate(owners) if i not in fresh]
            if new:
                torch._foreach_copy_([buf[j] for j in new], [d[j] for j in new])
            if old:
                old_buf = [buf[j] for j in old]
                torch._foreach_mul_(old_buf, momentum)
                torch._foreach_add_(old_buf, [d[j] for j in old], alpha=1.0 - dampening)
            step = torch._foreach_add(d, buf, alpha=momentum) if nesterov else buf
        else:
            step = d
        if isinstance(lr, Tensor):
            torch._foreach_add_(w, torch._foreach_mul(step, -lr))
        else:
            torch._foreach_add_(w, step, alpha=-lr)
        if low_precision:
            torch._foreach_copy_(p, w)
        if copies is not None:
            torch._foreach_copy_(rest[-1], w)
