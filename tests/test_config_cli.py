"""ModelConfig, presets (parameter counts of the real checkpoints), `slm info`, `slm convert`, `slm tokenizer train`."""

from __future__ import annotations

import json

import pytest
import torch

import slmkit
from slmkit.cli import main
from slmkit.model.presets import PRESETS
from slmkit.model.summary import count_parameters

# published parameter counts of the checkpoints the presets mirror
PUBLISHED = {
    "SmolLM2-135M": 134_515_008, "SmolLM-360M": 361_821_120, "TinyLlama-1.1B": 1_100_048_384,
    "Qwen2-0.5B": 494_032_768, "Qwen2.5-1.5B": 1_543_714_304, "GPT-2-124M": 124_439_808,
    "GPT-2-355M": 354_823_168, "Pythia-70M": 70_426_624, "Pythia-160M": 162_322_944, "Pythia-410M": 405_334_016,
    "OPT-125M": 125_239_296, "OPT-350M": 331_196_416, "Phi-2": 2_779_683_840, "Gemma-2B": 2_506_172_416,
    "Gemma-3-270M": 268_098_176, "StableLM-2-1.6B": 1_644_515_328, "BLOOM-560M": 559_214_592,
    "Llama-3.2-1B": 1_235_814_400,
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_preset_parameter_counts(name):
    assert count_parameters(slmkit.from_name(name)).total == PUBLISHED[name]


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_and_serialises(name):
    cfg = slmkit.from_name(name)
    assert cfg.hf_id.count("/") == 1
    again = slmkit.ModelConfig.from_dict(json.loads(cfg.to_json()))
    assert again == cfg
    tiny = slmkit.from_name(name, n_layer=2, d_model=64, n_head=4, head_dim=16, n_kv_head=min(cfg.n_kv_head, 2)
                            if cfg.n_kv_head < cfg.n_head else 4, intermediate_size=96, vocab_size=128, embed_dim=None)
    model = slmkit.init_model(tiny, device="cpu", seed=0)
    with torch.no_grad():
        out = model(torch.randint(0, 128, (1, 5)))
    assert out.shape == (1, 5, 128 if cfg.head == "lm" else 64) and torch.isfinite(out).all()  # none: hidden states


def test_overrides_and_derived_fields():
    c = slmkit.from_name("Gemma-3-270M", n_layer=12)
    assert c.layer_types.count("full") == 2 and c.layer_types[5] == "full"
    assert c.attention_kind == "MQA" and slmkit.from_name("Qwen2-0.5B").attention_kind == "GQA"
    assert slmkit.from_name("GPT-2-124M").attention_kind == "MHA"
    with pytest.raises(slmkit.SlmError, match="unknown ModelConfig field"):
        slmkit.from_name("GPT-2-124M", n_layers=3)


def test_info_on_default_model(capsys, default_gguf):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "134.5M" in out and "GQA: 9 heads, 3 KV heads" in out and "tied" in out
    assert "KV cache   45.0 KiB/token fp32" in out


def test_convert_default_gguf_to_transformers_folder(tmp_path, default_gguf):
    transformers = pytest.importorskip("transformers")
    assert main(["convert", "default", str(tmp_path / "smol")]) == 0
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "smol").eval()
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "smol")
    lm = slmkit.load("default", device="cpu")
    chat = [{"role": "user", "content": "hi"}]
    text = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert text == lm.tokenizer.apply_chat_template(chat)
    ids = torch.tensor([lm.tokenizer.encode(text)])
    with torch.no_grad():
        assert (hf(ids).logits - lm.model(ids)).abs().max().item() <= 1e-4


def test_tokenizer_train(tmp_path, capsys):
    corpus = tmp_path / "a.txt"
    corpus.write_text("to be or not to be, that is the question\n" * 300)
    assert main(["tokenizer", "train", str(corpus), "-o", str(tmp_path / "tok"), "--vocab-size", "400"]) == 0
    tok = slmkit.Tokenizer.from_dir(tmp_path / "tok")
    ids = tok.encode("to be or not to be")
    assert tok.decode(ids) == "to be or not to be" and len(ids) < 10
    assert tok.token_to_id("<|endoftext|>") == 0
