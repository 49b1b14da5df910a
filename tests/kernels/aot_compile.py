"""Compile every kernel variant ahead of time for an NVIDIA target, without a GPU.

Run as a script (`python tests/kernels/aot_compile.py [--arch 90]`) with TRITON_INTERPRET unset: Triton then builds
the kernels through its real pipeline (TTIR, TTGIR, LLVM IR, PTX, cubin via the bundled ptxas) for the given
compute capability, so a kernel that only runs under the interpreter, or only with one Triton version, fails here.
Prints one line per compiled variant; exits non-zero on the first failure.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys

if os.environ.get("TRITON_INTERPRET", "0") == "1":
    sys.exit("aot_compile: unset TRITON_INTERPRET (the interpreter does not compile)")

import triton  # noqa: E402
from fused_optim.kernels import _table  # noqa: E402
from fused_optim.kernels import lamb as lamb_kernels  # noqa: E402
from fused_optim.kernels import lars as lars_kernels  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

POINTERS = {
    "ptrs_ptr": "*i64", "numel_ptr": "*i64", "rows_ptr": "*fp64", "unit_tensor_ptr": "*i32", "unit_slot_ptr": "*i32",
    "nslots_ptr": "*i32", "slot_base_ptr": "*i32",
}
SCALARS = {"n_units": "i32", "n_gnorm": "i32", "max_grad_norm": "fp32"}
# (param, grad, param behind a master): fp32, bf16 and fp16 params; bf16 params through fp32 masters.
DTYPES = [("fp32", "fp32", None), ("bf16", "bf16", None), ("fp16", "fp16", None), ("fp32", "bf16", "bf16")]


def _signature(fn, dtypes, consts):
    param, grad, copy = dtypes
    sig, constexprs = {}, {}
    for i, name in enumerate(inspect.signature(fn.fn).parameters):
        if name in consts:
            sig[name], constexprs[(i,)] = "constexpr", consts[name]
        elif name in POINTERS:
            sig[name] = POINTERS[name]
        elif name in SCALARS:
            sig[name] = SCALARS[name]
        elif name == "param_like_ptr":
            sig[name] = f"*{param}"
        elif name == "grad_like_ptr":
            sig[name] = f"*{grad}"
        elif name == "copy_like_ptr":
            sig[name] = f"*{copy or param}"
        elif name.endswith("_ptr"):
            sig[name] = "*fp32"
        else:
            raise KeyError(f"{fn.fn.__name__}: no type for argument {name!r}")
    return sig, constexprs


def variants():
    """(kernel, dtypes, constexprs) for every flag combination the launchers use."""
    cfg = _table.Config(block=2048, blocks_per_program=4, max_slots=1024, num_warps=8)
    lamb, lars = lamb_kernels, lars_kernels
    for dtypes in DTYPES:
        copy = dtypes[2] is not None
        for amp in (False, True):
            yield lamb._lamb_grad_norm_kernel, dtypes, dict(NPTR=lamb._NPTR, AMP=amp, BLOCK=cfg.block)
            yield lars._lars_norms_kernel, dtypes, dict(NROW=lars._NROW, NPTR=lars._NPTR, AMP=amp, BLOCK=cfg.block)
            yield lamb._lamb_apply_kernel, dtypes, dict(NROW=lamb._NROW, NPTR=lamb._NPTR, COPY=copy, AMP=amp,
                                                        MAX_SLOTS=cfg.max_slots, BLOCK=cfg.block)
            yield lars._lars_apply_kernel, dtypes, dict(NROW=lars._NROW, NPTR=lars._NPTR, COPY=copy, AMP=amp,
                                                        MAX_SLOTS=cfg.max_slots, BLOCK=cfg.block)
            for clip in (False, True):
                yield lamb._lamb_moments_kernel, dtypes, dict(NROW=lamb._NROW, NPTR=lamb._NPTR, COPY=copy, CLIP=clip,
                                                              AMP=amp, MAX_SLOTS=cfg.max_slots, BLOCK=cfg.block)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 for H100/H200 (default: 90)")
    p.add_argument("--quick", action="store_true", help="fp32 and bf16-with-masters only")
    args = p.parse_args(argv)
    target = GPUTarget("cuda", args.arch, 32)
    count = 0
    for fn, dtypes, consts in variants():
        if args.quick and dtypes not in (DTYPES[0], DTYPES[3]):
            continue
        sig, constexprs = _signature(fn, dtypes, consts)
        compiled = triton.compile(ASTSource(fn, sig, constexprs, {}), target=target, options={"num_warps": 8})
        flags = ",".join(f"{k}={int(v)}" for k, v in consts.items() if isinstance(v, bool))
        print(f"sm_{args.arch} {fn.fn.__name__} {'/'.join(d or '-' for d in dtypes)} {flags}: "
              f"{len(compiled.asm['cubin'])} B cubin", flush=True)
        count += 1
    print(f"{count} kernel variants compiled with triton {triton.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
