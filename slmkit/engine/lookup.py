"""Prompt-lookup drafts: propose the tokens that followed the latest earlier occurrence of the text's last n-gram.

No second model (Saxena's prompt lookup decoding; transformers' `prompt_lookup_num_tokens`, vLLM's ngram
proposer): when a reply copies from its input (a summary quoting its passage, an edit of given code, an answer
naming the question's words) the continuation of an earlier occurrence of the last few tokens is often what comes
next. The speculative engine verifies the proposal in one target forward, so the output is the target's.

The index maps every n-gram (min_ngram <= n <= max_ngram) of the history to where its latest occurrence ended,
registered once a token follows it, so the text's own last n-gram never matches itself. Appending a token costs
max_ngram dictionary writes; a proposal tries the longest n first. Matches are taken only at n >= min_ngram: a
single repeated token (a space, "the") predicts too little to pay for a verify step on a CPU.
"""

from __future__ import annotations

from typing import Sequence

from slmkit.errors import SlmError


class LookupIndex:
    """The n-grams of one token history and where each one's latest occurrence ended (see the module doc)."""

    def __init__(self, max_ngram: int = 3, min_ngram: int = 2):
        check_ngrams(max_ngram, min_ngram)
        self.max_ngram, self.min_ngram = max_ngram, min_ngram
        self.tokens: list[int] = []
        self._ends: dict[tuple[int, ...], int] = {}

    def reset(self, tokens: Sequence[int] = ()) -> None:
        self.tokens, self._ends = [], {}
        self.extend(tokens)

    def extend(self, tokens: Sequence[int]) -> None:
        for t in tokens:
            self.append(int(t))

    def append(self, token: int) -> None:
        """Add a token: every n-gram that ends just before it now has a continuation, starting here."""
        seq, i = self.tokens, len(self.tokens)
        for n in range(self.min_ngram, min(self.max_ngram, i) + 1):
            self._ends[tuple(seq[i - n:i])] = i
        seq.append(token)

    def propose(self, k: int) -> list[int]:
        """Up to k tokens that followed the latest earlier occurrence of the longest matching suffix; [] if none."""
        seq = self.tokens
        for n in range(min(self.max_ngram, len(seq)), self.min_ngram - 1, -1):
            start = self._ends.get(tuple(seq[len(seq) - n:]))
            if start is not None:
                return seq[start:start + k]
        return []


def check_ngrams(max_ngram: int, min_ngram: int = 1) -> None:
    if min_ngram < 1 or max_ngram < min_ngram:
        raise SlmError(f"the lookup n-gram sizes must satisfy 1 <= min <= max, got min {min_ngram} and max "
                       f"{max_ngram}; pass --lookup-ngram 3 (the default) or another size >= 1")
