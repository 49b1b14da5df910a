"""The torch.optim.Optimizer base shared by LAMB and LARS."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._common import check_param, check_step_inputs, state_dtype


class LayerwiseOptimizer(torch.optim.Optimizer):
    """Adds to torch.optim.Optimizer: group validation, fp32 state that survives `load_state_dict`, and a
    gather step that checks every group before any state is touched."""

    # Per-param state entries kept in fp32 (fp64 for fp64 params) whatever the param dtype.
    _fp32_state: tuple[str, ...] = ()

    def _validate_group(self, group: dict[str, Any]) -> None:
        raise NotImplementedError

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        name = type(self).__name__
        for p in params:
            check_param(name, p)
        merged = {**self.defaults, **param_group}
        self._validate_group(merged)
        super().add_param_group(param_group)

    def _gather(self) -> list[tuple[dict[str, Any], list[Tensor], list[Tensor]]]:
        """(group, params with a grad, their grads) for every group, after checking all of them."""
        name = type(self).__name__
        out = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            grads = [p.grad for p in params]
            check_step_inputs(name, params, grads)
            out.append((group, params, grads))
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # torch casts floating state to the param dtype, which would round fp32 moments of bf16 params to bf16:
        # restore those entries from the saved tensors instead.
        saved_groups = state_dict["param_groups"]
        saved_state = state_dict["state"]
        super().load_state_dict(state_dict)
        for group, saved_group in zip(self.param_groups, saved_groups):
            for p, pid in zip(group["params"], saved_group["params"]):
                saved = saved_state.get(pid)
                if not saved:
                    continue
                for key in self._fp32_state:
                    value = saved.get(key)
                    if isinstance(value, Tensor):
                        self.state[p][key] = value.to(device=p.device, dtype=state_dtype(p), copy=True)
                step = saved.get("step")
                if isinstance(step, Tensor):
                    self.state[p]["step"] = step.to(dtype=torch.float32, copy=True)
