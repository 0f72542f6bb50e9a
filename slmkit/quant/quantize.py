"""Quantise a built model by swapping its nn.Linear layers (gpt-fast's approach): the model code is unchanged.

`QuantSpec` says what was done (bits, group size, symmetric, whether the output head is included); it is
stored in a quantised checkpoint's config.json under "slmkit_quantization", so `slmkit.load` rebuilds the same
layers before assigning the weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch.nn as nn

from slmkit.errors import SlmError
from slmkit.quant.linear import Int4Linear, Int8Linear

GROUP_SIZES = (32, 64, 128, 256)


@dataclass(frozen=True)
class QuantSpec:
    bits: int = 8
    group_size: int | None = None  # int4 only: inputs per scale
    symmetric: bool = True  # int4: no zero point; int8 is always symmetric per channel
    head: bool = False  # also quantise the output head, always to int8 (an untied copy when it shares the embedding)

    def __post_init__(self):
        if self.bits not in (4, 8):
            raise SlmError(f"--bits must be 8 or 4, got {self.bits}")
        if self.bits == 4 and self.group_size not in GROUP_SIZES:
            raise SlmError(f"int4 needs a group size among {', '.join(map(str, GROUP_SIZES))}, got {self.group_size}")
        if self.bits == 8 and self.group_size is not None:
            raise SlmError("int8 is per output channel; --group applies to --bits 4 only")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "QuantSpec":
        unknown = set(data) - {"bits", "group_size", "symmetric", "head"}
        if unknown:
            raise SlmError(f"unknown slmkit_quantization field(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    @property
    def label(self) -> str:
        if self.bits == 8:
            return "int8"
        return f"int4-g{self.group_size}{'' if self.symmetric else '-asym'}"


def _targets(model: nn.Module, spec: QuantSpec) -> list[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute, layer) for every block linear layer the spec quantises (the head is not among them)."""
    out = []
    for name, module in model.named_modules():
        for attr, child in module.named_children():
            full = f"{name}.{attr}" if name else attr
            if isinstance(child, nn.Linear) and full.startswith("blocks."):
                out.append((module, attr, child))
    return out


def check(model: nn.Module, spec: QuantSpec) -> None:
    """A causal language model (its checkpoints and runtimes are a decoder's), and every target's width must split
    into whole groups (and into nibble pairs)."""
    c = getattr(model, "config", None)
    if c is not None and (not c.causal or c.head != "lm"):
        raise SlmError(f"{c.name} is {'an encoder' if not c.causal else 'a model without a vocabulary head'} "
                       f"(head {c.head!r}); weight quantisation supports causal language models")
    if spec.bits != 4:
        return
    for parent, attr, layer in _targets(model, spec):
        if layer.in_features % spec.group_size:
            name = next(n for n, m in model.named_modules() if m is parent)
            raise SlmError(f"group size {spec.group_size} does not divide the input width {layer.in_features} of "
                           f"{name}.{attr}; choose a group size among {', '.join(map(str, GROUP_SIZES))} that does")


def quantize(model: nn.Module, spec: QuantSpec) -> nn.Module:
    """Replace the model's block linears (and the head if asked) with quantised ones, in place.

    The head becomes int8 per channel whatever `bits` is: the vocabulary projection is the layer most
    sensitive to rounding, and llama.cpp keeps it at 8 bits in its 4-bit files too.
    """
    check(model, spec)
    for parent, attr, layer in _targets(model, spec):
        if spec.bits == 8:
            new = Int8Linear.from_linear(layer)
        else:
            new = Int4Linear.from_linear(layer, spec.group_size, spec.symmetric)
        setattr(parent, attr, new)
    if spec.head:
        model.lm_head = Int8Linear.from_linear(model.lm_head)
        model.config.tie_embeddings = False  # the head is now its own (quantised) weight
    model.quant_spec = spec
    return model


def empty_quantized(model: nn.Module, spec: QuantSpec) -> nn.Module:
    """Swap in quantised layers with empty buffers, which loading a quantised checkpoint then assigns."""
    check(model, spec)
    for parent, attr, layer in _targets(model, spec):
        bias = layer.bias is not None
        if spec.bits == 8:
            new = Int8Linear(layer.in_features, layer.out_features, bias, device=layer.weight.device)
        else:
            new = Int4Linear(layer.in_features, layer.out_features, spec.group_size, bias, device=layer.weight.device)
        setattr(parent, attr, new)
    if spec.head:
        head = model.lm_head
        model.lm_head = Int8Linear(head.in_features, head.out_features, head.bias is not None, head.weight.device)
    model.quant_spec = spec
    return model
