"""muP for Adam (Yang et al., Tensor Programs V, table 3), as an initialisation and per-parameter learning rates,
with no change to the model: with width multiplier m = d_model / base_width,

  input weights (embeddings), biases, norms:  init std unchanged,        Adam lr unchanged
  hidden matrices (attention, MLP):           init std = std / sqrt(m),  Adam lr = lr / m
  output head (untied):                       init std = std / m,        Adam lr = lr / m

The output rows follow the table's 1/fan_in^2 variance, which under Adam is the same as the paper's 1/m logit
multiplier; so the saved checkpoint is an ordinary one that transformers reads. Width grows by adding heads at
a fixed head size, so the attention scale 1/sqrt(head_dim) needs no change. The head must not be tied to the
embedding, whose rules differ.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from slmkit.errors import SlmError


def _kind(name: str, p: torch.Tensor) -> str:
    if name.startswith(("tok_emb.", "pos_emb.")):
        return "input"
    if name.startswith("lm_head.") and p.ndim == 2:
        return "output"
    if p.ndim >= 2:
        return "hidden"
    return "vector"


def check(model: nn.Module, base_width: int) -> float:
    """The width multiplier m, after checking the model suits muP."""
    c = model.config
    if c.tie_embeddings:
        raise SlmError("muP needs an output head of its own: set model.overrides.tie_embeddings: false")
    return c.d_model / base_width


def init(model: nn.Module, base_width: int | None, std: float = 0.02) -> None:
    """Initialise a fresh model: standard normal(0, std) without muP, the table's width scaling with it."""
    if base_width is None:
        model.reset_parameters(std=std)
        return
    m = check(model, base_width)
    model.reset_parameters(std=std)  # norms, biases, embeddings
    with torch.no_grad():
        for name, p in model.named_parameters():
            kind = _kind(name, p)
            if kind == "hidden":
                p.normal_(0.0, std / m**0.5)
            elif kind == "output":
                p.normal_(0.0, std / m)


def param_groups(model: nn.Module, lr: float, weight_decay: float, base_width: int | None) -> list[dict]:
    """AdamW parameter groups: weight decay on matrices only; with muP, hidden and output matrices at lr / m."""
    m = check(model, base_width) if base_width is not None else 1.0
    groups: dict[tuple[float, float], list[torch.Tensor]] = {}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        kind = _kind(name, p)
        scale = 1.0 / m if kind in ("hidden", "output") else 1.0
        decay = weight_decay if kind != "vector" else 0.0
        groups.setdefault((scale, decay), []).append(p)
    return [dict(params=ps, lr=lr * scale, lr_scale=scale, weight_decay=decay) for (scale, decay), ps in groups.items()]
