"""GGUF export of SentencePiece-style vocabularies (Llama 2's, Gemma's) and of K-quants (llama.cpp's quantiser):
the files run in llama.cpp, which tokenises as slmkit does and, at f16, decodes the same greedy tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import slmkit
from slmkit.cli import main
from slmkit.export.gguf import export_gguf
from slmkit.export.kquant import fallbacks
from slmkit.model.gguf import GGUFFile
from slmkit.tokenizer.gguf_vocab import tokenizer_from_gguf
from tests.conftest import llamacpp_models_dir
from tests.test_errors import assert_one_line, run_cli
from tests.test_gemma import PROMPTS, TRICKY, needs_gemma
from tests.test_tokenizer import TRICKY as MORE_TRICKY
from tests.test_tokenizer import _cases


def _llama(path, n_ctx: int = 256):
    llama_cpp = pytest.importorskip("llama_cpp", reason="pip install llama-cpp-python (optional extra)")
    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=2, verbose=False, seed=0)


def _greedy_llamacpp(llm, ids: list[int], n: int) -> list[int]:
    llm.reset()
    out = []
    for t in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
        out.append(t)
        if len(out) == n:
            return out
    return out


def _greedy_gaps(llm, model, ids: list[int], n: int) -> list[float]:
    """llama.cpp's greedy tokens, teacher-forced through slmkit: at each step how far (in float32 logits) its token
    falls below slmkit's best. 0 everywhere is the same greedy path; llama.cpp's f16 dot products round their
    activations to f16 on CPUs without AVX-512, and its order of summation differs by CPU, so a near tie may go the
    other way and the paths part there: what parity asks is that every one of its choices is (near) slmkit's."""
    theirs = _greedy_llamacpp(llm, ids, n)
    with torch.no_grad():
        logits = model(torch.tensor([ids + theirs]))[0, len(ids) - 1:-1].float()
    return [(row.max() - row[t]).item() for row, t in zip(logits, theirs)]


F16_TIE = 0.05  # a near tie at f16 (the logits here reach about 5-20): a gap above it is a real difference


def _last_logits(llm, ids: list[int]) -> np.ndarray:
    import llama_cpp

    llm.reset()
    llm.eval(ids)
    row = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(row, shape=(llm.n_vocab(),)).copy()


def _same_tokenisation(llm, tok, texts) -> None:
    for text in texts:
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == tok.encode(text, add_special_tokens=False), \
            repr(text)


@pytest.fixture(scope="module")
def spm():
    """Llama 2's SentencePiece vocabulary (32,000 pieces, from llama.cpp's vocab-only test file) and its cases."""
    models = llamacpp_models_dir()
    if models is None:
        pytest.skip("llama.cpp vocab files not found; run scripts/fetch-llamacpp-vocabs.sh")
    path = models / "ggml-vocab-llama-spm.gguf"
    return tokenizer_from_gguf(GGUFFile(path).meta, str(path)), _cases(path)


@pytest.fixture(scope="module")
def tiny_spm_llama(spm):
    """A tiny random Llama over that vocabulary: rows of 256 (K-quant super-blocks) except the down
    projection's 320, which llama.cpp's quantiser cannot store as a K-quant."""
    cfg = slmkit.from_name("TinyLlama-1.1B", n_layer=2, d_model=256, n_head=4, n_kv_head=2, intermediate_size=320,
                           vocab_size=32000)
    model = slmkit.init_model(cfg, device="cpu", seed=0)
    model.reset_parameters(std=0.1)  # peaked enough that greedy choices do not tie within f16 rounding
    return model.eval()


@pytest.mark.slow
def test_sentencepiece_llama_exports_at_f16_and_q4_k_m(spm, tiny_spm_llama, tmp_path):
    tok, cases = spm
    f16 = export_gguf(tiny_spm_llama, tok, tmp_path / "tiny-f16.gguf", "f16")
    meta = GGUFFile(f16).meta
    assert meta["tokenizer.ggml.model"] == "llama" and meta["tokenizer.ggml.add_space_prefix"] is True
    llm = _llama(f16)
    _same_tokenisation(llm, tok, [t for t, _ in cases] + MORE_TRICKY)
    for text, want in cases:  # and both give llama.cpp's recorded ids for its own vocabulary
        assert tok.encode(text, add_special_tokens=False) == want, repr(text)
    for prompt in PROMPTS:
        ids = tok.encode(prompt)
        assert ids == llm.tokenize(prompt.encode(), add_bos=True, special=True)
        gaps = _greedy_gaps(llm, tiny_spm_llama, ids, 16)
        assert max(gaps) <= F16_TIE, (prompt, gaps)
    llm.close()

    q4 = export_gguf(tiny_spm_llama, tok, tmp_path / "tiny-q4_k_m.gguf", "q4_k_m")
    types = {t.name: t.tensor_type.name for t in GGUFFile(q4).reader.tensors}
    assert types["blk.0.attn_q.weight"] == "Q4_K" and "Q6_K" in types.values()
    assert types["blk.0.ffn_down.weight"] in ("Q5_0", "Q8_0")  # rows of 320: llama.cpp's fallback
    note = fallbacks(q4)
    assert note.startswith("2 of ") and "rows of 320 values, not a multiple of 256" in note
    back = slmkit.load(q4, dtype="float32", device="cpu")  # slmkit reads llama.cpp's K-quant blocks
    llm = _llama(q4)
    _same_tokenisation(llm, back.tokenizer, MORE_TRICKY)
    ids = tok.encode(PROMPTS[0])
    with torch.no_grad():
        ours = back.model(torch.tensor([ids]))[0, -1].numpy()
    theirs = _last_logits(llm, ids)
    llm.close()
    # llama.cpp's K-quant dot products run on 8-bit activations (as for q4_0 in test_export)
    assert np.abs(theirs - ours).max() / np.abs(ours).max() <= 5e-2


@pytest.mark.slow
def test_a_saved_sentencepiece_checkpoint_exports_from_its_tokenizer_json(spm, tiny_spm_llama, tmp_path):
    """After a save (fine-tuned models ship as HF folders), only tokenizer.json's merges are left: the scores
    written from them still make llama.cpp tokenise as slmkit does."""
    tok, cases = spm
    folder = slmkit.save(tiny_spm_llama, tmp_path / "hf", tokenizer=tok)
    lm = slmkit.load(folder, dtype="float32", device="cpu")
    path = export_gguf(lm.model, lm.tokenizer, tmp_path / "from-hf.gguf", "f16")
    llm = _llama(path)
    _same_tokenisation(llm, lm.tokenizer, [t for t, _ in cases] + MORE_TRICKY)
    llm.close()


@needs_gemma
@pytest.mark.slow
def test_gemma3_exports_at_f16_and_q4_k_m_and_runs_in_llamacpp(tmp_path, capsys):
    """Gemma 3 270M (SentencePiece vocabulary of 262,144 pieces, rows of 640) through `slm export`."""
    gemma = slmkit.load("gemma3-270m", dtype="float32", device="cpu")
    f16 = tmp_path / "gemma-f16.gguf"
    assert main(["export", "gemma3-270m", "--gguf", str(f16), "--type", "f16"]) == 0
    llm = _llama(f16)
    _same_tokenisation(llm, gemma.tokenizer, TRICKY)
    for prompt in PROMPTS:
        ids = gemma.tokenizer.encode(prompt)
        gaps = _greedy_gaps(llm, gemma.model, ids, 16)
        assert max(gaps) <= F16_TIE, (prompt, gaps)
    llm.close()

    q4 = tmp_path / "gemma-q4_k_m.gguf"
    capsys.readouterr()
    assert main(["export", "gemma3-270m", "--gguf", str(q4), "--type", "q4_k_m"]) == 0
    out = capsys.readouterr().out
    assert "note: 91 of 127 matrices have rows of 640 values, not a multiple of 256" in out
    back = slmkit.load(q4, dtype="float32", device="cpu")
    llm = _llama(q4)
    _same_tokenisation(llm, back.tokenizer, TRICKY)
    for prompt in PROMPTS:  # the near-tie tolerance of test_gemma: llama.cpp's Q4_K/Q6_K dots are on 8-bit inputs
        ids = back.tokenizer.encode(prompt)
        theirs = _greedy_llamacpp(llm, ids, 16)
        with torch.no_grad():
            logits = back.model(torch.tensor([ids + theirs]))[0, len(ids) - 1:-1]
        gaps = [(row.max() - row[t]).item() for row, t in zip(logits, theirs)]
        assert max(gaps) <= 0.5, (prompt, gaps)
    llm.close()


def test_export_refuses_what_llamacpp_cannot_tokenise_alike(tmp_path, capsys, monkeypatch, spm, tiny_spm_llama):
    from tokenizers import Tokenizer as HF
    from tokenizers.models import Unigram

    from slmkit.tokenizer import Tokenizer

    unigram = Tokenizer(HF(Unigram([("<unk>", 0.0), ("a", -1.0)], 0)), unk_token="<unk>")
    with pytest.raises(slmkit.SlmError, match="this one is 'Unigram'"):
        export_gguf(tiny_spm_llama, unigram, tmp_path / "u.gguf", "f16")
    tok, _ = spm
    split = Tokenizer.__new__(Tokenizer)
    split.__dict__.update(tok.__dict__, backend=HF.from_str(tok.backend.to_str()))
    from tokenizers import pre_tokenizers

    split.backend.pre_tokenizer = pre_tokenizers.Whitespace()
    with pytest.raises(slmkit.SlmError, match="splits its input before BPE"):
        export_gguf(tiny_spm_llama, split, tmp_path / "s.gguf", "f16")
    monkeypatch.setitem(__import__("sys").modules, "llama_cpp", None)  # llama-cpp-python not installed
    with pytest.raises(slmkit.SlmError, match="written by llama.cpp's quantiser: pip install llama-cpp-python"):
        export_gguf(tiny_spm_llama, tok, tmp_path / "k.gguf", "q4_k_m")
    assert not list(tmp_path.glob("*.gguf*"))  # nothing half-written
    assert_one_line(*run_cli(capsys, "export", "default", "--gguf", str(tmp_path / "x.gguf"), "--type", "q4_k"),
                    "unknown GGUF type 'q4_k'; choose one of f32, f16, q8_0, q4_0, q4_1, q4_k_m")


@needs_gemma
@pytest.mark.slow
def test_a_lora_tuned_gemma3_merges_exports_and_runs_in_llamacpp(tmp_path, capsys):
    """The fine-tuning path end to end: a LoRA adapter trained a few steps on Gemma 3 270M, `slm merge`, `slm
    export --type f16`, and llama.cpp on the merged file decodes slmkit's greedy tokens of the tuned model."""
    from slmkit.adapters.lora import LoRASpec, apply_lora, trainable
    from slmkit.adapters.peft_format import save_adapter

    gemma = slmkit.load("gemma3-270m", dtype="float32", device="cpu")
    model = apply_lora(gemma.model, LoRASpec(r=4, alpha=32, targets=("attn",)))
    ids = torch.tensor([gemma.tokenizer.encode("Gemma is a family of small models. " * 4)])
    opt = torch.optim.AdamW(trainable(model), lr=1e-2)
    model.train()
    for _ in range(3):
        logits = model(ids[:, :-1])
        torch.nn.functional.cross_entropy(logits[0], ids[0, 1:]).backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    save_adapter(model, tmp_path / "adapter", base="gemma3-270m")
    assert main(["merge", "gemma3-270m", str(tmp_path / "adapter"), "-o", str(tmp_path / "merged")]) == 0
    assert main(["export", str(tmp_path / "merged"), "--gguf", str(tmp_path / "tuned.gguf"), "--type", "f16"]) == 0
    tuned = slmkit.load(tmp_path / "merged", dtype="float32", device="cpu")
    base = slmkit.load("gemma3-270m", dtype="float32", device="cpu")
    llm = _llama(tmp_path / "tuned.gguf")
    prompt = tuned.tokenizer.encode(PROMPTS[0])
    gaps = _greedy_gaps(llm, tuned.model, prompt, 16)
    assert max(gaps) <= F16_TIE, gaps
    llm.close()
    with torch.no_grad():  # the tuning changed the model
        assert (tuned.model(torch.tensor([prompt])) - base.model(torch.tensor([prompt]))).abs().max() > 0.1
