"""Weight-only quantised linear layers: int8 per output channel, int4 in groups along the input.

Each layer keeps its weights in a device-independent form (what a checkpoint stores) and, on first use on a
device, the layout that device's kernel wants:
- CPU: torch's packed kernels, `_weight_int8pack_mm` and `_weight_int4pack_mm_for_cpu`. They need bfloat16
  activations (in float32 they run 10-25x slower, ../shared/PERF-NOTES.md), so inputs are cast to bfloat16
  and outputs back: a quantised layer computes with bf16 activations whatever the model's dtype.
- elsewhere (CUDA, MPS): the weight is dequantised into the activation dtype and F.linear runs. Correct
  everywhere, but it is not a fast path.

int4 values are stored as unsigned nibbles q in 0..15 (two per byte, the even column in the low nibble) and
dequantised as (q - 8) * scale + zero per group: symmetric groups have zero = 0, asymmetric ones
zero = min + 8 * scale. That is the layout of torch's int4 kernels (and gpt-fast's).
"""

from __future__ import annotations

import abc

import torch
import torch.nn as nn
import torch.nn.functional as F


class QuantLinear(nn.Module, abc.ABC):
    """Shared forward: the CPU kernel on bf16 activations, else F.linear on the dequantised weight."""

    in_features: int
    out_features: int
    bias: nn.Parameter | None

    @abc.abstractmethod
    def dequantize(self) -> torch.Tensor:
        """The float32 weight (out, in) the quantised values stand for."""

    @abc.abstractmethod
    def _cpu_matmul(self, x: torch.Tensor) -> torch.Tensor:
        """(M, in) bf16 -> (M, out) with torch's packed CPU kernel."""

    def _fill(self, linear: nn.Linear, **buffers: torch.Tensor) -> "QuantLinear":
        """Copy quantised buffers in, and the float layer's bias."""
        for name, value in buffers.items():
            getattr(self, name).copy_(value)
        if linear.bias is not None:
            self.bias = nn.Parameter(linear.bias.detach().clone())
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu":
            flat = x.reshape(-1, self.in_features)
            if torch.is_grad_enabled() and x.requires_grad:  # QLoRA: gradients flow to the layers below
                y = _FrozenQuantMatmul.apply(flat, self)
            else:
                y = self._cpu_matmul(flat.to(torch.bfloat16)).to(x.dtype)
            y = y.reshape(*x.shape[:-1], self.out_features)
        else:
            y = F.linear(x, self.dequantize().to(x.dtype))
        return y if self.bias is None else y + self.bias.to(y.dtype)


class _FrozenQuantMatmul(torch.autograd.Function):
    """The packed CPU kernel forward, and in backward the input's gradient through the dequantised weight (torch's
    packed kernels have no derivative). The weight itself stays frozen: QLoRA trains adapters around it."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: "QuantLinear") -> torch.Tensor:
        ctx.layer = layer
        return layer._cpu_matmul(x.to(torch.bfloat16)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad @ ctx.layer.dequantize().to(grad.dtype), None


class Int8Linear(QuantLinear):
    """y = x W^T + b with W stored as int8 (out, in) and one float32 scale per output row."""

    bits = 8

    def __init__(self, in_features: int, out_features: int, bias: bool = False, device=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("scales", torch.ones(out_features, dtype=torch.float32, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, device=device)) if bias else None
        self._kernel_scales: torch.Tensor | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        w = linear.weight.detach().float()
        scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)  # (out,)
        q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, device=w.device)
        return layer._fill(linear, weight=q, scales=scales)

    def dequantize(self) -> torch.Tensor:
        return self.weight.float() * self.scales[:, None]

    def _load_from_state_dict(self, *args, **kwargs):
        self._kernel_scales = None  # new weights: the kernel layout is rebuilt on next use
        super()._load_from_state_dict(*args, **kwargs)

    def _cpu_matmul(self, x: torch.Tensor) -> torch.Tensor:
        if self._kernel_scales is None:
            self._kernel_scales = self.scales.to(torch.bfloat16)
        return torch._weight_int8pack_mm(x, self.weight, self._kernel_scales)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per channel"


class Int4Linear(QuantLinear):
    """y = x W^T + b with W in 4-bit groups of `group_size` inputs, each with a scale (and a zero point)."""

    bits = 4

    def __init__(self, in_features: int, out_features: int, group_size: int, bias: bool = False, device=None):
        super().__init__()
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        n_groups = in_features // group_size
        self.register_buffer("qweight", torch.zeros(out_features, in_features // 2, dtype=torch.uint8, device=device))
        self.register_buffer("scales", torch.ones(out_features, n_groups, dtype=torch.float32, device=device))
        self.register_buffer("zeros", torch.zeros(out_features, n_groups, dtype=torch.float32, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, device=device)) if bias else None
        self._packed: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int, symmetric: bool = True) -> "Int4Linear":
        out_f, in_f = linear.weight.shape
        w = linear.weight.detach().float().reshape(out_f, in_f // group_size, group_size)
        if symmetric:  # llama.cpp's q4_0 grid: the value of largest magnitude maps to -8, so all 16 levels are used
            big = w.gather(-1, w.abs().argmax(-1, keepdim=True))[..., 0]
            scales = big / -8
            scales = torch.where(scales.abs() < 1e-12, torch.full_like(scales, 1e-12), scales)
            zeros = torch.zeros_like(scales)
            q = torch.round(w / scales[..., None]).clamp(-8, 7) + 8
        else:
            lo, hi = w.amin(-1), w.amax(-1)
            scales = ((hi - lo) / 15).clamp(min=1e-12)
            zeros = lo + 8 * scales
            q = torch.round((w - lo[..., None]) / scales[..., None]).clamp(0, 15)
        q = q.to(torch.uint8).reshape(out_f, in_f)
        layer = cls(in_f, out_f, group_size, linear.bias is not None, device=w.device)
        return layer._fill(linear, qweight=q[:, 0::2] | (q[:, 1::2] << 4), scales=scales, zeros=zeros)

    def unpacked(self) -> torch.Tensor:
        """The 4-bit values q (out, in) as uint8 in 0..15."""
        q = torch.stack([self.qweight & 0xF, self.qweight >> 4], dim=-1)
        return q.reshape(self.out_features, self.in_features)

    def dequantize(self) -> torch.Tensor:
        q = self.unpacked().float().reshape(self.out_features, -1, self.group_size)
        return ((q - 8) * self.scales[..., None] + self.zeros[..., None]).reshape(self.out_features, self.in_features)

    def _load_from_state_dict(self, *args, **kwargs):
        self._packed = None  # new weights: the kernel layout is rebuilt on next use
        super()._load_from_state_dict(*args, **kwargs)

    def _cpu_kernel_args(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._packed is None:
            packed = torch._convert_weight_to_int4pack_for_cpu(self.unpacked().to(torch.int32), 1)
            scales_zeros = torch.stack([self.scales.t(), self.zeros.t()], dim=-1).to(torch.bfloat16).contiguous()
            self._packed = (packed, scales_zeros)  # (out, in/2) uint8, (in/group, out, 2) bf16
        return self._packed

    def _cpu_matmul(self, x: torch.Tensor) -> torch.Tensor:
        packed, scales_zeros = self._cpu_kernel_args()
        return torch._weight_int4pack_mm_for_cpu(x, packed, self.group_size, scales_zeros)

    def extra_repr(self) -> str:
        sym = "symmetric" if not bool(self.zeros.any()) else "asymmetric"
        return f"in_features={self.in_features}, out_features={self.out_features}, int4 group {self.group_size} {sym}"
