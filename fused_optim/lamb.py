"""LAMB: Adam moments with a layer-wise trust ratio (You et al., 2019)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._base import LayerwiseOptimizer
from ._common import (
    check_masters,
    global_grad_norm,
    select_impl,
    state_zeros,
    step_device,
)
from ._foreach import _multi_tensor_lamb
from ._math import bias_corrections, lamb_direction, lamb_trust_ratio

__all__ = ["LAMB", "lamb", "lamb_direction", "lamb_trust_ratio"]


class LAMB(LayerwiseOptimizer):
    r"""LAMB, as a drop-in `torch.optim` optimizer with reference, multi-tensor and fused Triton paths.

    For each parameter tensor :math:`w` with gradient :math:`g`, at its step :math:`t`:

    .. math::
        \hat g &= \pm g / c, \quad c = \max(1, \lVert G \rVert / \text{max\_grad\_norm})
            \quad (\lVert G \rVert \text{ the global norm of all gradients; } c = 1 \text{ when clipping is off}) \\
        m &\leftarrow \beta_1 m + \beta_3 \hat g, \quad \beta_3 = 1-\beta_1 \text{ if grad\_averaging else } 1 \\
        v &\leftarrow \beta_2 v + (1-\beta_2) \hat g^2 \\
        u &= \frac{m / b_1}{\sqrt{v / b_2} + \epsilon} + \lambda w,
            \quad b_i = 1-\beta_i^t \text{ if bias\_correction else } 1 \\
        r &= \phi\left(\lVert w \rVert / \lVert u \rVert\right)
            \text{ if } \lambda \ne 0 \text{ or always\_adapt, else } 1;
            \quad r = 1 \text{ when } \lVert w \rVert = 0 \text{ or } \lVert u \rVert = 0;
            \quad \phi(x) = \min(x, 1) \text{ if trust\_clip else } x \\
        w &\leftarrow w - \text{lr} \cdot r \cdot u

    (:math:`-g` when ``maximize``.) State per parameter: ``step`` (a float32 scalar tensor), ``exp_avg`` (m) and
    ``exp_avg_sq`` (v), always fp32 (fp64 for fp64 params), also for bf16/fp16 params. The update is computed
    in fp32 and rounded once to the parameter dtype. ``p.grad`` is never modified. With ``master_weights``, bf16
    and fp16 params also get ``master_param``, an fp32 copy that the update reads and writes; the param is its
    rounded copy (see the README's "Precision, AMP and checkpoints").

    Paper: `Large Batch Optimization for Deep Learning: Training BERT in 76 minutes
    <https://arxiv.org/abs/1904.00962>`_.

    Args:
        params: parameters or param groups (see :func:`fused_optim.param_groups`).
        lr: learning rate (default: 1e-3). Because of the trust ratio, ``lr`` is roughly the fraction of each
            layer's weight norm changed per step.
        bias_correction: divide the moments by :math:`1-\beta^t` (default: True).
        betas: coefficients of the running averages of the gradient and its square (default: (0.9, 0.999)).
        eps: added to the denominator (default: 1e-6).
        weight_decay: decoupled weight decay :math:`\lambda`, added to the update (default: 0.01).
        grad_averaging: scale the gradient by :math:`1-\beta_1` in the first moment (default: True).
        max_grad_norm: clip the global gradient norm (over all groups) to this value before the update;
            ``None`` or 0 turns clipping off (default: 1.0, as timm). Set at construction for all groups.
        trust_clip: clip the trust ratio at 1 ("LAMBC") (default: False).
        always_adapt: apply the trust ratio also to groups with ``weight_decay == 0`` (default: False: such groups,
            typically biases and norm weights, take plain Adam steps).
        maximize: maximize the objective (default: False).
        skip_nonfinite: skip the whole step (params and state unchanged, ``step`` not counted) when a gradient of
            any group is inf or NaN, i.e. when their global norm is not finite (default: False: applied like
            torch.optim does). Decided on the device on the fused path; the other paths read the flag.
        master_weights: keep an fp32 master copy of each bf16/fp16 param in the state and update that, so steps
            smaller than the param dtype's resolution are not lost (default: False; no effect on fp32 params).
        foreach: use the multi-tensor ``torch._foreach_*`` path (default: None: the path for the params' device).
        fused: use the fused Triton kernels (default: None: used for CUDA params when triton is installed).

    Equal to other implementations, for the settings given (tested):

    - ``timm.optim.Lamb``: same argument names, order and defaults, same update for every option timm shares
      (timm keeps one ``step`` per group, so params whose grads are sometimes ``None`` count steps differently;
      timm's ``caution`` and ``decoupled_decay`` are not offered).
    - ``colossalai.nn.optimizer.Lamb(bias_correction=False)`` (its default): ``bias_correction=False,
      max_grad_norm=None, always_adapt=True``. With ``bias_correction=True`` ColossalAI (like DeepSpeed) takes
      the trust ratio of the uncorrected update and folds the correction into the step size, so its step at
      step 1 is :math:`\sqrt{1-\beta_2}/(1-\beta_1)` times ours; that variant is not offered.
    - apex / ColossalAI ``FusedLAMB`` (defaults): ``max_grad_norm=1.0``, ``always_adapt=True`` (apex adapts every
      group), except that apex clips with a norm that includes params without grads' zero contribution and that
      ``max_grad_norm=0`` zeroes apex's update, while here 0 turns clipping off.
    - The study's ``pytorch-lamb`` ``Lamb`` (cybertronai): not reproducible; it has no bias correction but clamps
      :math:`\lVert w \rVert` at 10 before the ratio.
    """

    _fp32_state = ("exp_avg", "exp_avg_sq", "master_param")
    _state_keys = ("step", "exp_avg", "exp_avg_sq", "master_param")
    _required_group_keys = (
        "lr", "betas", "eps", "weight_decay", "bias_correction", "grad_averaging", "trust_clip", "always_adapt",
    )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        checked = self._checked_state_dict(state_dict)
        norms = {g.get("max_grad_norm", self.defaults["max_grad_norm"]) for g in checked["param_groups"]}
        if len(norms) > 1:
            raise ValueError(f"the state_dict's param groups disagree on max_grad_norm: {sorted(map(str, norms))}")
        super().load_state_dict(state_dict)
        # max_grad_norm clips the global norm: the checkpoint's value becomes the optimizer's.
        self.defaults["max_grad_norm"] = norms.pop()
        for group in self.param_groups:
            group["max_grad_norm"] = self.defaults["max_grad_norm"]

    def __init__(
        self,
        params,
        lr: float | Tensor = 1e-3,
        bias_correction: bool = True,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.01,
        grad_averaging: bool = True,
        max_grad_norm: float | None = 1.0,
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
        if max_grad_norm is not None and not max_grad_norm >= 0.0:
            raise ValueError(f"Invalid max_grad_norm: {max_grad_norm}")
        if fused and foreach:
            raise ValueError("LAMB: `fused` and `foreach` cannot both be True")
        defaults = dict(
            lr=lr,
            bias_correction=bias_correction,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            grad_averaging=grad_averaging,
            max_grad_norm=max_grad_norm,
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
        betas = group["betas"]
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"Invalid betas: {betas} (expected two floats)")
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
        if not group["eps"] >= 0.0:
            raise ValueError(f"Invalid epsilon value: {group['eps']}")
        if not group["weight_decay"] >= 0.0:
            raise ValueError(f"Invalid weight_decay value: {group['weight_decay']}")
        if group["max_grad_norm"] != self.defaults["max_grad_norm"]:
            raise ValueError(
                f"max_grad_norm clips the global gradient norm and is set for all groups at construction; "
                f"a group asked for {group['max_grad_norm']}"
            )
        if group["fused"] and group["foreach"]:
            raise ValueError("LAMB: `fused` and `foreach` cannot both be True")
        if not isinstance(group["master_weights"], bool):
            raise ValueError(f"Invalid master_weights value: {group['master_weights']!r} (expected a bool)")

    def _init_group(self, params: list[Tensor], impl: str) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        exp_avgs, exp_avg_sqs, steps = [], [], []
        for p in params:
            state = self.state[p]
            if "step" not in state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=step_device(p, impl))
                state["exp_avg"] = state_zeros(p)
                state["exp_avg_sq"] = state_zeros(p)
            elif state["step"].device != step_device(p, impl):
                state["step"] = state["step"].to(step_device(p, impl))
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        return exp_avgs, exp_avg_sqs, steps

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
        impl = select_impl(all_params, first["foreach"], first["fused"], "LAMB")
        max_grad_norm = self.defaults["max_grad_norm"]
        amp = self._amp_scalars(impl)
        grad_norm = None
        if self.defaults.get("skip_nonfinite", False) or (max_grad_norm and impl != "fused"):
            grad_norm = global_grad_norm([g for _, _, gs in gathered for g in gs])
            if self.defaults.get("skip_nonfinite", False) and self._skip_or_flag(grad_norm, impl, amp):
                return loss

        calls = []
        for group, group_params, group_grads in gathered:
            beta1, beta2 = group["betas"]
            hyper = dict(
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                bias_correction=group["bias_correction"],
                grad_averaging=group["grad_averaging"],
                trust_clip=group["trust_clip"],
                always_adapt=group["always_adapt"],
                maximize=group["maximize"],
            )
            for idx, masters in self._master_split(group, group_params):
                params = [group_params[i] for i in idx]
                grads = [group_grads[i] for i in idx]
                calls.append(((params, grads, *self._init_group(params, impl)), dict(hyper, master_params=masters)))

        if impl == "fused":
            # A norm of scaled grads (GradScaler's scale still in them) is no clipping norm: the kernels take theirs.
            norm = grad_norm if amp["grad_scale"] is None else None
            _fused_lamb(calls, max_grad_norm=max_grad_norm, grad_norm=norm, **amp)
            return loss
        for tensors, hyper in calls:
            lamb(*tensors, foreach=impl == "foreach", fused=False, max_grad_norm=max_grad_norm,
                 grad_norm=grad_norm, **hyper)
        return loss


def lamb(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    foreach: bool | None = None,
    fused: bool | None = None,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    bias_correction: bool = True,
    grad_averaging: bool = True,
    trust_clip: bool = False,
    always_adapt: bool = False,
    maximize: bool = False,
    max_grad_norm: float | None = None,
    grad_norm: Tensor | None = None,
    master_params: list[Tensor] | None = None,
) -> None:
    """Functional LAMB for one param group; see :class:`LAMB` for the algorithm.

    `state_steps` are float32 scalar tensors, incremented in place. With `max_grad_norm`, the gradients are
    clipped by `grad_norm` when given (e.g. the norm over several groups), else by the norm of `grads`. With
    `master_params` (fp32, one per param), the update reads and writes them and rounds the result into `params`.
    """
    impl = select_impl(params, foreach, fused, "LAMB")
    check_masters("LAMB", params, master_params)
    hyper = dict(
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        weight_decay=weight_decay,
        bias_correction=bias_correction,
        grad_averaging=grad_averaging,
        trust_clip=trust_clip,
        always_adapt=always_adapt,
        maximize=maximize,
    )
    if impl == "fused":
        tensors = (params, grads, exp_avgs, exp_avg_sqs, state_steps)
        _fused_lamb([(tensors, dict(hyper, master_params=master_params))], max_grad_norm=max_grad_norm,
                    grad_norm=grad_norm)
        return
    tensors = (master_params if master_params is not None else params, grads, exp_avgs, exp_avg_sqs, state_steps)
    clip_coef = None
    if max_grad_norm and params:
        if grad_norm is None:
            grad_norm = global_grad_norm(grads)
        clip_coef = torch.clamp(grad_norm / max_grad_norm, min=1.0)
    fn = _multi_tensor_lamb if impl == "foreach" else _single_tensor_lamb
    fn(*tensors, clip_coef=clip_coef, copies=params if master_params is not None else None, **hyper)


def _single_tensor_lamb(
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
    """The reference: one tensor at a time, in the order of the math of the class docstring. `copies` (with fp32
    master weights in `params`): the params behind them, each set to its master rounded once."""
    beta3 = 1.0 - beta1 if grad_averaging else 1.0
    for i, (p, grad, exp_avg, exp_avg_sq, step) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs, state_steps)):
        g = grad.to(exp_avg.dtype)
        if maximize:
            g = -g
        if clip_coef is not None:
            g = g / clip_coef
        step += 1
        bc1, bc2 = bias_corrections(step, beta1, beta2, bias_correction)

        exp_avg.mul_(beta1).add_(g, alpha=beta3)
        exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)

        w = p.to(exp_avg.dtype)
        update = lamb_direction(exp_avg, exp_avg_sq, w, bc1, bc2, eps, weight_decay)
        if weight_decay != 0 or always_adapt:
            trust_ratio = lamb_trust_ratio(torch.linalg.vector_norm(w), torch.linalg.vector_norm(update), trust_clip)
            update = update * trust_ratio
        p.copy_(w - lr * update)
        if copies is not None:
            copies[i].copy_(p)


def _fused_lamb(calls, *, max_grad_norm: float | None, grad_norm: Tensor | None = None, grad_scale=None,
                found_inf=None) -> None:
    from .kernels.lamb import lamb_step_

    lamb_step_(calls, max_grad_norm=max_grad_norm, grad_norm=grad_norm, grad_scale=grad_scale, found_inf=found_inf)
