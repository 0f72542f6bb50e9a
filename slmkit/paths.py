"""Where slmkit keeps what it can make again: converted models, calibrations, the eval request cache."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """$SLMKIT_CACHE, else $XDG_CACHE_HOME/slmkit, else ~/.cache/slmkit; joined with `parts` (not created)."""
    root = os.environ.get("SLMKIT_CACHE")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "slmkit"
    return Path(root).joinpath(*parts)
