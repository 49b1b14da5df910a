"""The torch.optim.Optimizer base shared by LAMB and LARS."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._common import LOW_PRECISION, check_param, check_step_inputs, select_impl, state_dtype


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
        if merged.get("skip_nonfinite") != self.defaults.get("skip_nonfinite"):
            raise ValueError(
                f"skip_nonfinite applies to the whole step and is set at construction; a group asked for "
                f"{merged.get('skip_nonfinite')!r}"
            )
        self._validate_group(merged)
        super().add_param_group(param_group)

    @property
    def _step_supports_amp_scaling(self) -> bool:
        """True when `step` runs the fused kernels. `torch.amp.GradScaler` then hands over its scale and inf flag as
        device tensors (`grad_scale`, `found_inf`): the kernels unscale the grads as they read them and skip the step
        on the device. On the other paths the scaler unscales the grads and skips the step itself."""
        params = [p for g in self.param_groups for p in g["params"]]
        first = self.param_groups[0]
        try:
            impl = select_impl(params, first["foreach"], first["fused"], type(self).__name__)
        except RuntimeError:
            return False
        return impl == "fused" and self._amp_fusable()

    def _amp_fusable(self) -> bool:
        return True

    def _amp_scalars(self, impl: str) -> dict[str, Tensor | None]:
        """GradScaler's `grad_scale` / `found_inf`, set on the optimizer around `step` when the fused path runs."""
        amp = {"grad_scale": getattr(self, "grad_scale", None), "found_inf": getattr(self, "found_inf", None)}
        if impl != "fused" and any(v is not None for v in amp.values()):
            raise RuntimeError(
                f"{type(self).__name__}: grad_scale / found_inf are taken by the fused path only; this step runs the "
                f"{impl} path"
            )
        return amp

    def _skip_or_flag(self, grad_norm: Tensor, impl: str, amp: dict[str, Tensor | None]) -> bool:
        """For `skip_nonfinite`: on the fused path, the non-finite flag joins GradScaler's `found_inf` in `amp` and
        the kernels skip on the device (returns False); elsewhere, True when the step is to be skipped (the flag is
        read on the host: free for CPU tensors, a sync for CUDA ones)."""
        bad = ~torch.isfinite(grad_norm)
        if impl == "fused" and self._amp_fusable():
            found = bad.to(torch.float32)
            if amp["found_inf"] is not None:
                found = found + amp["found_inf"].to(found.device, non_blocking=True).float().reshape(())
            amp["found_inf"] = found
            return False
        return bool(bad)

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

    # The hyper-parameters a saved param group must have, and the per-param state entries this optimizer keeps.
    _required_group_keys: tuple[str, ...] = ()
    _state_keys: tuple[str, ...] = ()
    # Options of other libraries' versions of the algorithm that this one can load only at these values.
    _foreign_options = {"caution": False, "decoupled_decay": False, "corrected_weight_decay": False}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for key in ("maximize", "foreach", "fused", "master_weights"):
                group.setdefault(key, self.defaults.get(key, False))

    def _master_split(self, group: dict[str, Any], params: list[Tensor]) -> list[tuple[list[int], list | None]]:
        """Indices of `params` updated directly, and of those updated through their fp32 master copy (with the
        masters, created on first use from the param), for one group."""
        direct, mastered, masters = [], [], []
        for i, p in enumerate(params):
            state = self.state[p]
            if group["master_weights"] and p.dtype in LOW_PRECISION:
                if "master_param" not in state:
                    state["master_param"] = torch.empty_like(
                        p, dtype=torch.float32, memory_format=torch.preserve_format
                    ).copy_(p)
                mastered.append(i)
                masters.append(state["master_param"])
            else:
                # A master left by a checkpoint of a run with master_weights=True: the param is now the truth.
                state.pop("master_param", None)
                direct.append(i)
        return [(idx, m) for idx, m in ((direct, None), (mastered, masters)) if idx]

    def _checked_state_dict(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        """Validate `state_dict` against this optimizer and its params, and return it in this optimizer's format
        (timm's per-group `step` becomes per-param state). Raises ValueError before anything is changed."""
        name = type(self).__name__
        if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= state_dict.keys():
            raise ValueError(f"{name}.load_state_dict expects a dict with 'state' and 'param_groups'")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"the state_dict has {len(saved_groups)} param groups, this {name} has {len(self.param_groups)}"
            )
        groups, state = [], {}
        for i, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            missing = [k for k in self._required_group_keys if k not in saved]
            if missing:
                raise ValueError(
                    f"the state_dict is not one of a {name}: its param group {i} has no {', '.join(missing)}"
                )
            odd = {k: saved[k] for k, ok in self._foreign_options.items() if k in saved and saved[k] != ok}
            if odd:
                raise ValueError(f"{name} cannot continue a run with {odd} (param group {i})")
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"param group {i} of the state_dict has {len(saved['params'])} params, this {name}'s has "
                    f"{len(group['params'])}"
                )
            group_step = saved.get("step")
            for p, pid in zip(group["params"], saved["params"]):
                entry = state_dict["state"].get(pid)
                if not entry:
                    continue
                unknown = set(entry) - set(self._state_keys)
                if unknown:
                    raise ValueError(
                        f"the state_dict is not one of a {name}: it holds {', '.join(sorted(map(str, unknown)))}"
                    )
                for key, value in entry.items():
                    if key != "step" and isinstance(value, Tensor) and value.shape != p.shape:
                        raise ValueError(
                            f"state '{key}' of shape {tuple(value.shape)} for a param of shape {tuple(p.shape)} "
                            f"(param group {i}): the state_dict belongs to other parameters"
                        )
                entry = dict(entry)
                if "step" in self._state_keys and "step" not in entry and group_step is not None:
                    entry["step"] = torch.as_tensor(group_step, dtype=torch.float32).clone()
                state[pid] = entry
            groups.append({k: v for k, v in saved.items() if k not in self._foreign_options and k != "step"})
        for key, value in state_dict["state"].items():
            state.setdefault(key, value)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's load_state_dict, plus: a clear error (and no change) for the state of another optimizer or of
        other parameters; timm's Lamb/Lars state loads; fp32 state stays fp32 for low-precision params."""
        state_dict = self._checked_state_dict(state_dict)
        saved_groups = state_dict["param_groups"]
        saved_state = state_dict["state"]
        super().load_state_dict(state_dict)
        # torch casts floating state to the param dtype, which would round fp32 moments of bf16 params to bf16:
        # restore those entries from the saved tensors instead.
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
