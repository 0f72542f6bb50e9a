"""An engine whose cache rows are independent sequences, each at its own length: continuous batching.

`Engine` moves all rows in lockstep (one shared slot, left padding). A server cannot: requests arrive and
finish at any time. Here row r holds one request's tokens in slots 0..length[r]-1; a new request is prefilled
into a free row on its own (the other rows' caches untouched), and one decode step appends a token to every
row at that row's own slot. Causality keeps each row's queries off a previous occupant's stale keys (they sit
at slots the new occupant overwrites before it reaches them), so no per-row key mask is needed.

Idle rows ride along in the step at slot 0 (a compiled step has a static batch and reads every row's whole
cache, so `max_len` is worth sizing to the prompts served); in eager mode the step runs only rows 0..hi-1, the
highest busy row and below, and attends only to the slots filled so far, so a lightly loaded server pays for
few rows.

`extend_rows` appends several tokens per row (a drafting server's verify step: each row's last token and its
proposals, padded to one width); rows then roll back simply by counting fewer slots as filled.
"""

from __future__ import annotations

from typing import Sequence

import torch

from slmkit.engine.engine import Engine
from slmkit.errors import SlmError
from slmkit.model.cache import KVCache


def _rows_of(caches, rows: slice) -> list:
    """The same (possibly nested: an EFT model's parts) caches over rows `rows`."""
    return [c.rows(rows) if isinstance(c, KVCache) else _rows_of(c, rows) for c in caches]


class RowEngine(Engine):
    """Prefill one row at a time; decode every row at its own slot in one step (see the module docstring)."""

    def _slot_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, 1)  # one slot per row

    def _rows(self, rows: slice) -> list:
        """Every layer's cache over rows `rows` only (views: writes land in the full cache)."""
        return _rows_of(self.caches, rows)

    def prefill_row(self, row: int, prompt: Sequence[int]) -> torch.Tensor:
        """Write a prompt's keys/values into row `row` from slot 0; return its next-token logits (vocab,)."""
        n = len(prompt)
        if n == 0:
            raise SlmError("empty prompt: give at least one token")
        if n >= self.max_len:
            raise SlmError(f"the prompt has {n} tokens but a cache row holds {self.max_len}; shorten the prompt")
        idx = torch.tensor([list(prompt)], dtype=torch.long, device=self.device)
        slots = torch.arange(n, device=self.device)
        caches = self._rows(slice(row, row + 1))
        return self.model(idx, None, None, slots, last_only=True, kv_len=n, caches=caches)[0, -1]

    def decode_rows(self, tokens: torch.Tensor, lengths: torch.Tensor, busy: int | None = None) -> torch.Tensor:
        """Append tokens (B,) to the rows at slots lengths (B,); return next-token logits (B, vocab).

        busy: in eager mode, run only rows 0..busy-1 and return their logits (busy, vocab). Idle rows should
        carry token 0 at length 0.
        """
        if int(lengths.max()) >= self.max_len:
            raise SlmError(f"a cache row is full ({self.max_len} tokens)")
        self._tokens.copy_(tokens.view(-1, 1))
        self._slot.copy_(lengths.view(-1, 1))
        self._positions.copy_(self._slot)
        if self.compile_s or busy is None or busy >= self.batch:
            with self._stance():
                return self._step(self._tokens, self._positions, self._slot, self.key_valid)
        rows = slice(0, busy)
        kv_len = int(lengths[rows].max()) + 1  # eager shapes are free: attend to the filled slots only
        return self.model(self._tokens[rows], self._positions[rows], self.key_valid[rows], self._slot[rows],
                          kv_len=kv_len, caches=self._rows(rows))[:, -1]

    def _block_buffers(self, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Static inputs of an extend step of `width` tokens: tokens, positions and slots, all (B, width)."""
        if width not in self._block_bufs:
            dev = self.device
            self._block_bufs[width] = tuple(torch.zeros(self.batch, width, dtype=torch.long, device=dev)
                                            for _ in range(3))
        return self._block_bufs[width]

    def extend_rows(self, tokens: torch.Tensor, lengths: torch.Tensor, busy: int | None = None) -> torch.Tensor:
        """Append tokens (B, m) to the rows from slots lengths (B,) on; return the logits after each (B, m, vocab).

        Compiled when m is in compile_widths (every row runs); else eager over rows 0..busy-1 (busy, m, vocab).
        Idle rows should carry length 0.
        """
        m = tokens.shape[1]
        if int(lengths.max()) + m > self.max_len:
            raise SlmError(f"a cache row is full ({self.max_len} tokens)")
        step = self._blocks.get(m)
        if step is not None:
            tok_buf, pos_buf, slot_buf = self._block_buffers(m)
            tok_buf.copy_(tokens)
            torch.add(lengths.view(-1, 1), torch.arange(m, device=self.device), out=slot_buf)
            pos_buf.copy_(slot_buf)
            with self._stance():
                return step(tok_buf, pos_buf, slot_buf, self.key_valid)
        rows = slice(0, busy if busy is not None else self.batch)
        slots = lengths[rows].view(-1, 1) + torch.arange(m, device=self.device)
        return self.model(tokens[rows], slots, self.key_valid[rows], slots, kv_len=int(slots.max()) + 1,
                          caches=self._rows(rows))
