"""Machine ceilings and process memory, measured the same way by every benchmark."""

from __future__ import annotations

import resource
import sys
import time

import torch

from slmkit.device import synchronize


def memory_bandwidth(size_mb: int = 512, repeats: int = 5, device: torch.device | str = "cpu") -> float:
    """Read bandwidth in GB/s: the best of `repeats` sums over a buffer far larger than the caches.

    Decode at batch 1 streams every weight once per token, so this is the ceiling decode is compared with.
    """
    device = torch.device(device)
    x = torch.ones(size_mb * 2**20 // 4, dtype=torch.float32, device=device)
    best = float("inf")
    for _ in range(repeats + 1):  # the first pass faults the pages in
        synchronize(device)
        t0 = time.perf_counter()
        x.sum()
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return x.numel() * 4 / best / 1e9


def _status_mb(field: str) -> float | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_mb() -> float:
    """This process's resident set size now, in MB (0 where /proc is missing)."""
    return _status_mb("VmRSS") or 0.0


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB since start or the last reset_peak_rss()."""
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux, bytes on macOS; never resets
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def reset_peak_rss() -> bool:
    """Reset the peak-RSS mark to the current RSS (Linux: write 5 to /proc/self/clear_refs); False if unsupported.

    Lets a benchmark leave out a measurement buffer of its own (the bandwidth probe) from the peak it reports.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def bandwidth_without_rss(size_mb: int = 512) -> tuple[float, float]:
    """(memory_bandwidth GB/s, peak RSS MB so far), keeping the probe's buffer out of later peak readings."""
    peak = peak_rss_mb()
    bandwidth = memory_bandwidth(size_mb)
    reset_peak_rss()
    return bandwidth, peak
