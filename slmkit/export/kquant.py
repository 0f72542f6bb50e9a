"""K-quant GGUF files (Q4_K_M-style mixes of Q4_K and Q6_K, Q5_K, Q6_K) through llama.cpp's own quantiser.

The `gguf` package writes the 32-value block types but has no K-quant encoder, so slmkit writes an f32 file and
hands it to llama.cpp's `llama_model_quantize` (the same code as its `llama-quantize` tool, reached through
llama-cpp-python's bindings). llama.cpp picks the mix per tensor (in Q4_K_M, Q6_K for the value projection
and half the down projections, Q4_K elsewhere) and, where a matrix's rows are not a multiple of the 256-value
super-block, falls back to a 32-value type (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0; F16 when even 32 does
not divide). `fallbacks` reads the written file and says which tensors that happened to.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from slmkit.errors import SlmError

# slmkit's names -> llama.cpp's llama_ftype (include/llama.h)
KQUANTS = {"q4_k_m": 15, "q4_k_s": 14, "q5_k_m": 17, "q5_k_s": 16, "q6_k": 18}
SUPER_BLOCK = 256
_K_TYPES = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")


def quantize_file(src: Path, dst: Path, kind: str, threads: int | None = None) -> None:
    """llama.cpp's quantiser from `src` (an f32 or f16 GGUF) to `dst`, as K-quant `kind`."""
    if kind not in KQUANTS:
        raise SlmError(f"unknown K-quant {kind!r}; choose one of {', '.join(KQUANTS)}")
    try:
        import llama_cpp
    except ImportError:
        raise SlmError(f"GGUF {kind} is written by llama.cpp's quantiser: pip install llama-cpp-python "
                       "(or export f16/q8_0/q4_0, which need only the gguf package)") from None
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = KQUANTS[kind]
    params.nthread = threads or os.cpu_count() or 1
    with _captured_stderr() as log:  # llama.cpp writes a line per tensor to fd 2, whatever the log level
        status = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if status != 0 or not dst.is_file():
        last = next((line for line in reversed(log()) if line.strip()), "no message")
        raise SlmError(f"llama.cpp's quantiser failed on {src.name} (status {status}): {last.strip()}")


@contextmanager
def _captured_stderr():
    """Point file descriptor 2 at a temporary file for the block; yields a callable giving its lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as f:
        lines: list[str] = []
        os.dup2(f.fileno(), 2)
        try:
            yield lambda: lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            f.seek(0)
            lines.extend(f.read().decode("utf-8", "replace").splitlines())


def fallbacks(path: Path) -> str | None:
    """One line naming the matrices llama.cpp stored below K-quant precision because their rows are not a
    multiple of 256, or None when every matrix could take its K type."""
    from slmkit.model.gguf_reader import Reader

    tensors = Reader(path).tensors
    matrices = [t for t in tensors if len(t.shape) > 1]
    fell = [t for t in matrices if int(t.shape[0]) % SUPER_BLOCK and t.tensor_type.name not in _K_TYPES]
    if not fell:
        return None
    rows = sorted({int(t.shape[0]) for t in fell})
    types = Counter(t.tensor_type.name for t in fell)
    return (f"{len(fell)} of {len(matrices)} matrices have rows of {', '.join(map(str, rows))} values, not a "
            f"multiple of {SUPER_BLOCK}, so llama.cpp's quantiser stored them as "
            f"{', '.join(f'{k} ({n})' for k, n in types.most_common())} instead of K-quants, "
            "as it always does (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0)")
