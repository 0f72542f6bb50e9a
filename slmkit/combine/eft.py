"""Emulated fine-tuning (EFT; Mitchell et al. 2023, "An Emulator for Fine-Tuning Large Language Models using Small
Language Models"), up-scaling form: the next-token log-probabilities of a large base model plus the behaviour
delta that fine-tuning gave a small model,

    log p(x | ctx) = log_softmax( log p_large(x | ctx) + sum_i w_i * (log p_tuned_i(x | ctx) - log p_base_i(x | ctx)) )

with several (tuned, base, weight) pairs as behaviour knobs (a weight of 0 is the large model alone, 1 the paper's
up-scaling, other values scale a behaviour up or down).

`EFTModel` is a drop-in Transformer for the rest of slmkit: `Engine` generates with it (each component keeps its
own KV cache; one decode step runs every component on the same token), and the evaluator scores with it (the
"hidden states" it returns are the components' own, side by side, and `head` turns them into the combined
log-probabilities), so `slm eval` runs EFT like any model. The components must share one vocabulary.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from slmkit.errors import SlmError
from slmkit.model.model import Transformer


class EFTModel(nn.Module):
    """log_softmax(log p_large + sum_i w_i (log p_tuned_i - log p_base_i)); see the module docstring."""

    quant_spec = None  # its parts keep their own precision; the combination is never quantised as one

    def __init__(self, large: Transformer, pairs: Sequence[tuple[Transformer, Transformer, float]]):
        super().__init__()
        if not pairs:
            raise SlmError("EFT needs at least one (tuned, base, weight) pair")
        coefs: dict[int, float] = {id(large): 1.0}
        parts: dict[int, Transformer] = {id(large): large}
        for tuned, base, weight in pairs:
            for model, sign in ((tuned, 1.0), (base, -1.0)):
                parts.setdefault(id(model), model)
                coefs[id(model)] = coefs.get(id(model), 0.0) + sign * float(weight)
        vocab = {m.config.vocab_size for m in parts.values()}
        if len(vocab) != 1:
            sizes = ", ".join(f"{m.config.name or 'model'}: {m.config.vocab_size}" for m in parts.values())
            raise SlmError(f"EFT models must share one vocabulary, got {sizes}; pair models of one tokenizer family")
        keep = [k for k in parts if k == id(large) or coefs[k] != 0.0]  # a pair whose terms cancel drops out
        self.parts = nn.ModuleList(parts[k] for k in keep)
        self.coefs = [coefs[k] for k in keep]
        self.widths = [_hidden_width(m) for m in self.parts]
        self.config = dataclasses.replace(large.config, name=f"eft({large.config.name})",
                                          context_length=min(m.config.context_length for m in self.parts))

    @property
    def device(self) -> torch.device:
        return self.parts[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self.parts[0].dtype

    def new_caches(self, batch: int, max_len: int, dtype: torch.dtype | None = None) -> nn.ModuleList:
        """Each component's own caches, in `parts` order."""
        return nn.ModuleList(m.new_caches(batch, max_len, dtype) for m in self.parts)

    # --- forward ---------------------------------------------------------------------------------------------

    def combine(self, logits: Sequence[torch.Tensor]) -> torch.Tensor:
        """Combined log-probabilities (float32) from each component's logits, in `parts` order."""
        total = None
        for coef, lg in zip(self.coefs, logits):
            term = coef * F.log_softmax(lg.float(), dim=-1)
            total = term if total is None else total + term
        return F.log_softmax(total, dim=-1)

    def forward(self, idx: torch.Tensor, positions: torch.Tensor | None = None,
                key_valid: torch.Tensor | None = None, slots: torch.Tensor | None = None,
                last_only: bool = False, kv_len: int | None = None, hidden: bool = False,
                mask: torch.Tensor | None = None, caches=None) -> torch.Tensor:
        """As Transformer.forward; logits are the combined log-probabilities; hidden=True gives the components'
        final hidden states concatenated (float32), which `head` combines. caches: new_caches' (one per part)."""
        outs = [m(idx, positions, key_valid, slots, last_only=last_only, kv_len=kv_len, hidden=hidden, mask=mask,
                  caches=None if caches is None else caches[i]) for i, m in enumerate(self.parts)]
        if hidden:
            return torch.cat([h.float() for h in outs], dim=-1)
        return self.combine(outs)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        chunks = x.split(self.widths, dim=-1)
        return self.combine([m.head(h.to(m.dtype)) for m, h in zip(self.parts, chunks)])


def _hidden_width(model: Transformer) -> int:
    """Width of the hidden states model(..., hidden=True) returns (before the final norm and any projection)."""
    return model.config.d_model


def parse_pairs(specs: Sequence[Sequence[str]] | None) -> list[tuple[str, str, float]]:
    """--eft TUNED BASE [WEIGHT] values -> [(tuned, base, weight)] (weight 1 by default), one clear line if bad."""
    pairs = []
    for spec in specs or []:
        if len(spec) not in (2, 3):
            raise SlmError(f"--eft takes TUNED BASE [WEIGHT], got {' '.join(spec)!r}")
        try:
            weight = float(spec[2]) if len(spec) == 3 else 1.0
        except ValueError:
            raise SlmError(f"--eft: the weight must be a number, got {spec[2]!r}") from None
        pairs.append((spec[0], spec[1], weight))
    return pairs


def load_eft(large: str, pairs: Sequence[tuple[str, str, float]], dtype: str | None = None,
             device: str | None = None, progress: bool = False):
    """A LoadedModel whose model is EFTModel(large, pairs), with the large model's tokenizer; every component's
    tokenizer must map tokens to the same ids (one clear line otherwise)."""
    from slmkit.checkpoint import LoadedModel, load
    from slmkit.runtime.files import fingerprint

    loaded: dict[str, object] = {}

    def get(name: str):
        if name not in loaded:
            loaded[name] = load(name, dtype=dtype, device=device, progress=progress)
        return loaded[name]

    base_lm = get(large)
    vocab = base_lm.tokenizer.backend.get_vocab() if base_lm.tokenizer else None
    for name in {n for t, b, _ in pairs for n in (t, b)}:
        other = get(name)
        if vocab is not None and other.tokenizer is not None and other.tokenizer.backend.get_vocab() != vocab:
            raise SlmError(f"{name}'s tokenizer maps tokens to different ids than {large}'s; EFT models must share "
                           "one tokenizer")
    model = EFTModel(base_lm.model, [(get(t).model, get(b).model, w) for t, b, w in pairs])

    def tag(name: str) -> str:
        source = get(name).source
        return f"{name}@{fingerprint(source)}" if os.path.exists(source) else name

    terms = " ".join(f"+{w:g}*({tag(t)} - {tag(b)})" for t, b, w in pairs)
    return LoadedModel(model, base_lm.tokenizer, f"eft({tag(large)} {terms})")


def load_model(model: str, eft: Sequence[Sequence[str]] | None = None, dtype: str | None = None,
               device: str | None = None, progress: bool = False, adapter: str | None = None):
    """`model` loaded with its tokenizer (and LoRA `adapter`); with --eft pairs (TUNED BASE [WEIGHT] each), the
    EFT combination."""
    from slmkit.checkpoint import load

    pairs = parse_pairs(eft)
    if pairs:
        if adapter is not None:
            raise SlmError("--eft and --adapter do not combine; merge the adapter first (slm merge)")
        return load_eft(model, pairs, dtype=dtype, device=device, progress=progress)
    return load(model, dtype=dtype, device=device, progress=progress, adapter=adapter)
