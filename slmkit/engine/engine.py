"""The generation engine: token ids in, token ids out. Knows nothing of tokenizers or text.

A static, preallocated KV cache that the engine owns (`setup_caches(batch, max_len)` asks the model for it and every
call passes it); prefill and one-token decode as separate
steps; left-padded batches of prompts of different lengths; the decode step optionally compiled once with
torch.compile on static shapes (gpt-fast's recipe, plus inductor freezing, which is what makes CPU decode fast).

Batch layout: row b holds `pad[b]` padding slots, then its prompt, so every row's last prompt token sits in
the same slot. A token in slot s of row b has position s - pad[b]; padding keys are masked with `key_valid`.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch

from slmkit.engine.sampling import Sampler, SamplingParams
from slmkit.errors import SlmError
from slmkit.model.model import Transformer


@dataclass
class GenerationStats:
    """Timings of one generate call; tokens/s are per row times the batch size."""

    batch: int = 0
    prompt_tokens: int = 0  # computed in the prefill, summed over rows, without padding
    reused_tokens: int = 0  # prompt tokens whose keys/values were already cached (reuse_prefix)
    new_tokens: int = 0  # summed over rows
    prefill_s: float = 0.0
    decode_s: float = 0.0
    decode_steps: int = 0
    compile_s: float | None = None
    finish: list[str] = field(default_factory=list)  # per row: "stop", "length"

    @property
    def prefill_tok_s(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s else 0.0

    @property
    def decode_tok_s(self) -> float:
        return self.decode_steps * self.batch / self.decode_s if self.decode_s else 0.0

    @property
    def ttft_s(self) -> float:
        """Time to first token: the prefill forward plus the first sample."""
        return self.prefill_s

    def parts(self) -> list[str]:
        reused = f" (+{self.reused_tokens} cached)" if self.reused_tokens else ""
        out = [f"prefill {self.prompt_tokens} tok{reused} {self.prefill_tok_s:.1f} tok/s "
               f"(TTFT {self.ttft_s * 1e3:.0f} ms)",
               f"decode {self.new_tokens} tok {self.decode_tok_s:.1f} tok/s"]
        if self.compile_s is not None:
            out.append(f"compile {self.compile_s:.1f} s")
        return out

    def line(self) -> str:
        """One line for people: prefill and decode tokens/s, TTFT, compile time."""
        return " | ".join(self.parts())


def _compile_mode(device: torch.device) -> str:
    return "reduce-overhead" if device.type == "cuda" else "max-autotune-no-cudagraphs"


class Engine:
    """Runs a Transformer on token ids with a static KV cache, sampling and streaming.

    compile=True compiles the decode step with torch.compile (falls back to eager, with a message on stderr,
    where compilation is unavailable). Inductor caches autotuning results and C++ kernels across runs
    (TORCHINDUCTOR_CACHE_DIR), so later runs compile about twice as fast; see docs/engine.md.
    cache_dtype: KV-cache dtype (default: float32 on CPU, where bf16 attention at decode is slow; else the
    model's dtype).
    """

    one_prompt_at_a_time = False  # stream() takes a batch of prompts (a SpeculativeEngine takes one)

    def __init__(self, model: Transformer, compile: bool = False, cache_dtype: torch.dtype | None = None,
                 compile_widths: Sequence[int] = (1,)):
        c = getattr(model, "config", None)
        if c is not None and (not getattr(c, "causal", True) or getattr(c, "head", "lm") != "lm"):
            from slmkit.errors import SlmError

            raise SlmError(f"{c.name} is {'an encoder' if not c.causal else 'a model without a vocabulary head'} "
                           f"(head {c.head!r}); generating text needs a causal language model")
        self.model = model.eval()
        self.device = model.device
        weight_dtype = model.dtype
        self.cache_dtype = cache_dtype or (torch.float32 if self.device.type == "cpu" else weight_dtype)
        self.vocab_size = model.config.vocab_size
        self.compile = compile
        self.compile_widths = tuple(compile_widths)  # tokens per step to compile: 1 = decode; k+1 = a verifier
        self.compile_s: float | None = None
        self._step = self._forward_step
        self._blocks: dict[int, object] = {}  # width -> compiled block step (extend)
        self.batch = self.max_len = 0
        self.length = 0  # slots filled so far (same for every row)
        self.cached_ids: list[int] = []  # batch 1: the ids whose keys/values sit in the cache, for prefix reuse
        self.reused = 0  # prompt tokens the last prefill found cached

    # --- caches ----------------------------------------------------------------------------------------

    def setup_caches(self, batch: int, max_len: int) -> None:
        """Preallocate the KV cache and the step buffers for `batch` rows of up to `max_len` tokens each."""
        if max_len > self.model.config.context_length and self.model.config.pos_type == "learned":
            raise SlmError(f"{max_len} tokens exceed the model's {self.model.config.context_length}-token context "
                           "(learned positions); use a shorter prompt or fewer new tokens")
        if (batch, max_len) == (self.batch, self.max_len):
            self.length, self.cached_ids = 0, []
            return
        self.batch, self.max_len, self.length, self.cached_ids = batch, max_len, 0, []
        self.caches = self.model.new_caches(batch, max_len, self.cache_dtype)  # the engine's, passed to each call
        dev = self.device
        self.key_valid = torch.ones(batch, max_len, dtype=torch.bool, device=dev)  # (B, S)
        self.pad = torch.zeros(batch, dtype=torch.long, device=dev)  # (B,)
        self._tokens = torch.zeros(batch, 1, dtype=torch.long, device=dev)  # step inputs, updated in place
        self._positions = torch.zeros(batch, 1, dtype=torch.long, device=dev)
        self._slot = torch.zeros(self._slot_shape(batch), dtype=torch.long, device=dev)
        self._block_bufs: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._blocks = {}
        if self.compile:
            self._compile()

    def _slot_shape(self, batch: int) -> tuple[int, ...]:
        """Shape of the decode step's slot input: one slot for all rows (rows move in lockstep)."""
        return (1,)

    def _stance(self):
        """While decoding with the compiled step, check only the guards that tell its compiled graphs apart
        (the full guard set costs ~0.7 ms a step on a 30-layer model; the step's shapes are static)."""
        if not self.compile_s:
            return nullcontext()
        return torch.compiler.set_stance(skip_guard_eval_unsafe=True)

    def _forward_step(self, tokens: torch.Tensor, positions: torch.Tensor, slot: torch.Tensor,
                      key_valid: torch.Tensor) -> torch.Tensor:
        """One decode step: tokens (B, 1) at `slot` → logits (B, vocab)."""
        return self.model(tokens, positions, key_valid, slot, caches=self.caches)[:, -1]

    def _forward_block(self, tokens: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor,
                       key_valid: torch.Tensor) -> torch.Tensor:
        """Several tokens per row (B, m) at slots (m,) → logits at every position (B, m, vocab)."""
        return self.model(tokens, positions, key_valid, slots, caches=self.caches)

    def _block_buffers(self, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Static input buffers (tokens, positions, slots) of an extend step of `width` tokens."""
        if width not in self._block_bufs:
            dev = self.device
            self._block_bufs[width] = (torch.zeros(self.batch, width, dtype=torch.long, device=dev),
                                       torch.zeros(self.batch, width, dtype=torch.long, device=dev),
                                       torch.zeros(width, dtype=torch.long, device=dev))
        return self._block_bufs[width]

    def _compile(self) -> None:
        """Compile the steps of `compile_widths` for the current static shapes and warm them up (timed into
        compile_s): width 1 is the decode step, a wider one an extend step (a speculative verifier's)."""
        import sys

        import torch._inductor.config as inductor_config

        from slmkit.device import configure_compile

        configure_compile()  # several engines per process (slmkit.device)
        # Freezing makes the weights constants (prepacked, folded): the switch behind fast CPU decode.
        options = {"freezing": True, "fx_graph_cache": True,
                   "autotune_num_choices_displayed": 0, "max_autotune_report_choices_stats": False}  # quiet
        t0 = time.perf_counter()
        compiled = {}
        try:
            for width in self.compile_widths:
                fn = self._forward_step if width == 1 else self._forward_block
                step = torch.compile(fn, mode=_compile_mode(self.device), fullgraph=True, dynamic=False)
                if width == 1:
                    args = (self._tokens, self._positions, self._slot, self.key_valid)
                    self._slot.fill_(self.max_len - 1)  # a slot no real query sees before overwriting it
                else:
                    tokens, positions, slots = self._block_buffers(width)
                    slots.copy_(torch.arange(self.max_len - width, self.max_len))
                    args = (tokens, positions, slots, self.key_valid)
                with torch.inference_mode(), inductor_config.patch(options):
                    # Warm up with inference tensors, as the loop makes them (else a guard fails and it recompiles).
                    for _ in range(2):
                        step(*args)
                compiled[width] = step
        except Exception as e:  # noqa: BLE001 - any compiler failure falls back to eager
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(f"slmkit: torch.compile unavailable ({first[:160]}); decoding eagerly", file=sys.stderr)
            self.compile, self._step, self._blocks = False, self._forward_step, {}
            return
        self._step = compiled.pop(1, self._forward_step)
        self._blocks = compiled
        self.compile_s = time.perf_counter() - t0

    # --- steps -----------------------------------------------------------------------------------------

    def prefill(self, prompts: Sequence[Sequence[int]], reuse_prefix: bool = False) -> torch.Tensor:
        """Write the prompts' keys/values into the cache (left-padded); return next-token logits (B, vocab).

        reuse_prefix (batch 1): keep the keys/values of the ids already in the cache that the prompt starts
        with (a chat's earlier turns) and run only the rest.
        """
        B = len(prompts)
        if B != self.batch:
            raise SlmError(f"{B} prompts but the cache is set up for batch {self.batch}")
        lengths = [len(p) for p in prompts]
        if min(lengths) == 0:
            raise SlmError("empty prompt: give at least one token (most models want their BOS token)")
        T = max(lengths)
        if T >= self.max_len:
            raise SlmError(f"the prompt has {T} tokens but the cache holds {self.max_len}; shorten the prompt")
        start = 0
        if B == 1 and reuse_prefix:
            start = _common_prefix(self.cached_ids, prompts[0])
            start = min(start, T - 1)  # always run at least the last token to get its logits
        idx = torch.zeros(B, T - start, dtype=torch.long)
        for b, p in enumerate(prompts):  # start > 0 only with batch 1, where T == len(p)
            idx[b, T - len(p):] = torch.tensor(p[start:], dtype=torch.long)
        idx = idx.to(self.device)
        if start == 0:
            self.pad.copy_(torch.tensor([T - n for n in lengths]))
            self.key_valid.copy_(torch.arange(self.max_len, device=self.device)[None, :] >= self.pad[:, None])
        slots = torch.arange(start, T, device=self.device)
        positions = (slots[None, :] - self.pad[:, None]).clamp(min=0)
        logits = self.model(idx, positions, self.key_valid, slots, last_only=True, kv_len=T,
                            caches=self.caches)[:, -1]
        self.length = T
        self.cached_ids = list(prompts[0]) if B == 1 else []
        self.reused = start
        return logits

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append one token per row (B,) and return the next-token logits (B, vocab)."""
        if self.length >= self.max_len:
            raise SlmError(f"the KV cache is full ({self.max_len} tokens); set up a longer cache")
        self._tokens.copy_(tokens.view(-1, 1))
        self._slot.fill_(self.length)
        self._positions.view(-1).copy_(self.pad).neg_().add_(self.length)
        with self._stance():
            logits = self._step(self._tokens, self._positions, self._slot, self.key_valid)
        self.length += 1
        if self.batch == 1:
            self.cached_ids.append(int(tokens.view(-1)[0]))
        return logits

    def extend(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append several tokens per row (B, m) and return the logits after each of them (B, m, vocab).

        A speculative verifier's step: one forward scores all m tokens. Compiled when m is in compile_widths;
        `rollback` takes back the tokens that were not accepted.
        """
        B, m = tokens.shape
        if self.length + m > self.max_len:
            raise SlmError(f"the KV cache is full ({self.max_len} tokens); set up a longer cache")
        step = self._blocks.get(m)
        if step is None:  # eager: attend only to the slots filled so far
            slots = torch.arange(self.length, self.length + m, device=self.device)
            positions = slots[None, :] - self.pad[:, None]
            logits = self.model(tokens, positions, self.key_valid, slots, kv_len=self.length + m, caches=self.caches)
        else:
            tok_buf, pos_buf, slot_buf = self._block_buffers(m)
            tok_buf.copy_(tokens)
            torch.arange(self.length, self.length + m, out=slot_buf)
            pos_buf.copy_(slot_buf[None, :] - self.pad[:, None])
            with self._stance():
                logits = step(tok_buf, pos_buf, slot_buf, self.key_valid)
        self.length += m
        if self.batch == 1:
            self.cached_ids.extend(tokens[0].tolist())
        return logits

    def rollback(self, length: int) -> None:
        """Forget every token from slot `length` on (a speculative step's rejected tokens). Their keys and values
        stay in the cache but are never read: causality hides them until new tokens overwrite them."""
        if not 0 < length <= self.length:
            raise ValueError(f"cannot roll back to {length} tokens with {self.length} in the cache")
        self.length = length
        del self.cached_ids[length - int(self.pad[0]) if self.batch == 1 else 0:]

    # --- generation ------------------------------------------------------------------------------------

    def stream(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, sampling: SamplingParams | None = None,
               stop_ids: Sequence[int] = (), stats: GenerationStats | None = None,
               reuse_prefix: bool = False) -> Iterator[list[int | None]]:
        """Generate for a batch of prompts, yielding one list per step: each row's new token, or None once
        that row has stopped. A row stops at a stop id (which is yielded) or after max_new_tokens.

        Sets up (or reuses) a cache big enough for the longest prompt plus max_new_tokens. Closing the
        iterator early (e.g. on a stop string) is fine; `stats` gets the timings. reuse_prefix: see prefill.
        """
        sampling = sampling or SamplingParams()
        stats = stats if stats is not None else GenerationStats()
        if max_new_tokens < 1:
            raise SlmError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        B, T = len(prompts), max((len(p) for p in prompts), default=0)
        context = self.model.config.context_length
        if T >= context:
            raise SlmError(f"the prompt has {T} tokens but the model's context holds {context}; shorten it")
        max_new_tokens = min(max_new_tokens, context - T)  # never size a cache past the context (room_left)
        need = T + max_new_tokens
        if B != self.batch or need > self.max_len:
            self.setup_caches(B, cache_length(need, self.model.config.context_length))
            reuse_prefix = False
        stats.batch, stats.prompt_tokens = B, sum(len(p) for p in prompts)
        stats.compile_s = self.compile_s
        stop_set = set(stop_ids)
        sampler = Sampler(sampling, B, self.vocab_size, self.device)
        done = [False] * B
        with torch.inference_mode():
            t0 = time.perf_counter()
            logits = _finite(self.prefill(prompts, reuse_prefix), "the prompt")
            stats.reused_tokens = self.reused
            stats.prompt_tokens -= self.reused
            sampler.observe_prompts(prompts)
            token = sampler(logits)
            tokens = token.tolist()  # the sync that ends the prefill
            stats.prefill_s = time.perf_counter() - t0
            for step in range(max_new_tokens):
                out: list[int | None] = []
                for b, t in enumerate(tokens):
                    out.append(None if done[b] else t)
                    if not done[b]:
                        stats.new_tokens += 1
                        if t in stop_set:
                            done[b] = True
                yield out
                if all(done) or step == max_new_tokens - 1:
                    break
                t1 = time.perf_counter()  # engine time only, not the consumer's
                sampler.observe(token)
                logits = _finite(self.decode(token), f"step {step + 1}")
                token = sampler(logits)
                tokens = token.tolist()
                stats.decode_steps += 1
                stats.decode_s += time.perf_counter() - t1
            stats.finish = ["stop" if d else "length" for d in done]

    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, sampling: SamplingParams | None = None,
                 stop_ids: Sequence[int] = (), stats: GenerationStats | None = None,
                 until: Callable[[list[int]], bool] | None = None) -> list[list[int]]:
        """Generate for a batch of prompts; each row's new tokens, ending with its stop id if it hit one.

        until(row) -> True ends a row early (e.g. on a stop string); the batch stops once every row has ended.
        """
        return collect(self.stream(prompts, max_new_tokens, sampling, stop_ids, stats), len(prompts), until)


def collect(steps: Iterator[list[int | None]], rows: int, until: Callable[[list[int]], bool] | None = None
            ) -> list[list[int]]:
    """Gather a stream's steps into each row's tokens; a row ends when until(row) says so, and the stream is
    closed once every row has ended."""
    out: list[list[int]] = [[] for _ in range(rows)]
    ended = [False] * rows
    try:
        for step in steps:
            for b, t in enumerate(step):
                if t is not None and not ended[b]:
                    out[b].append(t)
                    ended[b] = until is not None and until(out[b])
            if until is not None and all(ended):
                break
    finally:
        steps.close()
    return out


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def room_left(prompt_tokens: int, max_new_tokens: int, context: int) -> int:
    """max_new_tokens capped at what the context holds after the prompt (what Engine.stream generates)."""
    return max(0, min(max_new_tokens, context - prompt_tokens))


def _finite(logits: torch.Tensor, where: str) -> torch.Tensor:
    if not bool(torch.isfinite(logits).all()):
        raise SlmError(f"the model produced NaN or infinite logits at {where}; its weights or config are broken "
                       "(or the dtype overflows: try --dtype float32)")
    return logits


def cache_length(n: int, limit: int) -> int:
    """Cache length for n tokens: the next power of two from 256, so compiled shapes repeat across calls."""
    size = 256
    while size < n:
        size *= 2
    return max(min(size, max(limit, n)), n)
