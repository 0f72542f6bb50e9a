"""Dequantisation of llama.cpp's block types in torch: Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 (blocks of 32) and the
K-quants Q4_K, Q5_K and Q6_K (super-blocks of 256), the whole of both packaged models (the default's Q4_1;
Gemma 3 270M's Q8_0 embedding, Q5_0, Q4_K and Q6_K layers). The same arithmetic as the `gguf` package's numpy
code (which stays the reference, and the path for Q2_K and Q3_K), but multi-threaded and without per-group
Python work: 169M Q8_0 values take well under a second instead of ~9 s.

Layouts (ggml-common.h), per block of 32 values: Q8_0 = d f16, 32 x int8; Q4_0 = d f16, 16 bytes of nibbles
(low nibbles are values 0-15, high 16-31), value = d * (q - 8); Q4_1 = d f16, m f16, nibbles, value = d * q + m;
Q5_0 = d f16, qh u32 (the fifth bit of value j is bit j), nibbles, value = d * (q - 16); Q5_1 = d, m, qh, nibbles,
value = d * q + m.
Per super-block of 256 (8 groups of 32 for Q4_K/Q5_K, 16 of 16 for Q6_K): Q4_K = d f16, dmin f16, 12 bytes of
6-bit group scales and mins, 128 bytes of nibbles (each 32 bytes hold groups 2k (low) and 2k+1 (high)), value =
d * scale * q - dmin * min; Q5_K = the same with 32 bytes of fifth bits (group 2k's bit is bit 2k of byte l,
group 2k+1's bit 2k+1) before the nibbles; Q6_K = 128 bytes of low nibbles, 64 of high 2-bit pairs, 16 int8
group scales, d f16, value = d * scale * (q - 32).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

BLOCK = 32
SIZES = {"Q8_0": 34, "Q4_0": 18, "Q4_1": 20, "Q5_0": 22, "Q5_1": 24, "Q4_K": 144, "Q5_K": 176, "Q6_K": 210}


def _f16(blocks: torch.Tensor, start: int) -> torch.Tensor:
    return blocks[:, start:start + 2].contiguous().view(torch.float16).float()  # (n, 1)


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """(n, 16) bytes -> (n, 32) values: the low nibbles, then the high ones."""
    return torch.cat([qs & 0x0F, qs >> 4], dim=1)


def _fifth_bits(qh: torch.Tensor) -> torch.Tensor:
    """(n, 4) bytes of a little-endian u32 -> (n, 32) bits, bit j of the word for value j."""
    bits = (qh[:, :, None] >> torch.arange(8, dtype=torch.uint8)) & 1  # (n, 4, 8): byte k's bit b is value 8k+b
    return bits.reshape(-1, 32)


def dequantize(raw: np.ndarray, type_name: str) -> torch.Tensor | None:
    """The values of raw block bytes (uint8) as a flat float32 tensor, or None for a type this module lacks."""
    size = SIZES.get(type_name)
    if size is None:
        return None
    with warnings.catch_warnings():  # a read-only view of the file's memory map: read here, never written
        warnings.simplefilter("ignore", UserWarning)
        blocks = torch.from_numpy(np.ascontiguousarray(raw)).view(-1, size)  # (n, size) uint8
    if type_name.endswith("_K"):
        return _K[type_name](blocks).reshape(-1)
    d = _f16(blocks, 0)
    if type_name == "Q8_0":
        return (blocks[:, 2:].view(torch.int8).float() * d).reshape(-1)
    if type_name == "Q4_0":
        return (d * (_nibbles(blocks[:, 2:]).to(torch.int8) - 8).float()).reshape(-1)
    if type_name == "Q4_1":
        return (d * _nibbles(blocks[:, 4:]).float() + _f16(blocks, 2)).reshape(-1)
    if type_name == "Q5_0":
        q = _nibbles(blocks[:, 6:]) | (_fifth_bits(blocks[:, 2:6]) << 4)
        return (d * (q.to(torch.int8) - 16).float()).reshape(-1)
    q = _nibbles(blocks[:, 8:]) | (_fifth_bits(blocks[:, 4:8]) << 4)  # Q5_1
    return (d * q.float() + _f16(blocks, 2)).reshape(-1)


def _scales_mins(sc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """12 bytes -> 8 six-bit scales and 8 mins (ggml's get_scale_min_k4), each (n, 8) float."""
    low, high, rest = sc[:, 0:4], sc[:, 4:8], sc[:, 8:12]
    scales = torch.cat([low & 63, (rest & 0x0F) | ((low >> 6) << 4)], dim=1)
    mins = torch.cat([high & 63, (rest >> 4) | ((high >> 6) << 4)], dim=1)
    return scales.float(), mins.float()


def _k_nibbles(qs: torch.Tensor) -> torch.Tensor:
    """(n, 128) bytes -> (n, 8, 32): 32 bytes per pair of groups, low nibbles the first group, high the second."""
    q = qs.reshape(-1, 4, 1, 32)
    return torch.cat([q & 0x0F, q >> 4], dim=2).reshape(-1, 8, 32)


def _q4_k(blocks: torch.Tensor) -> torch.Tensor:
    d, dmin = _f16(blocks, 0), _f16(blocks, 2)
    scales, mins = _scales_mins(blocks[:, 4:16])
    q = _k_nibbles(blocks[:, 16:144]).float()
    return (d * scales)[:, :, None] * q - (dmin * mins)[:, :, None]


def _q5_k(blocks: torch.Tensor) -> torch.Tensor:
    d, dmin = _f16(blocks, 0), _f16(blocks, 2)
    scales, mins = _scales_mins(blocks[:, 4:16])
    qh = blocks[:, 16:48]  # (n, 32): bit g of byte l is the fifth bit of value l in group g
    high = (qh[:, None, :] >> torch.arange(8, dtype=torch.uint8)[None, :, None]) & 1  # (n, 8, 32)
    q = (_k_nibbles(blocks[:, 48:176]) | (high << 4)).float()
    return (d * scales)[:, :, None] * q - (dmin * mins)[:, :, None]


def _q6_k(blocks: torch.Tensor) -> torch.Tensor:
    ql = blocks[:, 0:128].reshape(-1, 2, 2, 32)  # (half, [l, l + 32], l)
    qh = blocks[:, 128:192].reshape(-1, 2, 1, 32)  # (half, l)
    scales = blocks[:, 192:208].view(torch.int8).float().reshape(-1, 16, 1)
    d = _f16(blocks, 208)
    low = torch.stack([ql & 0x0F, ql >> 4], dim=2)  # (n, half, nibble, [l, l + 32], l): values 32 * (2 nibble + j)
    shift = torch.tensor([0, 2, 4, 6], dtype=torch.uint8).reshape(1, 1, 2, 2, 1)
    q = low | (((qh[:, :, None] >> shift) & 3) << 4)  # (n, half, nibble, j, l)
    q = q.reshape(-1, 16, 16).to(torch.int8) - 32  # 16 groups of 16 in value order
    return (d[:, :, None] * scales) * q.float()


_K = {"Q4_K": _q4_k, "Q5_K": _q5_k, "Q6_K": _q6_k}
