"""The engines `slm bench` times, behind one small interface: load, prefill a prompt, decode one token.

Every backend is greedy and batch 1 (the survey's and llama-bench's setting), and reports its own weight and
KV-cache bytes, so the measurement code (slmkit.bench.measure) is the same for all of them:
  slmkit        this package's engine at fp32, bf16, fp16, int8 or int4 (decode step compiled by default)
  transformers  AutoModelForCausalLM with its own KV cache (fp32, bf16 or fp16)
  llamacpp      llama.cpp through llama-cpp-python, on GGUF files llama.cpp's own quantiser writes from an F32
                GGUF of the same weights (f32, f16, q8_0, q4_0, q4_1)
"""

from __future__ import annotations

import abc
import hashlib
from pathlib import Path

from slmkit.errors import SlmError
from slmkit.paths import cache_dir

PRECISIONS = ("fp32", "bf16", "fp16", "int8", "int4")
# llama.cpp's file types that stand beside each slmkit precision
LLAMACPP_TYPES = {"fp32": ["f32"], "bf16": ["f16"], "fp16": ["f16"], "int8": ["q8_0"], "int4": ["q4_0", "q4_1"]}
TRANSFORMERS_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _stamp(src: Path) -> str:
    """A short key that changes when the source file or folder changes."""
    files = [src] if src.is_file() else sorted(p for p in src.iterdir() if p.is_file())
    h = hashlib.sha1(str(src.resolve()).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return f"{src.stem if src.is_file() else src.name}-{h.hexdigest()[:8]}"


class Backend(abc.ABC):
    """One engine on one model at one precision, batch 1, greedy."""

    name: str
    precision: str
    weight_bytes: int = 0  # weights as held in memory for compute
    kv_bytes: int = 0  # the KV cache as allocated
    compile_s: float | None = None

    @abc.abstractmethod
    def load(self, max_len: int) -> None:
        """Load the model and make room for max_len tokens (prompt plus generated)."""

    @abc.abstractmethod
    def prefill(self, ids: list[int]) -> int:
        """Start afresh: run the prompt and return the greedy next token."""

    @abc.abstractmethod
    def step(self, token: int) -> int:
        """Append one token and return the greedy next one."""


class SlmkitBackend(Backend):
    name = "slmkit"

    def __init__(self, model: str, precision: str, device: str | None = None, compile: bool = True,
                 group_size: int = 32, symmetric: bool = True):
        self.model_name, self.precision, self.device = model, precision, device
        self.compile, self.group_size, self.symmetric = compile, group_size, symmetric

    def load(self, max_len: int) -> None:
        import torch

        import slmkit
        from slmkit.engine import Engine
        from slmkit.quant.quantize import QuantSpec, quantize

        dtype = {"bf16": "bfloat16", "fp16": "float16"}.get(self.precision, "float32")
        lm = slmkit.load(self.model_name, dtype=dtype, device=self.device)
        stored = lm.model.quant_spec
        if stored is not None and self.precision not in ("int8", "int4"):
            raise SlmError(f"{self.model_name} is already quantised ({stored.label}); bench it as int{stored.bits}")
        if self.precision in ("int8", "int4") and stored is None:
            bits = 8 if self.precision == "int8" else 4
            quantize(lm.model, QuantSpec(bits, None if bits == 8 else self.group_size, self.symmetric, head=True))
        spec = lm.model.quant_spec
        self.label = spec.label + ("+head" if spec.head else "") if spec else self.precision
        with torch.inference_mode():  # build the kernels' packed layouts now, not inside the first timed call
            for m in lm.model.modules():
                if hasattr(m, "_cpu_matmul"):
                    m(torch.zeros(1, m.in_features, device=lm.model.tok_emb.weight.device))
        self.lm = lm
        self.dev = lm.model.tok_emb.weight.device
        self.engine = Engine(lm.model, compile=self.compile)
        self.engine.setup_caches(1, max_len)  # compiles the decode step here
        self.compile_s = self.engine.compile_s
        tensors = {id(t): t for t in list(lm.model.parameters()) + list(lm.model.buffers())}
        self.weight_bytes = sum(t.numel() * t.element_size() for t in tensors.values())
        self.kv_bytes = sum(t.numel() * t.element_size() for c in self.engine._caches for t in (c.k, c.v))

    def prefill(self, ids: list[int]) -> int:
        import torch

        self.engine.setup_caches(self.engine.batch, self.engine.max_len)  # same shape: a reset
        with torch.inference_mode():
            return int(self.engine.prefill([ids])[0].argmax())

    def step(self, token: int) -> int:
        import torch

        with torch.inference_mode():
            return int(self.engine.decode(torch.tensor([token], device=self.dev))[0].argmax())


class TransformersBackend(Backend):
    name = "transformers"

    def __init__(self, model: str, precision: str, device: str | None = None):
        if precision not in TRANSFORMERS_DTYPES:
            raise SlmError(f"the transformers backend runs {', '.join(TRANSFORMERS_DTYPES)}, not {precision}")
        self.model_name, self.precision, self.device = model, precision, device
        self.path = hf_folder(model)  # converted (and cached) before the load is timed

    def load(self, max_len: int) -> None:
        import torch
        import transformers

        from slmkit.device import default_device

        self.dev = torch.device(self.device) if self.device else default_device()
        self.model = transformers.AutoModelForCausalLM.from_pretrained(
            self.path, dtype=getattr(torch, TRANSFORMERS_DTYPES[self.precision]),
            attn_implementation="sdpa").to(self.dev).eval()
        self.weight_bytes = sum(p.numel() * p.element_size() for p in {id(p): p for p in self.model.parameters()}.values())
        c = self.model.config
        n_kv = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        self.kv_bytes = 2 * c.num_hidden_layers * n_kv * head_dim * max_len * self.model.dtype.itemsize  # grows to
        self.past = None

    def _run(self, ids) -> int:
        import torch

        with torch.inference_mode():
            out = self.model(torch.tensor([ids], device=self.dev), past_key_values=self.past, use_cache=True)
        self.past = out.past_key_values
        return int(out.logits[0, -1].argmax())

    def prefill(self, ids: list[int]) -> int:
        self.past = None
        return self._run(ids)

    def step(self, token: int) -> int:
        return self._run([token])


class LlamaCppBackend(Backend):
    name = "llamacpp"

    def __init__(self, model: str, precision: str, threads: int, gpu: bool = False):
        self.model_name, self.precision, self.threads, self.gpu = model, precision, threads, gpu
        self.path = llamacpp_file(model, precision)  # written (and cached) before the load is timed

    def load(self, max_len: int) -> None:
        import llama_cpp
        import numpy as np

        from slmkit.model.gguf import GGUFFile, config_from_gguf

        path = self.path
        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=max_len, n_batch=512, n_ubatch=512,
                                   n_threads=self.threads, n_threads_batch=self.threads, verbose=False,
                                   n_gpu_layers=-1 if self.gpu else 0)
        self.label = self.precision
        self.n_vocab = self.llm.n_vocab()
        self._np = np
        g = GGUFFile(path)
        self.weight_bytes = sum(int(t.n_bytes) for t in g.tensors.values())
        c = config_from_gguf(g)
        self.kv_bytes = 2 * c.n_layer * c.layer_repeat * c.n_kv_head * c.head_dim * max_len * 2  # f16 cache

    def _logits_argmax(self) -> int:
        return int(self._np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.n_vocab,)).argmax())

    def prefill(self, ids: list[int]) -> int:
        self.llm.reset()
        self.llm.eval(ids)  # llama.cpp's low-level loop: create_completion can overshoot on garbage text
        return self._logits_argmax()

    def step(self, token: int) -> int:
        self.llm.eval([token])
        return self._logits_argmax()


# --- the files the peers read --------------------------------------------------------------------------------


def hf_folder(model: str) -> Path:
    """A folder transformers reads: the model itself if it is one, else a converted copy in the cache."""
    from slmkit.checkpoint import _quant_spec, resolve

    src = resolve(model)
    if src.is_dir() and (src / "config.json").is_file() and _quant_spec(src) is None:
        return src
    if src.is_dir() and _quant_spec(src) is not None:
        raise SlmError(f"{src} is an slmkit-quantised checkpoint, which transformers cannot read; bench the float "
                       "model and let slm bench quantise it")
    out = cache_dir("bench") / f"{_stamp(src)}-hf"
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
    root = cache_dir("bench")
    root.mkdir(parents=True, exist_ok=True)
    f32 = root / f"{_stamp(src)}-f32.gguf"
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
    out = root / f"{_stamp(src)}-{out_type}.gguf"
    if not out.is_file():
        _llama_quantize(f32, out, out_type)
    return out


def _llama_quantize(src: Path, dst: Path, out_type: str) -> None:
    """llama.cpp's llama_model_quantize (its `llama-quantize` tool), writing to a temporary name first."""
    import ctypes
    import os

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
