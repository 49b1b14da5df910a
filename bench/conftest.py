"""Benchmarks: `pytest bench/` times every provider per `<op>-<shapes>-<dtype>` group and prints each provider's
median as a ratio to ours, with the two-pass bound at the streaming bandwidths measured in the same run."""

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
def stream_bandwidth():
    """Streaming bandwidth of this device, measured once per session, two ways, in bytes per second counted as
    8 B per element: an in-place update of a large buffer (`x.mul_(c)`: each element read and written once, the
    access pattern of an optimizer pass), and an out-of-place copy (`dst.copy_(src)`, which on a CPU also reads
    every destination line before writing it, so it gives a lower figure and a looser bound). Returns the first."""
    import time

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    n = 1 << 26 if device.type == "cuda" else 1 << 25
    buf = torch.randn(n, device=device)
    dst = torch.empty_like(buf)

    def median_time(fn) -> float:
        times = []
        for _ in range(7):
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - t0)
        return sorted(times)[len(times) // 2]

    BANDWIDTH["in place"] = 8 * n / median_time(lambda: buf.mul_(1.0000001))
    BANDWIDTH["copy"] = 8 * n / median_time(lambda: dst.copy_(buf))
    return BANDWIDTH["in place"]


# The libraries a user would take instead of ours (torch's AdamW / SGD are single-pass speed-of-light references).
ANCHORS = ("timm", "colossalai", "colossalai-fused")
EXTRA_INFO: dict[str, dict[str, dict]] = {}  # group -> provider -> its benchmark's extra_info


def record(group: str, provider: str, median: float | None, info: dict, extra_info: dict | None = None) -> None:
    if median is not None:
        RESULTS.setdefault(group, {})[provider] = median
    GROUP_INFO[group] = info
    if extra_info is not None:
        EXTRA_INFO.setdefault(group, {})[provider] = extra_info


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    """Before pytest-benchmark writes its JSON: each provider's time as a ratio to the fastest anchor of its group."""
    for group, times in RESULTS.items():
        anchors = [t for p, t in times.items() if p in ANCHORS]
        for provider, extra in EXTRA_INFO.get(group, {}).items():
            if anchors and provider in times:
                extra["ratio_to_fastest_anchor"] = times[provider] / min(anchors)
    yield


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    tr = terminalreporter
    tr.section("optimizer step: time as a ratio to ours (median of the rounds; < 1 means faster than ours)")
    for group in sorted(RESULTS):
        times = RESULTS[group]
        info = GROUP_INFO[group]
        ours = times.get("ours")
        tr.write_line(f"{group}  ({info['tensors']} tensors, {info['numel'] / 1e6:.1f}M params)")
        for provider, t in sorted(times.items(), key=lambda kv: kv[1]):
            ratio = f"{t / ours:5.2f}x" if ours else "  –  "
            tr.write_line(f"  {provider:18s} {t * 1e3:10.2f} ms   {ratio}")
        if BANDWIDTH and ours:
            per_param = bytes_per_param(info["op"], info["param_bytes"])
            parts = []
            for how, bw in BANDWIDTH.items():
                floor = per_param * info["numel"] / bw
                parts.append(f"{floor * 1e3:.2f} ms at the {how} bandwidth {bw / 1e9:.1f} GB/s "
                             f"(ours {ours / floor:.2f}x)")
            tr.write_line(f"  two-pass bound, {per_param} B/param: " + "; ".join(parts))
