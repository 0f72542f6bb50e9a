"""Speculative decoding: a drafter proposes up to k tokens, the target scores them all in one forward.

Two drafters: a small draft model (`ModelDraft`: an Engine on the same vocabulary) and prompt lookup
(`LookupDraft`: the tokens that followed an earlier occurrence of the text's last n-gram; no second model, see
slmkit.engine.lookup). Each cycle, starting from the last token x (in neither cache yet):
1. the drafter proposes d1..dm, m <= k (q_i: a draft model's distribution for d_i; a lookup's proposals are
   deterministic, q_i one-hot); m may be 0 (no lookup match): the cycle is then a plain decode step;
2. the target extends its cache by [x, d1..dm] in one forward: p_0..p_m, p_i the distribution after position i;
3. d_i is accepted with probability min(1, p(d_i) / q(d_i)) (greedy: when it is the target's argmax), in
   order, up to the first rejection; at a rejection the next token is drawn from norm(max(0, p - q)) (greedy:
   the target's argmax), and after m acceptances from p_m (a bonus token);
4. the caches roll back to x, d1..dn (n accepted): the rejected tokens' slots are simply forgotten.

The accept/reject rule (Leviathan et al. 2023; Chen et al. 2023) makes every emitted token a draw from the
target's own distribution, whatever the draft proposes; greedy output is the target's greedy output. p and q
are the distributions after temperature, top-k, top-p and min-p, so the output follows the target as
`Sampler` would sample it alone. The draft only changes the speed: the tokens accepted per target forward.
With a compiled target, a verify of fewer than k tokens is padded to the compiled k + 1 width (the padding's
logits are ignored and its slots rolled back; causality keeps it out of the real positions).

Batch 1 (a draft's proposals differ per row); `generate` runs several prompts one after the other. The server
drafts per row in its continuous batcher (slmkit.serve.batcher).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch

from slmkit.engine.engine import Engine, GenerationStats, cache_length, collect
from slmkit.engine.sampling import SamplingParams, filter_logits
from slmkit.errors import SlmError


@dataclass
class SpeculativeStats(GenerationStats):
    """GenerationStats plus the draft's record: tokens proposed and accepted, target forwards (cycles)."""

    drafted: int = 0
    accepted: int = 0
    cycles: int = 0  # target forwards after the prefill
    verifies: int = 0  # of cycles: those with at least one proposal (a lookup proposes only on a match)
    draft_s: float = 0.0  # of decode_s: time in the draft's steps
    verify_s: float = 0.0  # of decode_s: time in the target's verifying forwards

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def tokens_per_cycle(self) -> float:
        """Tokens emitted per target forward (accepted drafts plus the target's own token)."""
        return (self.accepted + self.cycles) / self.cycles if self.cycles else 0.0

    @property
    def decode_tok_s(self) -> float:
        return (self.new_tokens - 1) / self.decode_s if self.decode_s else 0.0  # the first came from the prefill

    def parts(self) -> list[str]:
        out = super().parts()
        if self.cycles:
            verified = (f", proposals at {self.verifies}/{self.cycles} steps" if self.verifies < self.cycles
                        else "")
            out.insert(2, f"draft accepted {self.accepted}/{self.drafted} ({100 * self.acceptance_rate:.0f}%){verified}"
                          f", {self.tokens_per_cycle:.2f} tok per target forward")
        return out


def check_vocabularies(target_vocab: int, draft_vocab: int, target_tokens: dict | None = None,
                       draft_tokens: dict | None = None) -> None:
    """Refuse a draft whose token ids do not mean what the target's do (one clear line)."""
    if target_vocab != draft_vocab:
        raise SlmError(f"the draft's vocabulary has {draft_vocab} ids and the target's {target_vocab}; a draft must "
                       "share the target's tokenizer (pick a draft of the same model family)")
    if target_tokens is not None and draft_tokens is not None and target_tokens != draft_tokens:
        differ = sorted(set(target_tokens.items()) ^ set(draft_tokens.items()), key=lambda kv: kv[1])[:3]
        raise SlmError(f"the draft's tokenizer maps tokens to different ids than the target's (e.g. {differ}); a "
                       "draft must share the target's tokenizer")


class ModelDraft:
    """Proposals from a small draft model: an Engine whose cache follows the target's accepted tokens."""

    def __init__(self, engine: Engine, k: int):
        self.engine, self.k = engine, k
        self.vocab_size, self.device = engine.vocab_size, engine.device

    @property
    def compile_s(self) -> float | None:
        return self.engine.compile_s

    def setup(self, length: int) -> None:
        if self.engine.batch != 1 or self.engine.max_len < length:
            self.engine.setup_caches(1, length)

    def start(self, prompt: list[int]) -> None:
        self.engine.prefill([prompt])

    def propose(self, x: int, sampling: SamplingParams, gen: torch.Generator | None
                ) -> tuple[list[int], torch.Tensor | None]:
        """k draft tokens after x, and (sampling) the draft's distributions they were drawn from (k, V)."""
        tokens, dists = [], []
        token = torch.tensor([x], device=self.device)
        for _ in range(self.k):
            logits = self.engine.decode(token)  # (1, V)
            if gen is None:
                token = logits.argmax(dim=-1)
            else:
                q = _probs(logits, sampling)
                dists.append(q[0])
                token = torch.multinomial(q, 1, generator=gen).view(1)
            tokens.append(token)
        return torch.cat(tokens).tolist(), (torch.stack(dists) if dists else None)

    def commit(self, length: int, proposed: list[int], n: int) -> None:
        """The target accepted n of the proposals after x, which sat at slot `length`."""
        if n == len(proposed):  # the draft never saw its own last proposal: give it before the next cycle
            self.engine.decode(torch.tensor([proposed[-1]], device=self.device))
        else:
            self.engine.rollback(length + 1 + n)


class LookupDraft:
    """Prompt-lookup proposals (slmkit.engine.lookup): up to k tokens copied from earlier in the prompt or the
    reply, none when the last n-gram has not occurred before. Deterministic: q is one-hot at each proposal."""

    compile_s = None

    def __init__(self, k: int, max_ngram: int = 3, min_ngram: int | None = None):
        from slmkit.engine.lookup import LookupIndex

        self.k = k
        self.index = LookupIndex(max_ngram, min(2, max_ngram) if min_ngram is None else min_ngram)

    def setup(self, length: int) -> None:
        pass

    def start(self, prompt: list[int]) -> None:
        self.index.reset(prompt)

    def propose(self, x: int, sampling: SamplingParams, gen: torch.Generator | None) -> tuple[list[int], None]:
        self.index.append(x)
        return self.index.propose(self.k), None

    def commit(self, length: int, proposed: list[int], n: int) -> None:
        self.index.extend(proposed[:n])


class SpeculativeEngine:
    """Generates with `target`'s output distribution, up to `k` drafted tokens per target forward (module doc).

    draft: an Engine on a model with the target's vocabulary (wrapped in a ModelDraft), or a drafter
    (ModelDraft, LookupDraft). With compile=True the target's (k+1)-token verify step (and, with a lookup, its
    one-token decode step, compile_widths=(1, k + 1)) and a draft model's decode step are compiled.
    """

    one_prompt_at_a_time = True  # stream() takes one prompt; generate() and stream_rows() loop over them

    @staticmethod
    def add_stats(total: GenerationStats, one: "SpeculativeStats") -> None:
        """Add one prompt's stats to a total (several prompts, one after the other)."""
        _add_stats(total, one)

    def __init__(self, target: Engine, draft: "Engine | ModelDraft | LookupDraft", k: int = 4):
        if k < 1:
            raise SlmError(f"the draft length k must be >= 1, got {k}")
        if isinstance(draft, Engine):
            draft = ModelDraft(draft, k)
        if isinstance(draft, ModelDraft):
            check_vocabularies(target.vocab_size, draft.vocab_size)
            if target.device != draft.device:
                raise SlmError(f"the target runs on {target.device} and the draft on {draft.device}; put both on one "
                               "device")
        draft.k = k
        self.target, self.draft, self.k = target, draft, k
        self.vocab_size = target.vocab_size
        self.device = target.device

    @property
    def compile_s(self) -> float | None:
        times = [t for t in (self.target.compile_s, self.draft.compile_s) if t is not None]
        return sum(times) if times else None

    def _setup(self, need: int) -> None:
        """Caches for `need` tokens plus a cycle's k + 1 in both engines (the same length: shared compile keys)."""
        n = cache_length(need + self.k + 1, self.target.model.config.context_length)
        if self.target.batch != 1 or self.target.max_len < need + self.k + 1:
            self.target.setup_caches(1, n)
        self.draft.setup(n)

    def stream(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, sampling: SamplingParams | None = None,
               stop_ids: Sequence[int] = (), stats: GenerationStats | None = None,
               reuse_prefix: bool = False) -> Iterator[list[int | None]]:
        """Like Engine.stream for one prompt: yields [token] per new token (several per target forward).

        reuse_prefix is accepted for the interface and ignored: the caches are refilled.
        """
        sampling = sampling or SamplingParams()
        if len(prompts) != 1:
            raise SlmError(f"speculative decoding runs one prompt at a time, got {len(prompts)}; use generate()")
        if sampling.repetition_penalty != 1.0:
            raise SlmError("repetition_penalty is not supported with a draft (the penalty would differ "
                           "between drafted positions); leave it at 1 or drop --draft")
        if max_new_tokens < 1:
            raise SlmError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        prompt = list(prompts[0])
        if not prompt:
            raise SlmError("empty prompt: give at least one token (most models want their BOS token)")
        stats = stats if stats is not None else SpeculativeStats()
        context = self.target.model.config.context_length if hasattr(self.target, "model") else None
        if context is not None:
            if len(prompt) >= context:
                raise SlmError(f"the prompt has {len(prompt)} tokens but the model's context holds {context}")
            max_new_tokens = min(max_new_tokens, context - len(prompt))
        self._setup(len(prompt) + max_new_tokens)
        stats.batch, stats.prompt_tokens, stats.compile_s = 1, len(prompt), self.compile_s
        gen = None
        if not sampling.greedy:
            seed = sampling.seed if sampling.seed is not None else int(torch.randint(0, 2**62, ()).item())
            gen = torch.Generator(device=self.device).manual_seed(seed)
        stop_set = set(stop_ids)
        spec = stats if isinstance(stats, SpeculativeStats) else None
        target, draft = self.target, self.draft
        with torch.inference_mode():
            t0 = time.perf_counter()
            logits = target.prefill([prompt])
            draft.start(prompt)
            x = self._pick(logits, sampling, gen)
            stats.prefill_s = time.perf_counter() - t0
            emitted = 0
            while True:
                # Emit the cycle's tokens: [x] first, then (below) each cycle's accepted drafts and its own token.
                stats.new_tokens += 1
                emitted += 1
                yield [x]
                if x in stop_set:
                    stats.finish = ["stop"]
                    return
                if emitted >= max_new_tokens:
                    stats.finish = ["length"]
                    return
                t1 = time.perf_counter()
                proposed, q = draft.propose(x, sampling, gen)
                t2 = time.perf_counter()
                length = target.length
                p_logits = self._verify(x, proposed)  # (m+1, V)
                n, x = accept(proposed, q, p_logits, sampling, gen)
                target.rollback(length + 1 + n)
                if proposed:
                    draft.commit(length, proposed, n)
                t3 = time.perf_counter()
                stats.decode_s += t3 - t1
                stats.decode_steps += 1
                if spec is not None:
                    spec.drafted += len(proposed)
                    spec.accepted += n
                    spec.cycles += 1
                    spec.verifies += bool(proposed)
                    spec.draft_s += t2 - t1
                    spec.verify_s += t3 - t2
                for d in proposed[:n]:
                    stats.new_tokens += 1
                    emitted += 1
                    yield [d]
                    if d in stop_set or emitted >= max_new_tokens:
                        stats.finish = ["stop" if d in stop_set else "length"]
                        return

    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, sampling: SamplingParams | None = None,
                 stop_ids: Sequence[int] = (), stats: GenerationStats | None = None,
                 until: Callable[[list[int]], bool] | None = None) -> list[list[int]]:
        """Each prompt's new tokens (one prompt after the other); stats sums over the prompts. until: see
        Engine.generate."""
        rows = []
        for prompt in prompts:
            one = SpeculativeStats()
            rows += collect(self.stream([prompt], max_new_tokens, sampling, stop_ids, one), 1, until)
            if stats is not None:
                _add_stats(stats, one)
        return rows

    # --- one cycle -------------------------------------------------------------------------------------

    def _pick(self, logits: torch.Tensor, sampling: SamplingParams, gen: torch.Generator | None) -> int:
        """One token from next-token logits (1, V) or (V,): the argmax, or a draw from the filtered softmax."""
        if gen is None:
            return int(logits.view(-1).argmax())
        probs = _probs(logits.view(1, -1), sampling)[0]
        return int(torch.multinomial(probs, 1, generator=gen))

    def _verify(self, x: int, proposed: list[int]) -> torch.Tensor:
        """The target's logits after x and after each proposal (m+1, V): a decode step when there is none, else
        one forward, padded to the compiled width when the target has one (the padding is rolled back)."""
        target = self.target
        if not proposed:
            return target.decode(torch.tensor([x], device=self.device))
        m = len(proposed) + 1
        width = self.k + 1 if self.k + 1 in target._blocks and m not in target._blocks else m
        width = min(width, target.max_len - target.length)
        tokens = [x] + proposed + proposed[-1:] * (width - m)
        return target.extend(torch.tensor([tokens], device=self.device))[0, :m]


def accept(proposed: list[int], q: torch.Tensor | None, p_logits: torch.Tensor, sampling: SamplingParams,
           gen: torch.Generator | None) -> tuple[int, int]:
    """(number of proposals accepted, the target's next token) for one cycle: proposed (m,), p_logits (m+1, V)
    the target's logits after the last token and after each proposal; q (m, V) the draft's distributions, or None
    for deterministic proposals (a lookup's: one-hot); gen None is greedy."""
    k = len(proposed)
    device = p_logits.device
    if gen is None:  # greedy: accept while the draft proposed the target's argmax
        best = p_logits.argmax(dim=-1).tolist()  # (k+1,)
        n = 0
        while n < k and proposed[n] == best[n]:
            n += 1
        return n, best[n]
    p = _probs(p_logits, sampling)  # (k+1, V)
    idx = torch.tensor(proposed, dtype=torch.long, device=device)
    rows = torch.arange(k, device=device)
    if q is None:
        q = torch.zeros(k, p.shape[-1], device=device)
        q[rows, idx] = 1.0
    ratio = p[rows, idx] / q[rows, idx]  # q > 0 at its own draws
    u = torch.rand(k, generator=gen, device=device)
    rejected = (u >= ratio).tolist()
    n = rejected.index(True) if True in rejected else k
    if n == k:
        return n, int(torch.multinomial(p[k], 1, generator=gen))
    residual = (p[n] - q[n]).clamp(min=0)
    total = residual.sum()
    if total <= 0:  # p == q to rounding: the rejection had probability ~0; fall back on p itself
        residual, total = p[n], p[n].sum()
    return n, int(torch.multinomial(residual / total, 1, generator=gen))


def _probs(logits: torch.Tensor, sampling: SamplingParams) -> torch.Tensor:
    """The sampling distribution (rows, V) that Sampler draws from, for float logits (rows, V)."""
    return torch.softmax(filter_logits(logits.float(), sampling), dim=-1)


def _add_stats(total: GenerationStats, one: SpeculativeStats) -> None:
    total.batch = 1
    total.compile_s = one.compile_s
    for name in ("prompt_tokens", "new_tokens", "prefill_s", "decode_s", "decode_steps"):
        setattr(total, name, getattr(total, name) + getattr(one, name))
    total.finish = total.finish + one.finish
    if isinstance(total, SpeculativeStats):
        for name in ("drafted", "accepted", "cycles", "verifies", "draft_s", "verify_s"):
            setattr(total, name, getattr(total, name) + getattr(one, name))
