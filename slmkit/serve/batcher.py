"""Continuous batching: one worker thread owns the model and serves every request through a RowEngine.

Requests wait in a bounded FIFO queue (`submit` raises QueueFull when it is full: the server's 429). Each loop
the worker admits waiting requests into free cache rows (a prefill each, whose first token is emitted at
once), then runs one decode step for all busy rows together and emits one token per row. A row is freed when
its request stops (a stop id, max_tokens), is cancelled (the client went away or a stop string matched), or
fails. Token events reach the caller through the `emit` callback it gave, called on the worker thread.

With `draft="lookup"` each row drafts its own prompt-lookup proposals (slmkit.engine.lookup): a step where any
row has a proposal is one verify forward of k + 1 tokens per row (each row's last token, its proposals, padding),
and each row accepts its own prefix by the speculative rule (slmkit.engine.speculative.accept), so it emits
1 + accepted tokens and its cache length advances by as many; a step where no row has one is the usual decode.
Greedy output equals the server's without drafts; sampled output follows the same distribution. Requests with a
repetition penalty do not draft (the penalty would differ between drafted positions).
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from slmkit.engine.lookup import LookupIndex, check_ngrams
from slmkit.engine.rows import RowEngine
from slmkit.engine.sampling import Sampler, SamplingParams
from slmkit.engine.speculative import accept
from slmkit.errors import SlmError
from slmkit.model.model import Transformer


class QueueFull(Exception):
    """The wait queue is at its bound; the caller should answer 429 and the client retry later."""


@dataclass
class Event:
    """One step of a request: a new token, or the end (finish "stop"/"length"/"cancelled"/"error")."""

    token: int | None = None
    finish: str | None = None
    error: str | None = None
    scores: "PromptScores | None" = None  # a scoring request's answer


@dataclass
class PromptScores:
    """Each prompt token's log-probability after the tokens before it (none for the first), and the `top` most
    likely (token id, log-probability) pairs at each of those positions."""

    logprobs: list[float]
    top: list[list[tuple[int, float]]]


@dataclass
class Request:
    """A generation request: token ids in; `emit` gets one Event per token and a last one with `finish`."""

    prompt: list[int]
    max_tokens: int
    sampling: SamplingParams
    stop_ids: frozenset[int]
    emit: Callable[[Event], None]
    submitted: float = field(default_factory=time.perf_counter)
    first_token_s: float | None = None  # seconds from submission to the first token
    cancelled: bool = False
    score_top: int | None = None  # score the prompt (no generation), with this many top tokens per position

    def cancel(self) -> None:
        """Stop generating (from any thread); the worker frees the row at its next step."""
        self.cancelled = True


@dataclass
class _Row:
    request: Request
    sampler: Sampler
    length: int  # cache slots filled
    token: int  # the last token, to be appended at the next step
    generated: int = 1
    lookup: LookupIndex | None = None  # the row's prompt and tokens so far, when it drafts


class Batcher:
    """Serves Requests on one model with continuous batching over `slots` cache rows of `max_len` tokens."""

    def __init__(self, model: Transformer, slots: int = 4, max_len: int = 2048, max_queue: int = 64,
                 compile: bool = False, draft: str | None = None, draft_k: int = 4, lookup_ngram: int = 3):
        if slots < 1 or max_queue < 0:
            raise SlmError(f"slots must be >= 1 and the queue >= 0, got {slots} and {max_queue}")
        if draft not in (None, "lookup"):
            raise SlmError(f"the server drafts by prompt lookup only (draft 'lookup'), got {draft!r}")
        if draft is not None:
            if draft_k < 1:
                raise SlmError(f"the draft length k must be >= 1, got {draft_k}")
            check_ngrams(lookup_ngram)
        self.draft_k = draft_k if draft else 0
        self.lookup_ngram = lookup_ngram
        self.engine = RowEngine(model, compile=compile, compile_widths=(1, draft_k + 1) if draft else (1,))
        self.engine.setup_caches(slots, max_len)
        self.slots, self.max_len, self.max_queue = slots, max_len, max_queue
        self.vocab_size = model.config.vocab_size
        self.rows: list[_Row | None] = [None] * slots
        self.waiting: collections.deque[Request] = collections.deque()
        self.tokens_generated = 0
        self.drafted = self.accepted = self.verify_steps = self.steps = 0  # draft counters, for /metrics
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._device = self.engine.device
        self._step_tokens = torch.zeros(slots, dtype=torch.long)
        self._step_lengths = torch.zeros(slots, dtype=torch.long)

    # --- caller side (any thread) -------------------------------------------------------------------------

    def start(self) -> "Batcher":
        """Run the worker loop on a thread of its own (see `run` for the faster main-thread way)."""
        self._thread = threading.Thread(target=self.run, name="slmkit-batcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def submit(self, request: Request) -> None:
        """Queue a request; raises QueueFull when `max_queue` requests already wait beyond the free rows."""
        if len(request.prompt) + request.max_tokens > self.max_len:
            raise SlmError(f"{len(request.prompt)} prompt tokens + {request.max_tokens} new exceed a cache row's "
                           f"{self.max_len}")
        with self._wake:
            if len(self.waiting) >= self.max_queue + self.free_rows():
                raise QueueFull(f"{len(self.waiting)} requests are already waiting")
            self.waiting.append(request)
            self._wake.notify()

    @property
    def queue_depth(self) -> int:
        return len(self.waiting)

    @property
    def busy_rows(self) -> int:
        return sum(r is not None for r in self.rows)

    def free_rows(self) -> int:
        return self.slots - self.busy_rows

    # --- worker thread ----------------------------------------------------------------------------------

    def run(self) -> None:
        """The worker loop, until `stop()`. On a CPU, run it on the main thread when you can: OpenMP kernels
        called from a secondary thread were measured ~1.7x slower per decode step (torch 2.13, 2 cores), which
        is why `slm serve` runs the HTTP server on a thread and this loop on the main one."""
        with torch.inference_mode():
            while True:
                with self._wake:
                    while not self._stopping and not self.waiting and not self.busy_rows:
                        self._wake.wait(timeout=0.5)  # a timeout keeps Ctrl-C responsive on the main thread
                    if self._stopping:
                        break
                try:
                    self._admit()
                    if self.busy_rows:
                        self._step()
                except Exception as e:  # noqa: BLE001 - one failed step must not take the server down
                    self._fail_all(f"{type(e).__name__}: {e}")
        for row in range(self.slots):
            if self.rows[row] is not None:
                self._finish(row, "cancelled")

    def _admit(self) -> None:
        """Prefill waiting requests into free rows (lowest first, so eager steps run few rows)."""
        while True:
            with self._wake:
                free = [i for i, r in enumerate(self.rows) if r is None]
                if not free or not self.waiting:
                    return
                request = self.waiting.popleft()
            if request.cancelled:
                request.emit(Event(finish="cancelled"))
                continue
            if request.score_top is not None:  # no row: one forward over the prompt
                try:
                    scores = self._score(request.prompt, request.score_top)
                except Exception as e:  # noqa: BLE001 - a bad request fails alone
                    request.emit(Event(finish="error", error=f"{type(e).__name__}: {e}"))
                    continue
                request.emit(Event(finish="stop", scores=scores))
                continue
            row = free[0]
            try:
                logits = self.engine.prefill_row(row, request.prompt)
                sampler = Sampler(request.sampling, 1, self.vocab_size, self._device)
                sampler.observe_prompts([request.prompt])
                token = int(sampler(logits[None])[0])
            except Exception as e:  # noqa: BLE001 - a bad request fails alone
                request.emit(Event(finish="error", error=f"{type(e).__name__}: {e}"))
                continue
            lookup = None
            if self.draft_k and request.sampling.repetition_penalty == 1.0:
                lookup = LookupIndex(self.lookup_ngram, min(2, self.lookup_ngram))
                lookup.reset(request.prompt + [token])
            self.rows[row] = _Row(request, sampler, len(request.prompt), token, lookup=lookup)
            self._deliver(row, token)

    def _score(self, prompt: list[int], top: int, chunk: int = 256) -> PromptScores:
        model = self.engine.model
        ids = torch.tensor([prompt], device=self._device)
        hidden = model(ids, hidden=True)[0, :-1]
        target = ids[0, 1:]
        logprobs: list[float] = []
        tops: list[list[tuple[int, float]]] = []
        for s in range(0, len(prompt) - 1, chunk):  # the vocabulary matmul a chunk of positions at a time
            logp = torch.log_softmax(model.head(hidden[s : s + chunk]).float(), dim=-1)
            logprobs += logp.gather(-1, target[s : s + chunk, None])[:, 0].tolist()
            if top:
                v, i = logp.topk(top, dim=-1)
                tops += [list(zip(ii, vv)) for ii, vv in zip(i.tolist(), v.tolist())]
            else:
                tops += [[] for _ in range(len(logp))]
        return PromptScores(logprobs, tops)

    def _step(self) -> None:
        """One decode step for every busy row (a verify step when a row has drafts)."""
        busy = [i for i, r in enumerate(self.rows) if r is not None]
        self.steps += 1
        if self.draft_k:
            proposals = self._proposals(busy)
            if proposals:
                return self._verify_step(busy, proposals)
        self._step_tokens.zero_()
        self._step_lengths.zero_()
        for i in busy:
            self._step_tokens[i] = self.rows[i].token
            self._step_lengths[i] = self.rows[i].length
        logits = self.engine.decode_rows(self._step_tokens.to(self._device), self._step_lengths.to(self._device),
                                         busy=busy[-1] + 1)
        for i in busy:
            row = self.rows[i]
            row.length += 1
            if row.request.cancelled:
                self._finish(i, "cancelled")
                continue
            self._advance(i, [], self._sample(row, logits[i:i + 1]))

    def _proposals(self, busy: list[int]) -> dict[int, list[int]]:
        """Each drafting row's lookup proposals (only rows that have some), capped by what the row may still emit;
        none at all when a padded verify step would run past a cache row (the step is then a plain decode)."""
        width = self.draft_k + 1
        out = {}
        for i in busy:
            row = self.rows[i]
            if row.length + width > self.max_len:
                return {}
            if row.lookup is not None and not row.request.cancelled:
                room = row.request.max_tokens - row.generated - 1  # the step's own token comes on top
                proposal = row.lookup.propose(min(self.draft_k, room)) if room > 0 else []
                if proposal:
                    out[i] = proposal
        return out

    def _verify_step(self, busy: list[int], proposals: dict[int, list[int]]) -> None:
        """One forward of k + 1 tokens per row; each row keeps its accepted proposals and the target's next token."""
        width = self.draft_k + 1
        tokens = torch.zeros(self.slots, width, dtype=torch.long)
        lengths = torch.zeros(self.slots, dtype=torch.long)
        for i in busy:
            row = self.rows[i]
            proposal = proposals.get(i, [])
            tokens[i, :1 + len(proposal)] = torch.tensor([row.token] + proposal)
            lengths[i] = row.length
        logits = self.engine.extend_rows(tokens.to(self._device), lengths.to(self._device), busy=busy[-1] + 1)
        self.verify_steps += 1
        for i in busy:
            row = self.rows[i]
            row.length += 1
            if row.request.cancelled:
                self._finish(i, "cancelled")
                continue
            proposal = proposals.get(i, [])
            if proposal:
                gen = row.sampler.generators[0] if row.sampler.generators else None
                n, token = accept(proposal, None, logits[i, :1 + len(proposal)], row.request.sampling, gen)
                self.drafted += len(proposal)
                self.accepted += n
            else:
                n, token = 0, self._sample(row, logits[i:i + 1, 0])
            self._advance(i, proposal[:n], token)

    def _sample(self, row: _Row, logits: torch.Tensor) -> int:
        """The row's next token from its logits (1, V), after the last token was seen (repetition penalty)."""
        row.sampler.observe(torch.tensor([row.token], device=self._device))
        return int(row.sampler(logits)[0])

    def _advance(self, i: int, accepted: list[int], token: int) -> None:
        """Emit a row's accepted proposals (their keys/values already cached) and then its next token."""
        row = self.rows[i]
        for j, t in enumerate(accepted + [token]):
            row.generated += 1
            row.token = t
            self._deliver(i, t)
            if self.rows[i] is None:
                break
            if row.lookup is not None:
                row.lookup.append(t)
            if j < len(accepted):
                row.length += 1

    def _deliver(self, i: int, token: int) -> None:
        """Emit a row's new token; finish the row on a stop id, at max_tokens or when cancelled."""
        row = self.rows[i]
        request = row.request
        if request.first_token_s is None:
            request.first_token_s = time.perf_counter() - request.submitted
        self.tokens_generated += 1
        request.emit(Event(token=token))
        if token in request.stop_ids:
            self._finish(i, "stop")
        elif row.generated >= request.max_tokens or row.length + 1 >= self.max_len:
            self._finish(i, "length")
        elif request.cancelled:
            self._finish(i, "cancelled")

    def _finish(self, i: int, finish: str, error: str | None = None) -> None:
        request = self.rows[i].request
        self.rows[i] = None
        request.emit(Event(finish=finish, error=error))

    def _fail_all(self, error: str) -> None:
        print(f"slmkit serve: a decode step failed ({error}); its requests get an error", file=sys.stderr)
        for i, r in enumerate(self.rows):
            if r is not None:
                self._finish(i, "error", error)
