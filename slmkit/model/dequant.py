"""Dequantisation of llama.cpp's block types in torch: Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 (blocks of 32), the bulk
of both packaged models (the default's Q4_1; Gemma 3 270M's Q8_0 embedding and Q5_0 layers). The same
arithmetic as the `gguf` package's numpy code (which stays the reference and the path for the K-quants), but
multi-threaded and without per-group Python work: 169M Q8_0 values take well under a second instead of ~9 s.

Layouts (ggml-common.h), per block of 32 values: Q8_0 = d f16, 32 x int8; Q4_0 = d f16, 16 bytes of nibbles
(low nibbles are values 0-15, high 16-31), value = d * (q - 8); Q4_1 = d f16, m f16, nibbles, value = d * q + m;
Q5_0 = d f16, qh u32 (the fifth bit of value j is bit j), nibbles, value = d * (q - 16); Q5_1 = d, m, qh, nibbles,
value = d * q + m.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

BLOCK = 32
SIZES = {"Q8_0": 34, "Q4_0": 18, "Q4_1": 20, "Q5_0": 22, "Q5_1": 24}


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
