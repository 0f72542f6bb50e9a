"""Learning-rate schedules as a multiplier of the peak rate for a step: linear warmup, then cosine, WSD
(warmup-stable-decay, MiniCPM), linear or constant, ending at min_lr_ratio."""

from __future__ import annotations

import math


def lr_multiplier(step: int, total: int, warmup: int, kind: str = "cosine", min_ratio: float = 0.1,
                  decay_fraction: float = 0.2) -> float:
    """Multiplier in [min_ratio, 1] for 0-based `step` of a `total`-step run."""
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    if kind == "wsd":
        decay_start = total - max(1, round(decay_fraction * total))
        if step < max(decay_start, warmup):
            return 1.0
        progress = (step - max(decay_start, warmup) + 1) / max(1, total - max(decay_start, warmup))
        return 1.0 - (1.0 - min_ratio) * min(1.0, progress)
    progress = min(1.0, (step - warmup + 1) / max(1, total - warmup))
    if kind == "linear":
        return 1.0 - (1.0 - min_ratio) * progress
    if kind == "cosine":
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {kind!r}")
