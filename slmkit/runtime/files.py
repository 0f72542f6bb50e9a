"""The files each runtime reads, made from any model slmkit loads and cached under $SLMKIT_CACHE/runtimes:
a folder transformers reads (config.json + safetensors) and GGUF files of llama.cpp's own types, written by
llama.cpp's quantiser from an F32 GGUF of the same weights. `fingerprint` is the one identity of a model file
or folder (the eval cache's key and these files' names)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from slmkit.errors import SlmError
from slmkit.paths import cache_dir


def fingerprint(path: str | os.PathLike) -> str:
    """A cheap identity for a model file or folder (16 hex digits): its resolved path and, for every file in it,
    the name, size and modification time; it changes when the model does."""
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    h = hashlib.sha256(str(p.resolve()).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(p) if p.is_dir() else f.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def _stem(src: Path) -> str:
    return f"{src.stem if src.is_file() else src.name}-{fingerprint(src)[:8]}"



def hf_folder(model: str) -> Path:
    """A folder transformers reads: the model itself if it is one, else a converted copy in the cache."""
    from slmkit.checkpoint import resolve, stored_quant_spec

    src = resolve(model)
    if src.is_dir() and (src / "config.json").is_file() and stored_quant_spec(src) is None:
        return src
    if src.is_dir() and stored_quant_spec(src) is not None:
        raise SlmError(f"{src} is an slmkit-quantised checkpoint, which transformers cannot read; bench the float "
                       "model and let slm bench quantise it")
    out = cache_dir("runtimes") / f"{_stem(src)}-hf"
    if not out.is_dir():
        import slmkit

        slmkit.save(slmkit.load(src, dtype="float32", device="cpu"), out)
    return out


def llamacpp_file(model: str, out_type: str) -> Path:
    """The model as a GGUF of `out_type` (f32, f16, q8_0, q4_0, q4_1), written by llama.cpp's own quantiser
    from an F32 GGUF of the same weights (cached). A GGUF model benched at its own type is used as it is."""
    from slmkit.checkpoint import resolve
    from slmkit.model.gguf import GGUFFile

    src = resolve(model)
    if src.suffix == ".gguf" and gguf_file_type(GGUFFile(src)) == out_type:
        return src
    root = cache_dir("runtimes")
    root.mkdir(parents=True, exist_ok=True)
    f32 = root / f"{_stem(src)}-f32.gguf"
    if not f32.is_file():
        if src.suffix == ".gguf":
            from slmkit.model.gguf import write_dequantized

            write_dequantized(src, f32, "F32")
        else:
            import slmkit
            from slmkit.export.gguf import export_gguf

            lm = slmkit.load(src, dtype="float32", device="cpu")
            if lm.tokenizer is None:
                raise SlmError(f"{src} has no tokenizer, which a GGUF for llama.cpp needs")
            export_gguf(lm.model, lm.tokenizer, f32, "f32")
    if out_type == "f32":
        return f32
    out = root / f"{_stem(src)}-{out_type}.gguf"
    if not out.is_file():
        _llama_quantize(f32, out, out_type)
    return out


def _llama_quantize(src: Path, dst: Path, out_type: str) -> None:
    """llama.cpp's llama_model_quantize (its `llama-quantize` tool), writing to a temporary name first."""
    import ctypes

    import llama_cpp

    ftype = {"f16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16, "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
             "q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0, "q4_1": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_1}[out_type]
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread = ftype, os.cpu_count() or 1
    tmp = dst.with_name(dst.name + ".tmp")
    # llama.cpp prints a line per tensor on stderr: silence it at the file-descriptor level
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    if rc != 0:
        tmp.unlink(missing_ok=True)
        raise SlmError(f"llama.cpp could not quantise {src} to {out_type} (code {rc})")
    os.replace(tmp, dst)


def gguf_file_type(g) -> str:
    """The GGUF's dominant tensor type in lower case (q4_1, f32, ...)."""
    sizes: dict[str, int] = {}
    for t in g.tensors.values():
        sizes[t.tensor_type.name] = sizes.get(t.tensor_type.name, 0) + int(t.n_bytes)
    return max(sizes, key=sizes.get).lower()
