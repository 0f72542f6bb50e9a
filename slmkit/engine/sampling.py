"""Next-token selection from logits: greedy, temperature, top-k, top-p, min-p, repetition penalty, seeded.

Each batch row draws from its own torch.Generator, so row i of a batch samples exactly what a single run with
the same seed samples (the batch-equals-single-runs property holds under sampling too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from slmkit.errors import SlmError


@dataclass
class SamplingParams:
    """How to pick the next token. temperature 0 means greedy; top_k 0 and top_p 1 and min_p 0 mean off."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise SlmError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if self.top_k < 0:
            raise SlmError(f"top_k must be >= 0 (0 turns it off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise SlmError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.min_p < 1:
            raise SlmError(f"min_p must be in [0, 1), got {self.min_p}")
        if self.repetition_penalty <= 0:
            raise SlmError(f"repetition_penalty must be > 0 (1 turns it off), got {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL-style penalty as transformers applies it: seen tokens' positive logits / p, negative ones * p.

    logits (B, V) float32; seen (B, V) bool.
    """
    if penalty == 1.0:
        return logits
    scaled = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, scaled, logits)


def filter_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature, then top-k, top-p (nucleus) and min-p as masks to -inf; logits (B, V) float32."""
    logits = logits / params.temperature
    if params.top_k and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.min_p > 0:
        probs = torch.softmax(logits, dim=-1)
        floor = probs.amax(dim=-1, keepdim=True) * params.min_p
        logits = logits.masked_fill(probs < floor, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        drop = probs.cumsum(dim=-1) - probs >= params.top_p  # keep the token that crosses top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


class Sampler:
    """Picks one token per row from (B, V) logits; holds the per-row generators and the seen-token mask."""

    def __init__(self, params: SamplingParams, batch: int, vocab_size: int, device: torch.device):
        self.params = params
        self.generators: list[torch.Generator] = []
        if not params.greedy:
            seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, ()).item())
            self.generators = [torch.Generator(device=device).manual_seed(seed) for _ in range(batch)]
        self.seen = torch.zeros(batch, vocab_size, dtype=torch.bool, device=device)
        self.noise = torch.empty(batch, vocab_size, dtype=torch.float32, device=device)

    def observe_prompts(self, prompts: Sequence[Sequence[int]]) -> None:
        """Mark each row's prompt ids as seen for the repetition penalty (padding never enters)."""
        if self.params.repetition_penalty != 1.0:
            for row, ids in enumerate(prompts):
                self.seen[row, torch.tensor(ids, dtype=torch.long, device=self.seen.device)] = True

    def observe(self, tokens: torch.Tensor) -> None:
        """Mark one new token per row (B,) as seen for the repetition penalty."""
        if self.params.repetition_penalty != 1.0:
            self.seen.scatter_(1, tokens.view(-1, 1), True)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """Next token ids (B,) from logits (B, V)."""
        logits = apply_repetition_penalty(logits.float(), self.seen, self.params.repetition_penalty)
        if self.params.greedy:
            return logits.argmax(dim=-1)
        probs = torch.softmax(filter_logits(logits, self.params), dim=-1)
        # Exponential-race sampling (argmax p / E, E ~ Exp(1)) equals multinomial sampling without a device sync.
        for row, gen in enumerate(self.generators):
            self.noise[row].exponential_(1.0, generator=gen)
        return (probs / self.noise).argmax(dim=-1)
