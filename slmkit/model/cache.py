"""The KV cache: runtime state kept outside the model. A caller that decodes asks Transformer.new_caches for one
per executed layer, keeps them and passes them to forward."""

from __future__ import annotations

import torch
import torch.nn as nn


class KVCache(nn.Module):
    """A static, preallocated key/value cache for one attention layer: (B, K, S, D) each."""

    def __init__(self, batch: int, n_kv_head: int, max_len: int, head_dim: int, dtype: torch.dtype,
                 device: torch.device | None = None):
        super().__init__()
        shape = (batch, n_kv_head, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def rows(self, rows: slice) -> "KVCache":
        """A cache over rows `rows` of this one (views: writes land here)."""
        view = KVCache.__new__(KVCache)
        nn.Module.__init__(view)
        view.register_buffer("k", self.k[rows], persistent=False)
        view.register_buffer("v", self.v[rows], persistent=False)
        return view

    def update(self, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, K, T, D) at slots (T,), or per row at slots (B, T), and return the whole cache."""
        if slots.dim() == 1:
            self.k.index_copy_(2, slots, k.to(self.k.dtype))
            self.v.index_copy_(2, slots, v.to(self.v.dtype))
        else:  # rows at different lengths (a server's continuous batch)
            index = slots[:, None, :, None].expand(k.shape)
            self.k.scatter_(2, index, k.to(self.k.dtype))
            self.v.scatter_(2, index, v.to(self.v.dtype))
        return self.k, self.v
