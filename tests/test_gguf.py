"""GGUF loading: the real default model against transformers and llama.cpp; every tensor type slmkit reads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import slmkit
from tests.conftest import perturb_, write_tiny_gguf

CHAT = [{"role": "user", "content": "Explain in two sentences why the sky is blue."}]
PROMPT = "Once upon a time, in a small village by the sea,"


def greedy(model, ids: list[int], n: int = 32) -> list[int]:
    """Plain greedy decoding by full forwards (no cache): the reference the engine is checked against later."""
    seq = torch.tensor([ids])
    with torch.no_grad():
        for _ in range(n):
            seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], 1)
    return seq[0, len(ids):].tolist()


@pytest.fixture(scope="module")
def default_lm(default_gguf):
    return slmkit.load(default_gguf, dtype="float32", device="cpu")


def test_default_model_config(default_lm):
    c = default_lm.config
    assert (c.family, c.n_layer, c.d_model, c.n_head, c.n_kv_head, c.vocab_size) == ("llama", 30, 576, 9, 3, 49152)
    assert c.tie_embeddings and c.rope_theta == 100000.0
    assert default_lm.tokenizer.chat_template and default_lm.tokenizer.eos_token == "<|im_end|>"


@pytest.mark.slow
def test_default_gguf_matches_transformers(default_gguf, default_lm):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate", reason="transformers needs accelerate to read GGUF")
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(default_gguf.parent), gguf_file=default_gguf.name, dtype=torch.float32).eval()
    ids = default_lm.tokenizer.apply_chat_template(CHAT, tokenize=True)
    x = torch.tensor([ids])
    with torch.no_grad():
        ref, got = hf(x).logits, default_lm.model(x)
    assert ref.abs().max() > 10
    assert (ref - got).abs().max().item() <= 1e-3
    plain = default_lm.tokenizer.encode(PROMPT)
    ours = greedy(default_lm.model, plain)
    theirs = hf.generate(torch.tensor([plain]), max_new_tokens=32, min_new_tokens=32, do_sample=False)
    assert ours == theirs[0, len(plain):].tolist()


def test_default_gguf_matches_llamacpp(default_gguf, default_lm):
    """llama.cpp multiplies the Q4_1 weights with q8-quantised activations, so its logits differ from the
    dequantised fp32 ones by up to ~1.5; greedy paths agree except at near-ties."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="pip install llama-cpp-python (optional extra)")
    llm = llama_cpp.Llama(model_path=str(default_gguf), n_ctx=512, n_threads=2, verbose=False, seed=0)
    tok = default_lm.tokenizer

    def llamacpp_greedy(ids):
        llm.reset()
        out = []
        for t in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
            out.append(t)
            if len(out) == 32:
                return out

    chat_text = tok.apply_chat_template(CHAT)
    assert llm.tokenize(chat_text.encode(), add_bos=False, special=True) == tok.encode(chat_text)
    plain = tok.encode(PROMPT)
    assert llm.tokenize(PROMPT.encode(), add_bos=False, special=True) == plain
    assert llamacpp_greedy(plain) == greedy(default_lm.model, plain)  # the same 32 tokens
    for text in ("The three most important inventions of the nineteenth century were", "def fibonacci(n):"):
        ids = tok.encode(text)
        theirs = llamacpp_greedy(ids)
        with torch.no_grad():
            logits = default_lm.model(torch.tensor([ids + theirs]))[0, len(ids) - 1:-1]
        for step, (row, t) in enumerate(zip(logits, theirs)):
            gap = (row.max() - row[t]).item()
            assert gap <= 0.5, f"{text!r} step {step}: llama.cpp chose a token {gap:.2f} below our best"


@pytest.mark.parametrize("qtype,tol", [("F32", 1e-5), ("F16", 2e-2), ("BF16", 5e-2), ("Q8_0", 5e-2),
                                       ("Q4_0", 0.6), ("Q4_1", 0.6), ("Q5_0", 0.3), ("Q5_1", 0.3)])
def test_tensor_types(tmp_path, qtype, tol):
    cfg = slmkit.from_name("SmolLM2-135M", n_layer=2, d_model=64, n_head=4, n_kv_head=2, intermediate_size=128,
                           vocab_size=256)
    model = slmkit.init_model(cfg, device="cpu", seed=0)
    perturb_(model, scale=0.05)
    path = write_tiny_gguf(tmp_path / f"tiny-{qtype}.gguf", model, qtype)
    loaded = slmkit.load(path, device="cpu").model
    assert loaded.config.tie_embeddings
    ids = torch.randint(0, 256, (2, 9))
    with torch.no_grad():
        diff = (model(ids) - loaded(ids)).abs().max().item()
    assert diff <= tol, f"{qtype}: {diff}"


CONVERT_CASES = {
    "llama": ("SmolLM2-135M", dict(n_kv_head=2)),
    "phi2": ("Phi-2", dict()),
    "gpt2": ("GPT-2-124M", dict(intermediate_size=256)),
    "gemma3": ("Gemma-3-270M", dict(n_layer=7, n_kv_head=1, head_dim=16, embed_scale=8.0, sliding_window=4,
                                    attn_scale=0.25)),
}


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(CONVERT_CASES))
def test_llamacpp_converter_output_loads_exactly(arch, tmp_path, default_lm):
    """llama.cpp's own convert_hf_to_gguf.py turns an slmkit-saved folder into f32 GGUF; slmkit reads it back
    with identical logits. This checks the GGUF tensor layouts against the real converter, not our own writer."""
    import subprocess
    import sys

    from tests.conftest import llamacpp_converter

    converter = llamacpp_converter()
    if converter is None:
        pytest.skip("llama.cpp converter not found; run scripts/fetch-llamacpp-vocabs.sh")
    preset, kw = CONVERT_CASES[arch]
    cfg = slmkit.from_name(preset, **{**dict(n_layer=2, d_model=64, n_head=4, intermediate_size=128, vocab_size=49152,
                                             bos_token_id=1, eos_token_id=2, pad_token_id=2), **kw})
    model = slmkit.init_model(cfg, device="cpu", seed=0)
    perturb_(model)
    slmkit.save(model, tmp_path / "hf", tokenizer=default_lm.tokenizer)  # a real tokenizer the converter knows
    out = tmp_path / "m.gguf"
    r = subprocess.run([sys.executable, str(converter), str(tmp_path / "hf"), "--outtype", "f32", "--outfile", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    loaded = slmkit.load(out, device="cpu")
    assert loaded.config.family == cfg.family
    ids = torch.tensor([default_lm.tokenizer.encode("Hello world, this is a test of the converter.")])
    with torch.no_grad():
        assert (loaded.model(ids) - model(ids)).abs().max().item() <= 1e-5


@pytest.mark.slow
def test_dequantised_f32_gguf_runs_the_same_in_llamacpp_and_slmkit(default_gguf, default_lm, tmp_path):
    """write_dequantized keeps every weight exactly; llama.cpp on the F32 file decodes the engine's 32 greedy
    tokens (the like-for-like fp32 pair benchmarks/decode.py times)."""
    from slmkit.engine import Engine, SamplingParams
    from slmkit.model.gguf import GGUFFile, write_dequantized

    path = write_dequantized(default_gguf, tmp_path / "f32.gguf")
    g = GGUFFile(path)
    assert {t.tensor_type.name for t in g.tensors.values()} == {"F32"}
    assert g.meta["tokenizer.chat_template"] == GGUFFile(default_gguf).meta["tokenizer.chat_template"]
    again = slmkit.load(path, dtype="float32", device="cpu").model
    for (name, a), b in zip(default_lm.model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    ids = default_lm.tokenizer.encode(PROMPT)
    ours = Engine(default_lm.model).generate([ids], 32, SamplingParams(temperature=0))[0]
    llama_cpp = pytest.importorskip("llama_cpp", reason="pip install llama-cpp-python (optional extra)")
    import numpy as np

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=2, verbose=False)
    theirs = []
    llm.eval(ids)
    for _ in range(32):
        row = llama_cpp.llama_get_logits_ith(llm.ctx, -1)  # llama.cpp's public API: the last token's logits
        theirs.append(int(np.ctypeslib.as_array(row, shape=(llm.n_vocab(),)).argmax()))
        llm.eval([theirs[-1]])
    assert theirs == ours


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"])
def test_torch_dequantisation_equals_the_gguf_package(qtype):
    """model/dequant.py's torch path gives the gguf package's numpy values on random blocks of each type."""
    import gguf

    from slmkit.model.dequant import SIZES, dequantize

    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=(64, SIZES[qtype]), dtype=np.uint8)
    scales = rng.normal(0, 0.05, size=(64, 2)).astype(np.float16).view(np.uint8)  # finite d (and m or dmin)
    at = {"Q4_1": (0, 4), "Q5_1": (0, 4), "Q4_K": (0, 4), "Q5_K": (0, 4), "Q6_K": (208, 210)}.get(qtype, (0, 2))
    raw[:, at[0]:at[1]] = scales[:, :at[1] - at[0]]
    ref = gguf.dequantize(raw.reshape(-1), gguf.GGMLQuantizationType[qtype]).reshape(-1)
    got = dequantize(raw.reshape(-1), qtype).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)
