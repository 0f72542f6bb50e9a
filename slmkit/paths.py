"""Where slmkit keeps what it can make again: converted models, calibrations, the eval request cache."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def cache_dir(*parts: str) -> Path:
    """$SLMKIT_CACHE, else $XDG_CACHE_HOME/slmkit, else ~/.cache/slmkit; joined with `parts` (not created)."""
    root = os.environ.get("SLMKIT_CACHE")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "slmkit"
    return Path(root).joinpath(*parts)


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


def replace_dir(tmp: Path, out: Path) -> None:
    """Move a finished temp folder into place; an existing folder is swapped out only after success."""
    if out.exists():
        if not out.is_dir():
            from slmkit.errors import SlmError

            raise SlmError(f"{out}: exists and is not a folder")
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, kind: str, overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden temp folder beside `out`; on success it replaces `out`, on any error it is removed, so a
    reader never sees a half-written folder (a killed process leaves only a hidden `.name.*` folder).

    `out` may already exist only as a previous slmkit output of this kind (slmkit.outputs: checked before and
    again after the work) or with overwrite=True; the new folder carries the kind's marker."""
    from slmkit.outputs import claim_dir, mark_dir

    out = Path(out)
    claim_dir(out, kind, overwrite, replaces=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the finished folder gets the usual permissions
    try:
        yield tmp
        mark_dir(tmp, kind)
        claim_dir(out, kind, overwrite, replaces=True)  # nothing of the user's appeared meanwhile
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
