"""What slmkit knows of an architecture family, as one record: `Family`.

A record holds the family's transformers config reader and writer, its weight layout (where each slmkit module
lives in a transformers checkpoint), and its GGUF side: llama.cpp's architecture name, the fields GGUF metadata
does not carry, and the tensor quirks (q/k row permutation, fused QKV or gate/up, Gemma's stored (1 + w) norms,
a written copy of a tied head). The records and their lookups are in model/families.py; model/hf.py,
model/gguf.py and export/gguf.py read only them, so a new family is one record plus its parity test (docs/models.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import torch

if TYPE_CHECKING:
    from slmkit.model.config import ModelConfig


@dataclass(frozen=True)
class Layout:
    """Where each slmkit module lives in a transformers checkpoint."""

    top: dict[str, str]  # slmkit module -> hf module (outside layers)
    layer: str  # hf prefix of layer i, with {i}
    names: dict[str, str]  # slmkit module inside a block -> hf module
    qkv: tuple[str, ...]  # one fused name or (q, k, v)
    qkv_per_head: bool = False  # fused QKV interleaved per head, (H, 3, D) (GPT-NeoX, BLOOM)
    up: tuple[str, ...] = ()  # gated: (gate, up) or one fused name; plain: (up,)
    transposed: tuple[str, ...] = field(default=())  # Conv1D weights stored (in, out) (GPT-2)
    ignore: tuple[str, ...] = ()  # substrings of buffers that are not weights, or of weights slmkit leaves unused
    base: str = ""  # prefix the bare model (BertModel, LlamaModel) drops from its names: "bert.", "model."
    params: dict[str, str] = field(default_factory=dict)  # whole slmkit key -> hf key where the module rule fails


@dataclass(frozen=True)
class GGUF:
    """A family's GGUF side: reading (model/gguf.py) and, with `export`, writing (export/gguf.py)."""

    arch: str  # llama.cpp's general.architecture
    fields: Callable[[Any, dict[str, Any]], dict[str, Any]] | None = None  # (GGUFFile, generic fields) -> more fields
    export: bool = False  # `slm export` writes it
    permute_qk: bool = False  # llama.cpp stores q/k rows interleaved for rotary pairs (its llama converter)
    fused_qkv: bool = False  # q, k, v in one attn_qkv tensor
    fused_up: bool = False  # gate and up in one ffn_up tensor (phi3)
    tied_copy: bool = False  # the writer stores a tied head as output.weight too (llama.cpp's gpt2 converter)


@dataclass(frozen=True)
class Family:
    name: str  # ModelConfig.family, and the model_type written to config.json
    hf_class: str  # transformers' class (config.json "architectures")
    read: Callable[[dict[str, Any], str], dict[str, Any]]  # config.json -> ModelConfig fields
    write: Callable[["ModelConfig"], dict[str, Any]]  # ModelConfig -> config.json fields
    layout: Layout
    model_types: tuple[str, ...] = ()  # other config.json model_type values read by `read` (mobilellm)
    heads: dict[str, str] = field(default_factory=dict)  # ModelConfig.head -> transformers class, where the
    # default rule (hf_class for "lm"; ...ForSequenceClassification, ...Model from its prefix) does not name it
    gguf: GGUF | None = None
    notes: str = ""  # the quirks, for people


def hf_class(f: Family, head: str) -> str:
    """The transformers class a checkpoint with this head is saved as (config.json "architectures")."""
    if head in f.heads:
        return f.heads[head]
    if head == "lm":
        return f.hf_class
    stem = f.hf_class.split("For", 1)[0] if "For" in f.hf_class else f.hf_class.removesuffix("LMHeadModel")
    return f"{stem}ForSequenceClassification" if head == "classify" else f"{stem}Model"


def permute_qk(w: torch.Tensor, n_head: int, inverse: bool = False) -> torch.Tensor:
    """llama.cpp's q/k row order for its llama architecture: half-split rotary halves (slmkit, transformers) to
    interleaved pairs; inverse=True undoes it. Rows are (n_head * head_dim); any trailing dims are kept."""
    shape = w.shape
    if inverse:
        return w.reshape(n_head, shape[0] // n_head // 2, 2, *shape[1:]).transpose(1, 2).reshape(shape)
    return w.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).transpose(1, 2).reshape(shape)


def split_qkv_per_head(t: torch.Tensor, n_head: int, head_dim: int) -> torch.Tensor:
    """(H, 3, D, ...) interleaved -> [q; k; v] concatenated (GPT-NeoX, BLOOM)."""
    rest = t.shape[1:]
    return t.reshape(n_head, 3, head_dim, *rest).transpose(0, 1).reshape(3 * n_head * head_dim, *rest)


def join_qkv_per_head(t: torch.Tensor, n_head: int, head_dim: int) -> torch.Tensor:
    rest = t.shape[1:]
    return t.reshape(3, n_head, head_dim, *rest).transpose(0, 1).reshape(3 * n_head * head_dim, *rest)
