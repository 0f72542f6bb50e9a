"""Output folders and files a verb may write: never delete or overwrite what slmkit did not write.

Every output folder gets a marker file (`.slmkit-output`, JSON with its kind). An existing non-empty folder is
used only when it is a previous slmkit output of the same kind: its marker names the kind (or, for folders made
before markers, it holds only the files that kind writes), and when the verb replaces the whole folder (a model,
a token-shard folder), every entry in it is one that kind writes. Anything else is refused with one line before
any work starts, unless the user passes --overwrite. The same holds for single output files (a GGUF file, a JSONL
of records): an existing file is replaced only when it is of the same kind, or with --overwrite.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from slmkit.errors import SlmError
from slmkit.paths import write_atomic

MARKER = ".slmkit-output"

# What each kind of output folder holds (glob patterns on its top-level entries).
KINDS: dict[str, tuple[str, ...]] = {
    "model": ("config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
              "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
              "trainer_state.pt", "recipe.yaml"),
    "data": ("train.bin", "val.bin", "train.mask.bin", "val.mask.bin", "meta.json", "tokenizer.json",
             "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"),
    "tokenizer": ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"),
    "eval": ("results.json", "results.md", "predictions*.jsonl", "calibration*"),
    "bench": ("bench.json", "bench.csv", "bench.md", "calibration*.json"),
    "report": ("report.html", "report.md", "*.png"),
    "trends": ("trends.md", "*.png"),
    "supericl": ("supericl.json", "supericl-records.jsonl"),
    "rerank": ("rerank.json", "rerank-candidates.jsonl"),
    "tour": ("info", "eval-*", "bench", "export", "speculative", "report", "report.html", "report.md", "*.png",
             "tour.json", "tour.log"),
    "train-run": ("checkpoints", "latest", "log.jsonl", "tb", "model", "recipe.yaml", ".latest.tmp"),
    "mixture": ("train.jsonl", "reserved.jsonl", "mixture.json"),
    "orca": ("teacher.jsonl", "kept.jsonl", "erased.jsonl", "answers.jsonl", "heldout.jsonl", "orca.json"),
    "pet": ("pet.json", "work"),
    "adapter": ("adapter_config.json", "adapter_model.safetensors", "slmkit_adapter.json", "README.md",
                "trainer_state.pt", "recipe.yaml"),
}


# Outputs that may go into a previous output of another kind: a tokenizer into a model or shard folder (it only
# adds the tokenizer files those hold).
INTO = {"tokenizer": ("model", "data")}


def _marker_kind(folder: Path) -> str | None:
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("kind") if isinstance(data, dict) else None


def _foreign(folder: Path, kind: str) -> list[str]:
    """Entries of the folder that outputs of this kind never write."""
    patterns = KINDS[kind]
    return sorted(e.name for e in folder.iterdir() if e.name != MARKER and not e.name.startswith(f".{MARKER}")
                  and not any(fnmatch.fnmatch(e.name, p) for p in patterns))


def claim_dir(out: str | os.PathLike, kind: str, overwrite: bool = False, replaces: bool = False) -> Path:
    """Check, before any work, that `out` may receive an output of this kind (see the module docstring); that
    its parent can be written. `replaces`: the verb swaps the whole folder for a new one. Returns the path."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SlmError(f"{out}: exists and is not a folder; choose a folder for the output")
    if out.is_dir():
        try:
            entries = [e for e in out.iterdir() if e.name != MARKER]
        except OSError as e:
            raise SlmError(f"{out}: cannot read the output folder ({e.strerror})") from None
        if entries and not overwrite:
            marked = _marker_kind(out)
            foreign = _foreign(out, kind)
            if marked in INTO.get(kind, ()):
                marked, foreign = kind, []
            elif marked is None and kind in INTO:  # unmarked: its files may be any of the kinds it goes into
                foreign = [f for f in foreign if all(f in _foreign(out, k) for k in INTO[kind])]
            same = (marked == kind or marked is None) and not (foreign and (replaces or marked is None))
            if not same:
                what = (f"is a slmkit {marked} output, not {kind}" if marked not in (None, kind) else
                        f"holds files slmkit did not write ({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''})")
                raise SlmError(f"{out}: the output folder {what}; choose a new folder, or pass --overwrite to "
                               f"{'replace it' if replaces else 'write into it'}")
        _check_writable(out)
    else:
        _check_writable(_existing_parent(out))
    return out


def mark_dir(folder: str | os.PathLike, kind: str) -> None:
    """Write the marker that says the folder is slmkit's output of this kind."""
    write_atomic(Path(folder) / MARKER, json.dumps({"kind": kind}) + "\n")


def claim_file(path: str | os.PathLike, kind: str, overwrite: bool = False) -> Path:
    """Check, before any work, that an output file may be written at `path`: a new file, or an existing one of
    the same kind ("gguf": GGUF magic; "jsonl": JSON objects, one per line), or --overwrite."""
    path = Path(path)
    if path.is_dir():
        raise SlmError(f"{path}: is a folder; give a file name for the output")
    if path.exists() and not overwrite and not _same_file_kind(path, kind):
        raise SlmError(f"{path}: exists and is not a slmkit {kind} file; choose a new name, or pass --overwrite "
                       "to replace it")
    _check_writable(_existing_parent(path.parent) if not path.parent.is_dir() else path.parent)
    return path


def _same_file_kind(path: Path, kind: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    if kind == "gguf":
        return head[:4] == b"GGUF"
    if kind == "jsonl":
        first = head.split(b"\n", 1)[0]
        try:
            return head == b"" or isinstance(json.loads(first), dict)
        except ValueError:
            return False
    return False


def _existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writable(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise SlmError(f"{folder}: is a file, so no output can be written under it")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SlmError(f"{folder}: not writable; choose an output folder you can write to")


def replace_dir(tmp: Path, out: Path) -> None:
    """Move a finished temp folder into place; an existing folder is swapped out only after success."""
    if out.exists():
        if not out.is_dir():
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

    `out` may already exist only as a previous slmkit output of this kind (claim_dir: checked before and again
    after the work) or with overwrite=True; the new folder carries the kind's marker."""
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
