"""One implementation of each runtime: a model loaded by slmkit, by transformers or by llama.cpp, with what
evaluation and benchmarking both need of it. eval.lm's EvalLMs and bench.backends's Backends are thin adapters
over these (scoring and timing are theirs; loading, precision, identity and memory are here).

Every runtime has: `backend`, `source` (the file or name it came from), `precision` (the registry's name, or
llama.cpp's file type), `label` (the precision in detail: int4-g64-asym+head, q4_1), `tokenizer`,
`context_length`, `fingerprint`, `weight_bytes` (as held for compute), `kv_bytes(tokens)` and `close()`.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import ClassVar

from slmkit.errors import SlmError
from slmkit.runtime.files import fingerprint
from slmkit.runtime.precision import PRECISIONS, model_precision, precision as lookup

BACKENDS = ("slmkit", "transformers", "llamacpp")


class Runtime(abc.ABC):
    backend: ClassVar[str]
    source: str
    precision: str
    label: str
    tokenizer: object
    context_length: int
    fingerprint: str
    weight_bytes: int = 0

    @abc.abstractmethod
    def kv_bytes(self, tokens: int) -> int:
        """The KV cache's bytes for `tokens` positions of one sequence."""

    def close(self) -> None:
        """Free what the runtime holds outside Python's memory now, not at interpreter exit."""


def _kv(n_layer: int, n_kv_head: int, head_dim: int, tokens: int, itemsize: int) -> int:
    return 2 * n_layer * n_kv_head * head_dim * tokens * itemsize


class SlmkitRuntime(Runtime):
    """slmkit's own model (a Transformer, or anything with its contract such as EFTModel) and tokenizer."""

    backend = "slmkit"

    def __init__(self, model, tokenizer, source: str, adapter: str | None = None, encoders: bool = False):
        """encoders: admit an encoder or a classifier (for timing its forward: slm bench); otherwise one line."""
        c = model.config
        if not encoders and (not getattr(c, "causal", True) or getattr(c, "head", "lm") != "lm"):
            from slmkit.errors import SlmError

            raise SlmError(f"{source} is {'an encoder' if not c.causal else 'a model without a vocabulary head'} "
                           f"(head {c.head!r}): it does not score or generate text left to right. Score a "
                           f"classification head with slm eval, or a masked LM's clozes with slm pet")
        self.model, self.tokenizer, self.source, self.adapter = model.eval(), tokenizer, str(source), adapter
        self.precision = model_precision(model)
        spec = model.quant_spec
        self.label = (spec.label + ("+head" if spec.head else "")) if spec is not None else self.precision
        self.context_length = model.config.context_length
        self.fingerprint = (f"slmkit:{self.label}:{fingerprint(source)}" if Path(source).exists()
                            else f"slmkit:{self.label}:{source}")
        if adapter is not None:  # a LoRA adapter makes another model: its own cache entries
            self.fingerprint += f"+lora:{fingerprint(adapter)}"
        tensors = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
        self.weight_bytes = sum(t.numel() * t.element_size() for t in tensors.values())

    @classmethod
    def load(cls, model: str, precision: str = "fp32", device: str | None = None, group_size: int = 32,
             symmetric: bool = True, progress: bool = False, adapter: str | None = None,
             encoders: bool = False) -> "SlmkitRuntime":
        """Load `model` at a named precision: its compute dtype, then quantised as the precision says. A checkpoint
        that is already quantised runs as it was saved, and only under its own precision's name. With `adapter`,
        a LoRA adapter is attached first; quantising then leaves it in float around the int base (QLoRA)."""
        from slmkit.checkpoint import load
        from slmkit.quant.quantize import quantize

        p = lookup(precision)
        lm = load(model, dtype=p.dtype, device=device, progress=progress, adapter=adapter)
        stored = lm.model.quant_spec
        if stored is not None:
            have = model_precision(lm.model)
            if have != p.name:
                raise SlmError(f"{lm.source} is already quantised ({have}: {stored.label}); run it as --precision "
                               f"{have}")
        elif p.quantised:
            quantize(lm.model, p.quant_spec(group_size, symmetric))
        return cls(lm.model, lm.tokenizer, lm.source, adapter, encoders)

    @property
    def device(self):
        return self.model.device

    def kv_bytes(self, tokens: int) -> int:
        c = self.model.config
        itemsize = self.model.dtype.itemsize
        return _kv(c.n_layer * c.layer_repeat, c.n_kv_head, c.head_dim, tokens, itemsize)


class TransformersRuntime(Runtime):
    """transformers' AutoModelForCausalLM (the reference) on a checkpoint folder, or on a folder converted from any
    model slmkit loads (cached; runtime.files.hf_folder)."""

    backend = "transformers"

    def __init__(self, model: str, precision: str = "fp32", device: str | None = None):
        import torch

        from slmkit.device import default_device
        from slmkit.runtime.files import hf_folder
        from slmkit.tokenizer import Tokenizer

        p = lookup(precision)
        if p.quantised:
            raise SlmError(f"the transformers backend runs the float precisions (fp32, bf16, fp16), not {precision}; "
                           "weight-only quantisation is slmkit's and llama.cpp's")
        try:
            from transformers import AutoModelForCausalLM
        except ImportError:
            raise SlmError("the transformers backend needs transformers (pip install transformers)") from None
        path = hf_folder(model)
        self.device = torch.device(device) if device else default_device()
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, p.dtype),
                                                          attn_implementation="sdpa").to(self.device).eval()
        self.source, self.precision, self.label = str(path), p.name, p.name
        self.tokenizer = Tokenizer.from_dir(path) if (Path(path) / "tokenizer.json").is_file() else None
        cfg = self.model.config
        self.context_length = next((getattr(cfg, a) for a in ("n_positions", "max_position_embeddings", "n_ctx")
                                    if getattr(cfg, a, None)), 2048)
        self.fingerprint = f"transformers:{p.name}:{fingerprint(path)}"
        params = {id(t): t for t in self.model.parameters()}.values()
        self.weight_bytes = sum(t.numel() * t.element_size() for t in params)

    def kv_bytes(self, tokens: int) -> int:
        c = self.model.config
        n_kv = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        return _kv(c.num_hidden_layers, n_kv, head_dim, tokens, self.model.dtype.itemsize)


class LlamaCppRuntime(Runtime):
    """A GGUF file run by llama.cpp (llama-cpp-python), with slmkit's tokenizer from the same file (checked equal to
    llama.cpp's in tests/test_gguf.py). `file_type` (f32, f16, q8_0, q4_0, q4_1) runs a GGUF of that type written
    from the model by llama.cpp's own quantiser (runtime.files.llamacpp_file); None runs the file as it is."""

    backend = "llamacpp"

    def __init__(self, model: str, file_type: str | None = None, n_ctx: int | None = None, threads: int | None = None,
                 logits_all: bool = False, gpu: bool = False):
        try:
            import llama_cpp
        except ImportError:
            raise SlmError("the llamacpp backend needs llama-cpp-python (pip install 'slmkit[llamacpp]')") from None
        from slmkit.checkpoint import resolve
        from slmkit.model.gguf import GGUFFile, config_from_gguf
        from slmkit.runtime.files import gguf_file_type, llamacpp_file
        from slmkit.tokenizer.gguf_vocab import tokenizer_from_gguf

        path = llamacpp_file(model, file_type) if file_type else resolve(model)
        if path.suffix.lower() != ".gguf":
            raise SlmError(f"{path}: the llamacpp backend takes a .gguf file (or give --precision to have one made)")
        g = GGUFFile(Path(path))
        config = config_from_gguf(g)
        n = n_ctx or min(config.context_length, 4096)
        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=n, n_batch=512, n_ubatch=512, logits_all=logits_all,
                                   n_threads=threads, n_threads_batch=threads, n_gpu_layers=-1 if gpu else 0,
                                   verbose=False)
        self._llama_cpp = llama_cpp
        self.source = str(path)
        self.precision = self.label = gguf_file_type(g)
        self.tokenizer = tokenizer_from_gguf(g.meta, str(path))
        self.context_length = n
        self.n_vocab = self.llm.n_vocab()
        self.fingerprint = f"llamacpp:{self.precision}:{fingerprint(path)}:{n}"
        self.weight_bytes = sum(int(t.n_bytes) for t in g.tensors.values())
        self._layers, self._kv_heads = config.n_layer * config.layer_repeat, config.n_kv_head
        self._head_dim = config.head_dim

    def kv_bytes(self, tokens: int) -> int:
        return _kv(self._layers, self._kv_heads, self._head_dim, tokens, 2)  # llama.cpp's default f16 cache

    def last_logits(self):
        """The logits after the last token evaluated (a numpy view; copy it to keep it past the next eval)."""
        import numpy as np

        ptr = self._llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def close(self) -> None:
        self.llm.close()


def load_runtime(model: str, backend: str = "slmkit", precision: str = "fp32", device: str | None = None,
                 **options) -> Runtime:
    """`model` on one of the runtimes at a named precision; for llama.cpp, the file type that stands beside the
    precision (PRECISIONS[...].llamacpp[0]) unless the model is a GGUF file, which runs as it is."""
    if backend == "slmkit":
        return SlmkitRuntime.load(model, precision, device, **options)
    if options.pop("adapter", None) is not None:
        raise SlmError(f"--adapter runs on the slmkit backend; merge it first (slm merge BASE ADAPTER -o OUT) to run "
                       f"it on {backend}")
    if backend == "transformers":
        return TransformersRuntime(model, precision, device)
    if backend == "llamacpp":
        file_type = options.pop("file_type", None)
        if file_type is None and not str(model).lower().endswith(".gguf"):
            file_type = lookup(precision).llamacpp[0]
        return LlamaCppRuntime(model, file_type, **options)
    raise SlmError(f"unknown backend {backend!r}; use {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "PRECISIONS", "Runtime", "SlmkitRuntime", "TransformersRuntime", "LlamaCppRuntime",
           "load_runtime"]
