"""Mapping between transformers checkpoints (config.json + weight names) and slmkit's ModelConfig/Transformer.

Each supported `model_type` has a config reader, a config writer and a table of module names. Fused
tensors are split or joined here: q/k/v into `wqkv`, gate/up into `mlp.w_up`; GPT-NeoX and BLOOM keep
QKV interleaved per head; GPT-2 stores Conv1D weights transposed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from slmkit.errors import SlmError
from slmkit.model.config import ModelConfig

# --- config.json -> ModelConfig ----------------------------------------------------------------------

_ACT = {
    "silu": "silu", "swish": "silu", "gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh", "gelu_tanh": "gelu_tanh", "relu": "relu",
}
# transformers' default for tie_word_embeddings differs by family
_TIE_DEFAULT = {"gemma": True, "gemma2": True, "gemma3_text": True, "gpt2": True, "opt": True, "bloom": True}


def _act(name: str, where: str) -> str:
    if name not in _ACT:
        raise SlmError(f"{where}: activation {name!r} is not supported (supported: {', '.join(sorted(_ACT))})")
    return _ACT[name]


def _rope(d: dict[str, Any], where: str, default_theta: float = 10000.0, layer_type: str | None = None):
    """(theta, partial_rotary, scaling) from either transformers v5 `rope_parameters` or legacy keys."""
    params = d.get("rope_parameters") or {}
    if layer_type and layer_type in params:
        params = params[layer_type]
    scaling = params if params.get("rope_type", "default") != "default" else d.get("rope_scaling")
    theta = params.get("rope_theta", d.get("rope_theta", d.get("rotary_emb_base", default_theta)))
    partial = params.get("partial_rotary_factor", d.get("partial_rotary_factor", d.get("rotary_pct", 1.0)))
    if scaling:
        kind = scaling.get("rope_type", scaling.get("type", "default"))
        if kind not in ("default", "linear", "llama3"):
            raise SlmError(f"{where}: rope scaling {kind!r} is not supported (supported: linear, llama3)")
        scaling = {k: v for k, v in scaling.items() if k not in ("rope_theta", "partial_rotary_factor")}
        scaling["rope_type"] = kind
        scaling.pop("type", None)
        if kind == "default":
            scaling = None
    return float(theta), float(partial), scaling or None


def _layer_types(d: dict[str, Any], n_layer: int) -> list[str] | None:
    types = d.get("layer_types")
    if not types:
        return None
    return ["sliding" if t == "sliding_attention" else "full" for t in types[:n_layer]]


def _ids(d: dict[str, Any]) -> dict[str, Any]:
    return dict(bos_token_id=d.get("bos_token_id"), eos_token_id=d.get("eos_token_id"),
                pad_token_id=d.get("pad_token_id"))


def _llama_like(d: dict[str, Any], where: str, family: str) -> dict[str, Any]:
    n_layer = d["num_hidden_layers"]
    theta, partial, scaling = _rope(d, where, layer_type="full_attention" if family == "gemma3_text" else None)
    out = dict(
        family=family, vocab_size=d["vocab_size"], n_layer=n_layer, d_model=d["hidden_size"],
        n_head=d["num_attention_heads"], n_kv_head=d.get("num_key_value_heads") or d["num_attention_heads"],
        head_dim=d.get("head_dim"), intermediate_size=d["intermediate_size"],
        context_length=d.get("max_position_embeddings", 2048), rope_theta=theta, partial_rotary=partial,
        rope_scaling=scaling, norm_eps=d.get("rms_norm_eps", d.get("layer_norm_eps", 1e-6)),
        activation=_act(d.get("hidden_activation") or d.get("hidden_act", "silu"), where),
        qkv_bias=bool(d.get("attention_bias", False)), out_bias=bool(d.get("attention_bias", False)),
        mlp_bias=bool(d.get("mlp_bias", False)),
        tie_embeddings=d.get("tie_word_embeddings", _TIE_DEFAULT.get(family, False)), **_ids(d),
    )
    return out


def _from_llama(d, where):
    if d.get("model_type") == "mobilellm":  # MobileLLM's own config: LLaMA layers, shared embeddings
        d = dict(d, tie_word_embeddings=d.get("share_embedding", True))
    out = _llama_like(d, where, "llama")
    if d.get("pretraining_tp", 1) not in (1, None):
        out["extra"] = {"pretraining_tp": d["pretraining_tp"]}
    return out


def _from_mistral(d, where):
    return dict(_llama_like(d, where, "mistral"), sliding_window=d.get("sliding_window"))


def _from_qwen2(d, where):
    out = _llama_like(d, where, "qwen2")
    out.update(qkv_bias=True, out_bias=False)
    n = out["n_layer"]
    if d.get("use_sliding_window"):
        out["sliding_window"] = d["sliding_window"]
        start = d.get("max_window_layers", n)
        out["layer_types"] = _layer_types(d, n) or ["sliding" if i >= start else "full" for i in range(n)]
    return out


def _from_phi(d, where):
    out = _llama_like(d, where, "phi")
    out.update(mlp_type="plain", norm_type="layernorm", norm_bias=True, qkv_bias=True, out_bias=True,
               mlp_bias=True, lm_head_bias=True, parallel_residual=True, shared_parallel_norm=True,
               qk_norm=bool(d.get("qk_layernorm", False)), norm_eps=d.get("layer_norm_eps", 1e-5))
    return out


def _from_phi3(d, where):
    out = _llama_like(d, where, "phi3")
    if d.get("sliding_window"):
        out["sliding_window"] = d["sliding_window"]
    out["extra"] = {k: d[k] for k in ("original_max_position_embeddings",) if k in d}
    return out


def _from_gemma(d, where):
    out = _llama_like(d, where, "gemma")
    out.update(norm_unit_offset=True, embed_scale=math.sqrt(d["hidden_size"]))
    return out


def _from_gemma2(d, where, family="gemma2"):
    out = _llama_like(d, where, family)
    n = out["n_layer"]
    out.update(norm_unit_offset=True, embed_scale=math.sqrt(d["hidden_size"]), post_norms=True,
               attn_scale=float(d.get("query_pre_attn_scalar", 256)) ** -0.5,
               attn_softcap=d.get("attn_logit_softcapping"), final_softcap=d.get("final_logit_softcapping"),
               sliding_window=d.get("sliding_window"))
    pattern = d.get("sliding_window_pattern", d.get("_sliding_window_pattern", 2 if family == "gemma2" else 6))
    types = _layer_types(d, n)
    if types is None and out["sliding_window"]:
        types = ["full" if (i + 1) % pattern == 0 else "sliding" for i in range(n)]
    out["layer_types"] = types
    return out


def _from_gemma3(d, where):
    out = _from_gemma2(d, where, "gemma3_text")
    out["qk_norm"] = True
    local = (d.get("rope_parameters") or {}).get("sliding_attention", {}).get("rope_theta")
    out["rope_local_theta"] = float(local or d.get("rope_local_base_freq", 10000.0))
    if d.get("rope_parameters") is None and "rope_theta" not in d:
        out["rope_theta"] = 1_000_000.0
    return out


def _from_gpt2(d, where):
    if d.get("scale_attn_by_inverse_layer_idx") or d.get("reorder_and_upcast_attn"):
        raise SlmError(f"{where}: GPT-2 options scale_attn_by_inverse_layer_idx/reorder_and_upcast_attn are not supported")
    n_embd = d["n_embd"]
    return dict(
        family="gpt2", pos_type="learned", mlp_type="plain", norm_type="layernorm", norm_bias=True,
        qkv_bias=True, out_bias=True, mlp_bias=True, vocab_size=d["vocab_size"], n_layer=d["n_layer"],
        d_model=n_embd, n_head=d["n_head"], intermediate_size=d.get("n_inner") or 4 * n_embd,
        context_length=d.get("n_positions", 1024), norm_eps=d.get("layer_norm_epsilon", 1e-5),
        activation=_act(d.get("activation_function", "gelu_new"), where),
        attn_scale=None if d.get("scale_attn_weights", True) else 1.0,
        tie_embeddings=d.get("tie_word_embeddings", True), **_ids(d),
    )


def _from_gpt_neox(d, where):
    theta, partial, scaling = _rope(d, where)
    return dict(
        family="gpt_neox", mlp_type="plain", norm_type="layernorm", norm_bias=True,
        qkv_bias=d.get("attention_bias", True), out_bias=d.get("attention_bias", True), mlp_bias=True,
        vocab_size=d["vocab_size"], n_layer=d["num_hidden_layers"], d_model=d["hidden_size"],
        n_head=d["num_attention_heads"], intermediate_size=d["intermediate_size"],
        context_length=d.get("max_position_embeddings", 2048), rope_theta=theta, partial_rotary=partial,
        rope_scaling=scaling, norm_eps=d.get("layer_norm_eps", 1e-5),
        activation=_act(d.get("hidden_act", "gelu"), where), parallel_residual=d.get("use_parallel_residual", True),
        tie_embeddings=d.get("tie_word_embeddings", False), **_ids(d),
    )


def _from_opt(d, where):
    hidden = d["hidden_size"]
    proj = d.get("word_embed_proj_dim", hidden)
    pre = d.get("do_layer_norm_before", True)
    bias = d.get("enable_bias", True)
    return dict(
        family="opt", pos_type="learned", pos_offset=2, mlp_type="plain", norm_type="layernorm",
        norm_bias=True, norm_affine=d.get("layer_norm_elementwise_affine", True), qkv_bias=bias, out_bias=bias,
        mlp_bias=bias, vocab_size=d["vocab_size"], n_layer=d["num_hidden_layers"], d_model=hidden,
        n_head=d["num_attention_heads"], intermediate_size=d["ffn_dim"],
        context_length=d.get("max_position_embeddings", 2048), activation=_act(d.get("activation_function", "relu"), where),
        embed_dim=proj if proj != hidden else None, pre_norm=pre,
        final_norm=pre and not d.get("_remove_final_layer_norm", False), norm_eps=1e-5,
        tie_embeddings=d.get("tie_word_embeddings", True), **_ids(d),
    )


def _from_stablelm(d, where):
    if d.get("qk_layernorm"):
        raise SlmError(f"{where}: StableLM qk_layernorm (per-head norm weights) is not supported")
    out = _llama_like(d, where, "stablelm")
    parallel = bool(d.get("use_parallel_residual", False))
    out.update(norm_type="layernorm", norm_bias=True, norm_eps=d.get("layer_norm_eps", 1e-5),
               qkv_bias=bool(d.get("use_qkv_bias", False)), out_bias=False, mlp_bias=False,
               parallel_residual=parallel, shared_parallel_norm=parallel)
    return out


def _from_olmo(d, where):
    out = _llama_like(d, where, "olmo")
    out.update(norm_type="layernorm", norm_affine=False, norm_eps=1e-5, clip_qkv=d.get("clip_qkv"))
    return out


def _from_bloom(d, where):
    if d.get("apply_residual_connection_post_layernorm"):
        raise SlmError(f"{where}: BLOOM apply_residual_connection_post_layernorm=true is not supported")
    hidden = d.get("hidden_size", d.get("n_embed"))
    return dict(
        family="bloom", pos_type="alibi", mlp_type="plain", activation="gelu_tanh", norm_type="layernorm",
        norm_bias=True, qkv_bias=True, out_bias=True, mlp_bias=True, embed_norm=True, vocab_size=d["vocab_size"],
        n_layer=d.get("n_layer", d.get("num_hidden_layers")), d_model=hidden,
        n_head=d.get("n_head", d.get("num_attention_heads")), intermediate_size=4 * hidden,
        context_length=d.get("seq_length", 2048), norm_eps=d.get("layer_norm_epsilon", 1e-5),
        tie_embeddings=d.get("tie_word_embeddings", True), **_ids(d),
    )


# --- ModelConfig -> config.json ----------------------------------------------------------------------

_ACT_OUT = {"silu": "silu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu"}
_ARCH = {
    "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
    "phi": "PhiForCausalLM", "phi3": "Phi3ForCausalLM", "gemma": "GemmaForCausalLM",
    "gemma2": "Gemma2ForCausalLM", "gemma3_text": "Gemma3ForCausalLM", "gpt2": "GPT2LMHeadModel",
    "gpt_neox": "GPTNeoXForCausalLM", "opt": "OPTForCausalLM", "stablelm": "StableLmForCausalLM",
    "olmo": "OlmoForCausalLM", "bloom": "BloomForCausalLM",
}


def _rope_out(c: ModelConfig) -> dict[str, Any]:
    params: dict[str, Any] = {"rope_type": "default", "rope_theta": c.rope_theta}
    if c.rope_scaling:
        params.update(c.rope_scaling)
    if c.partial_rotary != 1.0:
        params["partial_rotary_factor"] = c.partial_rotary
    legacy: dict[str, Any] = {"rope_theta": c.rope_theta}
    if c.rope_scaling:
        legacy["rope_scaling"] = dict(c.rope_scaling)
    return {"rope_parameters": params, **legacy}


def _hf_layer_types(c: ModelConfig) -> list[str]:
    return ["sliding_attention" if t == "sliding" else "full_attention" for t in _exec_layer_types(c)]


def _exec_layer_types(c: ModelConfig) -> list[str]:
    return [t for t in c.layer_types for _ in range(c.layer_repeat)]


def _to_llama_like(c: ModelConfig) -> dict[str, Any]:
    d = dict(
        vocab_size=c.vocab_size, hidden_size=c.d_model, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.n_layer * c.layer_repeat, num_attention_heads=c.n_head, num_key_value_heads=c.n_kv_head,
        head_dim=c.head_dim, max_position_embeddings=c.context_length, hidden_act=_ACT_OUT[c.activation],
        rms_norm_eps=c.norm_eps, tie_word_embeddings=c.tie_embeddings, attention_bias=c.qkv_bias,
        mlp_bias=c.mlp_bias, **_rope_out(c),
    )
    return d


def _int_if_whole(x: float) -> int | float:
    return int(round(x)) if abs(x - round(x)) < 1e-6 else x


def _to_family(c: ModelConfig) -> dict[str, Any]:
    f = c.family
    if f in ("llama", "mistral", "qwen2", "olmo", "phi3", "gemma"):
        d = _to_llama_like(c)
        if f == "mistral":
            d["sliding_window"] = c.sliding_window
        if f == "qwen2":
            d.pop("attention_bias"), d.pop("mlp_bias")
            sliding = c.sliding_window is not None and "sliding" in c.layer_types
            d.update(use_sliding_window=sliding, sliding_window=c.sliding_window if sliding else None,
                     layer_types=_hf_layer_types(c))
            if sliding:
                d["max_window_layers"] = _exec_layer_types(c).index("sliding")
        if f == "olmo":
            d.update(clip_qkv=c.clip_qkv)
        if f == "phi3":
            d.update(sliding_window=c.sliding_window, **c.extra)
        if f == "gemma":
            d["hidden_activation"] = d["hidden_act"]
        return d
    if f in ("gemma2", "gemma3_text"):
        d = _to_llama_like(c)
        d.update(hidden_activation=d["hidden_act"], query_pre_attn_scalar=_int_if_whole(c.softmax_scale**-2),
                 attn_logit_softcapping=c.attn_softcap, final_logit_softcapping=c.final_softcap,
                 sliding_window=c.sliding_window or 4096, layer_types=_hf_layer_types(c))
        if f == "gemma3_text":
            full = _rope_out(c)["rope_parameters"]
            d.pop("rope_theta"), d.pop("rope_scaling", None)
            d["rope_parameters"] = {"full_attention": full, "sliding_attention": {
                "rope_type": "default", "rope_theta": c.rope_local_theta or c.rope_theta}}
            d["rope_local_base_freq"] = c.rope_local_theta or c.rope_theta
        return d
    if f == "phi":
        d = _to_llama_like(c)
        d.pop("rms_norm_eps"), d.pop("attention_bias"), d.pop("mlp_bias")
        d.update(layer_norm_eps=c.norm_eps, qk_layernorm=c.qk_norm, partial_rotary_factor=c.partial_rotary)
        return d
    if f == "stablelm":
        d = _to_llama_like(c)
        d.pop("rms_norm_eps"), d.pop("attention_bias"), d.pop("mlp_bias")
        d.update(layer_norm_eps=c.norm_eps, use_qkv_bias=c.qkv_bias, use_parallel_residual=c.parallel_residual,
                 qk_layernorm=False, partial_rotary_factor=c.partial_rotary)
        return d
    if f == "gpt2":
        return dict(vocab_size=c.vocab_size, n_embd=c.d_model, n_layer=c.n_layer * c.layer_repeat, n_head=c.n_head,
                    n_inner=c.intermediate_size, n_positions=c.context_length, n_ctx=c.context_length,
                    layer_norm_epsilon=c.norm_eps,
                    activation_function="gelu_new" if c.activation == "gelu_tanh" else c.activation,
                    scale_attn_weights=c.attn_scale is None, tie_word_embeddings=c.tie_embeddings)
    if f == "gpt_neox":
        d = dict(vocab_size=c.vocab_size, hidden_size=c.d_model, num_hidden_layers=c.n_layer * c.layer_repeat,
                 num_attention_heads=c.n_head, intermediate_size=c.intermediate_size,
                 max_position_embeddings=c.context_length, layer_norm_eps=c.norm_eps,
                 hidden_act=_ACT_OUT[c.activation], use_parallel_residual=c.parallel_residual,
                 attention_bias=c.qkv_bias, rotary_pct=c.partial_rotary, rotary_emb_base=c.rope_theta,
                 tie_word_embeddings=c.tie_embeddings, **_rope_out(c))
        return d
    if f == "opt":
        return dict(vocab_size=c.vocab_size, hidden_size=c.d_model, num_hidden_layers=c.n_layer * c.layer_repeat,
                    num_attention_heads=c.n_head, ffn_dim=c.intermediate_size,
                    max_position_embeddings=c.context_length, activation_function=c.activation,
                    word_embed_proj_dim=c.embed_dim or c.d_model, do_layer_norm_before=c.pre_norm,
                    _remove_final_layer_norm=c.pre_norm and not c.final_norm, enable_bias=c.qkv_bias,
                    layer_norm_elementwise_affine=c.norm_affine, tie_word_embeddings=c.tie_embeddings)
    if f == "bloom":
        return dict(vocab_size=c.vocab_size, hidden_size=c.d_model, n_layer=c.n_layer * c.layer_repeat,
                    n_head=c.n_head, layer_norm_epsilon=c.norm_eps, seq_length=c.context_length,
                    apply_residual_connection_post_layernorm=False, tie_word_embeddings=c.tie_embeddings)
    raise SlmError(f"cannot write a transformers config for family {f!r}")


def config_to_hf(c: ModelConfig) -> dict[str, Any]:
    """A config.json dict that transformers loads as the same architecture."""
    d = _to_family(c)
    d.update(model_type=c.family, architectures=[_ARCH[c.family]], torch_dtype="float32",
             bos_token_id=c.bos_token_id, eos_token_id=c.eos_token_id, pad_token_id=c.pad_token_id)
    return d


_READERS: dict[str, Callable[[dict[str, Any], str], dict[str, Any]]] = {
    "llama": _from_llama, "mobilellm": _from_llama, "mistral": _from_mistral, "qwen2": _from_qwen2,
    "phi": _from_phi, "phi3": _from_phi3, "gemma": _from_gemma, "gemma2": _from_gemma2,
    "gemma3_text": _from_gemma3, "gpt2": _from_gpt2, "gpt_neox": _from_gpt_neox, "opt": _from_opt,
    "stablelm": _from_stablelm, "olmo": _from_olmo, "bloom": _from_bloom,
}
SUPPORTED_MODEL_TYPES = tuple(_READERS)


def config_from_hf(d: dict[str, Any], where: str = "config.json") -> ModelConfig:
    """Read a transformers config.json dict into a ModelConfig."""
    if d.get("model_type") == "gemma3" and "text_config" in d:
        d = dict(d["text_config"], model_type="gemma3_text")
    model_type = d.get("model_type")
    if model_type not in _READERS:
        raise SlmError(f"{where}: model_type {model_type!r} is not supported "
                       f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})")
    try:
        fields = _READERS[model_type](d, where)
    except KeyError as e:
        raise SlmError(f"{where}: missing key {e.args[0]!r} for model_type {model_type!r}") from None
    fields["hf_id"] = d.get("_name_or_path", "") or ""
    fields["name"] = fields["hf_id"].rsplit("/", 1)[-1] or model_type
    return ModelConfig(**fields)


# --- weight names ------------------------------------------------------------------------------------


@dataclass
class _Layout:
    """Where each slmkit module lives in a transformers checkpoint."""

    top: dict[str, str]  # slmkit module -> hf module (outside layers)
    layer: str  # hf prefix of layer i, with {i}
    names: dict[str, str]  # slmkit module inside a block -> hf module
    qkv: tuple[str, ...]  # one fused name or (q, k, v)
    qkv_per_head: bool = False  # fused QKV interleaved per head, (H, 3, D) (GPT-NeoX, BLOOM)
    up: tuple[str, ...] = ()  # gated: (gate, up) or one fused name; plain: (up,)
    transposed: tuple[str, ...] = field(default=())  # Conv1D weights stored (in, out) (GPT-2)
    ignore: tuple[str, ...] = ()  # substrings of buffers that are not weights


_LLAMA_NAMES = {"attn_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm", "attn.wo": "self_attn.o_proj",
                "mlp.w_down": "mlp.down_proj", "attn.q_norm": "self_attn.q_norm", "attn.k_norm": "self_attn.k_norm"}
_LLAMA_TOP = {"tok_emb": "model.embed_tokens", "norm": "model.norm", "lm_head": "lm_head"}
_LLAMA = _Layout(_LLAMA_TOP, "model.layers.{i}.", _LLAMA_NAMES, ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
                 up=("mlp.gate_proj", "mlp.up_proj"), ignore=("rotary_emb.inv_freq",))
_GEMMA2 = _Layout(_LLAMA_TOP, "model.layers.{i}.",
                  dict(_LLAMA_NAMES, mlp_norm="pre_feedforward_layernorm", post_attn_norm="post_attention_layernorm",
                       post_mlp_norm="post_feedforward_layernorm"),
                  _LLAMA.qkv, up=_LLAMA.up, ignore=_LLAMA.ignore)
_PHI3 = _Layout(_LLAMA_TOP, "model.layers.{i}.", _LLAMA_NAMES, ("self_attn.qkv_proj",), up=("mlp.gate_up_proj",),
                ignore=_LLAMA.ignore)
_PHI = _Layout({"tok_emb": "model.embed_tokens", "norm": "model.final_layernorm", "lm_head": "lm_head"},
               "model.layers.{i}.",
               {"attn_norm": "input_layernorm", "attn.wo": "self_attn.dense", "attn.q_norm": "self_attn.q_layernorm",
                "attn.k_norm": "self_attn.k_layernorm", "mlp.w_down": "mlp.fc2"},
               _LLAMA.qkv, up=("mlp.fc1",), ignore=_LLAMA.ignore)
_GPT2 = _Layout({"tok_emb": "transformer.wte", "pos_emb": "transformer.wpe", "norm": "transformer.ln_f",
                 "lm_head": "lm_head"}, "transformer.h.{i}.",
                {"attn_norm": "ln_1", "mlp_norm": "ln_2", "attn.wo": "attn.c_proj", "mlp.w_down": "mlp.c_proj"},
                ("attn.c_attn",), up=("mlp.c_fc",), transposed=("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"),
                ignore=("attn.bias", "attn.masked_bias"))
_NEOX = _Layout({"tok_emb": "gpt_neox.embed_in", "norm": "gpt_neox.final_layer_norm", "lm_head": "embed_out"},
                "gpt_neox.layers.{i}.",
                {"attn_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm", "attn.wo": "attention.dense",
                 "mlp.w_down": "mlp.dense_4h_to_h"},
                ("attention.query_key_value",), qkv_per_head=True, up=("mlp.dense_h_to_4h",),
                ignore=("attention.bias", "attention.masked_bias", "rotary_emb.inv_freq"))
_OPT = _Layout({"tok_emb": "model.decoder.embed_tokens", "pos_emb": "model.decoder.embed_positions",
                "proj_in": "model.decoder.project_in", "proj_out": "model.decoder.project_out",
                "norm": "model.decoder.final_layer_norm", "lm_head": "lm_head"},
               "model.decoder.layers.{i}.",
               {"attn_norm": "self_attn_layer_norm", "mlp_norm": "final_layer_norm", "attn.wo": "self_attn.out_proj",
                "mlp.w_down": "fc2"},
               ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), up=("fc1",))
_BLOOM = _Layout({"tok_emb": "transformer.word_embeddings", "emb_norm": "transformer.word_embeddings_layernorm",
                  "norm": "transformer.ln_f", "lm_head": "lm_head"}, "transformer.h.{i}.",
                 {"attn_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm",
                  "attn.wo": "self_attention.dense", "mlp.w_down": "mlp.dense_4h_to_h"},
                 ("self_attention.query_key_value",), qkv_per_head=True, up=("mlp.dense_h_to_4h",))
_LAYOUTS = {
    "llama": _LLAMA, "mistral": _LLAMA, "qwen2": _LLAMA, "stablelm": _LLAMA, "olmo": _LLAMA, "gemma": _LLAMA,
    "gemma2": _GEMMA2, "gemma3_text": _GEMMA2, "phi3": _PHI3, "phi": _PHI, "gpt2": _GPT2, "gpt_neox": _NEOX,
    "opt": _OPT, "bloom": _BLOOM,
}


def _layout(c: ModelConfig) -> _Layout:
    if c.family not in _LAYOUTS:
        raise SlmError(f"no transformers weight layout for family {c.family!r}")
    return _LAYOUTS[c.family]


def _split_qkv_per_head(t: torch.Tensor, c: ModelConfig) -> torch.Tensor:
    """(H, 3, D, ...) interleaved -> [q; k; v] concatenated."""
    rest = t.shape[1:]
    t = t.reshape(c.n_head, 3, c.head_dim, *rest)
    return t.transpose(0, 1).reshape(3 * c.n_head * c.head_dim, *rest)


def _join_qkv_per_head(t: torch.Tensor, c: ModelConfig) -> torch.Tensor:
    rest = t.shape[1:]
    t = t.reshape(3, c.n_head, c.head_dim, *rest)
    return t.transpose(0, 1).reshape(3 * c.n_head * c.head_dim, *rest)


def _hf_sources(c: ModelConfig, lay: _Layout, module: str) -> tuple[list[str], str]:
    """hf module names that make up one slmkit module, and how they combine ('one', 'cat', 'per_head')."""
    if not module.startswith("blocks."):
        return [lay.top[module]], "one"
    _, i, sub = module.split(".", 2)
    pre = lay.layer.format(i=i)
    if sub == "attn.wqkv":
        return [pre + n for n in lay.qkv], "per_head" if lay.qkv_per_head else ("cat" if len(lay.qkv) > 1 else "one")
    if sub == "mlp.w_up":
        return [pre + n for n in lay.up], "cat" if len(lay.up) > 1 else "one"
    return [pre + lay.names[sub]], "one"


def hf_to_slmkit(sd: dict[str, torch.Tensor], c: ModelConfig, expected: dict[str, torch.Size],
                 where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Rename (and fuse) a transformers state dict into slmkit's; `expected` is the target model's shapes."""
    lay = _layout(c)
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for key, shape in expected.items():
        module, param = key.rsplit(".", 1)
        if c.tie_embeddings and module == "lm_head" and param == "weight":
            continue  # tied to tok_emb
        names, how = _hf_sources(c, lay, module)
        keys = [f"{n}.{param}" for n in names]
        missing = [k for k in keys if k not in sd]
        if missing:
            raise SlmError(f"{where}: tensor {missing[0]!r} is missing")
        parts = []
        for k, n in zip(keys, names):
            t = sd[k]
            if param == "weight" and any(n.endswith(s) for s in lay.transposed):
                t = t.t()
            parts.append(t)
            used.add(k)
        t = torch.cat(parts, 0) if how == "cat" else parts[0]
        if how == "per_head":
            t = _split_qkv_per_head(t, c)
        if tuple(t.shape) != tuple(shape):
            raise SlmError(f"{where}: tensor {keys[0]!r} has shape {tuple(t.shape)} but the config needs {tuple(shape)}")
        out[key] = t
    tied_head = [k for k in sd if k.startswith(lay.top["lm_head"] + ".")] if c.tie_embeddings else []
    left = [k for k in sd if k not in used and k not in tied_head and not any(s in k for s in lay.ignore)]
    if left:
        raise SlmError(f"{where}: unexpected tensor {left[0]!r} ({len(left)} unused); config and weights disagree")
    if c.tie_embeddings:
        out["lm_head.weight"] = out["tok_emb.weight"]
    return out


def slmkit_to_hf(sd: dict[str, torch.Tensor], c: ModelConfig) -> dict[str, torch.Tensor]:
    """slmkit state dict -> transformers names and layouts (shared blocks are written out per repeat)."""
    lay = _layout(c)
    out: dict[str, torch.Tensor] = {}
    for key, t in sd.items():
        module, param = key.rsplit(".", 1)
        if c.tie_embeddings and module == "lm_head":
            continue
        copies = [module]
        if module.startswith("blocks.") and c.layer_repeat > 1:
            _, i, sub = module.split(".", 2)
            copies = [f"blocks.{int(i) * c.layer_repeat + r}.{sub}" for r in range(c.layer_repeat)]
        for r, mod in enumerate(copies):
            names, how = _hf_sources(c, lay, mod)
            src = t if r == 0 else t.clone()  # repeats of a shared block are separate tensors on disk
            parts = [src]
            if how == "per_head":
                parts = [_join_qkv_per_head(src, c)]
            elif how == "cat":
                sizes = ([c.n_head * c.head_dim, c.n_kv_head * c.head_dim, c.n_kv_head * c.head_dim]
                         if len(names) == 3 else [src.shape[0] // 2, src.shape[0] // 2])
                parts = list(src.split(sizes, 0))
            for n, p in zip(names, parts):
                if param == "weight" and any(n.endswith(s) for s in lay.transposed):
                    p = p.t()
                out[f"{n}.{param}"] = p.contiguous()
    return out
