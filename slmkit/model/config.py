"""ModelConfig: one JSON-serialisable dataclass spanning the small-language-model design space.

Every switch is a plain field (Literal strings, numbers, booleans) so a config round-trips through JSON.
Derived values (head size, KV heads, intermediate size, per-layer attention types) are filled in
`__post_init__`. The model code branches on these fields, never on a preset's name.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from slmkit.errors import SlmError

PosType = Literal["rope", "learned", "alibi"]
Activation = Literal["silu", "gelu", "gelu_tanh", "relu"]
NormType = Literal["rmsnorm", "layernorm"]
LayerType = Literal["full", "sliding"]
Head = Literal["lm", "classify", "none"]
Pooling = Literal["first", "last"]

# Sizes beyond these are not a small (or any real) language model; checked before anything is built, so a
# config.json that asks for 10^9 layers is one line, not minutes and gigabytes.
LIMITS = {"vocab_size": 1 << 24, "n_layer": 1024, "d_model": 1 << 16, "n_head": 1024, "n_kv_head": 1024,
          "head_dim": 4096, "intermediate_size": 1 << 20, "context_length": 1 << 24, "embed_dim": 1 << 16,
          "sliding_window": 1 << 24, "layer_repeat": 64, "sliding_pattern": 1024, "pos_offset": 1 << 16,
          "type_vocab_size": 1 << 16, "n_labels": 1 << 16}
POSITIVE_FLOATS = ("rope_theta", "rope_local_theta", "norm_eps", "embed_scale", "attn_scale", "attn_softcap",
                   "final_softcap", "clip_qkv")


@dataclass
class ModelConfig:
    """Architecture of a transformer: a decoder (causal) or an encoder (bidirectional, BERT/RoBERTa), with a
    vocabulary head, a classification head or none. Field names follow the survey's design axes."""

    # identity
    name: str = "custom"
    hf_id: str = ""  # the hub checkpoint a preset mirrors
    family: str = "llama"  # transformers model_type written on save (llama, qwen2, phi, gemma, gpt2, ...)

    # size
    vocab_size: int = 32000
    n_layer: int = 12
    d_model: int = 768
    n_head: int = 12
    n_kv_head: int | None = None  # None -> n_head (MHA); 1 -> MQA; in between -> GQA
    head_dim: int | None = None  # None -> d_model // n_head
    intermediate_size: int | None = None  # None -> 4 * d_model (plain) or the SwiGLU 8/3 rule (gated)
    context_length: int = 2048

    # biases
    qkv_bias: bool = False
    out_bias: bool = False
    mlp_bias: bool = False
    lm_head_bias: bool = False

    # positions
    pos_type: PosType = "rope"
    rope_theta: float = 10000.0
    rope_local_theta: float | None = None  # theta on sliding-window layers (Gemma 3); None -> rope_theta
    partial_rotary: float = 1.0  # fraction of each head rotated (Phi 0.5, GPT-NeoX/StableLM 0.25)
    rope_scaling: dict[str, Any] | None = None  # {"rope_type": "linear"|"llama3", ...} as in transformers
    pos_offset: int = 0  # learned positions start at this row (OPT: 2)

    # feed-forward
    mlp_type: Literal["gated", "plain"] = "gated"  # gated: act(x W_gate) * (x W_up) -> W_down
    activation: Activation = "silu"

    # normalisation
    norm_type: NormType = "rmsnorm"
    norm_eps: float = 1e-5
    norm_bias: bool = False  # LayerNorm with a bias term
    norm_affine: bool = True  # False: no learned scale at all (OLMo-1B)
    norm_unit_offset: bool = False  # scale is (1 + w), weights stored around 0 (Gemma)
    qk_norm: bool = False  # normalise q and k per head before rotary (Gemma 3, Phi qk_layernorm)
    post_norms: bool = False  # extra norm on attention and FFN outputs before the residual add (Gemma 2/3)
    pre_norm: bool = True  # False: post-LN blocks, norm after the residual add (OPT-350M)
    final_norm: bool = True
    parallel_residual: bool = False  # x + attn(n1(x)) + mlp(n2(x)) (GPT-NeoX, Phi)
    shared_parallel_norm: bool = False  # parallel blocks use one norm for both branches (Phi)
    embed_norm: bool = False  # LayerNorm right after the token embedding (BLOOM)

    # embeddings and head
    tie_embeddings: bool = False
    embed_scale: float | None = None  # multiply token embeddings (Gemma: sqrt(d_model))
    embed_dim: int | None = None  # token embedding width when it differs from d_model (OPT-350M projections)

    # attention variants
    attn_scale: float | None = None  # softmax scale; None -> head_dim ** -0.5
    attn_softcap: float | None = None  # tanh soft-capping of attention logits (Gemma 2)
    final_softcap: float | None = None  # tanh soft-capping of output logits (Gemma 2)
    clip_qkv: float | None = None  # clamp q, k, v to +-clip_qkv (OLMo)
    sliding_window: int | None = None
    layer_types: list[LayerType] | None = None  # per layer; None -> all sliding if sliding_window else all full
    sliding_pattern: int = 0  # with sliding_window: every Nth layer is full, the rest sliding (Gemma 2: 2, Gemma 3: 6)

    # encoders (BERT, RoBERTa) and heads
    causal: bool = True  # False: every token attends to every real token (a bidirectional encoder)
    type_vocab_size: int = 0  # token-type (segment) embeddings added to the token embeddings (BERT 2, RoBERTa 1)
    pos_from_mask: bool = False  # positions count real tokens only, padding at -1 (RoBERTa's padding_idx row)
    head: Head = "lm"  # lm: vocabulary logits; classify: label logits (B, n_labels); none: hidden states
    mlm_transform: bool = False  # dense, activation, LayerNorm before the vocabulary projection (BERT/RoBERTa MLM)
    n_labels: int = 0  # classify: number of labels
    pooling: Pooling = "first"  # classify: the first token (encoders) or the last real token (decoders)
    pool_dense: bool = False  # dense + tanh on the pooled token (BERT's pooler, RoBERTa's classifier.dense)
    score_bias: bool = True  # the label projection has a bias (BERT, RoBERTa; transformers' decoders: no)

    # MobileLLM block-wise sharing: each stored block runs this many times in a row
    layer_repeat: int = 1

    # token ids that a saved checkpoint carries
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None

    # free-form facts that a writer needs to reproduce the source config (not used by the model)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._validate()
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if self.head_dim is None:
            if self.d_model % self.n_head:
                raise SlmError(f"d_model {self.d_model} is not a multiple of n_head {self.n_head}; set head_dim")
            self.head_dim = self.d_model // self.n_head
        if self.intermediate_size is None:
            if self.mlp_type == "plain":
                self.intermediate_size = 4 * self.d_model
            else:  # LLaMA's rule: 2/3 of 4d, rounded up to a multiple of 256
                hidden = int(2 * 4 * self.d_model / 3)
                self.intermediate_size = 256 * ((hidden + 255) // 256)
        if self.n_head % self.n_kv_head:
            raise SlmError(f"n_head {self.n_head} is not a multiple of n_kv_head {self.n_kv_head}")
        if self.layer_types is None:
            if self.sliding_window and self.sliding_pattern:
                self.layer_types = [
                    "full" if (i + 1) % self.sliding_pattern == 0 else "sliding" for i in range(self.n_layer)
                ]
            elif self.sliding_window:
                self.layer_types = ["sliding"] * self.n_layer
            else:
                self.layer_types = ["full"] * self.n_layer
        if len(self.layer_types) != self.n_layer:
            raise SlmError(f"layer_types has {len(self.layer_types)} entries for {self.n_layer} layers")
        if self.layer_repeat < 1:
            raise SlmError("layer_repeat must be >= 1")
        if self.head == "classify" and self.n_labels < 1:
            raise SlmError("model config: a classification head needs n_labels >= 1")

    def _validate(self) -> None:
        """Types and ranges of every field, naming the field: one clear line instead of a ZeroDivisionError, a
        TypeError or an allocation that never ends."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value, hint = getattr(self, f.name), hints[f.name]
            allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
            if value is None:
                if type(None) not in allowed:
                    raise SlmError(f"model config: {f.name} must be set, got null")
                continue
            literal = next((a for a in allowed if typing.get_origin(a) is Literal), None)
            if literal is not None:
                if value not in typing.get_args(literal):
                    raise SlmError(f"model config: {f.name} must be one of {', '.join(map(str, typing.get_args(literal)))}"
                                   f", got {value!r}")
            elif int in allowed and not (bool in allowed):
                ok = isinstance(value, int) and not isinstance(value, bool) or (
                    list in [typing.get_origin(a) for a in allowed] and isinstance(value, list))
                if not ok:
                    raise SlmError(f"model config: {f.name} must be an integer, got {value!r}")
            elif float in allowed:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise SlmError(f"model config: {f.name} must be a number, got {value!r}")
                if not math.isfinite(value):
                    raise SlmError(f"model config: {f.name} must be finite, got {value!r}")
            elif bool in allowed and not isinstance(value, bool):
                raise SlmError(f"model config: {f.name} must be true or false, got {value!r}")
        for name, top in LIMITS.items():
            value = getattr(self, name)
            low = 0 if name in ("pos_offset", "sliding_pattern", "type_vocab_size", "n_labels") else 1
            if value is not None and not low <= value <= top:
                raise SlmError(f"model config: {name} must be between {low} and {top}, got {value}")
        for name in POSITIVE_FLOATS:
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise SlmError(f"model config: {name} must be > 0, got {value}")
        if not 0 < self.partial_rotary <= 1:
            raise SlmError(f"model config: partial_rotary must be in (0, 1], got {self.partial_rotary}")

    # derived facts -------------------------------------------------------------------------------

    @property
    def rotary_dim(self) -> int:
        """Number of dimensions per head that rotary embeddings rotate (even)."""
        return int(self.head_dim * self.partial_rotary) // 2 * 2

    @property
    def attention_kind(self) -> str:
        """MHA, GQA or MQA, as the survey names them."""
        if self.n_kv_head == self.n_head:
            return "MHA"
        return "MQA" if self.n_kv_head == 1 else "GQA"

    @property
    def softmax_scale(self) -> float:
        return self.attn_scale if self.attn_scale is not None else self.head_dim**-0.5

    # serialisation -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise SlmError(f"unknown ModelConfig field(s): {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "ModelConfig":
        """A named preset (exact name), with any fields overridden; lists the valid names on error."""
        from slmkit.model.presets import PRESETS

        if name not in PRESETS:
            raise SlmError(f"unknown preset {name!r}; valid names: {', '.join(PRESETS)}")
        data = dict(PRESETS[name])
        data["name"] = name
        if "n_layer" in overrides and "layer_types" not in overrides:
            data.pop("layer_types", None)  # recompute from the pattern for the new depth
        data.update(overrides)
        return cls.from_dict(data)


def from_name(name: str, **overrides: Any) -> ModelConfig:
    return ModelConfig.from_name(name, **overrides)
