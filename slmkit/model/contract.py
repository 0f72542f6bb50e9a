"""The model contract: what the engine, evaluation, benchmarks, the server and quantisation need of a model.

`Transformer` (model/model.py) and `EFTModel` (combine/eft.py) both honour it; tests/test_engine.py checks them
against it. A model holds no runtime state: whoever runs it owns the KV caches it asks `new_caches` for and
passes them to every forward call (slmkit.engine.Engine does). The encoder and vision-language models of later
issues take the same shape: config, device and dtype, a forward on token ids, and (for decoders) caches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Sequence, runtime_checkable

import torch

if TYPE_CHECKING:
    from slmkit.model.config import ModelConfig
    from slmkit.quant.quantize import QuantSpec


@runtime_checkable
class LanguageModel(Protocol):
    """A decoder-only language model on token ids."""

    config: "ModelConfig"  # context_length, vocab_size, and the architecture
    quant_spec: "QuantSpec | None"  # what slmkit.quant did to its weights; None: float

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    def new_caches(self, batch: int, max_len: int, dtype: torch.dtype | None = None) -> Sequence:
        """Fresh KV caches for `batch` rows of `max_len` slots, for the caller to keep and pass to forward."""

    def forward(self, idx: torch.Tensor, positions: torch.Tensor | None = None,
                key_valid: torch.Tensor | None = None, slots: torch.Tensor | None = None,
                last_only: bool = False, kv_len: int | None = None, hidden: bool = False,
                mask: torch.Tensor | None = None, caches: Sequence | None = None) -> torch.Tensor:
        """Logits (B, T, vocab) for ids (B, T) (see Transformer.forward); with caches, slots say where the new
        tokens' keys and values go."""

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for hidden states forward(..., hidden=True) returned."""
