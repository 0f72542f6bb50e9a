"""LoRA and QLoRA (slmkit.adapters): a fresh adapter leaves the model as it was, merge and unmerge are exact,
adapters go both ways between slmkit and peft with the same logits for every family, the base stays frozen
(also when int8/int4), and bad adapters are one clear line."""

from __future__ import annotations

import json
import re

import pytest
import torch

import slmkit
from slmkit.adapters.lora import LoRALinear, LoRASpec, apply_lora, lora_layers, merge, trainable
from slmkit.adapters.peft_format import attach_adapter, save_adapter
from slmkit.quant.quantize import QuantSpec, quantize
from tests.conftest import CASES, TINY
from tests.test_errors import assert_one_line, run_cli
from tests.test_parity_hf import _batch, _hf_logits, _hf_model, _ours, _tiny

transformers = pytest.importorskip("transformers", reason="transformers is the reference; pip install -e '.[test]'")


def _randomise_b(model, seed: int = 0, scale: float = 0.2) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            for b in layer.lora_B:
                b.copy_(torch.randn(b.shape, generator=g) * scale)


def _tiny_model(preset: str = "SmolLM2-135M", **kw):
    return slmkit.init_model(slmkit.from_name(preset, **{**TINY, "n_kv_head": 2, **kw}), device="cpu", seed=0).eval()


def test_a_fresh_adapter_changes_nothing_and_merge_unmerge_are_exact():
    model = _tiny_model()
    model.reset_parameters(std=0.1)
    ids = torch.randint(3, 256, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = model(ids)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    apply_lora(model, LoRASpec(r=4, alpha=8, targets=("all-linear",)))
    layers = lora_layers(model)
    assert len(layers) == 4 * 2 and all(p.requires_grad == (".lora_" in n) for n, p in model.named_parameters())
    assert [s.role for s in layers["blocks.0.attn.wqkv"].slices] == ["q", "k", "v"]
    with torch.no_grad():
        assert torch.equal(model(ids), base)  # B starts at zero
        _randomise_b(model)
        tuned = model(ids)
        assert (tuned - base).abs().max() > 1e-2
        for layer in layers.values():
            layer.merge()
        assert torch.allclose(model(ids), tuned, atol=1e-5)
        for layer in layers.values():
            layer.unmerge()
        for name, layer in layers.items():
            assert torch.allclose(layer.base.weight, original[f"{name}.weight"], atol=1e-6)
        merge(model)  # folded in and unwrapped: plain layers again
        assert not lora_layers(model) and torch.allclose(model(ids), tuned, atol=1e-5)


def test_targets_groups_and_names():
    model = _tiny_model()
    apply_lora(model, LoRASpec(r=2, targets=("q_proj", "v_proj", "down_proj")))
    layers = lora_layers(model)
    assert sorted(layers) == [f"blocks.{i}.{m}" for i in range(2) for m in ("attn.wqkv", "mlp.w_down")]
    assert [s.role for s in layers["blocks.1.attn.wqkv"].slices] == ["q", "v"]
    model = _tiny_model()
    apply_lora(model, LoRASpec(r=2, targets=("mlp",), rslora=True))
    assert {s.role for la in lora_layers(model).values() for s in la.slices} == {"gate", "up", "down"}
    assert next(iter(lora_layers(model).values())).scale == pytest.approx(16 / 2**0.5)


@pytest.mark.parametrize("case", list(CASES))
def test_adapters_give_the_same_logits_in_slmkit_and_peft(case, tmp_path):
    """slmkit's adapter in peft (PeftModel.from_pretrained), and a peft-made adapter (random B) in slmkit."""
    peft = pytest.importorskip("peft", reason="peft is in the test extras: pip install -e '.[test]'")
    cfg = _tiny(*CASES[case])
    hf = _hf_model(cfg)
    hf.save_pretrained(tmp_path / "hf")
    ids, mask, positions = _batch(cfg.vocab_size)
    real = mask.bool()

    ours = slmkit.load(tmp_path / "hf", dtype="float32", device="cpu").model
    apply_lora(ours, LoRASpec(r=4, alpha=8, targets=("all-linear",), rslora=True))
    _randomise_b(ours)
    got = _ours(ours, ids, mask, positions)
    save_adapter(ours, tmp_path / "ours-adapter", base=str(tmp_path / "hf"))
    base = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", attn_implementation="eager").eval()
    theirs = peft.PeftModel.from_pretrained(base, tmp_path / "ours-adapter").eval()
    ref = _hf_logits(theirs, ids, mask, positions)
    assert (ref[real] - got[real]).abs().max().item() <= 1e-4
    assert (got - _ours(slmkit.load(tmp_path / "hf", dtype="float32", device="cpu").model, ids, mask,
                        positions))[real].abs().max() > 1e-2  # the adapter matters

    linear = (torch.nn.Linear, transformers.pytorch_utils.Conv1D)
    names = sorted({n.rsplit(".", 1)[-1] for n, m in hf.named_modules()
                    if isinstance(m, linear) and re.search(r"\.(layers|h)\.\d+\.", n)})
    made = peft.get_peft_model(_hf_model(cfg), peft.LoraConfig(r=4, lora_alpha=16, target_modules=names,
                                                                 init_lora_weights=False, lora_dropout=0.0))
    made.eval().save_pretrained(tmp_path / "peft-adapter")
    ref = _hf_logits(made, ids, mask, positions)
    back = slmkit.load(tmp_path / "hf", dtype="float32", device="cpu", adapter=tmp_path / "peft-adapter").model
    assert (ref[real] - _ours(back, ids, mask, positions)[real]).abs().max().item() <= 1e-4


@pytest.mark.parametrize("bits", [8, 4])
def test_qlora_trains_the_adapter_around_a_frozen_quantised_base(bits):
    model = _tiny_model()
    model.reset_parameters(std=0.1)
    quantize(model, QuantSpec(bits=bits, group_size=32 if bits == 4 else None))
    apply_lora(model, LoRASpec(r=4, alpha=8, targets=("all-linear",)))
    assert all(type(la.base).__name__ == f"Int{bits}Linear" for la in lora_layers(model).values())
    params = trainable(model)
    assert params and all(".lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    frozen = {n: b.clone() for n, b in model.named_buffers()}
    opt = torch.optim.AdamW(params, lr=1e-2)
    x = torch.randint(3, 256, (4, 16), generator=torch.Generator().manual_seed(0))
    losses = []
    model.train()
    for _ in range(8):
        logits = model(x[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        loss.backward()
        # through layer 1's int kernels back to layer 0 (B's gradient: A's is zero while B is)
        assert lora_layers(model)["blocks.0.attn.wqkv"].lora_B[0].grad.abs().sum() > 0
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05
    assert all(torch.equal(b, frozen[n]) for n, b in model.named_buffers())  # the int weights never change


def test_bad_adapters_are_one_line(tmp_path, capsys):
    with pytest.raises(slmkit.SlmError, match="rank r must be at least 1"):
        LoRASpec(r=0)
    with pytest.raises(slmkit.SlmError, match="LoRA target 'qproj' names no layer of this model; use attn, mlp"):
        apply_lora(_tiny_model(), LoRASpec(targets=("qproj",)))
    model = _tiny_model()
    slmkit.save(model, tmp_path / "base")
    apply_lora(model, LoRASpec(r=2, targets=("attn",)))
    _randomise_b(model)
    save_adapter(model, tmp_path / "adapter", base=str(tmp_path / "base"))

    wider = _tiny_model(d_model=128)  # another base: shapes differ
    slmkit.save(wider, tmp_path / "wider")
    assert_one_line(*run_cli(capsys, "generate", "x", "-m", str(tmp_path / "wider"), "--adapter",
                             str(tmp_path / "adapter")), "another base")
    (tmp_path / "adapter" / "slmkit_adapter.json").unlink()  # as peft writes it: then the shapes decide
    with pytest.raises(slmkit.SlmError, match="an adapter for another base model"):
        attach_adapter(wider, tmp_path / "adapter")
    save_adapter(model, tmp_path / "adapter", base=str(tmp_path / "base"))
    other = _tiny_model()  # same shapes, other weights: the fingerprint says so
    other.reset_parameters(std=0.5)
    with pytest.raises(slmkit.SlmError, match="the adapter was trained on another base"):
        attach_adapter(other, tmp_path / "adapter")

    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    (tmp_path / "ia3").mkdir()
    (tmp_path / "ia3" / "adapter_config.json").write_text(json.dumps(dict(cfg, peft_type="IA3")))
    assert_one_line(*run_cli(capsys, "eval", "-m", str(tmp_path / "base"), "--adapter", str(tmp_path / "ia3"),
                             "--tasks", "arc_easy", "--limit", "1"), "a IA3 adapter; slmkit loads LoRA adapters")
    assert_one_line(*run_cli(capsys, "bench", str(tmp_path / "base"), "--adapter", str(tmp_path / "adapter")),
                    "--adapter benches the slmkit backend only")

    quantised = tmp_path / "int8"
    assert run_cli(capsys, "quantize", str(tmp_path / "base"), "--out", str(quantised))[0] == 0
    assert_one_line(*run_cli(capsys, "merge", str(quantised), str(tmp_path / "adapter"), "-o", str(tmp_path / "m")),
                    "is a quantised checkpoint; merge into the float base it was made from, then quantise")
    assert not (tmp_path / "m").exists()
    qlora = slmkit.load(quantised, dtype="float32", device="cpu", adapter=tmp_path / "adapter").model
    with pytest.raises(slmkit.SlmError, match="cannot merge a LoRA adapter into a quantised base"):
        merge(qlora)


def test_slm_merge_writes_a_plain_folder_with_the_tuned_logits(tmp_path, capsys):
    model = _tiny_model()
    model.reset_parameters(std=0.1)
    slmkit.save(model, tmp_path / "base")
    apply_lora(model, LoRASpec(r=4, targets=("all-linear",)))
    _randomise_b(model)
    ids = torch.randint(3, 256, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tuned = model(ids)
    save_adapter(model, tmp_path / "adapter", base=str(tmp_path / "base"))
    code, _ = run_cli(capsys, "merge", str(tmp_path / "base"), str(tmp_path / "adapter"), "-o", str(tmp_path / "m"))
    assert code == 0
    merged = slmkit.load(tmp_path / "m", dtype="float32", device="cpu").model
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    with torch.no_grad():
        assert torch.allclose(merged(ids), tuned, atol=1e-5)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        assert torch.allclose(hf(ids).logits, tuned, atol=1e-4)
    # unmerged, through --adapter: the runtime's fingerprint names the adapter, so eval caches keep them apart
    from slmkit.runtime import SlmkitRuntime

    plain = SlmkitRuntime.load(str(tmp_path / "base"))
    adapted = SlmkitRuntime.load(str(tmp_path / "base"), adapter=str(tmp_path / "adapter"))
    assert adapted.fingerprint.startswith(plain.fingerprint + "+lora:")
    with torch.no_grad():
        assert torch.allclose(adapted.model(ids), tuned, atol=1e-5)


def test_a_peft_adapter_with_regex_targets_loads_by_its_weights(tmp_path):
    """peft also takes target_modules as a regular expression; slmkit reads which modules carry an adapter from
    the weights themselves."""
    peft = pytest.importorskip("peft", reason="peft is in the test extras: pip install -e '.[test]'")
    cfg = _tiny(*CASES["llama (SmolLM2, GQA, tied)"])
    hf = _hf_model(cfg)
    hf.save_pretrained(tmp_path / "hf")
    made = peft.get_peft_model(_hf_model(cfg), peft.LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                                                                 target_modules=r".*\.(q_proj|down_proj)"))
    made.eval().save_pretrained(tmp_path / "adapter")
    assert isinstance(json.loads((tmp_path / "adapter/adapter_config.json").read_text())["target_modules"], str)
    ids, mask, positions = _batch(cfg.vocab_size)
    back = slmkit.load(tmp_path / "hf", dtype="float32", device="cpu", adapter=tmp_path / "adapter").model
    assert sorted({s.role for la in lora_layers(back).values() for s in la.slices}) == ["down", "q"]
    real = mask.bool()
    ref = _hf_logits(made, ids, mask, positions)
    assert (ref[real] - _ours(back, ids, mask, positions)[real]).abs().max().item() <= 1e-4
