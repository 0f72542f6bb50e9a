"""Speculative decoding: greedy output is the target's own, token for token, with drafts that agree always, often
or never, and with prompt-lookup drafts; sampled output follows the target's distribution exactly (a chi-square
test on a tiny vocabulary, which rejects the draft's distribution on the same samples), with a draft model and
with lookup's deterministic proposals; caches roll back; bad input is one clear line."""

from __future__ import annotations

import itertools

import pytest
import torch

import slmkit
from slmkit.engine import Engine, SamplingParams
from slmkit.engine.sampling import filter_logits
from slmkit.engine.text import stop_ids_for
from slmkit.engine.lookup import LookupIndex
from slmkit.engine.speculative import LookupDraft, SpeculativeEngine, SpeculativeStats
from slmkit.errors import SlmError
from tests.conftest import CASES, TINY, perturb_


def _model(case: str, seed: int = 0, scale: float = 0.2, **overrides) -> slmkit.Transformer:
    preset, case_overrides = CASES[case]
    model = slmkit.init_model(slmkit.from_name(preset, **{**TINY, **case_overrides, **overrides}), dtype="float32",
                              device="cpu", seed=seed)
    perturb_(model, seed=seed, scale=scale)
    return model.eval()


def _near(model: slmkit.Transformer, scale: float, seed: int = 7) -> slmkit.Transformer:
    """A copy of `model` with its weights nudged: a draft that agrees with it often but not always."""
    import copy

    draft = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale * p.std().clamp(min=1e-3))
    return draft


PROMPTS = [[1, 17, 33, 90, 4], [1, 200], [1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]]


@pytest.mark.parametrize("case", ["llama (SmolLM2, GQA, tied)", "mistral (sliding window)",
                                  "bloom (ALiBi, 6 heads)", "gpt2 (learned positions)"])
@pytest.mark.parametrize("draft_kind", ["same", "near", "other"])
def test_greedy_output_is_the_targets_own(case, draft_kind):
    """Greedy tokens with a draft equal the target's greedy tokens alone, whether the draft always agrees (the
    bonus-token path), sometimes (rollbacks of both caches mid-proposal) or almost never."""
    target = _model(case)
    draft = {"same": lambda: target, "near": lambda: _near(target, 0.05),
             "other": lambda: _model(case, seed=5)}[draft_kind]()
    alone = Engine(target).generate(PROMPTS, 40, SamplingParams(temperature=0))
    for k in (1, 3, 5):
        spec = SpeculativeEngine(Engine(target), Engine(draft), k=k)
        stats = SpeculativeStats()
        got = spec.generate(PROMPTS, 40, SamplingParams(temperature=0), stats=stats)
        assert got == alone, (case, draft_kind, k)
        assert stats.new_tokens == 3 * 40 and stats.cycles > 0
        if draft_kind == "same":
            assert stats.acceptance_rate == 1.0
        if draft_kind == "near" and k == 3:
            assert 0 < stats.acceptance_rate < 1, stats.acceptance_rate  # both paths taken


def test_greedy_stops_at_a_stop_id_inside_the_accepted_drafts():
    target = _model("llama (SmolLM2, GQA, tied)")
    alone = Engine(target).generate(PROMPTS[:1], 30, SamplingParams(temperature=0))[0]
    stop = alone[12]  # a token the target emits: generation must end at its first occurrence
    first = alone.index(stop)
    spec = SpeculativeEngine(Engine(target), Engine(target), k=4)
    got = spec.generate(PROMPTS[:1], 30, SamplingParams(temperature=0), stop_ids=[stop])[0]
    assert got == alone[:first + 1]


def _exact_distribution(model, prompt, n, sampling):
    """P(every n-token continuation) under `model` sampled with `sampling`: (V,)*n flattened, by full forwards."""
    V = model.config.vocab_size
    seqs = torch.tensor(list(itertools.product(range(V), repeat=n)))
    ids = torch.cat([torch.tensor(prompt).expand(len(seqs), -1), seqs], dim=1)
    with torch.no_grad():
        logits = model(ids)[:, len(prompt) - 1:-1]  # (S, n, V): the logits each new token was drawn from
    probs = torch.softmax(filter_logits(logits.reshape(-1, V).float(), sampling), dim=-1).view(len(seqs), n, V)
    return probs.gather(2, seqs[:, :, None]).squeeze(2).prod(dim=1)


def _chi_square_p(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """p-value of Pearson's chi-square test of counts against probs, cells with expected < 5 pooled."""
    expected = probs.double() * counts.sum()
    small = expected < 5
    obs = torch.cat([counts[~small].double(), counts[small].sum().view(1).double()])
    exp = torch.cat([expected[~small], expected[small].sum().view(1)])
    keep = exp > 0
    stat = ((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum()
    df = int(keep.sum()) - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64), stat / 2))


@pytest.mark.parametrize("sampling", [SamplingParams(temperature=1.0), SamplingParams(temperature=0.7, top_k=4)],
                         ids=["t1", "t0.7-top4"])
@pytest.mark.slow
def test_sampled_output_follows_the_targets_distribution(sampling):
    """4000 seeded 3-token samples with a very different draft fit the target's exact distribution over all
    216 continuations (p > 0.001), and the same samples reject the draft's distribution (p < 1e-6)."""
    target = _model("llama (SmolLM2, GQA, tied)", vocab_size=6, seed=11)
    draft = _model("llama (SmolLM2, GQA, tied)", vocab_size=6, seed=5)  # accepts ~30-45% of its proposals
    prompt, n, V = [1, 3, 4, 5], 3, 6
    spec = SpeculativeEngine(Engine(target), Engine(draft), k=2)
    counts = torch.zeros(V ** n)
    stats = SpeculativeStats()
    for seed in range(4000):
        params = SamplingParams(temperature=sampling.temperature, top_k=sampling.top_k, seed=seed)
        a, b, c = spec.generate([prompt], n, params, stats=stats)[0]
        counts[(a * V + b) * V + c] += 1
    assert 0.1 < stats.acceptance_rate < 0.9, stats.acceptance_rate  # accepts and rejects both exercised
    assert _chi_square_p(counts, _exact_distribution(target, prompt, n, sampling)) > 1e-3
    assert _chi_square_p(counts, _exact_distribution(draft, prompt, n, sampling)) < 1e-6


def test_rollback_and_extend_keep_the_cache_consistent():
    """extend(m) then rollback then decode gives the logits of a fresh run over the kept tokens."""
    model = _model("llama (SmolLM2, GQA, tied)")
    engine, fresh = Engine(model), Engine(model)
    engine.setup_caches(1, 64)
    fresh.setup_caches(1, 64)
    with torch.inference_mode():
        engine.prefill([[1, 9, 8]])
        block = engine.extend(torch.tensor([[5, 6, 7, 8]]))
        ref = model(torch.tensor([[1, 9, 8, 5, 6, 7, 8]]))[0, 3:]
        assert torch.allclose(block[0], ref, atol=1e-5)
        engine.rollback(5)  # keep 1 9 8 5 6
        assert engine.cached_ids == [1, 9, 8, 5, 6]
        got = engine.decode(torch.tensor([42]))
        fresh.prefill([[1, 9, 8, 5, 6, 42]])
        want = model(torch.tensor([[1, 9, 8, 5, 6, 42]]))[0, -1]
        assert torch.allclose(got[0], want, atol=1e-5)


def test_bad_input_is_one_clear_line():
    target = _model("llama (SmolLM2, GQA, tied)")
    with pytest.raises(SlmError, match="vocabulary"):
        SpeculativeEngine(Engine(target), Engine(_model("llama (SmolLM2, GQA, tied)", vocab_size=300)))
    with pytest.raises(SlmError, match="k must be"):
        SpeculativeEngine(Engine(target), Engine(target), k=0)
    spec = SpeculativeEngine(Engine(target), Engine(target))
    with pytest.raises(SlmError, match="one prompt at a time"):
        next(spec.stream(PROMPTS[:2], 5))
    with pytest.raises(SlmError, match="repetition_penalty"):
        next(spec.stream(PROMPTS[:1], 5, SamplingParams(temperature=0, repetition_penalty=1.2)))
    with pytest.raises(SlmError, match="empty prompt"):
        next(spec.stream([[]], 5))


@pytest.mark.slow
def test_compiled_verifier_and_draft_equal_eager():
    """With the target's (k+1)-token verify step and the draft's decode step compiled, greedy output is still
    the target's own."""
    target = _model("llama (SmolLM2, GQA, tied)")
    draft = _near(target, 0.05)
    alone = Engine(target).generate(PROMPTS[:1], 24, SamplingParams(temperature=0))
    spec = SpeculativeEngine(Engine(target, compile=True, compile_widths=(4,)), Engine(draft, compile=True), k=3)
    stats = SpeculativeStats()
    got = spec.generate(PROMPTS[:1], 24, SamplingParams(temperature=0), stats=stats)
    if not (spec.target.compile and spec.draft.engine.compile):
        pytest.skip("torch.compile is unavailable here (the engines fell back to eager)")
    assert spec.target._blocks and stats.compile_s > 0
    assert got == alone


# --- prompt lookup ------------------------------------------------------------------------------------------


def test_lookup_index_proposes_what_followed_the_latest_earlier_occurrence():
    index = LookupIndex(max_ngram=3, min_ngram=2)
    index.reset([5, 6, 7, 8, 9, 1, 5, 6, 7, 2, 3, 4, 6, 7])
    assert index.propose(3) == [2, 3, 4]  # "6 7" last occurred before "2 3 4" (not "8 9 1": the latest wins)
    index.append(8)  # "6 7 8" only occurred at the start: the longest match wins over "7 8"
    assert index.propose(4) == [9, 1, 5, 6]
    index.reset([1, 2, 3, 4])
    assert index.propose(4) == []  # the text's own last n-gram never matches itself
    index.reset([1, 2, 9, 2])
    assert index.propose(4) == []  # one repeated token is below min_ngram
    one = LookupIndex(max_ngram=2, min_ngram=1)
    one.reset([1, 2, 9, 2])
    assert one.propose(2) == [9, 2]
    index.reset([4, 5, 6, 4, 5])
    assert index.propose(8) == [6, 4, 5]  # a proposal stops at the end of the history


@pytest.mark.parametrize("case", ["llama (SmolLM2, GQA, tied)", "mistral (sliding window)",
                                  "gpt2 (learned positions)"])
def test_lookup_greedy_output_is_the_targets_own(case):
    """Greedy tokens with lookup drafts equal the target's alone, with prompts that repeat (proposals accepted and
    rejected) and without a match (plain decode steps in between)."""
    target = _model(case)
    prompts = PROMPTS + [[1, 40, 41, 42, 43, 44, 40, 41, 42, 43, 44, 40, 41]]
    alone = Engine(target).generate(prompts, 40, SamplingParams(temperature=0))
    for k, ngram in ((1, 1), (3, 2), (6, 3)):
        spec = SpeculativeEngine(Engine(target), LookupDraft(k, ngram), k=k)
        stats = SpeculativeStats()
        got = spec.generate(prompts, 40, SamplingParams(temperature=0), stats=stats)
        assert got == alone, (case, k)
        assert stats.new_tokens == len(prompts) * 40
        assert 0 < stats.verifies < stats.cycles and stats.drafted > 0, stats  # verifies and plain steps
        assert stats.accepted + stats.cycles >= stats.new_tokens - len(prompts)  # a cycle: its token + accepted (cut at -n)


def test_lookup_on_the_default_model_copies_a_passage(default_gguf):
    """The real default model asked to repeat a sentence: lookup drafts are mostly accepted (several tokens per
    target forward), some rejected, and the greedy reply is the model's own alone."""
    lm = slmkit.load(default_gguf, dtype="float32", device="cpu")
    tok = lm.tokenizer
    text = "The lighthouse keeper counted forty-two ships, painted the railing green, and wrote to his sister."
    ids = tok.apply_chat_template([{"role": "user", "content": f"Repeat this sentence exactly: {text}"}],
                                  tokenize=True)
    greedy, stop = SamplingParams(temperature=0), stop_ids_for(tok)
    alone = Engine(lm.model).generate([ids], 40, greedy, stop)
    stats = SpeculativeStats()
    got = SpeculativeEngine(Engine(lm.model), LookupDraft(5), k=5).generate([ids], 40, greedy, stop, stats=stats)
    assert got == alone and got[0][-1] in stop  # the whole reply, to its end-of-turn token
    assert text[:30] in tok.decode(got[0]), tok.decode(got[0])
    assert stats.tokens_per_cycle > 2 and 0.5 < stats.acceptance_rate < 1, stats


@pytest.mark.slow
def test_lookup_sampled_output_follows_the_targets_distribution():
    """4000 seeded 3-token samples with lookup proposals (one-hot drafts: accepted with probability p(d), else
    drawn from p without d) fit the target's exact distribution over all 216 continuations."""
    target = _model("llama (SmolLM2, GQA, tied)", vocab_size=6, seed=11)
    prompt, n, V = [1, 3, 4, 5, 1, 3, 4, 2, 5, 1], 3, 6  # every bigram-ending leads somewhere: frequent proposals
    spec = SpeculativeEngine(Engine(target), LookupDraft(2, max_ngram=2, min_ngram=1), k=2)
    counts = torch.zeros(V ** n)
    stats = SpeculativeStats()
    sampling = SamplingParams(temperature=1.0)
    for seed in range(4000):
        a, b, c = spec.generate([prompt], n, SamplingParams(temperature=1.0, seed=seed), stats=stats)[0]
        counts[(a * V + b) * V + c] += 1
    assert stats.verifies > 4000 and 0.02 < stats.acceptance_rate < 0.95, (stats.verifies, stats.acceptance_rate)
    assert _chi_square_p(counts, _exact_distribution(target, prompt, n, sampling)) > 1e-3


@pytest.mark.slow
def test_lookup_with_a_compiled_target_pads_short_proposals():
    """A compiled target (decode step and a (k+1)-token verify step): proposals shorter than k are padded to the
    compiled width, and greedy output is still the target's own."""
    target = _model("llama (SmolLM2, GQA, tied)")
    prompts = [[1, 40, 41, 42, 43, 44, 40, 41, 42, 43, 44, 40, 41], PROMPTS[0]]
    alone = Engine(target).generate(prompts, 24, SamplingParams(temperature=0))
    spec = SpeculativeEngine(Engine(target, compile=True, compile_widths=(1, 6)), LookupDraft(5), k=5)
    stats = SpeculativeStats()
    got = spec.generate(prompts, 24, SamplingParams(temperature=0), stats=stats)
    if not spec.target.compile:
        pytest.skip("torch.compile is unavailable here (the engine fell back to eager)")
    assert set(spec.target._blocks) == {6} and stats.compile_s > 0
    assert got == alone and stats.verifies > 0


def test_lookup_bad_ngram_is_one_clear_line():
    with pytest.raises(SlmError, match="lookup n-gram"):
        LookupDraft(4, max_ngram=0)
    with pytest.raises(SlmError, match="lookup n-gram"):
        LookupIndex(max_ngram=2, min_ngram=3)
