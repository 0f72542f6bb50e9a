"""`slm export --gguf`: every family and type loads back in slmkit and in llama.cpp with the same numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import slmkit
from slmkit.export.gguf import BLOCK_TYPES, export_gguf
from tests.conftest import perturb_
from tests.test_errors import assert_one_line, run_cli

PROMPT = "Once upon a time, in a small village by the sea,"
FAMILIES = {  # tiny versions of real presets; the default model's tokenizer (49152 tokens)
    "llama": ("SmolLM2-135M", dict(n_kv_head=2)),
    "qwen2": ("Qwen2-0.5B", dict(n_kv_head=2)),
    "phi2": ("Phi-2", dict()),
    "gemma": ("Gemma-2B", dict(n_kv_head=1, head_dim=16, embed_scale=8.0)),
    # windows of 4 tokens, so the prompt runs past them; Gemma 3's pattern (5 sliding, 1 full) needs 6 layers
    "gemma2": ("Gemma-2-2B", dict(n_kv_head=2, head_dim=16, embed_scale=8.0, attn_scale=0.25, sliding_window=4)),
    "gemma3": ("Gemma-3-270M", dict(n_layer=6, n_kv_head=1, head_dim=16, embed_scale=8.0, attn_scale=0.25,
                                    sliding_window=4, rope_theta=100000.0)),
    "gpt2": ("GPT-2-124M", dict(intermediate_size=256)),
}


def tiny(family: str) -> slmkit.Transformer:
    preset, kw = FAMILIES[family]
    cfg = slmkit.from_name(preset, **{**dict(n_layer=2, d_model=64, n_head=4, intermediate_size=128, vocab_size=49152,
                                             bos_token_id=1, eos_token_id=2, pad_token_id=2), **kw})
    model = slmkit.init_model(cfg, device="cpu", seed=0)
    perturb_(model)
    return model.eval()


def llamacpp_last_logits(path, ids: list[int]) -> np.ndarray:
    llama_cpp = pytest.importorskip("llama_cpp", reason="pip install llama-cpp-python (optional extra)")
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=128, n_threads=2, verbose=False)
    llm.eval(ids)
    row = llama_cpp.llama_get_logits_ith(llm.ctx, -1)  # llama.cpp's public API: the last token's logits
    logits = np.ctypeslib.as_array(row, shape=(llm.n_vocab(),)).copy()
    llm.close()
    return logits


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_export_loads_back_in_slmkit_and_llamacpp(family, default_tokenizer, tmp_path):
    """f32 reads back bit for bit; every type's file runs in llama.cpp with the logits slmkit computes from
    the same (dequantised) file, so the quantised blocks, names and layouts are what llama.cpp expects."""
    model = tiny(family)
    ids = default_tokenizer.encode(PROMPT)
    x = torch.tensor([ids])
    for out_type in BLOCK_TYPES:  # the K-quants: test_export_vocab.py
        path = export_gguf(model, default_tokenizer, tmp_path / f"{family}-{out_type}.gguf", out_type)
        back = slmkit.load(path, dtype="float32", device="cpu")
        assert back.config.family == model.config.family
        assert back.tokenizer.encode(PROMPT) == ids
        with torch.no_grad():
            ours = back.model(x)[0, -1].numpy()
            if out_type == "f32":
                assert np.array_equal(ours, model(x)[0, -1].numpy())
        theirs = llamacpp_last_logits(path, ids)
        # llama.cpp rounds activations to 8 bits for quantised matmuls and runs f16 matmuls in f16
        # llama.cpp keeps the KV cache in f16 and rounds activations to 8 bits for quantised matmuls: seen up to
        # 6e-4 (f32, f16) and 2.3e-2 (q8_0, q4_0, q4_1) of the largest logit; a wrong layout is off by ~100%
        rel = np.abs(theirs - ours).max() / np.abs(ours).max()
        assert rel <= (2e-3 if out_type in ("f32", "f16") else 5e-2), (family, out_type, rel)


@pytest.mark.slow
@pytest.mark.parametrize("out_type", ["f32", "f16"])
def test_default_model_export_decodes_the_same_in_llamacpp(out_type, default_gguf, tmp_path):
    """The issue's check: llama.cpp on the exported f32/f16 file gives slmkit fp32's 32 greedy tokens."""
    from slmkit.engine import Engine, SamplingParams

    lm = slmkit.load(default_gguf, dtype="float32", device="cpu")
    path = export_gguf(lm.model, lm.tokenizer, tmp_path / f"default-{out_type}.gguf", out_type)
    ids = lm.tokenizer.encode(PROMPT)
    ours = Engine(lm.model).generate([ids], 32, SamplingParams(temperature=0))[0]
    llama_cpp = pytest.importorskip("llama_cpp", reason="pip install llama-cpp-python (optional extra)")
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=2, verbose=False)
    assert llm.tokenize(PROMPT.encode(), add_bos=False, special=True) == ids  # the exported tokenizer
    assert llm.metadata["tokenizer.chat_template"] == lm.tokenizer.chat_template
    theirs = []
    llm.eval(ids)
    for _ in range(32):
        row = llama_cpp.llama_get_logits_ith(llm.ctx, -1)  # llama.cpp's public API: the last token's logits
        theirs.append(int(np.ctypeslib.as_array(row, shape=(llm.n_vocab(),)).argmax()))
        llm.eval([theirs[-1]])
    llm.close()
    assert theirs == ours


def test_export_errors(capsys, tmp_path, default_tokenizer):
    assert_one_line(*run_cli(capsys, "export", "default", "--gguf", str(tmp_path / "x.gguf"), "--type", "q3"),
                    "unknown GGUF type 'q3'")
    opt = slmkit.init_model(slmkit.from_name("OPT-125M", n_layer=1, d_model=64, n_head=4, vocab_size=49152),
                            device="cpu")
    with pytest.raises(slmkit.SlmError, match="families llama, qwen2, phi, gemma, gemma2, gemma3_text, gpt2; this model is 'opt'"):
        export_gguf(opt, default_tokenizer, tmp_path / "opt.gguf", "f16")
    windowed = tiny("llama")
    windowed.config.sliding_window = 16
    windowed.config.layer_types = ["sliding", "sliding"]
    with pytest.raises(slmkit.SlmError, match="cannot be exported as GGUF 'llama' without changing it: sliding_window"):
        export_gguf(windowed, default_tokenizer, tmp_path / "w.gguf", "f16")
    assert not list(tmp_path.glob("*.gguf*"))  # nothing half-written
