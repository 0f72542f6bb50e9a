"""The engines `slm bench` times, behind one small interface: load, prefill a prompt, decode one token.

Each backend is a thin adapter over its runtime (slmkit.runtime: loading, precision, memory). Every backend is
greedy and batch 1 (the survey's and llama-bench's setting), and reports its own weight and KV-cache bytes, so
the measurement code (slmkit.bench.measure) is the same for all of them:
  slmkit        this package's engine at any named precision (decode step compiled by default)
  transformers  AutoModelForCausalLM with its own KV cache (fp32, bf16 or fp16)
  llamacpp      llama.cpp through llama-cpp-python, on GGUF files llama.cpp's own quantiser writes from an F32
                GGUF of the same weights (f32, f16, q8_0, q4_0, q4_1)
"""

from __future__ import annotations

import abc

from slmkit.errors import SlmError
from slmkit.runtime.precision import PRECISIONS

# llama.cpp's file types that stand beside each slmkit precision
LLAMACPP_TYPES = {name: list(p.llamacpp) for name, p in PRECISIONS.items()}
FLOAT_PRECISIONS = tuple(name for name, p in PRECISIONS.items() if not p.quantised)


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
                 group_size: int = 32, symmetric: bool = True, adapter: str | None = None):
        self.model_name, self.precision, self.device, self.adapter = model, precision, device, adapter
        self.compile, self.group_size, self.symmetric = compile, group_size, symmetric

    def load(self, max_len: int) -> None:
        import torch

        from slmkit.engine import Engine
        from slmkit.runtime import SlmkitRuntime

        rt = SlmkitRuntime.load(self.model_name, self.precision, self.device, self.group_size, self.symmetric,
                                adapter=self.adapter, encoders=True)
        self.label = rt.label
        with torch.inference_mode():  # build the kernels' packed layouts now, not inside the first timed call
            for m in rt.model.modules():
                if hasattr(m, "_cpu_matmul"):
                    m(torch.zeros(1, m.in_features, device=rt.device))
        self.runtime, self.dev = rt, rt.device
        self.weight_bytes = rt.weight_bytes
        c = rt.model.config
        self.decodes = c.causal and c.head == "lm"
        # what forward() runs, as the report names its rows: a decoder's prefill, a classifier, a bare encoder
        self.forward_kind = "prefill" if self.decodes else ("classifier" if c.head == "classify" else "encoder")
        if not self.decodes:  # an encoder or a classifier: its forward alone, no KV cache
            self.engine = None
            return
        self.engine = Engine(rt.model, compile=self.compile)
        self.engine.setup_caches(1, max_len)  # compiles the decode step here
        self.compile_s = self.engine.compile_s
        self.kv_bytes = sum(t.numel() * t.element_size() for c in self.engine.caches for t in (c.k, c.v))

    def forward(self, ids: list[int], keep: float) -> float:
        """One uncached forward of ids with dynamic token pruning at keep ratio `keep` (1.0: the plain forward):
        a decoder's prefill up to its last-token logits, an encoder's final hidden states, a classifier's label
        logits. Returns the share of token-layers that ran."""
        import torch

        from slmkit.model.prune import TokenPruning

        model = self.runtime.model
        prune = TokenPruning(model.n_exec_layers, keep=keep) if keep < 1 else None
        x = torch.tensor([ids], device=self.dev)
        with torch.inference_mode():
            model(x, last_only=self.decodes, hidden=model.config.head == "lm" and not self.decodes, prune=prune)
        return sum(prune.lengths) / (prune.lengths[0] * len(prune.lengths)) if prune is not None else 1.0

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
        from slmkit.runtime.files import hf_folder

        if precision not in FLOAT_PRECISIONS:
            raise SlmError(f"the transformers backend runs {', '.join(FLOAT_PRECISIONS)}, not {precision}")
        self.model_name, self.precision, self.device = model, precision, device
        self.path = hf_folder(model)  # converted (and cached) before the load is timed

    def load(self, max_len: int) -> None:
        from slmkit.runtime import TransformersRuntime

        rt = TransformersRuntime(str(self.path), self.precision, self.device)
        self.runtime, self.model, self.dev = rt, rt.model, rt.device
        self.weight_bytes, self.kv_bytes = rt.weight_bytes, rt.kv_bytes(max_len)  # the cache grows to this
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
        from slmkit.runtime.files import llamacpp_file

        self.model_name, self.precision, self.threads, self.gpu = model, precision, threads, gpu
        self.path = llamacpp_file(model, precision)  # written (and cached) before the load is timed

    def load(self, max_len: int) -> None:
        from slmkit.runtime import LlamaCppRuntime

        rt = LlamaCppRuntime(str(self.path), n_ctx=max_len, threads=self.threads, gpu=self.gpu)
        self.runtime, self.llm, self.label = rt, rt.llm, self.precision
        self.weight_bytes, self.kv_bytes = rt.weight_bytes, rt.kv_bytes(max_len)

    def prefill(self, ids: list[int]) -> int:
        self.llm.reset()
        self.llm.eval(ids)  # llama.cpp's low-level loop: create_completion can overshoot on garbage text
        return int(self.runtime.last_logits().argmax())

    def step(self, token: int) -> int:
        self.llm.eval([token])
        return int(self.runtime.last_logits().argmax())
