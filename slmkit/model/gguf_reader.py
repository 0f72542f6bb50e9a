"""A lean GGUF reader: the header, metadata and tensor table parsed straight from a memory map.

The `gguf` package's GGUFReader builds a numpy view for every part of every field, about 1 million of them for
a 262,144-token vocabulary (35 s for Gemma 3 270M on a 2-core machine); here a string array is one loop over
bytes and a number array one `np.frombuffer`, and tensor data stay views of the map until they are dequantised.
The layout (GGUF v2/v3, little-endian): magic "GGUF", version u32, tensor count u64, key-value count u64; each
key a string (u64 length + UTF-8) with a u32 value type and its value (arrays: item type u32, count u64, items);
then per tensor its name, n_dims u32, dims u64 each (ne0 first), type u32 and data offset u64; the data start at
the next multiple of general.alignment (default 32).
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# GGUFValueType -> (struct format, numpy dtype) for the scalar types
_SCALARS = {0: ("<B", np.uint8), 1: ("<b", np.int8), 2: ("<H", np.uint16), 3: ("<h", np.int16), 4: ("<I", np.uint32),
            5: ("<i", np.int32), 6: ("<f", np.float32), 7: ("<?", np.bool_), 10: ("<Q", np.uint64),
            11: ("<q", np.int64), 12: ("<d", np.float64)}
STRING, ARRAY = 8, 9


@dataclass
class Field:
    value: Any
    type: int  # GGUFValueType of the value (ARRAY for arrays)
    item_type: int | None = None  # an array's item type


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]  # GGUF order: ne0 (the contiguous dimension) first
    tensor_type: Any  # gguf.GGMLQuantizationType
    n_elements: int
    n_bytes: int
    data: np.ndarray  # the raw bytes (uint8), a view of the file's memory map


class Reader:
    def __init__(self, path: str | Path):
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        with open(path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        buf = self._map
        if buf[:4] != b"GGUF":
            raise ValueError("no GGUF magic at the start")
        self.version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
        if self.version not in (2, 3):
            raise ValueError(f"GGUF version {self.version} (slmkit reads 2 and 3)")
        self._pos = 24
        self.fields: dict[str, Field] = {}
        for _ in range(n_kv):
            key = self._string()
            vtype = self._u32()
            if vtype == ARRAY:
                item, count = struct.unpack_from("<IQ", buf, self._pos)
                self._pos += 12
                self.fields[key] = Field(self._array(item, count), ARRAY, item)
            else:
                self.fields[key] = Field(self._scalar(vtype), vtype)
        infos = []
        for _ in range(n_tensors):
            name = self._string()
            n_dims = self._u32()
            dims = struct.unpack_from(f"<{n_dims}Q", buf, self._pos)
            self._pos += 8 * n_dims
            ttype, offset = struct.unpack_from("<IQ", buf, self._pos)
            self._pos += 12
            infos.append((name, tuple(int(d) for d in dims), ttype, offset))
        align = int(self.fields["general.alignment"].value) if "general.alignment" in self.fields else 32
        start = -(-self._pos // align) * align
        raw = np.frombuffer(buf, dtype=np.uint8)
        self.tensors: list[Tensor] = []
        for name, dims, ttype, offset in infos:
            qtype = GGMLQuantizationType(ttype)
            block, size = GGML_QUANT_SIZES[qtype]
            n = int(np.prod(dims)) if dims else 1
            n_bytes = n // block * size
            begin = start + offset
            if begin + n_bytes > len(buf):
                raise ValueError(f"tensor {name!r} runs past the end of the file (truncated?)")
            self.tensors.append(Tensor(name, dims, qtype, n, n_bytes, raw[begin:begin + n_bytes]))

    def _u32(self) -> int:
        (v,) = struct.unpack_from("<I", self._map, self._pos)
        self._pos += 4
        return v

    def _string(self) -> str:
        (n,) = struct.unpack_from("<Q", self._map, self._pos)
        start = self._pos + 8
        self._pos = start + n
        return self._map[start:start + n].decode("utf-8", errors="replace")

    def _scalar(self, vtype: int) -> Any:
        if vtype == STRING:
            return self._string()
        if vtype not in _SCALARS:
            raise ValueError(f"unknown GGUF value type {vtype}")
        fmt, _ = _SCALARS[vtype]
        (v,) = struct.unpack_from(fmt, self._map, self._pos)
        self._pos += struct.calcsize(fmt)
        return v

    def _array(self, item: int, count: int) -> list:
        buf = self._map
        if item == STRING:  # one pass over the bytes: length, then the string
            out, pos, unpack = [], self._pos, struct.Struct("<Q").unpack_from
            for _ in range(count):
                (n,) = unpack(buf, pos)
                out.append(buf[pos + 8:pos + 8 + n].decode("utf-8", errors="replace"))
                pos += 8 + n
            self._pos = pos
            return out
        if item == ARRAY:
            out = []
            for _ in range(count):
                sub, n = struct.unpack_from("<IQ", buf, self._pos)
                self._pos += 12
                out.append(self._array(sub, n))
            return out
        if item not in _SCALARS:
            raise ValueError(f"unknown GGUF array item type {item}")
        dtype = np.dtype(_SCALARS[item][1]).newbyteorder("<")
        values = np.frombuffer(buf, dtype=dtype, count=count, offset=self._pos)
        self._pos += count * dtype.itemsize
        return values.tolist()
