"""What a config costs: parameters by component, bytes per precision, KV-cache bytes per token."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from slmkit.model.config import ModelConfig
from slmkit.model.model import Attention, MLP, Norm, Transformer


@dataclass
class ParamCount:
    embeddings: int
    attention: int
    ffn: int
    norms: int
    head: int  # 0 when tied to the embeddings; the masked-LM transform or the classifier's pool and projection

    @property
    def total(self) -> int:
        return self.embeddings + self.attention + self.ffn + self.norms + self.head


def count_parameters(config: ModelConfig) -> ParamCount:
    """Unique parameters by component, counted on the meta device (no memory used)."""
    with torch.device("meta"):
        model = Transformer(config)
    seen: set[int] = set()

    def count(modules) -> int:
        n = 0
        for m in modules:
            for p in m.parameters(recurse=False) if not isinstance(m, (Attention, MLP)) else m.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    n += p.numel()
        return n

    emb = count([m for m in (model.tok_emb, model.pos_emb, model.type_emb, model.proj_in, model.proj_out)
                 if m is not None])
    attn = count([b.attn for b in model.blocks])
    ffn = count([b.mlp for b in model.blocks])
    norms = count([m for m in model.modules() if isinstance(m, Norm)])
    head = count([m for m in (model.head_dense, model.lm_head, model.pool, model.score) if m is not None])
    return ParamCount(emb, attn, ffn, norms, head)


def kv_bytes_per_token(config: ModelConfig, bytes_per_value: int = 4) -> int:
    """Bytes of K and V one token adds to the cache across all executed layers."""
    return 2 * config.n_layer * config.layer_repeat * config.n_kv_head * config.head_dim * bytes_per_value


def human(n: float, unit: str = "") -> str:
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def human_bytes(n: float) -> str:
    for suffix, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {suffix}"
    return f"{n:.0f} B"


def switches(c: ModelConfig) -> list[tuple[str, str]]:
    """The architecture choices, named as in the survey."""
    pos = {"rope": f"rotary (theta {c.rope_theta:g}" + (f", {c.partial_rotary:g} of each head" if c.partial_rotary != 1
                                                         else "") + (f", {c.rope_scaling['rope_type']} scaling"
                                                                      if c.rope_scaling else "") + ")",
           "learned": "learned absolute", "alibi": "ALiBi"}[c.pos_type]
    if c.rope_local_theta:
        pos += f"; theta {c.rope_local_theta:g} on sliding layers"
    norm = c.norm_type + (" (1+w)" if c.norm_unit_offset else "") + ("" if c.norm_affine else " (no weights)")
    ffn = (f"{'gated' if c.mlp_type == 'gated' else 'plain'} {c.activation}, intermediate {c.intermediate_size} "
           f"(ratio {c.intermediate_size / c.d_model:.2f})")
    head = {"lm": "masked-LM vocabulary (dense + norm transform)" if c.mlm_transform else "vocabulary",
            "classify": f"classification, {c.n_labels} labels from the {c.pooling} token"
                        + (" through dense + tanh" if c.pool_dense else ""),
            "none": "none (hidden states)"}[c.head]
    rows = [
        ("family", c.family + ("" if c.causal else " (encoder: bidirectional attention)")),
        ("head", head),
        ("attention", f"{c.attention_kind}: {c.n_head} heads, {c.n_kv_head} KV heads, head size {c.head_dim}"),
        ("layers x width", f"{c.n_layer} x {c.d_model}" + (f" (each block runs {c.layer_repeat}x)" if c.layer_repeat > 1
                                                           else "")),
        ("positions", pos),
        ("feed-forward", ffn),
        ("norm", f"{norm}, eps {c.norm_eps:g}" + (", QK-norm" if c.qk_norm else "") +
         (", sandwich (post) norms" if c.post_norms else "") + ("" if c.pre_norm else ", post-LN")),
        ("residual", "parallel attention+FFN" if c.parallel_residual else "sequential"),
        ("embeddings", ("tied" if c.tie_embeddings else "untied") +
         (f", scaled by {c.embed_scale:.2f}" if c.embed_scale else "") +
         (f", width {c.embed_dim} projected" if c.embed_dim else "")),
        ("vocabulary", str(c.vocab_size) + (f"; {c.type_vocab_size} token types" if c.type_vocab_size else "")),
        ("context", str(c.context_length)),
    ]
    biases = [n for n, on in (("qkv", c.qkv_bias), ("out", c.out_bias), ("ffn", c.mlp_bias),
                              ("head", c.lm_head_bias and c.head == "lm")) if on]
    rows.append(("biases", ", ".join(biases) or "none"))
    if c.sliding_window:
        n_sliding = c.layer_types.count("sliding")
        rows.append(("sliding window", f"{c.sliding_window} tokens on {n_sliding}/{c.n_layer} layers"))
    if c.attn_softcap or c.final_softcap:
        rows.append(("soft-capping", f"attention {c.attn_softcap}, logits {c.final_softcap}"))
    if c.clip_qkv:
        rows.append(("clip qkv", str(c.clip_qkv)))
    return rows


def format_info(config: ModelConfig, source: str = "") -> str:
    p = count_parameters(config)
    lines = [f"model      {config.name}" + (f"  ({config.hf_id})" if config.hf_id else "")]
    if source:
        lines.append(f"source     {source}")
    lines.append("")
    lines.append(f"parameters {human(p.total)} ({p.total:,})")
    for name, n in (("embeddings", p.embeddings), ("attention", p.attention), ("ffn", p.ffn), ("norms", p.norms),
                    ("head", p.head)):
        note = "  (tied to embeddings)" if name == "head" and config.tie_embeddings and config.head == "lm" else ""
        lines.append(f"  {name:<11}{human(n):>8}  {100 * n / p.total:5.1f}%{note}")
    lines.append("")
    lines.append("weights    " + "   ".join(f"{k} {human_bytes(p.total * b)}"
                                            for k, b in (("fp32", 4), ("bf16", 2), ("int8", 1), ("int4", 0.5))))
    if config.causal:
        lines.append(f"KV cache   {human_bytes(kv_bytes_per_token(config, 4))}/token fp32, "
                     f"{human_bytes(kv_bytes_per_token(config, 2))}/token bf16; "
                     f"full context ({config.context_length}) bf16: "
                     f"{human_bytes(kv_bytes_per_token(config, 2) * config.context_length)}")
    else:
        lines.append("KV cache   none: an encoder reads its whole input at once")
    lines.append("")
    width = max(len(k) for k, _ in switches(config))
    lines += [f"{k:<{width}}  {v}" for k, v in switches(config)]
    return "\n".join(lines)
