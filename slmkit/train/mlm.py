"""Masked-LM data for encoders (BERT, RoBERTa): windows of token shards with dynamic masking.

RoBERTa (Liu et al. 2019, sec. 4): inputs are packed with full sentences, contiguous across document boundaries
with the separator between documents (`slm data prepare` writes shards that way); masking is dynamic, a new mask
each time a window is drawn: 15% of the tokens are selected, of those 80% become the mask token, 10% a random
token and 10% stay; the loss is on the selected positions alone. Each window starts with the classifier token
([CLS], <s>), as the encoder sees text when it is fine-tuned.

The masks of step s are drawn from (seed, stage, s), for the whole global batch, like the windows: resuming and
any split over processes reproduce them. Validation uses one fixed masking of the fixed windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slmkit.errors import SlmError
from slmkit.tokenizer.tokenizer import Tokenizer
from slmkit.train.data import Batch, TokenData
from slmkit.train.losses import IGNORE


@dataclass
class MaskSpec:
    """What fraction of tokens the masked-LM objective selects, and what becomes of them (BERT's 80/10/10)."""

    prob: float = 0.15
    mask: float = 0.8  # of the selected: replaced by the mask token
    random: float = 0.1  # of the selected: replaced by a random token (the rest stay as they are)

    def check(self) -> None:
        if not 0 < self.prob < 1 or self.mask < 0 or self.random < 0 or self.mask + self.random > 1:
            raise SlmError(f"mlm needs 0 < prob < 1 and mask + random <= 1 (fractions of the selected tokens), got "
                           f"prob {self.prob}, mask {self.mask}, random {self.random}")


def mask_tokens(x: np.ndarray, u: np.ndarray, v: np.ndarray, random_ids: np.ndarray, spec: MaskSpec, mask_id: int,
                special: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(masked inputs, targets) for windows x (B, T) from uniform draws u, v (B, T) and random token ids (B, T):
    u selects (never a special token), v decides mask / random / keep; targets are IGNORE off the selection."""
    selected = (u < spec.prob) & ~np.isin(x, special)
    out = x.copy()
    out[selected & (v < spec.mask)] = mask_id
    swap = selected & (v >= spec.mask) & (v < spec.mask + spec.random)
    out[swap] = random_ids[swap]
    return out, np.where(selected, x, IGNORE)


class MaskedTokens:
    """TokenData windows, masked for the masked-LM objective (the loop's data-source interface: draw, val_batches)."""

    def __init__(self, data: TokenData, tokenizer: Tokenizer, spec: MaskSpec, vocab_size: int, seed: int,
                 where: str = "the data"):
        spec.check()
        if tokenizer.mask_id is None:
            raise SlmError(f"objective mlm needs a tokenizer with a mask token (BERT's [MASK], RoBERTa's <mask>); "
                           f"{where} was prepared with one that has none")
        self.data, self.spec, self.vocab, self.seed = data, spec, vocab_size, seed
        self.mask_id = tokenizer.mask_id
        self.cls_id = tokenizer.token_to_id(tokenizer.cls_token)
        self.special = np.asarray(sorted(tokenizer.special_ids), dtype=np.int64)

    @property
    def shards(self):
        return self.data.shards

    def draw(self, step: int, stage: int, rows: slice, n_rows: int) -> Batch:
        x, _ = self.data.batch(step, stage, rows, n_rows)
        rng = np.random.default_rng([self.seed, stage, step, 0x6D6C6D])
        shape = (n_rows, x.shape[1])  # draws for the whole global batch, so any split of it sees the same masks
        u, v = rng.random(shape)[rows], rng.random(shape)[rows]
        random_ids = rng.integers(0, self.vocab, shape)[rows]
        return self._apply(x, u, v, random_ids)

    def val_batches(self, max_tokens: int, rows: int) -> list[Batch]:
        windows = self.data.val_windows(max_tokens)
        if not windows:
            return []
        x = np.stack([w[0] for w in windows])
        rng = np.random.default_rng([self.seed, 0x76616C])  # one fixed masking
        b = self._apply(x, rng.random(x.shape), rng.random(x.shape), rng.integers(0, self.vocab, x.shape))
        return [b[i:i + rows] for i in range(0, len(x), rows)]

    def _apply(self, x: np.ndarray, u: np.ndarray, v: np.ndarray, random_ids: np.ndarray) -> Batch:
        x = x.copy()
        if self.cls_id is not None:
            x[:, 0] = self.cls_id
        masked, y = mask_tokens(x, u, v, random_ids, self.spec, self.mask_id, self.special)
        return Batch(masked, y)
