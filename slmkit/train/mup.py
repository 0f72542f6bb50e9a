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


def coordinate_check(widths: list[int], use_mup: bool, steps: int = 5, lr: float = 1e-2, base_width: int = 64,
                     head_dim: int = 16, seed: int = 0) -> dict[int, dict[str, float]]:
    """The muP coordinate check (Tensor Programs V, figure 5): train copies of one small model at several widths
    for a few Adam steps on the same random tokens, and return per width the mean |value| of the last hidden
    state and of the output logits. Under muP they stay flat across widths; in standard parametrisation
    (one init std and one lr for all widths) the logits grow with width."""
    from slmkit.model.config import ModelConfig
    from slmkit.model.model import Transformer
    from slmkit.train.losses import cross_entropy_sum

    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (4, 33), generator=g)
    out: dict[int, dict[str, float]] = {}
    for width in widths:
        config = ModelConfig(vocab_size=256, n_layer=2, d_model=width, n_head=width // head_dim,
                             intermediate_size=2 * width, context_length=64, tie_embeddings=False)
        torch.manual_seed(seed)
        model = Transformer(config)
        init(model, base_width if use_mup else None)
        opt = torch.optim.AdamW(param_groups(model, lr, 0.0, base_width if use_mup else None), lr=lr)
        for _ in range(steps):
            loss = cross_entropy_sum(model(x[:, :-1]), x[:, 1:]) / x[:, 1:].numel()
            loss.backward()
            opt.step()
            opt.zero_grad()
        with torch.no_grad():
            hidden = model(x[:, :-1], hidden=True)
            logits = model.head(hidden)
        out[width] = {"hidden": hidden.abs().mean().item(), "logits": logits.abs().mean().item()}
    return out
