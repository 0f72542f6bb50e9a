"""Logit parity with transformers for every supported family, both directions.

For each family: a tiny random transformers model (2 layers, width 64) saved with save_pretrained is
loaded by slmkit and gives the same logits (max abs diff <= 1e-4, fp32) on a batch, including a
left-padded one; then slmkit saves it and transformers loads that folder with the same logits.
"""

from __future__ import annotations

import pytest
import torch

import slmkit
from slmkit.model.hf import config_to_hf
from tests.conftest import CASES, ENCODER_CASES, TINY, perturb_

transformers = pytest.importorskip("transformers", reason="transformers is the reference; pip install -e '.[test]'")

def _tiny(preset: str, overrides: dict) -> slmkit.ModelConfig:
    return slmkit.from_name(preset, **{**TINY, **overrides})


def _batch(vocab: int, pad_id: int = 0):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # left padding
    mask[2, :2] = 0
    ids = ids.masked_fill(mask == 0, pad_id)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions


def _hf_logits(model, ids, mask, positions):
    kwargs = dict(attention_mask=mask)
    if model.config.model_type not in ("bloom",):  # BLOOM takes no position ids (ALiBi)
        kwargs["position_ids"] = positions
    with torch.no_grad():
        return model(ids, **kwargs).logits


def _ours(model, ids, mask, positions):
    with torch.no_grad():
        return model(ids, positions=positions, key_valid=mask.bool())


def _hf_model(cfg: slmkit.ModelConfig):
    hf_cfg = transformers.AutoConfig.for_model(**config_to_hf(cfg))
    hf_cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(hf_cfg).float().eval()
    perturb_(model)
    return model


@pytest.mark.parametrize("case", list(CASES))
def test_transformers_to_slmkit_and_back(case, tmp_path):
    cfg = _tiny(*CASES[case])
    hf = _hf_model(cfg)
    hf.save_pretrained(tmp_path / "hf")

    ours = slmkit.load(tmp_path / "hf", dtype="float32", device="cpu").model
    assert ours.config.family == cfg.family
    ids, mask, positions = _batch(cfg.vocab_size)
    ref = _hf_logits(hf, ids, mask, positions)
    got = _ours(ours, ids, mask, positions)
    real = mask.bool()
    assert got.abs().max() > 0.5, "logits too small for a meaningful comparison"
    assert (ref[real] - got[real]).abs().max().item() <= 1e-4

    slmkit.save(ours, tmp_path / "ours")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours", attn_implementation="eager").eval()
    again = _hf_logits(back, ids, mask, positions)
    assert (again[real] - got[real]).abs().max().item() <= 1e-4


def test_layer_sharing_saves_as_expanded_llama(tmp_path):
    """MobileLLM block-wise sharing: 2 stored blocks run twice each; transformers sees 4 LLaMA layers."""
    cfg = _tiny("MobileLLM-125M", dict(n_kv_head=2, layer_repeat=2))
    model = slmkit.init_model(cfg, device="cpu", seed=0)
    perturb_(model)
    assert model.n_exec_layers == 4
    slmkit.save(model, tmp_path / "ls")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ls", attn_implementation="eager").eval()
    assert hf.config.num_hidden_layers == 4
    ids, mask, positions = _batch(cfg.vocab_size)
    real = mask.bool()
    diff = (_hf_logits(hf, ids, mask, positions)[real] - _ours(model, ids, mask, positions)[real]).abs().max()
    assert diff.item() <= 1e-4


def test_sharded_safetensors_round_trip(tmp_path):
    cfg = _tiny("Qwen2-0.5B", dict(n_kv_head=2))
    model = slmkit.init_model(cfg, device="cpu", seed=0)
    slmkit.save(model, tmp_path / "sharded", max_shard_bytes=50_000)
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    assert len(list((tmp_path / "sharded").glob("model-*.safetensors"))) > 1
    again = slmkit.load(tmp_path / "sharded", device="cpu").model
    ids = torch.randint(0, cfg.vocab_size, (2, 7))
    with torch.no_grad():
        assert torch.equal(model(ids), again(ids))


def test_every_family_is_one_record_with_its_parity_case():
    """The registry is the only place a family is named: each record reads its own model_type (and aliases), its
    GGUF arch maps back to it, and each has a case in the parity table above (encoders: tests/test_encoders.py)."""
    from slmkit.model.config import ModelConfig
    from slmkit.model.families import FAMILIES
    from slmkit.model.families import by_gguf_arch, by_model_type, gguf_archs

    covered = {ModelConfig.from_name(preset).family for preset, _ in CASES.values()}
    covered |= {ModelConfig.from_name(preset).family for preset, _, _ in ENCODER_CASES.values()}
    assert covered == set(FAMILIES), set(FAMILIES) ^ covered
    for name, f in FAMILIES.items():
        assert by_model_type(name) is f and all(by_model_type(t) is f for t in f.model_types)
        if f.gguf is not None:
            assert by_gguf_arch(f.gguf.arch) is f
    assert set(gguf_archs(export=True)) == {"llama", "qwen2", "phi2", "gemma", "gemma2", "gemma3", "gpt2"}
    assert by_model_type("mamba") is None and by_gguf_arch("mamba") is None
