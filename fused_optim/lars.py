"""LARS: SGD with momentum and a layer-wise trust ratio on the gradient (You et al., 2017)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._base import LayerwiseOptimizer
from ._common import (
    check_masters,
    global_grad_norm,
    select_impl,
    state_dtype,
)
from ._foreach import _multi_tensor_lars
from ._math import lars_trust_ratio

__all__ = ["LARS", "lars", "lars_trust_ratio"]


class LARS(LayerwiseOptimizer):
    r"""LARS, as a drop-in `torch.optim` optimizer with reference, multi-tensor and fused Triton paths.

    For each parameter tensor :math:`w` with gradient :math:`g` (:math:`-g` when ``maximize``):

    .. math::
        r &= \eta \frac{\lVert w \rVert}{\lVert g \rVert + \lambda \lVert w \rVert + \epsilon}
            \quad (r = 1 \text{ when } \lVert w \rVert = 0 \text{ or } \lVert g \rVert = 0;
            \ r \leftarrow \min(r / \text{lr}, 1) \text{ if trust\_clip}) \\
        d &= r (g + \lambda w) \text{ if } \lambda \ne 0 \text{ or always\_adapt, else } g \\
        b &\leftarrow \mu b + (1 - \tau) d \quad (b = d \text{ at the first step}) \\
        w &\leftarrow w - \text{lr} \cdot (d + \mu b \text{ if nesterov else } b)
            \quad (w - \text{lr} \cdot d \text{ when } \mu = 0)

    with :math:`\eta` = ``trust_coeff``, :math:`\mu` = ``momentum``, :math:`\tau` = ``dampening``. The trust
    ratio is applied before the momentum, as in timm and apex's LARC. State per parameter: ``momentum_buffer``
    (when ``momentum != 0``), fp32 whatever the param dtype (fp64 for fp64 params). The update is computed in fp32
    and rounded once to the parameter dtype. ``p.grad`` is never modified. With ``master_weights``, bf16 and fp16
    params also get ``master_param``, an fp32 copy that the update reads and writes; the param is its rounded copy.

    Paper: `Large Batch Training of Convolutional Networks <https://arxiv.org/abs/1708.03888>`_.

    Args:
        params: parameters or param groups (see :func:`fused_optim.param_groups`).
        lr: learning rate (default: 1.0, as timm). The trust ratio scales the raw step by about ``trust_coeff``,
            so useful ``lr`` values sit about 1/``trust_coeff`` above those of plain SGD.
        momentum: momentum factor :math:`\mu` (default: 0).
        dampening: dampening :math:`\tau` for momentum (default: 0).
        weight_decay: L2 penalty :math:`\lambda`, inside the trust ratio (default: 0).
        nesterov: Nesterov momentum (default: False).
        trust_coeff: trust coefficient :math:`\eta` (default: 0.001).
        eps: added to the denominator of the trust ratio (default: 1e-8).
        trust_clip: LARC clipping, :math:`r \leftarrow \min(r/\text{lr}, 1)` (default: False).
        always_adapt: apply the trust ratio also to groups with ``weight_decay == 0`` (default: False: such groups
            take plain SGD steps).
        maximize: maximize the objective (default: False).
        skip_nonfinite: skip the whole step (params and buffers unchanged) when a gradient of any group is inf or
            NaN, i.e. when their global norm is not finite (default: False: applied like torch.optim does). Decided
            on the device on the fused path (without dampening); the other paths read the flag.
        master_weights: keep an fp32 master copy of each bf16/fp16 param in the state and update that, so steps
            smaller than the param dtype's resolution are not lost (default: False; no effect on fp32 params).
        foreach: use the multi-tensor ``torch._foreach_*`` path (default: None: the path for the params' device).
        fused: use the fused Triton kernels (default: None: used for CUDA params when triton is installed).

    Equal to other implementations, for the settings given (tested):

    - ``timm.optim.Lars``: same argument names, order and defaults, same update for every option (timm keeps the
      momentum buffer in the gradient dtype; here it is fp32).
    - ``colossalai.nn.optimizer.Lars(lr, momentum=0, eeta, weight_decay, epsilon)``: ``trust_coeff=eeta,
      eps=epsilon, always_adapt=True`` while its clamps do not act (trust ratio at most 50, every component of
      :math:`g + \lambda w` within ±10). With momentum ColossalAI applies the trust ratio *after* the momentum
      (its buffer accumulates :math:`g + \lambda w`) and has no dampening; that variant is not offered.
    - The study's hand-written LARS (trust ratio :math:`\lVert w \rVert / \lVert b \rVert` on the updated
      momentum buffer, no :math:`\eta`, frozen when :math:`\lVert w \rVert = 0`): not offered.
    """

    _fp32_state = ("momentum_buffer", "master_param")
    _state_keys = ("momentum_buffer", "master_param")
    _required_group_keys = (
        "lr", "momentum", "dampening", "weight_decay", "nesterov", "trust_coeff", "eps", "trust_clip", "always_adapt",
    )

    def __init__(
        self,
        params,
        lr: float | Tensor = 1.0,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        trust_coeff: float = 0.001,
        eps: float = 1e-8,
        trust_clip: bool = False,
        always_adapt: bool = False,
        *,
        maximize: bool = False,
        skip_nonfinite: bool = False,
        master_weights: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        if not isinstance(skip_nonfinite, bool):
            raise ValueError(f"Invalid skip_nonfinite value: {skip_nonfinite!r} (expected a bool)")
        if fused and foreach:
            raise ValueError("LARS: `fused` and `foreach` cannot both be True")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            trust_coeff=trust_coeff,
            eps=eps,
            trust_clip=trust_clip,
            always_adapt=always_adapt,
            maximize=maximize,
            skip_nonfinite=skip_nonfinite,
            master_weights=master_weights,
            foreach=foreach,
            fused=fused,
        )
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any]) -> None:
        lr = group["lr"]
        if isinstance(lr, Tensor):
            if lr.numel() != 1:
                raise ValueError(f"Tensor lr must be a single element, got shape {tuple(lr.shape)}")
        elif not lr >= 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not group["momentum"] >= 0.0:
            raise ValueError(f"Invalid momentum value: {group['momentum']}")
        if not 0.0 <= group["dampening"] <= 1.0:
            raise ValueError(f"Invalid dampening value: {group['dampening']}")
        if not group["weight_decay"] >= 0.0:
            raise ValueError(f"Invalid weight_decay value: {group['weight_decay']}")
        if not group["trust_coeff"] > 0.0:
            raise ValueError(f"Invalid trust_coeff value: {group['trust_coeff']}")
        if not group["eps"] >= 0.0:
            raise ValueError(f"Invalid epsilon value: {group['eps']}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        if group["fused"] and group["foreach"]:
            raise ValueError("LARS: `fused` and `foreach` cannot both be True")
        if not isinstance(group["master_weights"], bool):
            raise ValueError(f"Invalid master_weights value: {group['master_weights']!r} (expected a bool)")

    def _amp_fusable(self) -> bool:
        # Under a scaler the first step may be skipped on the device: buffers start at zero, which equals the
        # first-step rule b = d only without dampening.
        return all(g["momentum"] == 0 or g["dampening"] == 0 for g in self.param_groups)

    @torch.no_grad()
    def step(self, closure=None):
        """Perform one optimization step; `closure` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        gathered = [(g, ps, gs) for g, ps, gs in self._gather() if ps]
        if not gathered:
            return loss
        all_params = [p for _, ps, _ in gathered for p in ps]
        first = gathered[0][0]
        impl = select_impl(all_params, first["foreach"], first["fused"], "LARS")
        amp = self._amp_scalars(impl)
        if self.defaults.get("skip_nonfinite", False):
            grad_norm = global_grad_norm([g for _, _, gs in gathered for g in gs])
            if self._skip_or_flag(grad_norm, impl, amp):
                return loss

        calls = []
        for group, group_params, group_grads in gathered:
            hyper = {k: group[k] for k in _HYPER}
            for idx, masters in self._master_split(group, group_params):
                params = [group_params[i] for i in idx]
                grads = [group_grads[i] for i in idx]
                bufs = [self.state[p].get("momentum_buffer") for p in params] if group["momentum"] != 0 else []
                calls.append(((params, grads, bufs), dict(hyper, master_params=masters)))

        if impl == "fused":
            _fused_lars(calls, **amp)
        else:
            for tensors, hyper in calls:
                lars(*tensors, foreach=impl == "foreach", fused=False, **hyper)
        for (params, _, bufs), _ in calls:
            for p, buf in zip(params, bufs):
                self.state[p]["momentum_buffer"] = buf
        return loss


_HYPER = (
    "lr",
    "momentum",
    "dampening",
    "weight_decay",
    "nesterov",
    "trust_coeff",
    "eps",
    "trust_clip",
    "always_adapt",
    "maximize",
)


def lars(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    foreach: bool | None = None,
    fused: bool | None = None,
    lr: float | Tensor,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    trust_coeff: float = 0.001,
    eps: float = 1e-8,
    trust_clip: bool = False,
    always_adapt: bool = False,
    maximize: bool = False,
    master_params: list[Tensor] | None = None,
) -> None:
    """Functional LARS for one param group; see :class:`LARS` for the algorithm.

    With momentum, `momentum_buffers` holds one entry per param: None before its first step, replaced in the
    list by the new fp32 buffer. With `master_params` (fp32, one per param), the update reads and writes them and
    rounds the result into `params`.
    """
    impl = select_impl(params, foreach, fused, "LARS")
    check_masters("LARS", params, master_params)
    hyper = dict(
        lr=lr,
        momentum=momentum,
        dampening=dampening,
        weight_decay=weight_decay,
        nesterov=nesterov,
        trust_coeff=trust_coeff,
        eps=eps,
        trust_clip=trust_clip,
        always_adapt=always_adapt,
        maximize=maximize,
    )
    if momentum != 0 and len(momentum_buffers) != len(params):
        raise ValueError(f"lars: {len(params)} params but {len(momentum_buffers)} momentum buffers")
    if impl == "fused":
        _fused_lars([((params, grads, momentum_buffers), dict(hyper, master_params=master_params))])
        return
    targets, copies = (params, None) if master_params is None else (master_params, params)
    fn = _multi_tensor_lars if impl == "foreach" else _single_tensor_lars
    fn(targets, grads, momentum_buffers, copies=copies, **hyper)


def _single_tensor_lars(
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
    """The reference: one tensor at a time, in the order of the math of the class docstring. `copies` (with fp32
    master weights in `params`): the params behind them, each set to its master rounded once."""
    for i, (p, grad) in enumerate(zip(params, grads)):
        dtype = state_dtype(p)
        g = grad.to(dtype)
        if maximize:
            g = -g
        w = p.to(dtype)
        d = g
        if weight_decay != 0 or always_adapt:
            trust_ratio = lars_trust_ratio(
                torch.linalg.vector_norm(w), torch.linalg.vector_norm(g), trust_coeff, weight_decay, eps, trust_clip, lr
            )
            d = (g + weight_decay * w) * trust_ratio
        if momentum != 0:
            buf = momentum_buffers[i]
            if buf is None:
                buf = momentum_buffers[i] = d.clone(memory_format=torch.preserve_format)
            else:
                buf.mul_(momentum).add_(d, alpha=1.0 - dampening)
            d = d + momentum * buf if nesterov else buf
        p.copy_(w - lr * d)
        if copies is not None:
            copies[i].copy_(p)


def _fused_lars(calls, grad_scale=None, found_inf=None) -> None:
    from .kernels.lars import lars_step_

    lars_step_(calls, grad_scale=grad_scale, found_inf=found_inf)
