"""Batched log-likelihood scoring on a slmkit Transformer, with each shared context computed once.

A request group is one context and the continuations scored after it (a multiple-choice item's choices).
Each group is packed into one row: the context, then every continuation minus its last token, each as a
branch that attends to the context and to itself only and takes the positions right after the context.

    tokens     c0 c1 c2 | a0 a1 | b0 b1 b2      (context c, continuations a0..a2 and b0..b3)
    positions   0  1  2 |  3  4 |  3  4  5
    scores     c2 -> a0 and b0;  a0 -> a1, a1 -> a2;  b0 -> b1, b1 -> b2, b2 -> b3

So a four-choice item costs its context once plus its choices, with no padding between them, and the
vocabulary matmul runs only on the positions that predict a continuation token.

Many documents can share the start of their contexts: a 5-shot MMLU prompt is the subject's description and
the same five demonstrations (lm-eval's first_n sampler), most of its tokens, then the question.
`shared_prefixes` finds such prefixes over a task's contexts (sorted, the longest common token prefix of
neighbours, cut where sharing saves the most tokens); `encode_prefix` computes a prefix's keys and values
once, and `score_groups(..., prefix)` scores rows that hold only what follows it, attending to those cached
keys (positions continue after the prefix). In float32 the log-likelihoods equal scoring whole rows to
rounding (about 1e-6); a prefix depends only on the task's requests, so results stay batch-size invariant.

Rows are right-padded, and padding sits after a row's real tokens, which never attend to it. CPU kernels
still round differently when a sequence length changes (SDPA's blocking, vector tails) or a matmul has very
few rows, so the row length is rounded up to a bucket and a batch holds groups of one bucket only: a group's
scores are the same bit for bit alone or in any batch (tests/test_eval.py).
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
    """Round a length up: to 8 up to 256, to 64 up to 1024, then to 256 (at least MIN_ROWS, at most ~25% padding)."""
    step = 8 if n <= 256 else 64 if n <= 1024 else 256
    return max(MIN_ROWS, -(-n // step) * step)


MIN_SHARED = 32  # a shared prefix shorter than this is computed with each row
MIN_SAVED = 256  # nor is one shared when it saves fewer token positions than this in all


@dataclass
class Group:
    """One context (at least one token) and the continuations (each at least one token) scored after it;
    `shared` leading context tokens come from a prefix computed once (encode_prefix)."""

    context: list[int]
    continuations: list[list[int]]
    shared: int = 0

    @property
    def branch_tokens(self) -> int:
        return sum(len(c) - 1 for c in self.continuations)

    @property
    def length(self) -> int:
        """Tokens in the packed row (after the shared prefix)."""
        return len(self.context) - self.shared + self.branch_tokens

    @property
    def shape_key(self) -> tuple[int, bool]:
        """(row bucket, whether the row is one plain causal sequence): groups batched together share it."""
        return bucket(self.length), len(self.continuations) == 1


def batches(groups: Sequence[Group], batch_size: int, max_tokens: int = 16384) -> list[list[int]]:
    """Indices of groups in batches of one shape bucket each, longest first (like lm-eval's ordering, so a
    memory problem shows at once); a batch holds at most batch_size groups and about max_tokens tokens."""
    order = sorted(range(len(groups)), key=lambda i: (groups[i].shape_key, groups[i].length), reverse=True)
    out: list[list[int]] = []
    for i in order:
        g = groups[i]
        cost = g.shape_key[0]
        last = out[-1] if out else None
        if (last and groups[last[0]].shape_key == g.shape_key and len(last) < batch_size
                and (len(last) + 1) * cost <= max(max_tokens, cost)):
            last.append(i)
        else:
            out.append([i])
    return out


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def shared_prefixes(contexts: Sequence[Sequence[int]]) -> dict[tuple[int, ...], int]:
    """For each context worth it, how many of its leading tokens to take from a prefix computed once.

    Sorted, contexts that share a prefix are neighbours, and the common prefix of a run of them is the least
    common prefix of neighbours (each capped one short of either context: a row keeps its context's last
    token, which predicts the first continuation token). A run with common prefix P over n contexts saves
    (n - 1) * P token positions; a run is split at its weakest links where its parts save more, and a prefix is
    shared only when it has MIN_SHARED tokens and saves MIN_SAVED positions."""
    order = sorted({tuple(c) for c in contexts})
    links = [min(_lcp(a, b), len(a) - 1, len(b) - 1) for a, b in zip(order, order[1:])]

    def saved(n: int, p: int) -> int:
        v = (n - 1) * p
        return v if p >= MIN_SHARED and v >= MIN_SAVED else 0

    out: dict[tuple[int, ...], int] = {}
    # each entry: contexts lo..hi (inclusive); best() splits at the positions of the weakest link
    def best(lo: int, hi: int, depth: int = 0) -> tuple[int, list[tuple[int, int, int]]]:
        if lo == hi:
            return 0, []
        p = min(links[lo:hi])
        whole = (saved(hi - lo + 1, p), [(lo, hi, p)] if saved(hi - lo + 1, p) else [])
        if depth > 64:  # (a pathological nesting of prefixes) take the run whole
            return whole
        cuts = [i for i in range(lo, hi) if links[i] == p]
        total, parts, start = 0, [], lo
        for c in cuts + [hi]:
            end = c if c < hi else hi
            s, ps = best(start, end, depth + 1)
            total, parts, start = total + s, parts + ps, end + 1
        return (total, parts) if total > whole[0] else whole

    lo = 0
    for i in range(len(order)):  # runs split first where neighbours share too little to matter
        if i == len(order) - 1 or links[i] < MIN_SHARED:
            for a, b, p in best(lo, i)[1]:
                for k in range(a, b + 1):
                    out[order[k]] = p
            lo = i + 1
    return out


@dataclass
class Prefix:
    """A shared prefix's tokens and each layer's keys and values for it (batch 1)."""

    tokens: list[int]
    kv: list[tuple[torch.Tensor, torch.Tensor]]


@torch.inference_mode()
def encode_prefix(model: Transformer, tokens: list[int]) -> Prefix:
    caches = model.new_caches(1, len(tokens))
    model(torch.tensor([tokens], device=model.device), slots=torch.arange(len(tokens), device=model.device),
          caches=caches, hidden=True, last_only=True)
    return Prefix(list(tokens), [(c.k, c.v) for c in caches])


@torch.inference_mode()
def score_groups(model: Transformer, groups: Sequence[Group], prefix: Prefix | None = None
                 ) -> list[list[tuple[float, bool]]]:
    """(sum of log-probabilities, whether every token is the argmax) for each continuation of each group;
    with a prefix, every group's context starts with it and shares its length."""
    device = model.device
    keys = {g.shape_key for g in groups}
    if len(keys) != 1:
        raise ValueError(f"a batch must hold groups of one shape bucket, got {sorted(keys)}")
    P = len(prefix.tokens) if prefix is not None else 0
    if any(g.shared != P or g.context[:P] != prefix.tokens for g in groups if prefix is not None) or (
            prefix is None and any(g.shared for g in groups)):
        raise ValueError("every group of a batch must continue the batch's shared prefix")
    T, plain = keys.pop()
    B = len(groups)
    tokens = torch.zeros(B, T, dtype=torch.long)
    positions = torch.zeros(B, T, dtype=torch.long)
    mask = None if plain else torch.zeros(B, T, P + T, dtype=torch.bool)
    heads: list[int] = []  # flat (row * T + position) indices whose logits are needed
    picks: list[list[tuple[list[int], list[int]]]] = []  # per group, per continuation: (rows in heads, targets)
    for b, g in enumerate(groups):
        L = len(g.context) - P  # the context's tokens in the row
        row = g.context[P:] + [t for c in g.continuations for t in c[:-1]]
        tokens[b, : len(row)] = torch.tensor(row)
        positions[b, :L] = torch.arange(P, P + L)
        if mask is not None:
            mask[b, :, :P] = True
            mask[b, :L, P : P + L] = torch.ones(L, L, dtype=torch.bool).tril()
        last = len(heads)
        heads.append(b * T + L - 1)
        start = L
        picks.append([])
        for c in g.continuations:
            n = len(c) - 1
            positions[b, start : start + n] = torch.arange(P + L, P + L + n)
            if mask is not None:
                mask[b, start : start + n, : P + L] = True
                mask[b, start : start + n, P + start : P + start + n] = torch.ones(n, n, dtype=torch.bool).tril()
            picks[-1].append(([last] + list(range(len(heads), len(heads) + n)), list(c)))
            heads.extend(b * T + p for p in range(start, start + n))
            start += n

    if prefix is None:
        hidden = model(tokens.to(device), positions.to(device), hidden=True,
                       mask=None if mask is None else mask.to(device))
    else:  # the rows continue the prefix: its keys and values are copied into each row's cache
        caches = model.new_caches(B, P + T, prefix.kv[0][0].dtype)
        for cache, (k, v) in zip(caches, prefix.kv):
            cache.k[:, :, :P] = k
            cache.v[:, :, :P] = v
        hidden = model(tokens.to(device), positions.to(device), slots=torch.arange(P, P + T, device=device),
                       caches=caches, hidden=True, mask=None if mask is None else mask.to(device))
    hidden = hidden.reshape(B * T, -1)
    # The vocabulary matmul runs on the needed positions only, in chunks of at least MIN_ROWS rows (padded
    # with copies of the first), so every position's logits come out the same whatever shares its chunk.
    n_heads = len(heads)
    padded = heads + heads[:1] * (-n_heads % MIN_ROWS)
    rows = torch.tensor([r for p in picks for rs, _ in p for r in rs], device=device)
    targets = torch.tensor([t for p in picks for _, ts in p for t in ts], device=device)
    logprob = torch.empty(len(rows), dtype=torch.float64, device=device)
    greedy = torch.empty(len(rows), dtype=torch.bool, device=device)
    index = torch.tensor(padded, device=device)
    for s in range(0, n_heads, HEAD_CHUNK):
        logits = model.head(hidden[index[s : s + HEAD_CHUNK]]).float()
        sel = (rows >= s) & (rows < s + HEAD_CHUNK)
        local, tgt = rows[sel] - s, targets[sel]
        logprob[sel] = F.log_softmax(logits, dim=-1)[local, tgt].double()
        greedy[sel] = logits.argmax(-1)[local] == tgt
    out: list[list[tuple[float, bool]]] = []
    j = 0
    for p in picks:
        out.append([])
        for rs, _ in p:
            n = len(rs)
            out[-1].append((float(logprob[j : j + n].sum()), bool(greedy[j : j + n].all())))
            j += n
    return out
