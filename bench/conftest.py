"""Benchmarks: `pytest bench/` times every provider per `<op>-<shapes>-<dtype>` group and prints each provider's
median as a ratio to ours, with the two-pass bound at the copy bandwidth measured in the same run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from shapes import bytes_per_param  # noqa: E402

RESULTS: dict[str, dict[str, float]] = {}  # group -> provider -> median seconds
GROUP_INFO: dict[str, dict] = {}
BANDWIDTH: dict[str, float] = {}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@pytest.fixture(scope="session")
def copy_bandwidth():
    """Streaming bandwidth of this device, measured once per session: bytes per second of an in-place update of a
    large buffer (`x.mul_(c)`: each element read and written once, 8 B), the access pattern of an optimizer pass.
    (An out-of-place copy would also read every destination line before writing it, and understate it.)"""
    import time

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    n = 1 << 26 if device.type == "cuda" else 1 << 25
    buf = torch.randn(n, device=device)
    times = []
    for _ in range(7):
        sync(device)
        t0 = time.perf_counter()
        buf.mul_(1.0000001)
        sync(device)
        times.append(time.perf_counter() - t0)
    bw = 8 * n / sorted(times)[len(times) // 2]
    BANDWIDTH["bytes_per_s"] = bw
    return bw


def record(group: str, provider: str, median: float | None, info: dict) -> None:
    if median is not None:
        RESULTS.setdefault(group, {})[provider] = median
    GROUP_INFO[group] = info


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    tr = terminalreporter
    tr.section("optimizer step: time as a ratio to ours (median of the rounds; < 1 means faster than ours)")
    bw = BANDWIDTH.get("bytes_per_s")
    for group in sorted(RESULTS):
        times = RESULTS[group]
        info = GROUP_INFO[group]
        ours = times.get("ours")
        tr.write_line(f"{group}  ({info['tensors']} tensors, {info['numel'] / 1e6:.1f}M params)")
        for provider, t in sorted(times.items(), key=lambda kv: kv[1]):
            ratio = f"{t / ours:5.2f}x" if ours else "  –  "
            tr.write_line(f"  {provider:18s} {t * 1e3:10.2f} ms   {ratio}")
        if bw and ours:
            floor = bytes_per_param(info["op"], info["param_bytes"]) * info["numel"] / bw
            tr.write_line(
                f"  two-pass bound: {bytes_per_param(info['op'], info['param_bytes'])} B/param at the measured "
                f"streaming bandwidth {bw / 1e9:.1f} GB/s = {floor * 1e3:.2f} ms; ours is {ours / floor:.2f}x the bound"
            )
