"""The GPU check: the kernel tests compiled, then the fused step timed against torch's fused AdamW / SGD.

    python bench/gpu_check.py [--out DIR] [--skip-tests] [--steps N]

Needs only torch, triton, pytest (and numpy); no network. Prints a markdown table (ms, GB/s, bytes/param,
launches/step, ratio to the single-pass reference) and writes it, with the GPU name and versions, to
DIR/gpu-check.md (default: bench/results/). Finishes in a few minutes on an H100/H200.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from shapes import SHAPESETS, bytes_per_param, numel  # noqa: E402

import fused_optim  # noqa: E402

# (op, provider) -> constructor; the reference for ratios is the single-pass torch optimizer of the same family.
PROVIDERS = {
    ("lamb", "ours-fused"): lambda ps: fused_optim.LAMB(ps, lr=1e-3, weight_decay=0.01, max_grad_norm=None, fused=True),
    ("lamb", "ours-fused+clip"): lambda ps: fused_optim.LAMB(ps, lr=1e-3, weight_decay=0.01, max_grad_norm=1.0,
                                                              fused=True),
    ("lamb", "ours-foreach"): lambda ps: fused_optim.LAMB(ps, lr=1e-3, weight_decay=0.01, max_grad_norm=None,
                                                           foreach=True),
    ("lamb", "torch-adamw-fused"): lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.01, fused=True),
    ("lars", "ours-fused"): lambda ps: fused_optim.LARS(ps, lr=0.1, momentum=0.9, weight_decay=1e-4, fused=True),
    ("lars", "ours-foreach"): lambda ps: fused_optim.LARS(ps, lr=0.1, momentum=0.9, weight_decay=1e-4, foreach=True),
    ("lars", "torch-sgd-fused"): lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-4, fused=True),
}
REFERENCE = {"lamb": "torch-adamw-fused", "lars": "torch-sgd-fused"}
FLOOR = {"ours-fused": None, "ours-fused+clip": None, "ours-foreach": None, "torch-adamw-fused": "adamw",
         "torch-sgd-fused": "sgd"}


def make_params(shapes, dtype, device):
    gen = torch.Generator(device=device).manual_seed(0)
    params = []
    for s in shapes:
        p = torch.nn.Parameter(torch.randn(s, generator=gen, device=device).to(dtype))
        p.grad = (1e-2 * torch.randn(s, generator=gen, device=device)).to(dtype)
        params.append(p)
    return params


def count_launches(step, device) -> int | None:
    """Kernels launched by one call of `step`, from the profiler (None where it cannot tell)."""
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize(device)
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def time_step(step, device, steps: int) -> float:
    """Median seconds per call."""
    for _ in range(3):
        step()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(steps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
    else:
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(shapesets, dtypes, device, steps, providers=PROVIDERS) -> list[dict]:
    rows = []
    for shapeset in shapesets:
        shapes = SHAPESETS[shapeset]()
        n = numel(shapes)
        for dtype in dtypes:
            for (op, provider), make in providers.items():
                params = make_params(shapes, dtype, device)
                opt = make(params)
                seconds = time_step(opt.step, device, steps)
                launches = count_launches(opt.step, device)
                per_param = bytes_per_param(FLOOR[provider] or op, dtype.itemsize)
                if provider == "ours-fused+clip":
                    per_param += dtype.itemsize  # the grad-norm pass
                rows.append(dict(op=op, shapes=shapeset, tensors=len(shapes), numel=n, dtype=str(dtype)[6:],
                                 provider=provider, ms=seconds * 1e3, bytes_per_param=per_param,
                                 gb_per_s=per_param * n / seconds / 1e9, launches=launches))
                del opt, params
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    for row in rows:
        ref = next((r for r in rows if r["op"] == row["op"] and r["shapes"] == row["shapes"]
                    and r["dtype"] == row["dtype"] and r["provider"] == REFERENCE[row["op"]]), None)
        row["ratio"] = row["ms"] / ref["ms"] if ref else None
    return rows


def table(rows: list[dict]) -> str:
    out = ["| op | shapes | dtype | provider | ms/step | GB/s | bytes/param | launches/step | × single-pass ref |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "–"
        launches = r["launches"] if r["launches"] is not None else "–"
        out.append(
            f"| {r['op']} | {r['shapes']} ({r['tensors']} tensors, {r['numel'] / 1e6:.1f}M) | {r['dtype']} | "
            f"{r['provider']} | {r['ms']:.3f} | {r['gb_per_s']:.0f} | {r['bytes_per_param']} | {launches} | {ratio} |"
        )
    return "\n".join(out)


def environment(device) -> str:
    import triton

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    return (f"{name}; torch {torch.__version__}, triton {triton.__version__}, CUDA {torch.version.cuda}, "
            f"Python {platform.python_version()}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--skip-tests", action="store_true")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--shapes", default="resnet50,bert-large")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check here (the interpreter tests cover the kernels on CPU)")
        return 2
    device = torch.device("cuda")
    report = [f"# GPU check, {time.strftime('%Y-%m-%d')}", "", environment(device), ""]
    status = 0
    if not args.skip_tests:
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                               "tests/kernels", "tests/optim"], cwd=HERE.parent, env=env,
                              capture_output=True, text=True)
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        print("\n".join(tail))
        report += [f"Kernel and optimizer tests, compiled ({time.time() - t0:.0f} s): "
                   f"{tail[-1] if tail else 'no output'}", ""]
        status = proc.returncode
    rows = measure(args.shapes.split(","), [torch.float32, torch.bfloat16], device, args.steps)
    text = table(rows)
    print(text)
    report += [text, ""]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu-check.md").write_text("\n".join(report))
    print(f"written to {out / 'gpu-check.md'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
