"""Mapping between transformers checkpoints (config.json + weight names) and slmkit's ModelConfig/Transformer.

What each family needs (its config reader and writer, its table of module names) is its record in
model/families.py; this module applies them. Fused tensors are split or joined here: q/k/v into `wqkv`, gate/up
into `mlp.w_up`; GPT-NeoX and BLOOM keep QKV interleaved per head; GPT-2 stores Conv1D weights transposed.
"""

from __future__ import annotations

from typing import Any

import torch

from slmkit.errors import SlmError
from slmkit.model.config import ModelConfig
from slmkit.model.families import by_model_type, family, model_types
from slmkit.model.family import Layout, hf_class, join_qkv_per_head, split_qkv_per_head


def config_to_hf(c: ModelConfig) -> dict[str, Any]:
    """A config.json dict that transformers loads as the same architecture."""
    f = family(c.family)
    d = f.write(c)
    d.update(model_type=c.family, architectures=[hf_class(f, c.head)], torch_dtype="float32",
             bos_token_id=c.bos_token_id, eos_token_id=c.eos_token_id, pad_token_id=c.pad_token_id)
    if c.head == "classify":
        shape = dict(pooling="first", pool_dense=True, score_bias=True) if not c.causal else dict(
            pooling="last", pool_dense=False, score_bias=False)
        if any(getattr(c, k) != v for k, v in shape.items()):
            raise SlmError(f"this classification head is not the one transformers' {hf_class(f, c.head)} has; give "
                           f"the config {', '.join(f'{k}={v!r}' for k, v in shape.items())} to save it as a "
                           f"transformers folder")
        names = list(c.extra.get("id2label") or [f"LABEL_{i}" for i in range(c.n_labels)])
        d.update(num_labels=c.n_labels, id2label={str(i): n for i, n in enumerate(names)},
                 label2id={n: i for i, n in enumerate(names)})
    return d


def head_fields(d: dict[str, Any], encoder: bool, where: str) -> dict[str, Any]:
    """ModelConfig head fields from config.json's architectures: ...ForSequenceClassification -> a classification
    head (labels from id2label; an encoder's in BERT's shape, a decoder's on its last token), the bare ...Model ->
    none, anything else (causal or masked LM) -> lm."""
    arch = next(iter(d.get("architectures") or []), "") or ""
    if arch.endswith("ForSequenceClassification"):
        labels = d.get("id2label") or {}
        n = d.get("num_labels") or len(labels) or 2
        if not isinstance(n, int) or n < 1:
            raise SlmError(f"{where}: num_labels must be a positive integer, got {n!r}")
        names = [str(labels.get(str(i), labels.get(i, f"LABEL_{i}"))) for i in range(n)] if labels else []
        return dict(head="classify", n_labels=n, pooling="first" if encoder else "last", pool_dense=encoder,
                    score_bias=encoder, extra={"id2label": names} if names else {})
    if arch.endswith("Model") and "For" not in arch and "LMHead" not in arch:
        return dict(head="none")
    return {}


def supported_model_types() -> tuple[str, ...]:
    return model_types()


def config_from_hf(d: dict[str, Any], where: str = "config.json") -> ModelConfig:
    """Read a transformers config.json dict into a ModelConfig."""
    if d.get("model_type") == "gemma3" and "text_config" in d:
        d = dict(d["text_config"], model_type="gemma3_text")
    model_type = d.get("model_type")
    f = by_model_type(model_type) if isinstance(model_type, str) else None
    if f is None:
        raise SlmError(f"{where}: model_type {model_type!r} is not supported "
                       f"(supported: {', '.join(model_types())})")
    try:
        fields = f.read(d, where)
    except KeyError as e:
        raise SlmError(f"{where}: missing key {e.args[0]!r} for model_type {model_type!r}") from None
    head = head_fields(d, not fields.get("causal", True), where)
    if head.get("extra"):
        fields["extra"] = {**fields.get("extra", {}), **head.pop("extra")}
    fields.update(head)
    fields["hf_id"] = d.get("_name_or_path", "") or ""
    fields["name"] = fields["hf_id"].rsplit("/", 1)[-1] or model_type
    return ModelConfig(**fields)


# --- weight names ------------------------------------------------------------------------------------


def _hf_sources(c: ModelConfig, lay: Layout, module: str) -> tuple[list[str], str]:
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
    lay = family(c.family).layout
    if lay.base and not any(k.startswith(lay.base) for k in sd):  # a bare model (BertModel, LlamaModel)
        sd = {lay.base + k: v for k, v in sd.items()}
    tied = c.tie_embeddings and c.head == "lm"
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for key, shape in expected.items():
        module, param = key.rsplit(".", 1)
        if tied and module == "lm_head" and param == "weight":
            continue  # tied to tok_emb
        names, how = _hf_sources(c, lay, module)
        keys = [f"{n}.{param}" for n in names]
        if key in lay.params:
            keys = [lay.params[key]]
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
            t = split_qkv_per_head(t, c.n_head, c.head_dim)
        if tuple(t.shape) != tuple(shape):
            raise SlmError(f"{where}: tensor {keys[0]!r} has shape {tuple(t.shape)} but the config needs {tuple(shape)}")
        out[key] = t
    tied_head = [k for k in sd if k.startswith(lay.top["lm_head"] + ".") and k not in used] if tied else []
    left = [k for k in sd if k not in used and k not in tied_head and not any(s in k for s in lay.ignore)]
    if left:
        raise SlmError(f"{where}: unexpected tensor {left[0]!r} ({len(left)} unused); config and weights disagree")
    if tied:
        out["lm_head.weight"] = out["tok_emb.weight"]
    return out


def slmkit_to_hf(sd: dict[str, torch.Tensor], c: ModelConfig) -> dict[str, torch.Tensor]:
    """slmkit state dict -> transformers names and layouts (shared blocks are written out per repeat)."""
    lay = family(c.family).layout
    out: dict[str, torch.Tensor] = {}
    for key, t in sd.items():
        module, param = key.rsplit(".", 1)
        if c.tie_embeddings and module == "lm_head" and param == "weight":
            continue
        if key in lay.params:
            out[lay.params[key]] = t.contiguous()
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
                parts = [join_qkv_per_head(src, c.n_head, c.head_dim)]
            elif how == "cat":
                sizes = ([c.n_head * c.head_dim, c.n_kv_head * c.head_dim, c.n_kv_head * c.head_dim]
                         if len(names) == 3 else [src.shape[0] // 2, src.shape[0] // 2])
                parts = list(src.split(sizes, 0))
            for n, p in zip(names, parts):
                if param == "weight" and any(n.endswith(s) for s in lay.transposed):
                    p = p.t()
                out[f"{n}.{param}"] = p.contiguous()
    if c.head == "none" and lay.base:  # the bare model's names (BertModel, LlamaModel) carry no prefix
        out = {k.removeprefix(lay.base): v for k, v in out.items()}
    return out
