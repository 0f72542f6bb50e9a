"""The records of the architecture families slmkit runs (model/family.py says what a record holds).

Each family's config reader, writer and GGUF fields sit together, then its record; FAMILIES lists them all.
Readers take a transformers config.json dict and return ModelConfig fields; writers do the reverse (the common
keys model_type, architectures and token ids are added by model/hf.py).
"""

from __future__ import annotations

import math
from typing import Any

from slmkit.errors import SlmError
from slmkit.model.config import ModelConfig
from slmkit.model.family import GGUF, Family, Layout

# --- shared by the readers and writers ------------------------------------------------------------------


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



def _from_bert(d, where, family="bert"):
    """BERT and RoBERTa: post-LN encoder blocks, learned absolute positions plus token types, LayerNorm after the
    embeddings, a tied masked-LM head with a dense + LayerNorm transform. RoBERTa's positions start after its
    padding index and count real tokens only."""
    if d.get("is_decoder") or d.get("add_cross_attention"):
        raise SlmError(f"{where}: a {family} decoder (is_decoder / cross-attention) is not supported; "
                       "slmkit reads the encoder")
    kind = d.get("position_embedding_type", "absolute")
    if kind != "absolute":
        raise SlmError(f"{where}: position_embedding_type {kind!r} is not supported (supported: absolute)")
    roberta = family == "roberta"
    pad = d.get("pad_token_id", 1 if roberta else 0)
    offset = pad + 1 if roberta else 0  # RoBERTa's position rows 0..pad are padding: real tokens start at pad + 1
    n_pos = d.get("max_position_embeddings", 512)
    if n_pos <= offset:
        raise SlmError(f"{where}: max_position_embeddings {n_pos} leaves no positions after the padding index {pad}")
    return dict(
        family=family, causal=False, pos_type="learned", pos_offset=offset, pos_from_mask=roberta,
        mlp_type="plain", activation=_act(d.get("hidden_act", "gelu"), where), norm_type="layernorm", norm_bias=True,
        norm_eps=d.get("layer_norm_eps", 1e-12), pre_norm=False, final_norm=False, embed_norm=True, qkv_bias=True,
        out_bias=True, mlp_bias=True, lm_head_bias=True, mlm_transform=True, vocab_size=d["vocab_size"],
        n_layer=d["num_hidden_layers"], d_model=d["hidden_size"], n_head=d["num_attention_heads"],
        intermediate_size=d["intermediate_size"], context_length=n_pos - offset,
        type_vocab_size=d.get("type_vocab_size", 2), tie_embeddings=d.get("tie_word_embeddings", True), **_ids(d),
    )


def _from_roberta(d, where):
    return _from_bert(d, where, "roberta")


_ACT_OUT = {"silu": "silu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu"}


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



# --- weight layouts ---------------------------------------------------------------------------------------

_LLAMA_NAMES = {"attn_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm", "attn.wo": "self_attn.o_proj",
                "mlp.w_down": "mlp.down_proj", "attn.q_norm": "self_attn.q_norm", "attn.k_norm": "self_attn.k_norm"}
_LLAMA_TOP = {"tok_emb": "model.embed_tokens", "norm": "model.norm", "lm_head": "lm_head", "score": "score"}
_LLAMA = Layout(_LLAMA_TOP, "model.layers.{i}.", _LLAMA_NAMES, ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
                 up=("mlp.gate_proj", "mlp.up_proj"), ignore=("rotary_emb.inv_freq",), base="model.")
_GEMMA2 = Layout(_LLAMA_TOP, "model.layers.{i}.",
                  dict(_LLAMA_NAMES, mlp_norm="pre_feedforward_layernorm", post_attn_norm="post_attention_layernorm",
                       post_mlp_norm="post_feedforward_layernorm"),
                  _LLAMA.qkv, up=_LLAMA.up, ignore=_LLAMA.ignore, base="model.")
_PHI3 = Layout(_LLAMA_TOP, "model.layers.{i}.", _LLAMA_NAMES, ("self_attn.qkv_proj",), up=("mlp.gate_up_proj",),
                ignore=_LLAMA.ignore, base="model.")
_PHI = Layout({"tok_emb": "model.embed_tokens", "norm": "model.final_layernorm", "lm_head": "lm_head", "score": "score"},
               "model.layers.{i}.",
               {"attn_norm": "input_layernorm", "attn.wo": "self_attn.dense", "attn.q_norm": "self_attn.q_layernorm",
                "attn.k_norm": "self_attn.k_layernorm", "mlp.w_down": "mlp.fc2"},
               _LLAMA.qkv, up=("mlp.fc1",), ignore=_LLAMA.ignore, base="model.")
_GPT2 = Layout({"tok_emb": "transformer.wte", "pos_emb": "transformer.wpe", "norm": "transformer.ln_f",
                 "lm_head": "lm_head", "score": "score"}, "transformer.h.{i}.",
                {"attn_norm": "ln_1", "mlp_norm": "ln_2", "attn.wo": "attn.c_proj", "mlp.w_down": "mlp.c_proj"},
                ("attn.c_attn",), up=("mlp.c_fc",), transposed=("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"),
                ignore=("attn.bias", "attn.masked_bias"), base="transformer.")
_NEOX = Layout({"tok_emb": "gpt_neox.embed_in", "norm": "gpt_neox.final_layer_norm", "lm_head": "embed_out",
                "score": "score"},
                "gpt_neox.layers.{i}.",
                {"attn_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm", "attn.wo": "attention.dense",
                 "mlp.w_down": "mlp.dense_4h_to_h"},
                ("attention.query_key_value",), qkv_per_head=True, up=("mlp.dense_h_to_4h",),
                ignore=("attention.bias", "attention.masked_bias", "rotary_emb.inv_freq"), base="gpt_neox.")
_OPT = Layout({"tok_emb": "model.decoder.embed_tokens", "pos_emb": "model.decoder.embed_positions",
                "proj_in": "model.decoder.project_in", "proj_out": "model.decoder.project_out",
                "norm": "model.decoder.final_layer_norm", "lm_head": "lm_head", "score": "score"},
               "model.decoder.layers.{i}.",
               {"attn_norm": "self_attn_layer_norm", "mlp_norm": "final_layer_norm", "attn.wo": "self_attn.out_proj",
                "mlp.w_down": "fc2"},
               ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), up=("fc1",), base="model.")
_BLOOM = Layout({"tok_emb": "transformer.word_embeddings", "emb_norm": "transformer.word_embeddings_layernorm",
                  "norm": "transformer.ln_f", "lm_head": "lm_head", "score": "score"}, "transformer.h.{i}.",
                 {"attn_norm": "input_layernorm", "mlp_norm": "post_attention_layernorm",
                  "attn.wo": "self_attention.dense", "mlp.w_down": "mlp.dense_4h_to_h"},
                 ("self_attention.query_key_value",), qkv_per_head=True, up=("mlp.dense_h_to_4h",), base="transformer.")


def _encoder_layout(base: str, mlm: dict[str, str], classifier: dict[str, str], bias: str, ignore: tuple[str, ...]):
    """BERT-style layers under `base`encoder.layer.{i}; the heads' modules sit outside the base model."""
    emb = base + "embeddings."
    top = {"tok_emb": emb + "word_embeddings", "pos_emb": emb + "position_embeddings",
           "type_emb": emb + "token_type_embeddings", "emb_norm": emb + "LayerNorm", **mlm, **classifier}
    return Layout(top, base + "encoder.layer.{i}.",
                  {"attn.wo": "attention.output.dense", "attn_norm": "attention.output.LayerNorm",
                   "mlp.w_down": "output.dense", "mlp_norm": "output.LayerNorm"},
                  ("attention.self.query", "attention.self.key", "attention.self.value"), up=("intermediate.dense",),
                  base=base, params={"lm_head.bias": bias},
                  ignore=("embeddings.position_ids", "embeddings.token_type_ids", "pooler.", *ignore))


# a bare BertModel's pooler, the pretraining checkpoints' next-sentence head and the copy of the tied decoder
# bias are read past (slmkit does not use them), never silently for a module it builds
_BERT = _encoder_layout("bert.", {"head_dense": "cls.predictions.transform.dense",
                                  "head_norm": "cls.predictions.transform.LayerNorm", "lm_head": "cls.predictions.decoder"},
                        {"pool": "bert.pooler.dense", "score": "classifier"}, "cls.predictions.bias",
                        ("cls.seq_relationship.", "cls.predictions.decoder.bias"))
_ROBERTA = _encoder_layout("roberta.", {"head_dense": "lm_head.dense", "head_norm": "lm_head.layer_norm",
                                        "lm_head": "lm_head.decoder"},
                           {"pool": "classifier.dense", "score": "classifier.out_proj"}, "lm_head.bias",
                           ("lm_head.decoder.bias",))


# --- writers: ModelConfig -> config.json fields --------------------------------------------------------------


def _to_llama(c: ModelConfig) -> dict[str, Any]:
    return _to_llama_like(c)


def _to_mistral(c: ModelConfig) -> dict[str, Any]:
    return dict(_to_llama_like(c), sliding_window=c.sliding_window)


def _to_qwen2(c: ModelConfig) -> dict[str, Any]:
    d = _to_llama_like(c)
    d.pop("attention_bias"), d.pop("mlp_bias")
    sliding = c.sliding_window is not None and "sliding" in c.layer_types
    d.update(use_sliding_window=sliding, sliding_window=c.sliding_window if sliding else None,
             layer_types=_hf_layer_types(c))
    if sliding:
        d["max_window_layers"] = _exec_layer_types(c).index("sliding")
    return d


def _to_olmo(c: ModelConfig) -> dict[str, Any]:
    return dict(_to_llama_like(c), clip_qkv=c.clip_qkv)


def _to_phi3(c: ModelConfig) -> dict[str, Any]:
    return dict(_to_llama_like(c), sliding_window=c.sliding_window, **c.extra)


def _to_gemma(c: ModelConfig) -> dict[str, Any]:
    d = _to_llama_like(c)
    d["hidden_activation"] = d["hidden_act"]
    return d


def _to_gemma2(c: ModelConfig) -> dict[str, Any]:
    d = _to_llama_like(c)
    d.update(hidden_activation=d["hidden_act"], query_pre_attn_scalar=_int_if_whole(c.softmax_scale**-2),
             attn_logit_softcapping=c.attn_softcap, final_logit_softcapping=c.final_softcap,
             sliding_window=c.sliding_window or 4096, layer_types=_hf_layer_types(c))
    return d


def _to_gemma3(c: ModelConfig) -> dict[str, Any]:
    d = _to_gemma2(c)
    full = _rope_out(c)["rope_parameters"]
    d.pop("rope_theta"), d.pop("rope_scaling", None)
    d["rope_parameters"] = {"full_attention": full, "sliding_attention": {
        "rope_type": "default", "rope_theta": c.rope_local_theta or c.rope_theta}}
    d["rope_local_base_freq"] = c.rope_local_theta or c.rope_theta
    return d


def _to_phi(c: ModelConfig) -> dict[str, Any]:
    d = _to_llama_like(c)
    d.pop("rms_norm_eps"), d.pop("attention_bias"), d.pop("mlp_bias")
    d.update(layer_norm_eps=c.norm_eps, qk_layernorm=c.qk_norm, partial_rotary_factor=c.partial_rotary)
    return d


def _to_stablelm(c: ModelConfig) -> dict[str, Any]:
    d = _to_llama_like(c)
    d.pop("rms_norm_eps"), d.pop("attention_bias"), d.pop("mlp_bias")
    d.update(layer_norm_eps=c.norm_eps, use_qkv_bias=c.qkv_bias, use_parallel_residual=c.parallel_residual,
             qk_layernorm=False, partial_rotary_factor=c.partial_rotary)
    return d


def _to_gpt2(c: ModelConfig) -> dict[str, Any]:
    return dict(vocab_size=c.vocab_size, n_embd=c.d_model, n_layer=c.n_layer * c.layer_repeat, n_head=c.n_head,
                n_inner=c.intermediate_size, n_positions=c.context_length, n_ctx=c.context_length,
                layer_norm_epsilon=c.norm_eps,
                activation_function="gelu_new" if c.activation == "gelu_tanh" else c.activation,
                scale_attn_weights=c.attn_scale is None, tie_word_embeddings=c.tie_embeddings)


def _to_gpt_neox(c: ModelConfig) -> dict[str, Any]:
    return dict(vocab_size=c.vocab_size, hidden_size=c.d_model, num_hidden_layers=c.n_layer * c.layer_repeat,
                num_attention_heads=c.n_head, intermediate_size=c.intermediate_size,
                max_position_embeddings=c.context_length, layer_norm_eps=c.norm_eps,
                hidden_act=_ACT_OUT[c.activation], use_parallel_residual=c.parallel_residual,
                attention_bias=c.qkv_bias, rotary_pct=c.partial_rotary, rotary_emb_base=c.rope_theta,
                tie_word_embeddings=c.tie_embeddings, **_rope_out(c))


def _to_opt(c: ModelConfig) -> dict[str, Any]:
    return dict(vocab_size=c.vocab_size, hidden_size=c.d_model, num_hidden_layers=c.n_layer * c.layer_repeat,
                num_attention_heads=c.n_head, ffn_dim=c.intermediate_size,
                max_position_embeddings=c.context_length, activation_function=c.activation,
                word_embed_proj_dim=c.embed_dim or c.d_model, do_layer_norm_before=c.pre_norm,
                _remove_final_layer_norm=c.pre_norm and not c.final_norm, enable_bias=c.qkv_bias,
                layer_norm_elementwise_affine=c.norm_affine, tie_word_embeddings=c.tie_embeddings)


def _to_bert(c: ModelConfig) -> dict[str, Any]:
    return dict(vocab_size=c.vocab_size, hidden_size=c.d_model, num_hidden_layers=c.n_layer * c.layer_repeat,
                num_attention_heads=c.n_head, intermediate_size=c.intermediate_size,
                hidden_act=_ACT_OUT[c.activation], max_position_embeddings=c.context_length + c.pos_offset,
                type_vocab_size=c.type_vocab_size, layer_norm_eps=c.norm_eps, position_embedding_type="absolute",
                tie_word_embeddings=c.tie_embeddings, is_decoder=False)


def _to_bloom(c: ModelConfig) -> dict[str, Any]:
    return dict(vocab_size=c.vocab_size, hidden_size=c.d_model, n_layer=c.n_layer * c.layer_repeat,
                n_head=c.n_head, layer_norm_epsilon=c.norm_eps, seq_length=c.context_length,
                apply_residual_connection_post_layernorm=False, tie_word_embeddings=c.tie_embeddings)


# --- GGUF: the fields llama.cpp's metadata does not carry, per architecture ------------------------------------


def _gguf_phi3(g, f: dict[str, Any]) -> dict[str, Any]:
    return {"sliding_window": g.get("attention.sliding_window") or None}


def _gguf_gemma(g, f: dict[str, Any]) -> dict[str, Any]:
    return dict(activation="gelu_tanh", norm_unit_offset=True, embed_scale=math.sqrt(f["d_model"]))


def _gguf_gemma2(g, f: dict[str, Any], pattern: int = 2) -> dict[str, Any]:
    return dict(_gguf_gemma(g, f), post_norms=True, sliding_window=g.get("attention.sliding_window"),
                attn_softcap=g.get("attn_logit_softcapping"), final_softcap=g.get("final_logit_softcapping"),
                sliding_pattern=pattern, attn_scale=f["head_dim"] ** -0.5)


def _gguf_gemma3(g, f: dict[str, Any]) -> dict[str, Any]:
    return dict(_gguf_gemma2(g, f, pattern=6), qk_norm=True,
                rope_local_theta=float(g.get("rope.freq_base_swa", 10000.0)))


def _gguf_phi2(g, f: dict[str, Any]) -> dict[str, Any]:
    return dict(mlp_type="plain", activation="gelu_tanh", norm_type="layernorm", norm_bias=True,
                parallel_residual=True, shared_parallel_norm=True)


def _gguf_gpt2(g, f: dict[str, Any]) -> dict[str, Any]:
    return dict(pos_type="learned", mlp_type="plain", activation="gelu_tanh", norm_type="layernorm", norm_bias=True)


def _gguf_gptneox(g, f: dict[str, Any]) -> dict[str, Any]:
    return dict(mlp_type="plain", activation="gelu", norm_type="layernorm", norm_bias=True,
                parallel_residual=bool(g.get("use_parallel_residual", True)))


# --- the records ----------------------------------------------------------------------------------------------

FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("llama", "LlamaForCausalLM", _from_llama, _to_llama, _LLAMA, model_types=("mobilellm",),
           gguf=GGUF("llama", export=True, permute_qk=True),
           notes="MobileLLM's own config reads as LLaMA with shared embeddings; pretraining_tp kept in extra"),
    Family("mistral", "MistralForCausalLM", _from_mistral, _to_mistral, _LLAMA, notes="sliding window on all layers"),
    Family("qwen2", "Qwen2ForCausalLM", _from_qwen2, _to_qwen2, _LLAMA, gguf=GGUF("qwen2", export=True),
           notes="q/k/v biases, no output bias; sliding window from max_window_layers"),
    Family("phi", "PhiForCausalLM", _from_phi, _to_phi, _PHI,
           gguf=GGUF("phi2", _gguf_phi2, export=True, fused_qkv=True),
           notes="parallel attention and MLP off one LayerNorm, partial rotary, biases everywhere"),
    Family("phi3", "Phi3ForCausalLM", _from_phi3, _to_phi3, _PHI3, gguf=GGUF("phi3", _gguf_phi3, fused_up=True),
           notes="fused qkv_proj and gate_up_proj"),
    Family("gemma", "GemmaForCausalLM", _from_gemma, _to_gemma, _LLAMA, gguf=GGUF("gemma", _gguf_gemma, export=True),
           notes="RMSNorm of (1 + w) (GGUF stores 1 + w), embeddings scaled by sqrt(d_model)"),
    Family("gemma2", "Gemma2ForCausalLM", _from_gemma2, _to_gemma2, _GEMMA2,
           gguf=GGUF("gemma2", _gguf_gemma2, export=True),
           notes="post-norms, logit soft-capping, sliding window on alternate layers"),
    Family("gemma3_text", "Gemma3ForCausalLM", _from_gemma3, _to_gemma3, _GEMMA2,
           heads={"classify": "Gemma3TextForSequenceClassification", "none": "Gemma3TextModel"},
           gguf=GGUF("gemma3", _gguf_gemma3, export=True),
           notes="q/k norms, sliding window on 5 of 6 layers with its own rope base; a gemma3 config's text_config"),
    Family("gpt2", "GPT2LMHeadModel", _from_gpt2, _to_gpt2, _GPT2,
           gguf=GGUF("gpt2", _gguf_gpt2, export=True, fused_qkv=True, tied_copy=True),
           notes="learned positions, Conv1D weights stored (in, out)"),
    Family("gpt_neox", "GPTNeoXForCausalLM", _from_gpt_neox, _to_gpt_neox, _NEOX, gguf=GGUF("gptneox", _gguf_gptneox),
           notes="QKV interleaved per head, parallel residual, partial rotary"),
    Family("opt", "OPTForCausalLM", _from_opt, _to_opt, _OPT,
           notes="learned positions offset by 2, optional projection of a narrower embedding"),
    Family("stablelm", "StableLmForCausalLM", _from_stablelm, _to_stablelm, _LLAMA,
           notes="LayerNorm, optional q/k/v bias and parallel residual"),
    Family("olmo", "OlmoForCausalLM", _from_olmo, _to_olmo, _LLAMA,
           notes="non-affine LayerNorm, optional QKV clipping"),
    Family("bloom", "BloomForCausalLM", _from_bloom, _to_bloom, _BLOOM,
           notes="ALiBi, LayerNorm after the embedding, QKV interleaved per head"),
    Family("bert", "BertForMaskedLM", _from_bert, _to_bert, _BERT,
           notes="encoder: bidirectional post-LN blocks, token types, tied masked-LM head with a transform; "
                 "the pooler + classifier head for sequence classification"),
    Family("roberta", "RobertaForMaskedLM", _from_roberta, _to_bert, _ROBERTA,
           notes="BERT's encoder with positions after the padding index counted over real tokens; "
                 "classification head dense + tanh + out_proj on the first token"),
)}


# --- lookups ------------------------------------------------------------------------------------------------


def family(name: str) -> Family:
    """The record of a ModelConfig.family."""
    if name not in FAMILIES:
        raise SlmError(f"family {name!r} has no record (known: {', '.join(FAMILIES)})")
    return FAMILIES[name]


def by_model_type(model_type: str) -> Family | None:
    """The record that reads a config.json model_type, or None."""
    return next((f for f in FAMILIES.values() if model_type == f.name or model_type in f.model_types), None)


def by_gguf_arch(arch: str) -> Family | None:
    return next((f for f in FAMILIES.values() if f.gguf and f.gguf.arch == arch), None)


def model_types() -> tuple[str, ...]:
    return tuple(t for f in FAMILIES.values() for t in (f.name, *f.model_types))


def gguf_archs(export: bool = False) -> tuple[str, ...]:
    return tuple(f.gguf.arch for f in FAMILIES.values() if f.gguf and (f.gguf.export or not export))
