"""Shared fixtures: tiny random transformers checkpoints, the shared data folder, the default model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


# Tiny versions of real presets, one per architecture variant (parity, engine and export tests share them).
TINY = dict(n_layer=2, d_model=64, n_head=4, intermediate_size=128, vocab_size=256, bos_token_id=1, eos_token_id=2,
            pad_token_id=0)
CASES = {
    "llama (SmolLM2, GQA, tied)": ("SmolLM2-135M", dict(n_kv_head=2)),
    "llama (TinyLlama, untied)": ("TinyLlama-1.1B", dict(n_kv_head=2)),
    "llama (Llama-3.2 rope scaling)": ("Llama-3.2-1B", dict(n_kv_head=2, rope_scaling=dict(
        rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=16))),
    "llama (linear rope scaling)": ("TinyLlama-1.1B", dict(rope_scaling=dict(rope_type="linear", factor=2.0))),
    "mistral (sliding window)": ("H2O-Danube2-1.8B", dict(n_kv_head=2, sliding_window=4)),
    "qwen2 (qkv bias)": ("Qwen2-0.5B", dict(n_kv_head=2)),
    "phi (partial rotary, parallel)": ("Phi-1.5", dict()),
    "phi (qk layernorm)": ("Phi-2", dict(qk_norm=True)),
    "phi3 (fused qkv/gate-up, sliding)": ("Phi-3-mini-4k", dict(sliding_window=4)),
    "gemma (MQA, 1+w norms, embed scale)": ("Gemma-2B", dict(n_kv_head=1, head_dim=16, embed_scale=8.0)),
    "gemma2 (softcaps, sandwich norms, local/global)": ("Gemma-2-2B", dict(
        n_kv_head=2, head_dim=16, embed_scale=8.0, sliding_window=4, attn_scale=32**-0.5)),
    "gemma3 (qk-norm, two rope thetas)": ("Gemma-3-270M", dict(
        n_kv_head=1, head_dim=16, embed_scale=8.0, sliding_window=4, sliding_pattern=2, attn_scale=16**-0.5)),
    "gpt2 (learned positions)": ("GPT-2-124M", dict(intermediate_size=None)),
    "gpt2 (exact gelu, Cerebras)": ("Cerebras-GPT-111M", dict(intermediate_size=None)),
    "gpt_neox (Pythia)": ("Pythia-70M", dict()),
    "opt (pre-LN)": ("OPT-125M", dict()),
    "opt (post-LN, projected embeddings)": ("OPT-350M", dict(embed_dim=32)),
    "stablelm": ("StableLM-2-1.6B", dict()),
    "olmo (non-parametric LN, clip_qkv)": ("OLMo-1B", dict(clip_qkv=0.5)),
    "bloom (ALiBi, 6 heads)": ("BLOOM-560M", dict(n_head=6, d_model=48)),
}

# Encoders and heads (tests/test_encoders.py): preset, overrides and the transformers auto class that builds it.
ENCODER_CASES = {
    "bert (masked LM)": ("BERT-base", dict(), "AutoModelForMaskedLM"),
    "roberta (masked LM, positions after padding)": ("RoBERTa-base", dict(), "AutoModelForMaskedLM"),
    "bert (sequence classification)": ("BERT-base", dict(head="classify", n_labels=3, pool_dense=True),
                                       "AutoModelForSequenceClassification"),
    "roberta (sequence classification)": ("RoBERTa-base", dict(head="classify", n_labels=3, pool_dense=True),
                                          "AutoModelForSequenceClassification"),
    "bert (bare encoder, MiniLM)": ("MiniLM-L6", dict(), "AutoModel"),
    "llama (sequence classification, last token)": ("SmolLM2-135M", dict(
        n_kv_head=2, head="classify", n_labels=3, pooling="last", score_bias=False),
        "AutoModelForSequenceClassification"),
    "gemma3 (sequence classification)": ("Gemma-3-270M", dict(
        n_kv_head=1, head_dim=16, embed_scale=8.0, sliding_window=4, sliding_pattern=2, attn_scale=16**-0.5,
        head="classify", n_labels=2, pooling="last", score_bias=False), "AutoModelForSequenceClassification"),
}


def shared_dir() -> Path | None:
    """../shared beside the project root, or SLMKIT_SHARED."""
    path = Path(os.environ.get("SLMKIT_SHARED", ROOT.parent / "shared"))
    return path if path.is_dir() else None


def llamacpp_models_dir() -> Path | None:
    """The vocab-only GGUFs with test cases from the llama-cpp-python sdist (SLMKIT_LLAMACPP_MODELS)."""
    path = os.environ.get("SLMKIT_LLAMACPP_MODELS")
    if path and Path(path).is_dir():
        return Path(path)
    default = ROOT / ".cache" / "llama.cpp-models"
    return default if default.is_dir() else None


def perturb_(model: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> None:
    """Add noise to every parameter so logits are O(1) and layout mistakes cannot hide behind tiny weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)


@pytest.fixture(scope="session")
def default_gguf() -> Path:
    from slmkit.checkpoint import default_model_path
    from slmkit.errors import SlmError

    try:
        return default_model_path()
    except SlmError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def default_tokenizer(default_gguf):
    """The default model's tokenizer (SmolLM2's BPE, 49152 tokens), read from its GGUF."""
    from slmkit.model.gguf import GGUFFile
    from slmkit.tokenizer.gguf_vocab import tokenizer_from_gguf

    return tokenizer_from_gguf(GGUFFile(default_gguf).meta)


@pytest.fixture(scope="session")
def tiny_eval_dir(tmp_path_factory, default_tokenizer) -> str:
    """A tiny random SmolLM2-shaped checkpoint folder with the real SmolLM2 tokenizer, for evaluation tests."""
    from slmkit.checkpoint import init_model, save
    from slmkit.model.config import from_name

    cfg = from_name("SmolLM2-135M", n_layer=2, d_model=64, n_head=4, n_kv_head=2, intermediate_size=128)
    model = init_model(cfg, "float32", "cpu", seed=0)
    model.reset_parameters(std=0.1)  # peaked enough that no choice ties within rounding
    path = tmp_path_factory.mktemp("eval") / "tiny"
    save(model, path, tokenizer=default_tokenizer)
    return str(path)


def write_tiny_gguf(path: Path, model, qtype: str = "F32", arch: str = "llama", tokenizer_dir: Path | None = None,
                    truncate: int | None = None, block_count: int | None = None) -> Path:
    """Write a small llama-architecture GGUF from an slmkit model the way llama.cpp's converter lays it out
    (q/k rows permuted for interleaved rotary, separate q/k/v and gate/up), quantised to qtype."""
    import gguf
    import numpy as np

    c = model.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(block_count or c.n_layer)  # block_count: a header that lies about the layers
    w.add_context_length(c.context_length)
    w.add_embedding_length(c.d_model)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.n_head)
    w.add_head_count_kv(c.n_kv_head)
    w.add_layer_norm_rms_eps(c.norm_eps)
    w.add_rope_freq_base(c.rope_theta)
    w.add_rope_dimension_count(c.head_dim)
    w.add_vocab_size(c.vocab_size)
    kind = getattr(gguf.GGMLQuantizationType, qtype)

    def permute(t, n_head):
        return t.reshape(n_head, 2, t.shape[0] // n_head // 2, *t.shape[1:]).swapaxes(1, 2).reshape(t.shape)

    def add(name, t):
        arr = t.detach().float().numpy()
        if arr.ndim == 1 or kind == gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, arr.astype(np.float32))
        else:
            w.add_tensor(name, gguf.quants.quantize(arr, kind), raw_dtype=kind)  # byte shape -> element shape

    sd = model.state_dict()
    add("token_embd.weight", sd["tok_emb.weight"])
    add("output_norm.weight", sd["norm.weight"])
    if not c.tie_embeddings:
        add("output.weight", sd["lm_head.weight"])
    hd = c.head_dim
    for i in range(c.n_layer):
        p = f"blocks.{i}."
        q, k, v = sd[p + "attn.wqkv.weight"].split([c.n_head * hd, c.n_kv_head * hd, c.n_kv_head * hd])
        gate, up = sd[p + "mlp.w_up.weight"].chunk(2)
        for name, t in (("attn_norm", sd[p + "attn_norm.weight"]), ("attn_q", permute(q, c.n_head)),
                        ("attn_k", permute(k, c.n_kv_head)), ("attn_v", v), ("attn_output", sd[p + "attn.wo.weight"]),
                        ("ffn_norm", sd[p + "mlp_norm.weight"]), ("ffn_gate", gate), ("ffn_up", up),
                        ("ffn_down", sd[p + "mlp.w_down.weight"])):
            add(f"blk.{i}.{name}.weight", t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if truncate:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - truncate])
    return path


def llamacpp_converter() -> Path | None:
    """llama.cpp's convert_hf_to_gguf.py, extracted by scripts/fetch-llamacpp-vocabs.sh."""
    path = ROOT / ".cache" / "llama.cpp-convert" / "convert_hf_to_gguf.py"
    return path if path.is_file() else None


def _isolation() -> tuple[bool, str]:
    from slmkit.combine.sandbox import isolation_available

    return isolation_available()


# Tests that run model-written programs need the sandbox's OS isolation (bubblewrap; CI installs it).
needs_sandbox = pytest.mark.skipif(not _isolation()[0], reason=f"the program sandbox cannot isolate here: "
                                                               f"{_isolation()[1]}")
