"""LoRA (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models") as a transform of a built model, as
quantisation is (slmkit/quant): `apply_lora` swaps each targeted linear layer for a `LoRALinear` that keeps the
frozen layer (float, or int8/int4: QLoRA) and adds scale * B A x, with A (r, in) and B (out, r) trained.

slmkit fuses q/k/v into one `attn.wqkv` and gate/up into one `mlp.w_up`; transformers and peft keep them
apart. So an adapter is kept per *slice* of a fused layer: the rows of q, of k and of v each have their own
A and B, named as transformers' modules (q_proj, k_proj, ...). Targets are those names, or groups: "attn"
(q, k, v, o), "mlp" (gate, up, down), "all-linear" (both; never the output head, as in peft).

Scaling: alpha / r, or alpha / sqrt(r) with rsLoRA (Kalajdzievski, "A Rank Stabilization Scaling Factor for
Fine-Tuning with LoRA"). Init as peft's default: A Kaiming-uniform (a = sqrt(5)), B zero, so a fresh adapter
leaves the model's outputs unchanged. `merge` adds scale * B A into float weights (and `unmerge` takes it out);
a quantised base cannot take it: merge into a float load of the base, then quantise.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn as nn

from slmkit.errors import SlmError

GROUPS = {"attn": ("q", "k", "v", "o"), "mlp": ("gate", "up", "down"),
          "all-linear": ("q", "k", "v", "o", "gate", "up", "down")}


@dataclass(frozen=True)
class LoRASpec:
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("attn",)  # groups (attn, mlp, all-linear) or transformers' module names
    rslora: bool = False

    def __post_init__(self):
        if self.r < 1:
            raise SlmError(f"LoRA rank r must be at least 1, got {self.r}")
        if self.alpha <= 0:
            raise SlmError(f"LoRA alpha must be positive, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise SlmError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if not self.targets:
            raise SlmError("LoRA needs at least one target (attn, mlp, all-linear or module names like q_proj)")

    @property
    def scale(self) -> float:
        return self.alpha / (math.sqrt(self.r) if self.rslora else self.r)

    def to_dict(self) -> dict[str, Any]:
        return dict(asdict(self), targets=list(self.targets))


@dataclass
class Slice:
    """Rows [start, start + rows) of a layer's output, which transformers keeps as module `hf_name`."""

    hf_name: str  # the full transformers module name, e.g. model.layers.0.self_attn.q_proj
    role: str  # q, k, v, o, gate, up, down, or qkv / gate_up for a layer transformers fuses too
    start: int
    rows: int
    per_head: tuple[int, int] | None = None  # (n_head, head_dim): transformers interleaves this fused QKV per head


class LoRALinear(nn.Module):
    """A frozen linear layer (float or quantised) plus a low-rank update on some of its output slices."""

    def __init__(self, base: nn.Module, slices: list[Slice], spec: LoRASpec):
        super().__init__()
        self.base = base
        self.slices = slices
        self.spec = spec
        self.scale = spec.scale
        self.merged = False
        device = _weight_of(base).device
        self.lora_A = nn.ParameterList(
            [nn.Parameter(torch.empty(spec.r, base.in_features, device=device)) for _ in slices])
        self.lora_B = nn.ParameterList([nn.Parameter(torch.zeros(s.rows, spec.r, device=device)) for s in slices])
        for a in self.lora_A:
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # peft's default init
        self.dropout = nn.Dropout(spec.dropout) if spec.dropout else nn.Identity()

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def delta(self) -> torch.Tensor:
        """scale * B A, as a full (out, in) float32 matrix (zero on rows with no adapter)."""
        w = torch.zeros(self.out_features, self.in_features, device=self.lora_A[0].device)
        for s, a, b in zip(self.slices, self.lora_A, self.lora_B):
            w[s.start:s.start + s.rows] += self.scale * (b.float() @ a.float())
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged:
            return y
        h = self.dropout(x)
        a = torch.cat(list(self.lora_A), 0) if len(self.lora_A) > 1 else self.lora_A[0]
        low = (h.to(a.dtype) @ a.t()).split(self.spec.r, dim=-1)  # one matmul for every slice's A
        if len(self.slices) == 1 and self.slices[0].rows == self.out_features:
            return y + (self.scale * (low[0] @ self.lora_B[0].t())).to(y.dtype)
        parts, at = [], 0
        for s, lo, b in zip(self.slices, low, self.lora_B):
            if s.start > at:
                parts.append(y[..., at:s.start])
            parts.append(y[..., s.start:s.start + s.rows] + (self.scale * (lo @ b.t())).to(y.dtype))
            at = s.start + s.rows
        if at < self.out_features:
            parts.append(y[..., at:])
        return torch.cat(parts, dim=-1)

    def merge(self) -> None:
        """W += scale * B A (float bases only)."""
        if self.merged:
            return
        self._float_weight("merge").data += self.delta().to(self.base.weight.dtype)
        self.merged = True

    def unmerge(self) -> None:
        if not self.merged:
            return
        self._float_weight("unmerge").data -= self.delta().to(self.base.weight.dtype)
        self.merged = False

    def _float_weight(self, what: str) -> torch.Tensor:
        w = getattr(self.base, "weight", None)
        if not isinstance(self.base, nn.Linear) or w is None or not w.is_floating_point():
            raise SlmError(f"cannot {what} a LoRA adapter into a quantised base ({type(self.base).__name__}); load the "
                           "base in fp32 or bf16 with the adapter, merge there, then quantise the merged model")
        return w

    def extra_repr(self) -> str:
        return f"r={self.spec.r}, scale={self.scale:g}, slices={[s.role for s in self.slices]}"


def _weight_of(module: nn.Module) -> torch.Tensor:
    return next(t for t in list(module.parameters()) + list(module.buffers()))


# --- which layers, and their slices ----------------------------------------------------------------------------


def layer_slices(model: nn.Module) -> dict[str, list[Slice]]:
    """slmkit block module -> its slices with transformers' names, from the family record's weight layout."""
    from slmkit.model.families import family

    c = model.config
    layout = family(c.family).layout
    out: dict[str, list[Slice]] = {}
    q, kv = c.n_head * c.head_dim, c.n_kv_head * c.head_dim
    for i in range(len(model.blocks)):
        prefix = layout.layer.format(i=i)
        if len(layout.qkv) == 3:
            out[f"blocks.{i}.attn.wqkv"] = [Slice(prefix + layout.qkv[0], "q", 0, q),
                                            Slice(prefix + layout.qkv[1], "k", q, kv),
                                            Slice(prefix + layout.qkv[2], "v", q + kv, kv)]
        else:
            heads = (c.n_head, c.head_dim) if layout.qkv_per_head else None
            out[f"blocks.{i}.attn.wqkv"] = [Slice(prefix + layout.qkv[0], "qkv", 0, q + 2 * kv, heads)]
        out[f"blocks.{i}.attn.wo"] = [Slice(prefix + layout.names["attn.wo"], "o", 0, c.d_model)]
        if c.mlp_type == "gated" and len(layout.up) == 2:
            n = c.intermediate_size
            out[f"blocks.{i}.mlp.w_up"] = [Slice(prefix + layout.up[0], "gate", 0, n),
                                           Slice(prefix + layout.up[1], "up", n, n)]
        else:
            rows = c.intermediate_size * (2 if c.mlp_type == "gated" else 1)
            out[f"blocks.{i}.mlp.w_up"] = [Slice(prefix + layout.up[0], "gate_up" if rows > c.intermediate_size
                                                 else "up", 0, rows)]
        out[f"blocks.{i}.mlp.w_down"] = [Slice(prefix + layout.names["mlp.w_down"], "down", 0, c.d_model)]
    return out


def _wanted(s: Slice, targets: tuple[str, ...]) -> bool:
    short = s.hf_name.rsplit(".", 1)[-1]
    roles = {s.role} | ({"q", "k", "v"} if s.role == "qkv" else set()) | ({"gate", "up"} if s.role == "gate_up"
                                                                          else set())
    for t in targets:
        if t in GROUPS and roles & set(GROUPS[t]):
            return True
        if t == short or s.hf_name.endswith("." + t):
            return True
    return False


def _check_targets(slices: dict[str, list[Slice]], targets: tuple[str, ...]) -> None:
    names = sorted({s.hf_name.rsplit(".", 1)[-1] for ss in slices.values() for s in ss})
    for t in targets:
        if t in GROUPS:
            continue
        if not any(s.hf_name.rsplit(".", 1)[-1] == t or s.hf_name.endswith("." + t) for ss in slices.values()
                   for s in ss):
            raise SlmError(f"LoRA target {t!r} names no layer of this model; use attn, mlp, all-linear or its "
                           f"module names: {', '.join(names)}")


def apply_lora(model: nn.Module, spec: LoRASpec) -> nn.Module:
    """Freeze the model and give its targeted layers LoRA adapters, in place; returns the model."""
    if lora_layers(model):
        raise SlmError("the model already has LoRA adapters; merge or remove them before adding others")
    slices = layer_slices(model)
    _check_targets(slices, spec.targets)
    model.requires_grad_(False)
    for name, ss in slices.items():
        chosen = [s for s in ss if _wanted(s, spec.targets)]
        if not chosen:
            continue
        parent, attr = _parent(model, name)
        setattr(parent, attr, LoRALinear(getattr(parent, attr), chosen, spec))
    model.lora_spec = spec
    return model


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge(model: nn.Module) -> nn.Module:
    """Fold every adapter into its float weight and put the plain layers back: a model with no LoRA left."""
    for name, layer in lora_layers(model).items():
        layer.merge()
        parent, attr = _parent(model, name)
        setattr(parent, attr, layer.base)
    model.lora_spec = None
    return model


def trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, attr = name.rsplit(".", 1)
    return model.get_submodule(path), attr


@dataclass
class AdapterWeights:
    """One adapter's A and B per transformers module name (peft's layout: A (r, in), B (out, r))."""

    spec: LoRASpec
    weights: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


def adapter_weights(model: nn.Module) -> AdapterWeights:
    """The model's adapters by transformers module name, B rows in transformers' order."""
    from slmkit.model.family import join_qkv_per_head

    spec = getattr(model, "lora_spec", None)
    if spec is None:
        raise SlmError("the model has no LoRA adapters")
    out = AdapterWeights(spec)
    for layer in lora_layers(model).values():
        for s, a, b in zip(layer.slices, layer.lora_A, layer.lora_B):
            b = b.detach().float().cpu()
            if s.per_head:
                b = join_qkv_per_head(b, *s.per_head)
            out.weights[s.hf_name] = (a.detach().float().cpu(), b)
    return out


def load_adapter_weights(model: nn.Module, adapter: AdapterWeights, where: str) -> nn.Module:
    """Apply `adapter.spec` to the model and copy its A and B in, checking every name and shape."""
    apply_lora(model, adapter.spec)
    return set_adapter_weights(model, adapter, where)


def set_adapter_weights(model: nn.Module, adapter: AdapterWeights, where: str) -> nn.Module:
    """Copy an adapter's A and B into a model that has the same adapters (a resumed run)."""
    from slmkit.model.family import split_qkv_per_head

    layers = lora_layers(model)
    expected = {s.hf_name: (layer, i) for layer in layers.values() for i, s in enumerate(layer.slices)}
    missing = sorted(set(expected) - set(adapter.weights))
    extra = sorted(set(adapter.weights) - set(expected))
    if extra:
        raise SlmError(f"{where}: the adapter has weights for {extra[0]}, which this base does not have (or "
                       f"the adapter's target_modules do not name it): an adapter for another base model?")
    if missing:
        raise SlmError(f"{where}: the adapter has no weights for {missing[0]}, which its target_modules name")
    for name, (a, b) in adapter.weights.items():
        layer, i = expected[name]
        s = layer.slices[i]
        want_a, want_b = tuple(layer.lora_A[i].shape), tuple(layer.lora_B[i].shape)
        if tuple(a.shape) != want_a or tuple(b.shape) != want_b:
            raise SlmError(f"{where}: {name} has A {tuple(a.shape)} and B {tuple(b.shape)} where this base needs "
                           f"{want_a} and {want_b}: an adapter for another base model (or another rank)")
        if s.per_head:
            b = split_qkv_per_head(b, *s.per_head)
        with torch.no_grad():
            layer.lora_A[i].copy_(a)
            layer.lora_B[i].copy_(b)
    return model
