"""Emulated fine-tuning: EFTModel's log-probabilities are the EFT formula over full forwards; it generates through
the Engine with a KV cache per component (greedy equals the argmax of the formula); the evaluator's scorer
gives the formula's log-likelihoods; weight 0 is the large model alone; mismatched vocabularies are one line."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import slmkit
from slmkit.combine.eft import EFTModel
from slmkit.engine import Engine, SamplingParams
from slmkit.errors import SlmError
from tests.conftest import perturb_
from tests.test_eval import needs_data


def _llama(d_model: int, n_layer: int, seed: int, vocab: int = 256) -> slmkit.Transformer:
    cfg = slmkit.from_name("SmolLM2-135M", n_layer=n_layer, d_model=d_model, n_head=4, n_kv_head=2,
                           intermediate_size=2 * d_model, vocab_size=vocab)
    model = slmkit.init_model(cfg, dtype="float32", device="cpu", seed=seed)
    perturb_(model, seed=seed, scale=0.2)
    return model.eval()


@pytest.fixture(scope="module")
def trio():
    """A 'large' base (wider, deeper) and two small models standing for a tuned/base pair, one vocabulary."""
    return _llama(96, 3, 0), _llama(32, 2, 1), _llama(32, 2, 2)


def _formula(large, pairs, ids):
    with torch.no_grad():
        total = F.log_softmax(large(ids).float(), -1)
        for tuned, base, w in pairs:
            total = total + w * (F.log_softmax(tuned(ids).float(), -1) - F.log_softmax(base(ids).float(), -1))
    return F.log_softmax(total, -1)


def test_logprobs_are_the_eft_formula(trio):
    large, tuned, base = trio
    ids = torch.tensor([[1, 5, 9, 77, 3, 200, 14]])
    for pairs in ([(tuned, base, 1.0)], [(tuned, base, 0.5), (base, tuned, 0.25)]):
        eft = EFTModel(large, pairs)
        with torch.no_grad():
            got = eft(ids)
        assert torch.allclose(got, _formula(large, pairs, ids), atol=1e-5)
        assert torch.allclose(got.exp().sum(-1), torch.ones(1, 7), atol=1e-5)  # normalised


def test_weight_zero_is_the_large_model_alone(trio):
    large, tuned, base = trio
    ids = torch.tensor([[1, 5, 9, 77]])
    with torch.no_grad():
        assert torch.allclose(EFTModel(large, [(tuned, base, 0.0)])(ids), F.log_softmax(large(ids), -1), atol=1e-6)


def test_generation_through_the_engine_follows_the_formula(trio):
    """Greedy decoding with per-component KV caches picks, at every step, the argmax of the formula computed by
    full forwards over the sequence so far."""
    large, tuned, base = trio
    pairs = [(tuned, base, 1.5)]
    eft = EFTModel(large, pairs)
    prompt = [1, 17, 33, 90, 4]
    out = Engine(eft).generate([prompt], 12, SamplingParams(temperature=0))[0]
    seq = torch.tensor([prompt + out])
    want = _formula(large, pairs, seq)[0, len(prompt) - 1:-1].argmax(-1).tolist()
    assert out == want
    alone = Engine(large).generate([prompt], 12, SamplingParams(temperature=0))[0]
    assert out != alone  # the small models' delta changes what the large model says


def test_scorer_loglikelihoods_follow_the_formula(trio, default_tokenizer):
    """The evaluator's packed scorer (hidden states side by side, combined in head) gives the formula's sums."""
    from slmkit.eval.lm import SlmkitLM

    large, tuned, base = (_llama(96, 3, 0, 49152), _llama(32, 2, 1, 49152), _llama(32, 2, 2, 49152))
    pairs = [(tuned, base, 1.0)]
    lm = SlmkitLM(EFTModel(large, pairs), default_tokenizer, "eft", batch_size=4)
    requests = [("The cat sat on the", " mat"), ("The cat sat on the", " roof of the house"), ("Two plus two is", " four")]
    got = lm.loglikelihood(requests)
    for (ctx, cont), (logprob, _) in zip(requests, got):
        c, x = lm.encode_pair(ctx, cont)
        ids = torch.tensor([c + x])
        lp = _formula(large, pairs, ids)[0, len(c) - 1:-1]
        want = lp.gather(-1, torch.tensor(x)[:, None]).sum().item()
        assert logprob == pytest.approx(want, abs=1e-3)


def test_mismatched_vocabularies_are_one_clear_line(trio):
    large, tuned, _ = trio
    with pytest.raises(SlmError, match="share one vocabulary"):
        EFTModel(large, [(tuned, _llama(32, 2, 3, vocab=300), 1.0)])
    with pytest.raises(SlmError, match="at least one"):
        EFTModel(large, [])


@needs_data
def test_generate_and_eval_with_eft_flags(capsys, tmp_path, default_tokenizer):
    """`slm generate --eft` and `slm eval --eft` run the combination end to end; with weight 0 the text and the
    scores are the large model's own; bad pairs are one line."""
    from slmkit.cli import main
    from tests.test_errors import assert_one_line

    dirs = {name: str(slmkit.save(_llama(d, n, seed, 49152), tmp_path / name, tokenizer=default_tokenizer))
            for name, d, n, seed in (("large", 64, 2, 0), ("tuned", 32, 1, 1), ("base", 32, 1, 2))}
    gen = ["generate", "The capital of France is", "-m", dirs["large"], "--temperature", "0", "-n", "8"]
    assert main(gen) == 0
    alone = capsys.readouterr().out
    assert main(gen + ["--eft", dirs["tuned"], dirs["base"], "0"]) == 0
    assert capsys.readouterr().out == alone
    assert main(gen + ["--eft", dirs["tuned"], dirs["base"], "2"]) == 0
    assert capsys.readouterr().out != alone
    ev = ["eval", "-m", dirs["large"], "--tasks", "arc_easy", "--limit", "6", "--no-cache", "--json", "--quiet"]
    assert main(ev) == 0
    plain = capsys.readouterr().out
    assert main(ev + ["--eft", dirs["tuned"], dirs["base"], "0"]) == 0
    same = capsys.readouterr().out
    import json

    def scores(text):  # the printed JSON's per-task results, without names and timings
        res = json.loads(text[text.index("\n{") + 1:])
        return {k: v for k, v in res.items() if k in ("results", "tasks", "groups")}

    assert scores(same) == scores(plain) and "arc_easy" in json.dumps(scores(plain))
    for args, needle in [(["--eft", dirs["tuned"]], "TUNED BASE"), (["--eft", dirs["tuned"], dirs["base"], "x"], "weight")]:
        assert_one_line(main(gen + args), capsys.readouterr().err, needle)
