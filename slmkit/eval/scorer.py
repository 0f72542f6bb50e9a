"""Batched log-likelihood scoring on a slmkit Transformer, with each shared context computed once.

A request group is one context and the continuations scored after it (a multiple-choice item's choices).
Two forward passes per batch of groups:

1. The context minus its last token, right-padded, through the KV cache (no vocabulary matmul).
2. One row per (group, continuation): the context's last token plus the continuation minus its last token,
   written at the row's own cache slots (right after its context), over a copy of its group's cached context.
   Its logits score every continuation token.

Right padding keeps each row's real tokens at the same slots whatever the other rows hold, and padding only
ever sits after a row's real keys, where causality hides it. CPU kernels still round differently when a
sequence or key length changes (SDPA's blocking, vector tails) or a matmul has very few rows, so both lengths
are rounded up to buckets and a batch holds only groups of one bucket: a group's scores are then the same bit
for bit alone or in any batch (tests/test_eval_scoring.py). Sliding windows stay right: slot == position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from slmkit.model.model import Transformer

MIN_ROWS = 16  # see bucket
HEAD_CHUNK = 1024  # positions per vocabulary matmul, so long continuations (rolling windows) fit in memory


def bucket(n: int) -> int:
    """Round a length up: to 16 up to 256, to 64 up to 1024, then to 256 (at most ~25% padding)."""
    step = MIN_ROWS if n <= 256 else 64 if n <= 1024 else 256
    return max(MIN_ROWS, -(-n // step) * step)


@dataclass
class Group:
    """One context (at least one token) and the continuations (each at least one token) scored after it."""

    context: list[int]
    continuations: list[list[int]]

    @property
    def length(self) -> int:
        return len(self.context) + max(len(c) for c in self.continuations)

    @property
    def shape_key(self) -> tuple[int, int]:
        prefix = len(self.context) - 1
        return (bucket(prefix) if prefix else 0, bucket(max(len(c) for c in self.continuations)))


def batches(groups: Sequence[Group], batch_size: int, max_tokens: int = 16384) -> list[list[int]]:
    """Indices of groups in batches of one shape bucket each, longest first (like lm-eval's ordering, so a
    memory problem shows at once); a batch holds at most batch_size groups and about max_tokens tokens."""
    order = sorted(range(len(groups)), key=lambda i: (groups[i].shape_key, groups[i].length), reverse=True)
    out: list[list[int]] = []
    for i in order:
        g = groups[i]
        P, M = g.shape_key
        cost = P + M * len(g.continuations)
        last = out[-1] if out else None
        if (last and groups[last[0]].shape_key == g.shape_key and len(last) < batch_size
                and (len(last) + 1) * cost <= max(max_tokens, cost)):
            last.append(i)
        else:
            out.append([i])
    return out


def _pad(rows: Sequence[Sequence[int]], width: int, device: torch.device) -> torch.Tensor:
    out = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out.to(device)


@torch.inference_mode()
def score_groups(model: Transformer, groups: Sequence[Group]) -> list[list[tuple[float, bool]]]:
    """(sum of log-probabilities, whether every token is the argmax) for each continuation of each group."""
    device = model.tok_emb.weight.device
    prefixes = [g.context[:-1] for g in groups]
    rows = [(i, [g.context[-1]] + c[:-1], c) for i, g in enumerate(groups) for c in g.continuations]
    P = max(len(p) for p in prefixes)
    M = max(len(r[1]) for r in rows)
    # Every size is rounded up to a bucket, so a group gets the same shapes whatever batch it is in (see
    # `batches`); a bucket is at least MIN_ROWS, so no matmul runs on a handful of rows.
    P = bucket(P) if P else 0
    M = bucket(M)
    model.setup_caches(len(groups), P + M, torch.float32 if device.type == "cpu" else None)
    try:
        if P:
            model(_pad(prefixes, P, device), slots=torch.arange(P, device=device), kv_len=P, hidden=True)
        owner = torch.tensor([r[0] for r in rows], device=device)
        for cache in model.caches:  # each continuation row gets its own copy of its group's context
            cache.k, cache.v = cache.k.index_select(0, owner), cache.v.index_select(0, owner)
        starts = torch.tensor([len(prefixes[r[0]]) for r in rows], device=device)
        slots = starts[:, None] + torch.arange(M, device=device)  # (rows, M)
        hidden = model(_pad([r[1] for r in rows], M, device), slots=slots, kv_len=P + M, hidden=True)
    finally:
        model.clear_caches()

    targets = _pad([r[2] for r in rows], M, device)
    logprob = torch.zeros(len(rows), M, dtype=torch.float64, device=device)
    greedy = torch.ones(len(rows), M, dtype=torch.bool, device=device)
    for s in range(0, M, HEAD_CHUNK):
        logits = model.head(hidden[:, s : s + HEAD_CHUNK]).float()
        tgt = targets[:, s : s + HEAD_CHUNK, None]
        logprob[:, s : s + HEAD_CHUNK] = F.log_softmax(logits, dim=-1).gather(-1, tgt)[..., 0].double()
        greedy[:, s : s + HEAD_CHUNK] = logits.argmax(-1) == tgt[..., 0]
    out: list[list[tuple[float, bool]]] = [[] for _ in groups]
    for j, (i, _, cont) in enumerate(rows):
        n = len(cont)
        out[i].append((float(logprob[j, :n].sum()), bool(greedy[j, :n].all())))
    return out
