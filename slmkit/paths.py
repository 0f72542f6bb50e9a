"""Where slmkit keeps what it can make again: converted models, calibrations, the eval request cache."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """$SLMKIT_CACHE, else $XDG_CACHE_HOME/slmkit, else ~/.cache/slmkit; joined with `parts` (not created)."""
    root = os.environ.get("SLMKIT_CACHE")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "slmkit"
    return Path(root).joinpath(*parts)


def read_json_object(path: Path, what: str = "a JSON object") -> dict:
    """A JSON file that must hold an object; a damaged one is one clear line (slmkit.errors.SlmError)."""
    import json

    from slmkit.errors import SlmError

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SlmError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise SlmError(f"{path}: JSON nested too deeply to be {what}") from None
    if not isinstance(data, dict):
        raise SlmError(f"{path}: {what} is a JSON object, got {type(data).__name__}")
    return data


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a text (str) or binary (bytes) file so that a reader sees the old file or the whole new one, never a
    part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with (os.fdopen(fd, "wb") if isinstance(data, bytes) else os.fdopen(fd, "w", encoding="utf-8")) as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
