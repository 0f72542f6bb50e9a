"""Dynamic token pruning, a runtime option of Transformer.forward (`prune=TokenPruning(...)`): after a layer, each
token is scored by the attention it received there, and the rest of the layers run on the tokens that score
highest (a keep ratio) or above a per-layer threshold (learned token pruning, Kim et al. 2022, kssteven418/LTP).

- Importance (LTP's): the attention probabilities a token receives, averaged over heads and over the real queries
  that can see it (all of them in an encoder; those at or after it in a decoder, so early tokens are not favoured
  for being visible longer). The first token (an encoder's [CLS] / <s>) is always kept; so is a decoder's last
  token, whose logits are the next-token prediction.
- Keep ratio r: SpAtten's cascade, as LTP's top-k pruner schedules it: layers before `start` run on every token;
  from `start` the share of the real tokens each layer runs on falls linearly, reaching r at the last layer.
- Thresholds (one per layer, an nn.Parameter so training can learn them): a token whose importance is below its
  layer's threshold is dropped.
- Hard (inference): the dropped tokens are gathered out, so later layers really run on fewer tokens; rows keep
  their own counts and are right-padded to the longest. Soft (training, `soft=True`): nothing is dropped; each
  layer's output is scaled by sigmoid((importance - threshold) / temperature) (the ratio's threshold is the score
  of the last token it would keep), a mask whose gradient reaches the thresholds; `masks` holds them for a
  sparsity term.

Hard pruning changes which positions come out, so it serves outputs that do not need every position: a
classification head (the first token), hidden states (`kept` says which input positions they are) and a
decoder's last-token logits (`last_only`). With `restore=True` (the Length-Adaptive Transformer's drop-and-
restore) a dropped token keeps the representation it had when it was dropped and is put back in its place after
the last layer, so every position comes out (a masked LM's logits too); soft, a masked token's new
representation is mixed with its previous one, m * new + (1 - m) * previous, instead of being scaled towards 0.
After each forward, `lengths` holds the tokens each layer ran on.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from slmkit.errors import SlmError


def unsupported(config) -> str | None:
    """One line saying why token pruning cannot run on this architecture, or None when it can."""
    c = config
    if c.pos_type == "alibi" or c.sliding_window or c.attn_softcap is not None:
        return (f"token pruning does not support {c.name}'s attention (ALiBi, sliding windows or soft-capping); "
                f"prune a model with full attention (Llama, Qwen, BERT, RoBERTa, MiniLM)")
    return None


class TokenPruning(nn.Module):
    def __init__(self, n_layer: int, keep: float | None = None, thresholds: Sequence[float] | None = None,
                 soft: bool = False, temperature: float = 1e-3, start: int | None = None, restore: bool = False):
        super().__init__()
        if (keep is None) == (thresholds is None):
            raise SlmError("token pruning takes a keep ratio or per-layer thresholds (one of the two)")
        if keep is not None and not 0 < keep <= 1:
            raise SlmError(f"the keep ratio must be in (0, 1], got {keep}")
        if temperature <= 0:
            raise SlmError(f"the pruning temperature must be positive, got {temperature}")
        self.n_layer, self.keep, self.soft, self.temperature = n_layer, keep, soft, temperature
        self.restore = restore
        self.start = max(1, math.ceil(0.15 * n_layer)) if start is None else start
        if not 1 <= self.start <= max(1, n_layer - 1):
            raise SlmError(f"pruning starts at a layer from 1 to {n_layer - 1}, got {self.start}")
        if thresholds is not None:
            if len(thresholds) != n_layer:
                raise SlmError(f"give one threshold per layer ({n_layer}), got {len(thresholds)}")
            self.threshold = nn.Parameter(torch.tensor([float(t) for t in thresholds]))
        else:
            self.threshold = None
        self.masks: list[torch.Tensor] = []  # soft: each pruning layer's (B, T) mask
        self.lengths: list[int] = []  # the tokens (over the batch, real ones) each layer ran on
        self.kept: torch.Tensor | None = None  # hard: (B, T') the input positions of the tokens that came out
        self.full: torch.Tensor | None = None  # restore: (B, T, D) each token's latest representation

    def extra_repr(self) -> str:
        what = f"keep={self.keep}" if self.keep is not None else "thresholds"
        return f"{what}, start={self.start}, soft={self.soft}, restore={self.restore}"

    def ratio(self, layer: int) -> float:
        """The share of each row's real tokens that layer `layer` runs on (keep-ratio mode)."""
        if layer < self.start:
            return 1.0
        return 1.0 + (self.keep - 1.0) * (layer - self.start + 1) / (self.n_layer - self.start)

    def prunes_before(self, layer: int) -> bool:
        """Whether tokens are chosen before layer `layer` runs (from the previous layer's attention)."""
        return self.start <= layer < self.n_layer and (self.threshold is not None or self.ratio(layer) < 1.0)

    def begin(self, n_layer: int, key_valid: torch.Tensor) -> bool:
        """A forward starts: reset the record; False when no layer prunes (keep ratio 1), the plain path then."""
        if n_layer != self.n_layer:
            raise SlmError(f"the pruning option is for {self.n_layer} layers; this model runs {n_layer}")
        self.reset(key_valid)
        if any(self.prunes_before(j) for j in range(n_layer)):
            return True
        self.lengths *= n_layer
        return False

    def reset(self, key_valid: torch.Tensor) -> None:
        self.masks, self.lengths, self.full = [], [int(key_valid.sum())], None
        self.n_real = key_valid.sum(-1)  # (B,) each row's real tokens at the input: ratios are of these
        self.kept = torch.arange(key_valid.shape[1], device=key_valid.device).expand(key_valid.shape)

    def _quota(self, layer: int) -> torch.Tensor:
        return torch.ceil(self.ratio(layer) * self.n_real.to(torch.float32)).long().clamp(min=1)  # (B,)

    def select(self, layer: int, scores: torch.Tensor, key_valid: torch.Tensor, causal: bool) -> torch.Tensor:
        """Hard: (B, T) which of the current tokens layer `layer` runs on."""
        protect = _protected(key_valid, causal)
        if self.threshold is not None:
            keep = scores >= self.threshold[layer].to(scores.dtype)
        else:
            s = scores.masked_fill(~key_valid, float("-inf")).masked_fill(protect, float("inf"))
            rank = s.argsort(-1, descending=True).argsort(-1)  # each token's place in its row, 0 = most attended
            keep = rank < self._quota(layer)[:, None]
        return (keep | protect) & key_valid

    def soft_mask(self, layer: int, scores: torch.Tensor, key_valid: torch.Tensor, causal: bool) -> torch.Tensor:
        """Soft: (B, T) sigmoid((score - threshold) / temperature), 1 on the protected tokens and padding."""
        if self.threshold is not None:
            theta = self.threshold[layer].to(scores.dtype)
        else:  # the score of the last token the ratio keeps, as a fixed threshold
            s = scores.detach().masked_fill(~key_valid, float("-inf")).sort(-1, descending=True).values
            theta = s.gather(1, (self._quota(layer) - 1)[:, None])
        mask = torch.sigmoid((scores - theta) / self.temperature)
        return torch.where(_protected(key_valid, causal) | ~key_valid, torch.ones_like(mask), mask)


    def stash(self, x: torch.Tensor, key_valid: torch.Tensor) -> None:
        """Restore: write the current tokens' representations (B, T', D) into their input positions."""
        if self.full is None:
            self.full = x.clone()
            return
        rows = torch.arange(len(x), device=x.device)[:, None].expand_as(key_valid)[key_valid]
        self.full = self.full.index_put((rows, self.kept[key_valid]), x[key_valid])

    def restored(self, x: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
        """Restore: every input position's representation (B, T, D), the kept tokens' from x."""
        self.stash(x, key_valid)
        return self.full


    # --- what Transformer.forward asks of it ---------------------------------------------------------------

    def check(self, config, cached: bool, biased: bool, rows: bool, last_only: bool, hidden: bool,
              layers_out: bool = False) -> None:
        """One line when this forward cannot prune: a KV cache or explicit mask, attention it does not support,
        per-layer outputs under hard pruning, or (hard, without restore) an output that needs every position."""
        c = config
        if layers_out and not self.soft:
            raise SlmError("layer outputs are for soft token pruning (hard pruning changes the tokens per layer)")
        if cached:
            raise SlmError("token pruning is for a whole forward (an encoder, or a decoder's prefill without a KV "
                           "cache or an explicit mask)")
        if biased or (why := unsupported(c)):
            raise SlmError(why or f"token pruning does not support {c.name}'s attention (ALiBi)")
        every_position = rows or (c.head == "lm" and not (last_only and c.causal) and not hidden)
        if not self.soft and not self.restore and every_position:
            raise SlmError("hard token pruning drops positions: it serves a classification head, hidden states or "
                           "a decoder's last-token logits (last_only), not every position's vocabulary logits "
                           "(for those, restore the dropped tokens: TokenPruning(..., restore=True))")

    @staticmethod
    def attention_mask(key_valid: torch.Tensor, positions: torch.Tensor, causal: bool) -> torch.Tensor:
        """The attention mask (B, 1, T, T or 1) over the current tokens."""
        if causal:  # causality by position: the kept tokens keep their places
            mask = (positions[:, None, :] <= positions[:, :, None]) & key_valid[:, None, :]
            return (mask | torch.eye(mask.shape[-1], dtype=torch.bool, device=mask.device))[:, None]
        return (key_valid | ~key_valid.any(-1, keepdim=True))[:, None, None, :]  # padding queries see real tokens

    def apply(self, layer: int, x: torch.Tensor, probs: torch.Tensor, key_valid: torch.Tensor,
              positions: torch.Tensor, causal: bool):
        """Before layer `layer`, from the previous layer's attention probs (B, H, T, S): soft, scale the tokens by
        their masks (or, restoring, return the mask that mixes the next layer's output with its input); hard,
        gather the kept tokens in order. Returns (x, key_valid, positions, mask for the next layer or None)."""
        scores = importance(probs.float(), key_valid, causal)  # (B, T)
        if self.soft:
            m = self.soft_mask(layer, scores, key_valid, causal)
            self.masks.append(m)
            if self.restore:
                return x, key_valid, positions, m[..., None].to(x.dtype)
            return x * m[..., None].to(x.dtype), key_valid, positions, None
        if self.restore:
            self.stash(x, key_valid)
        keep = self.select(layer, scores, key_valid, causal)
        n = keep.sum(-1)
        T = keep.shape[1]
        order = torch.arange(T, device=x.device)
        idx = torch.where(keep, order, order + T).sort(-1).indices[:, :int(n.max())]  # kept first, in order
        x = x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))
        self.kept = self.kept.gather(1, idx)
        return x, order[:idx.shape[1]] < n[:, None], positions.gather(1, idx), None


def _protected(key_valid: torch.Tensor, causal: bool) -> torch.Tensor:
    """(B, T) the tokens never dropped: the first, and a decoder's last real token."""
    protect = torch.zeros_like(key_valid)
    protect[:, 0] = True
    if causal:
        T = key_valid.shape[1]
        last = (torch.arange(T, device=key_valid.device) * key_valid.long()).argmax(-1)
        protect[torch.arange(len(key_valid), device=key_valid.device), last] = True
    return protect


def importance(probs: torch.Tensor, key_valid: torch.Tensor | None, causal: bool) -> torch.Tensor:
    """(B, S) the attention each key received: probs (B, H, T, S) averaged over heads and over the real queries
    that can see the key (padding queries left out; in a decoder, the queries at or after it)."""
    B, H, T, S = probs.shape
    q_valid = (key_valid[:, :T] if key_valid is not None
               else torch.ones(B, T, dtype=torch.bool, device=probs.device)).to(probs.dtype)
    received = (probs.sum(1) * q_valid[:, :, None]).sum(1) / H  # (B, S)
    if causal:  # queries i >= j that are real
        seen = q_valid.flip(-1).cumsum(-1).flip(-1)
    else:
        seen = q_valid.sum(-1, keepdim=True).expand(B, S)
    return received / seen.clamp(min=1)
