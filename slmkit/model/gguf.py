"""Read GGUF files (llama.cpp's format): metadata -> ModelConfig, tensors dequantised with the `gguf`
package -> slmkit's state dict. The architectures are the family records' GGUF sides (model/families.py: llama,
qwen2, phi2, phi3, gemma, gemma2, gemma3, gpt2, gptneox); export/gguf.py writes with the same records."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slmkit.errors import SlmError
from slmkit.model.config import ModelConfig
from slmkit.model.families import by_gguf_arch, family, gguf_archs
from slmkit.model.family import permute_qk

SUPPORTED_TENSOR_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
                          "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")


class GGUFFile:
    """An opened GGUF file: its metadata as Python values and its tensors (not yet dequantised)."""

    def __init__(self, path: str | Path):
        from slmkit.model.gguf_reader import Reader

        self.path = Path(path)
        try:
            self.reader = Reader(self.path)
        except Exception as e:  # noqa: BLE001 - a damaged or truncated file: ValueError, struct.error, OSError, ...
            raise SlmError(f"{self.path}: not a readable GGUF file ({type(e).__name__}: {e})") from None
        self.meta: dict[str, Any] = {key: f.value for key, f in self.reader.fields.items()}
        self.tensors = {t.name: t for t in self.reader.tensors}

    @property
    def architecture(self) -> str:
        return self.meta.get("general.architecture", "?")

    def get(self, key: str, default: Any = None) -> Any:
        return self.meta.get(f"{self.architecture}.{key}", default)


def config_from_gguf(g: GGUFFile) -> ModelConfig:
    """A ModelConfig from GGUF metadata (and tensor presence for biases and tied heads)."""
    arch = g.architecture
    where = str(g.path)
    fam = by_gguf_arch(arch)
    if fam is None:
        raise SlmError(f"{where}: GGUF architecture {arch!r} is not supported "
                       f"(supported: {', '.join(gguf_archs())})")
    need = lambda k: _need(g, k)  # noqa: E731
    d_model, n_head = need("embedding_length"), need("attention.head_count")
    n_kv = g.get("attention.head_count_kv", n_head)
    head_dim = g.get("attention.key_length", d_model // n_head)
    vocab = len(g.meta.get("tokenizer.ggml.tokens", [])) or _rows(g, "token_embd.weight")
    emb_rows = _rows(g, "token_embd.weight")
    rope_dim = g.get("rope.dimension_count", head_dim)
    eps = g.get("attention.layer_norm_rms_epsilon", g.get("attention.layer_norm_epsilon", 1e-5))
    has = lambda name: name in g.tensors  # noqa: E731
    # the FFN width from the tensor itself: llama.cpp's phi2 converter writes 4 * n_embd as feed_forward_length
    down = g.tensors.get("blk.0.ffn_down.weight")
    ffn = int(down.shape[0]) if down is not None else need("feed_forward_length")
    fields: dict[str, Any] = dict(
        name=g.meta.get("general.name", g.path.stem), n_layer=need("block_count"), d_model=d_model, n_head=n_head,
        n_kv_head=n_kv, head_dim=head_dim, vocab_size=max(vocab, emb_rows), intermediate_size=ffn,
        context_length=g.get("context_length", 2048), rope_theta=float(g.get("rope.freq_base", 10000.0)),
        partial_rotary=rope_dim / head_dim, norm_eps=float(eps), tie_embeddings=not has("output.weight"),
        qkv_bias=has("blk.0.attn_q.bias") or has("blk.0.attn_qkv.bias"), out_bias=has("blk.0.attn_output.bias"),
        mlp_bias=has("blk.0.ffn_down.bias"), lm_head_bias=has("output.bias"),
        bos_token_id=g.meta.get("tokenizer.ggml.bos_token_id"), eos_token_id=g.meta.get("tokenizer.ggml.eos_token_id"),
        pad_token_id=g.meta.get("tokenizer.ggml.padding_token_id"),
    )
    scaling = g.get("rope.scaling.type")
    if scaling == "linear":
        fields["rope_scaling"] = {"rope_type": "linear", "factor": float(g.get("rope.scaling.factor"))}
    elif scaling not in (None, "none"):
        raise SlmError(f"{where}: rope scaling {scaling!r} is not supported (supported: linear)")
    if has("rope_freqs.weight"):
        raise SlmError(f"{where}: per-frequency rope factors (rope_freqs, Llama 3.1+) are not supported yet")
    fields["family"] = fam.name
    if fam.gguf.fields is not None:  # what the metadata does not say: the family record's fields
        fields.update(fam.gguf.fields(g, fields))
    return ModelConfig(**fields)


def _need(g: GGUFFile, key: str) -> Any:
    value = g.get(key)
    if value is None:
        raise SlmError(f"{g.path}: metadata key {g.architecture}.{key} is missing")
    return value


def _rows(g: GGUFFile, name: str) -> int:
    t = g.tensors.get(name)
    if t is None:
        raise SlmError(f"{g.path}: tensor {name!r} is missing")
    return int(t.shape[-1]) if len(t.shape) > 1 else int(t.shape[0])


# GGUF tensor name (per block) -> slmkit module; q/k/v and gate/up are joined into fused weights
_BLOCK = {
    "attn_norm": "attn_norm", "attn_output": "attn.wo", "attn_qkv": "attn.wqkv", "attn_q_norm": "attn.q_norm",
    "attn_k_norm": "attn.k_norm", "ffn_norm": "mlp_norm", "post_attention_norm": "post_attn_norm",
    "post_ffw_norm": "post_mlp_norm", "ffn_down": "mlp.w_down",
}
_TOP = {"token_embd": "tok_emb", "position_embd": "pos_emb", "output_norm": "norm", "output": "lm_head",
        "token_embd_norm": "emb_norm"}
_NAME = re.compile(r"^blk\.(\d+)\.(\w+)\.(weight|bias)$")


def dequantize(g: GGUFFile, name: str) -> torch.Tensor:
    """One tensor as float32 torch, in PyTorch's (out, in) order."""
    from gguf import dequantize as gguf_dequantize

    t = g.tensors[name]
    if t.tensor_type.name not in SUPPORTED_TENSOR_TYPES:
        raise SlmError(f"{g.path}: tensor {name!r} has type {t.tensor_type.name}, which is not supported "
                       f"(supported: {', '.join(SUPPORTED_TENSOR_TYPES)})")
    from slmkit.model.dequant import dequantize as fast_dequantize

    shape = tuple(int(x) for x in reversed(t.shape))
    try:
        fast = fast_dequantize(t.data, t.tensor_type.name)  # the block types, in torch (model/dequant.py)
        if fast is not None:
            return fast.reshape(shape)
        arr = gguf_dequantize(t.data, t.tensor_type)
        arr = np.asarray(arr, dtype=np.float32).reshape(shape)
    except (ValueError, IndexError, RuntimeError) as e:
        raise SlmError(f"{g.path}: tensor {name!r} cannot be read ({e}); the file may be truncated") from None
    return torch.from_numpy(arr.copy())


def state_dict_from_gguf(g: GGUFFile, c: ModelConfig, progress: bool = False) -> dict[str, torch.Tensor]:
    """Dequantise every tensor and rename it to slmkit's layout."""
    quirks = family(c.family).gguf
    parts: dict[str, dict[str, torch.Tensor]] = {}
    out: dict[str, torch.Tensor] = {}
    names = list(g.tensors)
    if progress:
        from tqdm import tqdm

        names = tqdm(names, desc=f"dequantising {g.path.name}", unit="tensor", leave=False)
    for name in names:
        if name == "rope_freqs.weight":
            continue
        w = dequantize(g, name)
        if c.norm_unit_offset and name.endswith("norm.weight"):
            w = w - 1.0  # llama.cpp stores Gemma's (1 + w)
        m = _NAME.match(name)
        if m is None:
            top, param = name.rsplit(".", 1)
            if top not in _TOP:
                raise SlmError(f"{g.path}: unexpected tensor {name!r}")
            out[f"{_TOP[top]}.{param}"] = w
            continue
        i, kind, param = m.groups()
        if quirks.permute_qk and kind in ("attn_q", "attn_k"):
            w = permute_qk(w, c.n_head if kind == "attn_q" else c.n_kv_head, inverse=True)
        if kind in ("attn_q", "attn_k", "attn_v"):
            parts.setdefault(f"blocks.{i}.attn.wqkv.{param}", {})[kind] = w
        elif kind in ("ffn_gate", "ffn_up") and c.mlp_type == "gated" and not quirks.fused_up:
            parts.setdefault(f"blocks.{i}.mlp.w_up.{param}", {})[kind] = w
        elif kind == "ffn_up":
            out[f"blocks.{i}.mlp.w_up.{param}"] = w
        elif kind in _BLOCK:
            out[f"blocks.{i}.{_BLOCK[kind]}.{param}"] = w
        else:
            raise SlmError(f"{g.path}: unexpected tensor {name!r}")
    order = {"attn_q": 0, "attn_k": 1, "attn_v": 2, "ffn_gate": 0, "ffn_up": 1}
    for key, group in parts.items():
        want = 3 if ".wqkv." in key else 2
        if len(group) != want:
            raise SlmError(f"{g.path}: {key} needs {want} tensors, found {sorted(group)}")
        out[key] = torch.cat([group[k] for k in sorted(group, key=order.__getitem__)], 0)
    if c.tie_embeddings:
        out["lm_head.weight"] = out["tok_emb.weight"]
    return out


def write_dequantized(src: str | Path, dst: str | Path, out_type: str = "F32", progress: bool = False) -> Path:
    """Copy a GGUF file with every tensor dequantised to F32, or F16 for matrices (norms stay F32, as
    llama.cpp's converter writes them); metadata, tokenizer and tensor layout are kept.

    F32 gives llama.cpp exactly the float32 weights slmkit computes with after dequantising, which is what a
    like-for-like fp32 comparison needs. Written to a temporary name, then renamed.
    """
    import gguf
    from tqdm import tqdm

    if out_type not in ("F32", "F16"):
        raise SlmError(f"out_type must be F32 or F16, got {out_type!r}")
    g = GGUFFile(src)
    dst = Path(dst)
    tmp = dst.with_name(dst.name + ".tmp")
    w = gguf.GGUFWriter(str(tmp), g.architecture)
    for key, f in g.reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = g.meta[key]
        if key == "general.file_type":
            value = int(gguf.LlamaFileType.ALL_F32 if out_type == "F32" else gguf.LlamaFileType.MOSTLY_F16)
        sub = gguf.GGUFValueType(f.item_type) if f.item_type is not None else None
        w.add_key_value(key, value, gguf.GGUFValueType(f.type), sub)
    for name, t in tqdm(g.tensors.items(), desc=f"dequantising {g.path.name}", unit="tensor", disable=not progress):
        arr = dequantize(g, name).numpy()
        if out_type == "F16" and arr.ndim > 1:
            w.add_tensor(name, arr.astype(np.float16), raw_dtype=gguf.GGMLQuantizationType.F16)
        else:
            w.add_tensor(name, arr, raw_dtype=gguf.GGMLQuantizationType.F32)
    return finish_writer(w, tmp, dst)


def finish_writer(w, tmp: Path, dst: Path) -> Path:
    """Write a filled gguf.GGUFWriter (opened on tmp) and rename tmp to dst; on failure no file is left."""
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        tmp.replace(dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst
