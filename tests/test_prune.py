"""Dynamic token pruning (slmkit.model.prune): keep ratio 1 is the unpruned model exactly; the tokens kept are those
transformers' own attention probabilities rank highest; hard pruning runs later layers on fewer tokens; the soft
mask's gradient reaches the thresholds and its choice is the hard one's; a decoder's prefill keeps its last
token; misuse is one line. Tiny perturbed models."""

from __future__ import annotations

import math

import pytest
import torch

import slmkit
from slmkit.errors import SlmError
from slmkit.model.prune import TokenPruning
from tests.conftest import perturb_


def _encoder(head="classify", n_layer=4, **kw):
    cfg = slmkit.from_name("RoBERTa-base", n_layer=n_layer, d_model=64, n_head=4, intermediate_size=128,
                           vocab_size=300, context_length=128, head=head, **({"n_labels": 2} if head == "classify"
                                                                              else {}), **kw)
    model = slmkit.init_model(cfg, device="cpu", seed=0)
    perturb_(model)
    return model.eval()


def _batch(T=40, pad_from=30):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(5, 300, (3, T), generator=g)
    valid = torch.ones(3, T, dtype=torch.bool)
    valid[1, pad_from:] = False
    x[1, pad_from:] = 1  # RoBERTa's pad id
    return x, valid


@torch.no_grad()
def test_keep_ratio_one_is_the_unpruned_model_exactly():
    x, valid = _batch()
    for head in ("classify", "lm", "none"):
        model = _encoder(head)
        p = TokenPruning(4, keep=1.0)
        assert torch.equal(model(x, key_valid=valid, prune=p), model(x, key_valid=valid))
        assert p.lengths == [int(valid.sum())] * 4
    dec = _decoder()
    p = TokenPruning(2, keep=1.0)
    assert torch.equal(dec(x, prune=p), dec(x))


@torch.no_grad()
def test_keeping_every_token_through_the_pruning_path_matches_the_plain_path():
    """Thresholds below every score: the explicit-softmax path that scores tokens gives the plain model's output."""
    x, valid = _batch()
    model = _encoder()
    p = TokenPruning(4, thresholds=[-1.0] * 4)
    assert torch.allclose(model(x, key_valid=valid, prune=p), model(x, key_valid=valid), atol=1e-5)
    assert p.lengths == [int(valid.sum())] * 4


@torch.no_grad()
def test_hard_pruning_keeps_the_tokens_transformers_attention_ranks_highest(tmp_path):
    """Two layers, pruning before the second: the kept tokens are the top ceil(r * n) by the attention they
    received in transformers' first layer (its eager attention probabilities, heads and real queries averaged),
    the first token always among them; the second layer runs on those alone."""
    transformers = pytest.importorskip("transformers", reason="transformers is the reference")
    model = _encoder("none", n_layer=2)
    slmkit.save(model, tmp_path / "m")
    hf = transformers.AutoModel.from_pretrained(tmp_path / "m", attn_implementation="eager").eval()
    x, valid = _batch()
    p = TokenPruning(2, keep=0.5, start=1)
    out = model(x, key_valid=valid, prune=p)
    attn = hf(input_ids=x, attention_mask=valid.long(), output_attentions=True).attentions[0]  # (B, H, T, T)
    for b in range(3):
        n = int(valid[b].sum())
        received = attn[b, :, :n, :n].mean(0).mean(0)  # over heads, then over the row's real queries
        received[0] = float("inf")
        want = sorted(received.topk(math.ceil(0.5 * n)).indices.tolist())
        got = [int(i) for i, ok in zip(p.kept[b], torch.arange(p.kept.shape[1]) < len(want)) if ok]
        assert got == want, (b, got, want)
    assert out.shape[1] == max(math.ceil(0.5 * int(valid[b].sum())) for b in range(3))
    assert p.lengths == [int(valid.sum()), sum(math.ceil(0.5 * int(n)) for n in valid.sum(-1))]


@torch.no_grad()
def test_hard_pruning_runs_later_layers_on_fewer_tokens_by_the_cascade():
    x, valid = _batch()
    model = _encoder()
    p = TokenPruning(4, keep=0.3, start=1)
    logits = model(x, key_valid=valid, prune=p)
    assert logits.shape == (3, 2) and torch.isfinite(logits).all()
    n = valid.sum(-1).float()
    want = [int(valid.sum())] + [int(torch.ceil((1 + (0.3 - 1) * (j / 3)) * n).sum()) for j in (1, 2, 3)]
    assert p.lengths == want and p.lengths[-1] < 0.35 * p.lengths[0]
    assert (p.kept[:, 0] == 0).all()  # the classification token stays first


def test_the_soft_mask_reaches_the_thresholds_and_chooses_as_hard_pruning_does():
    x, valid = _batch()
    model = _encoder()
    soft = TokenPruning(4, thresholds=[0.0, 0.02, 0.025, 0.03], soft=True, temperature=1e-2)
    model(x, key_valid=valid, prune=soft).sum().backward()
    assert soft.threshold.grad is not None and (soft.threshold.grad[1:] != 0).all()
    assert len(soft.masks) == 3 and soft.masks[0].shape == x.shape
    with torch.no_grad():
        cold = TokenPruning(4, thresholds=[0.0, 0.02, 0.025, 0.03], soft=True, temperature=1e-6)
        model(x, key_valid=valid, prune=cold)
        hard = TokenPruning(4, thresholds=[0.0, 0.02, -1.0, -1.0])  # drops before layer 1 alone
        model(x, key_valid=valid, prune=hard)
    first = cold.masks[0] > 0.5  # the first pruning layer sees the same scores either way
    assert hard.lengths[1] == int((first & valid).sum()) < int(valid.sum())
    for b in range(3):
        n = int((first & valid)[b].sum())
        assert hard.kept[b, :n].tolist() == torch.nonzero(first[b] & valid[b]).flatten().tolist()


def _decoder(n_layer=2):
    cfg = slmkit.from_name("SmolLM2-135M", n_layer=n_layer, d_model=64, n_head=4, n_kv_head=2,
                           intermediate_size=128, vocab_size=300)
    model = slmkit.init_model(cfg, device="cpu", seed=0)
    perturb_(model)
    return model.eval()


@torch.no_grad()
def test_a_decoder_prefill_prunes_and_keeps_its_last_token():
    x, _ = _batch(T=32)
    model = _decoder(n_layer=4)
    keep_all = TokenPruning(4, thresholds=[-1.0] * 4)
    assert torch.allclose(model(x, last_only=True, prune=keep_all), model(x, last_only=True), atol=1e-5)
    p = TokenPruning(4, keep=0.4, start=1)
    out = model(x, last_only=True, prune=p)
    assert out.shape == (3, 1, 300) and torch.isfinite(out).all()
    assert (p.kept[:, 0] == 0).all() and (p.kept[:, -1] == 31).all() and p.lengths[-1] == 3 * math.ceil(0.4 * 32)


@pytest.mark.parametrize("make, message", [
    (lambda: TokenPruning(4, keep=0.0), r"keep ratio must be in \(0, 1\]"),
    (lambda: TokenPruning(4, keep=1.5), r"keep ratio must be in \(0, 1\]"),
    (lambda: TokenPruning(4), "a keep ratio or per-layer thresholds"),
    (lambda: TokenPruning(4, thresholds=[0.1, 0.2]), "one threshold per layer"),
])
def test_bad_pruning_options_are_one_line(make, message):
    with pytest.raises(SlmError, match=message):
        make()


@torch.no_grad()
def test_pruning_where_it_cannot_serve_is_one_line():
    x, valid = _batch()
    with pytest.raises(SlmError, match="not every position's vocabulary logits"):
        _encoder("lm")(x, key_valid=valid, prune=TokenPruning(4, keep=0.5))
    with pytest.raises(SlmError, match="is for 2 layers; this model runs 4"):
        _encoder()(x, key_valid=valid, prune=TokenPruning(2, keep=0.5))
    gemma = slmkit.init_model(slmkit.from_name("Gemma-3-270M", n_layer=2, d_model=64, n_head=2, n_kv_head=1,
                                               head_dim=32, intermediate_size=128, vocab_size=300), device="cpu")
    with pytest.raises(SlmError, match="does not support .*sliding windows"):
        gemma(x, last_only=True, prune=TokenPruning(2, keep=0.5))


@torch.no_grad()
def test_drop_and_restore_puts_each_dropped_token_back_as_it_was_when_dropped():
    """restore=True: every position comes out (a masked LM's logits too); a kept token's state is the pruned
    run's, a dropped token's the state it had after the layer before it was dropped (here: the unpruned model's
    first layer, read by a hook)."""
    x, valid = _batch()
    model = _encoder("none", n_layer=2)
    seen = {}
    hook = model.blocks[0].register_forward_hook(lambda m, a, out: seen.setdefault("h0", out))
    model(x, key_valid=valid)
    hook.remove()
    plain = TokenPruning(2, keep=0.5, start=1)
    kept_out = model(x, key_valid=valid, prune=plain)
    p = TokenPruning(2, keep=0.5, start=1, restore=True)
    out = model(x, key_valid=valid, prune=p)
    assert out.shape == (3, 40, 64)
    for b in range(3):
        n = int((torch.arange(plain.kept.shape[1]) < math.ceil(0.5 * int(valid[b].sum()))).sum())
        kept = plain.kept[b, :n]
        assert torch.allclose(out[b, kept], kept_out[b, :n], atol=1e-6)
        dropped = [t for t in range(int(valid[b].sum())) if t not in set(kept.tolist())]
        assert dropped and torch.allclose(out[b, dropped], seen["h0"][b, dropped], atol=1e-6)
    mlm = _encoder("lm")
    logits = mlm(x, key_valid=valid, prune=TokenPruning(4, keep=0.5, restore=True))
    assert logits.shape == (3, 40, 300) and torch.isfinite(logits).all()


def test_soft_restore_mixes_a_masked_tokens_update_with_its_state():
    """Soft with restore: a token masked out keeps its previous state instead of going to 0, and the mask's
    gradient still reaches the thresholds."""
    x, valid = _batch()
    model = _encoder("none", n_layer=2)
    p = TokenPruning(2, thresholds=[0.0, 0.03], soft=True, temperature=1e-2, restore=True)
    out = model(x, key_valid=valid, prune=p)
    out.sum().backward()
    assert p.threshold.grad[1] != 0
    cold = TokenPruning(2, thresholds=[0.0, 0.03], soft=True, temperature=1e-7, restore=True)
    hard = TokenPruning(2, thresholds=[0.0, 0.03], restore=True)
    with torch.no_grad():
        a, b = model(x, key_valid=valid, prune=cold), model(x, key_valid=valid, prune=hard)
    off = (cold.masks[0] < 0.5) & valid
    assert off.any() and torch.allclose(a[off], b[off], atol=1e-5)  # dropped: the layer-0 state either way
