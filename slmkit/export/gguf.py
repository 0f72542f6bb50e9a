"""Write a slmkit model and its tokenizer as a GGUF file that llama.cpp runs: f32, f16, q8_0, q4_0, q4_1, or a
K-quant (q4_k_m, q4_k_s, q5_k_m, q5_k_s, q6_k; llama.cpp's quantiser, export/kquant.py). The tokenizer is
written by export/vocab.py: byte-level BPE as "gpt2", SentencePiece-style vocabularies as "llama".

Families: those whose record (model/families.py) has GGUF(export=True): llama, qwen2, phi (GGUF "phi2"), gemma,
gemma2, gemma3 and gpt2; the record's flags say how their tensors differ (q/k permutation, fused QKV, a tied
head's copy). Tensor names and layouts are the inverse of the reader (slmkit/model/gguf.py), whose layouts are
checked against llama.cpp's own converter. Before anything is written, the config that the reader (and
llama.cpp) would build from the planned metadata is compared with the model's: a model that llama.cpp would
run differently (say, a sliding window under "llama") is refused.

Quantised types follow llama.cpp's choices: norms, biases and position embeddings stay F32; a matrix whose
rows are not a multiple of the 32-value block falls back to F16; under q4_0/q4_1 the token embedding and the
output head are Q8_0 (llama.cpp keeps them at higher precision too). The file is written under a temporary
name and renamed, so an interrupted export leaves no half-written file.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from slmkit.errors import SlmError
from slmkit.export.kquant import KQUANTS, quantize_file
from slmkit.export.vocab import tokenizer_metadata
from slmkit.model.config import ModelConfig
from slmkit.model.families import family
from slmkit.model.family import permute_qk
from slmkit.model.gguf import finish_writer
from slmkit.tokenizer.tokenizer import Tokenizer

BLOCK_TYPES = ("f32", "f16", "q8_0", "q4_0", "q4_1")  # written here, with the gguf package
TYPES = BLOCK_TYPES + tuple(KQUANTS)  # K-quants: llama.cpp's quantiser (export/kquant.py)
# sliding_pattern only shapes layer_types, which is compared
_IGNORED_FIELDS = {"name", "hf_id", "bos_token_id", "eos_token_id", "pad_token_id", "extra", "context_length",
                   "sliding_pattern"}


def _qtypes(out_type: str):
    from gguf import GGMLQuantizationType as Q, LlamaFileType as F

    return {"f32": (Q.F32, F.ALL_F32), "f16": (Q.F16, F.MOSTLY_F16), "q8_0": (Q.Q8_0, F.MOSTLY_Q8_0),
            "q4_0": (Q.Q4_0, F.MOSTLY_Q4_0), "q4_1": (Q.Q4_1, F.MOSTLY_Q4_1)}[out_type]


# --- metadata ----------------------------------------------------------------------------------------


def architecture(config: ModelConfig) -> str:
    """The GGUF architecture for a config, or an error naming the supported families."""
    from slmkit.model.families import FAMILIES

    fam = FAMILIES.get(config.family)
    if fam is None or fam.gguf is None or not fam.gguf.export:
        names = [f.name for f in FAMILIES.values() if f.gguf and f.gguf.export]
        raise SlmError(f"GGUF export supports the families {', '.join(names)}; this model is {config.family!r}")
    arch = fam.gguf.arch
    if config.layer_repeat != 1:
        raise SlmError("GGUF has no shared-block layers; save the model (which expands them) and export that")
    if config.rope_scaling and config.rope_scaling.get("rope_type", config.rope_scaling.get("type")) != "linear":
        raise SlmError(f"GGUF export supports linear rope scaling only, not {config.rope_scaling}")
    return arch


def model_metadata(config: ModelConfig, arch: str) -> dict[str, Any]:
    """The {arch}.* keys llama.cpp reads for this architecture."""
    c = config
    meta: dict[str, Any] = {
        "context_length": c.context_length, "embedding_length": c.d_model, "block_count": c.n_layer,
        "feed_forward_length": c.intermediate_size, "attention.head_count": c.n_head,
        "attention.head_count_kv": c.n_kv_head,
    }
    if c.norm_type == "rmsnorm":
        meta["attention.layer_norm_rms_epsilon"] = float(c.norm_eps)
    else:
        meta["attention.layer_norm_epsilon"] = float(c.norm_eps)
    if c.pos_type == "rope":
        meta["rope.freq_base"] = float(c.rope_theta)
        meta["rope.dimension_count"] = c.rotary_dim
    if c.head_dim != c.d_model // c.n_head or arch == "gemma":
        meta["attention.key_length"] = meta["attention.value_length"] = c.head_dim
    if c.rope_scaling:
        meta["rope.scaling.type"] = "linear"
        meta["rope.scaling.factor"] = float(c.rope_scaling["factor"])
    if arch in ("gemma2", "gemma3"):  # llama.cpp's gemma2/gemma3 keys (conversion/gemma.py)
        if c.sliding_window and "sliding" in c.layer_types:
            meta["attention.sliding_window"] = c.sliding_window
            if arch == "gemma3":
                meta["rope.freq_base_swa"] = float(c.rope_local_theta or c.rope_theta)
        if c.attn_softcap:
            meta["attn_logit_softcapping"] = float(c.attn_softcap)
        if c.final_softcap:
            meta["final_logit_softcapping"] = float(c.final_softcap)
    return meta


def _split_qkv(w: torch.Tensor, c: ModelConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q, k = c.n_head * c.head_dim, c.n_kv_head * c.head_dim
    return w[:q], w[q : q + k], w[q + k :]


def gguf_tensors(state: dict[str, torch.Tensor], config: ModelConfig, arch: str) -> dict[str, torch.Tensor]:
    """slmkit's state dict renamed and split into GGUF tensors (float32, PyTorch (out, in) order)."""
    c = config
    quirks = family(c.family).gguf
    out: dict[str, torch.Tensor] = {}
    top = {"tok_emb": "token_embd", "pos_emb": "position_embd", "norm": "output_norm", "lm_head": "output",
           "emb_norm": "token_embd_norm"}
    block = {"attn_norm": "attn_norm", "attn.wo": "attn_output", "mlp_norm": "ffn_norm", "mlp.w_down": "ffn_down",
             "attn.q_norm": "attn_q_norm", "attn.k_norm": "attn_k_norm", "post_attn_norm": "post_attention_norm",
             "post_mlp_norm": "post_ffw_norm"}
    for key, w in state.items():
        w = w.detach().float().cpu()
        module, param = key.rsplit(".", 1)
        if module == "lm_head" and c.tie_embeddings and not quirks.tied_copy:
            continue  # llama.cpp reuses token_embd (its gpt2 converter writes the copy, so we do too)
        if c.norm_unit_offset and param == "weight" and module.endswith("norm"):
            w = w + 1.0  # llama.cpp stores Gemma's (1 + w)
        if not module.startswith("blocks."):
            out[f"{top[module]}.{param}"] = w
            continue
        _, i, rest = module.split(".", 2)
        name = f"blk.{i}"
        if rest == "attn.wqkv":
            if quirks.fused_qkv:
                out[f"{name}.attn_qkv.{param}"] = w
                continue
            q, k, v = _split_qkv(w, c)
            if quirks.permute_qk:
                q, k = permute_qk(q, c.n_head), permute_qk(k, c.n_kv_head)
            out.update({f"{name}.attn_q.{param}": q, f"{name}.attn_k.{param}": k, f"{name}.attn_v.{param}": v})
        elif rest == "mlp.w_up":
            if c.mlp_type == "gated":
                gate, up = w.chunk(2, dim=0)
                out.update({f"{name}.ffn_gate.{param}": gate, f"{name}.ffn_up.{param}": up})
            else:
                out[f"{name}.ffn_up.{param}"] = w
        else:
            out[f"{name}.{block[rest]}.{param}"] = w
    return out


class _Planned:
    """What the reader sees of a GGUF file, without the file: metadata and tensor shapes (GGUF order)."""

    def __init__(self, arch: str, meta: dict[str, Any], tensors: dict[str, torch.Tensor]):
        self.path = Path(f"<{arch} export>")
        self.architecture = arch
        self.meta = {"general.architecture": arch, **{f"{arch}.{k}": v for k, v in meta.items()}}
        self.tensors = {n: SimpleNamespace(shape=tuple(reversed(t.shape))) for n, t in tensors.items()}

    def get(self, key: str, default: Any = None) -> Any:
        return self.meta.get(f"{self.architecture}.{key}", default)


def check_round_trip(config: ModelConfig, arch: str, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Refuse an export that llama.cpp would run as a different architecture."""
    from slmkit.model.gguf import config_from_gguf

    planned = config_from_gguf(_Planned(arch, meta, tensors))  # type: ignore[arg-type]
    want, got = asdict(config), asdict(planned)
    tied_copy = family(config.family).gguf.tied_copy  # the written head copy reads back as untied
    differ = [f"{k}={want[k]!r} (GGUF {arch} gives {got[k]!r})" for k in want
              if k not in _IGNORED_FIELDS and want[k] != got[k] and not (k == "tie_embeddings" and tied_copy)]
    if differ:
        raise SlmError(f"this model cannot be exported as GGUF {arch!r} without changing it: {'; '.join(differ)}")


# --- writing -----------------------------------------------------------------------------------------


def _encode(name: str, w: torch.Tensor, out_type: str):
    """(array, GGML type) for one tensor under the requested file type."""
    from gguf import GGMLQuantizationType as Q
    from gguf import quants

    arr = w.numpy()
    if arr.ndim == 1 or out_type == "f32" or name.startswith("position_embd"):
        return arr.astype(np.float32), Q.F32
    qtype, _ = _qtypes(out_type)
    if out_type.startswith("q4") and name.split(".")[0] in ("token_embd", "output"):
        qtype = Q.Q8_0
    if qtype == Q.F16 or arr.shape[-1] % 32:
        return arr.astype(np.float16), Q.F16
    return quants.quantize(arr, qtype), qtype


def export_gguf(model, tokenizer: Tokenizer, out: str | Path, out_type: str = "f16", name: str | None = None,
                progress: bool = False) -> Path:
    """Write `model` (a slmkit Transformer) with `tokenizer` to `out` as a GGUF file of `out_type`.

    A K-quant (q4_k_m, q4_k_s, q5_k_m, q5_k_s, q6_k) is an f32 file quantised by llama.cpp's quantiser
    (export/kquant.py); `kquant.fallbacks(path)` then names the matrices it had to store at a 32-value type."""
    if out_type not in TYPES:
        raise SlmError(f"unknown GGUF type {out_type!r}; choose one of {', '.join(TYPES)}")
    if tokenizer is None:
        raise SlmError("the model has no tokenizer; GGUF files carry one, so export needs it")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out_type in BLOCK_TYPES:
        return _write(model, tokenizer, out, out_type, name, progress)
    plain = out.with_name(out.name + ".f32.tmp")
    quantised = out.with_name(out.name + ".tmp")
    try:
        _write(model, tokenizer, plain, "f32", name, progress)
        quantize_file(plain, quantised, out_type)
        quantised.replace(out)
    finally:
        plain.unlink(missing_ok=True)
        quantised.unlink(missing_ok=True)
    return out


def _write(model, tokenizer: Tokenizer, out: Path, out_type: str, name: str | None, progress: bool) -> Path:
    """The gguf package's writer for the block types: checked metadata, tokenizer and tensors, atomically."""
    import gguf
    from tqdm import tqdm

    config = model.config
    arch = architecture(config)
    meta = model_metadata(config, arch)
    tensors = gguf_tensors(model.state_dict(), config, arch)
    check_round_trip(config, arch, meta, tensors)
    n_vocab = tensors["token_embd.weight"].shape[0]
    tok_meta = tokenizer_metadata(tokenizer, n_vocab)

    tmp = out.with_name(out.name + ".part")
    w = gguf.GGUFWriter(str(tmp), arch)
    try:  # metadata and tensors are queued in memory; finish_writer writes the file
        w.add_name(name or config.name)
        w.add_file_type(int(_qtypes(out_type)[1]))
        if out_type.startswith("q"):
            w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for key, value in meta.items():
            _add(w, f"{arch}.{key}", value)
        for key, value in tok_meta.items():
            _add(w, f"tokenizer.ggml.{key}", value)
        if tokenizer.chat_template:
            w.add_chat_template(tokenizer.chat_template)
        items = tqdm(tensors.items(), desc=f"writing {out.name}", unit="tensor", disable=not progress, leave=False)
        for tname, t in items:
            arr, qtype = _encode(tname, t, out_type)
            w.add_tensor(tname, arr, raw_dtype=qtype)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return finish_writer(w, tmp, out)


def _add(w, key: str, value: Any) -> None:
    """Add one metadata value with the GGUF type llama.cpp expects for it."""
    from gguf import GGUFValueType as V

    if isinstance(value, bool):
        w.add_bool(key, value)
    elif isinstance(value, int):
        w.add_uint32(key, value) if value >= 0 else w.add_int32(key, value)
    elif isinstance(value, float):
        w.add_float32(key, value)
    elif isinstance(value, str):
        w.add_string(key, value)
    elif isinstance(value, list):
        if value and isinstance(value[0], str):
            w.add_array(key, value)
        elif value and isinstance(value[0], float):
            w.add_key_value(key, value, V.ARRAY, V.FLOAT32)
        else:
            w.add_key_value(key, value, V.ARRAY, V.INT32)
    else:
        raise TypeError(f"no GGUF type for {key}={value!r}")
