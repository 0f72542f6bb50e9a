"""The generation engine: cached decoding equals full forwards, batches equal single runs, seeds repeat,
sampling filters equal transformers' logits processors, stop strings, prefix reuse, compiled equals eager."""

from __future__ import annotations

import pytest
import torch

import slmkit
from slmkit.engine import Engine, GenerationStats, SamplingParams
from slmkit.engine.rows import RowEngine
from slmkit.engine.sampling import apply_repetition_penalty, filter_logits
from slmkit.engine.speculative import SpeculativeEngine
from slmkit.engine.text import IncrementalDecoder, StopStringMatcher, generate_text
from slmkit.errors import SlmError
from tests.conftest import CASES, TINY, perturb_


def _model(case: str, seed: int = 0) -> slmkit.Transformer:
    preset, overrides = CASES[case]
    model = slmkit.init_model(slmkit.from_name(preset, **{**TINY, **overrides}), dtype="float32", device="cpu",
                              seed=seed)
    perturb_(model, seed=seed, scale=0.2)
    return model.eval()


def _prompts(vocab: int, lengths=(7, 3, 11, 5), seed: int = 3) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (n,), generator=g).tolist() for n in lengths]


@pytest.mark.parametrize("case", list(CASES))
def test_cached_decoding_equals_full_forward(case):
    """Every step's logits from prefill + cached one-token decodes equal an uncached forward of the sequence."""
    model = _model(case)
    engine = Engine(model)
    prompt = _prompts(model.config.vocab_size, (9,))[0]
    engine.setup_caches(1, 32)
    seq, got = list(prompt), []
    with torch.inference_mode():
        logits = engine.prefill([prompt])
        for _ in range(8):
            got.append(logits[0])
            token = int(logits[0].argmax())
            seq.append(token)
            logits = engine.decode(torch.tensor([token]))
        got.append(logits[0])
        full = model(torch.tensor([seq]))[0]  # (T, V), no cache
    ref = full[len(prompt) - 1:]
    assert ref.abs().max() > 0.5, "logits too small for a meaningful comparison"
    assert (torch.stack(got) - ref).abs().max().item() <= 2e-5  # fp32 sums in another order (thread count)


@pytest.mark.parametrize("case", ["llama (SmolLM2, GQA, tied)", "gemma2 (softcaps, sandwich norms, local/global)",
                                  "gpt2 (learned positions)", "bloom (ALiBi, 6 heads)", "phi (partial rotary, parallel)"])
def test_batch_of_four_equals_four_single_runs(case):
    """Left-padded prompts of different lengths: the same tokens and logits as one prompt at a time."""
    model = _model(case)
    prompts = _prompts(model.config.vocab_size)
    greedy = SamplingParams(temperature=0)
    batched = Engine(model).generate(prompts, 10, greedy)
    singles = [Engine(model).generate([p], 10, greedy)[0] for p in prompts]
    assert batched == singles
    # the logits too, not only their argmax
    engine = Engine(model)
    engine.setup_caches(4, 32)
    with torch.inference_mode():
        batch_logits = engine.prefill(prompts)
        one = Engine(model)
        one.setup_caches(1, 32)
        for b, p in enumerate(prompts):
            assert (one.prefill([p])[0] - batch_logits[b]).abs().max().item() <= 1e-5
    sampled = SamplingParams(temperature=1.0, top_k=50, seed=7)
    assert Engine(model).generate(prompts, 10, sampled) == [Engine(model).generate([p], 10, sampled)[0]
                                                            for p in prompts]


def test_same_seed_same_tokens_different_seed_different_tokens():
    model = _model("llama (SmolLM2, GQA, tied)")
    prompt = _prompts(model.config.vocab_size, (6,))
    engine = Engine(model)

    def run(seed):
        return engine.generate(prompt, 24, SamplingParams(temperature=1.5, seed=seed))[0]

    assert run(11) == run(11)
    assert run(11) != run(12)


def test_stop_ids_end_rows_independently():
    model = _model("llama (SmolLM2, GQA, tied)")
    prompts = _prompts(model.config.vocab_size, (5, 8))
    free = Engine(model).generate(prompts, 12, SamplingParams(temperature=0))
    stop = free[0][3]  # row 0's 4th token becomes a stop id
    stats = GenerationStats()
    rows = Engine(model).generate(prompts, 12, SamplingParams(temperature=0), stop_ids=[stop], stats=stats)
    assert rows[0] == free[0][: free[0].index(stop) + 1]
    cut1 = free[1].index(stop) + 1 if stop in free[1] else len(free[1])
    assert rows[1] == free[1][:cut1]
    assert stats.finish[0] == "stop" and stats.new_tokens == len(rows[0]) + len(rows[1])


def test_sampling_filters_match_transformers():
    """top-k, top-p, min-p, temperature and repetition penalty keep the same tokens as transformers' processors."""
    tf = pytest.importorskip("transformers")
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 500, generator=g) * 3
    ids = torch.randint(0, 500, (3, 20), generator=g)
    seen = torch.zeros(3, 500, dtype=torch.bool).scatter_(1, ids, True)
    ref = tf.RepetitionPenaltyLogitsProcessor(1.3)(ids, logits.clone())
    assert torch.allclose(apply_repetition_penalty(logits, seen, 1.3), ref)
    for params, proc in [
        (SamplingParams(temperature=0.7, top_k=40), [tf.TemperatureLogitsWarper(0.7), tf.TopKLogitsWarper(40)]),
        (SamplingParams(temperature=1.0, top_p=0.9), [tf.TopPLogitsWarper(0.9)]),
        (SamplingParams(temperature=1.0, min_p=0.05), [tf.MinPLogitsWarper(0.05)]),
    ]:
        expect = logits.clone()
        for p in proc:
            expect = p(ids, expect)
        got = filter_logits(logits, params)
        assert torch.equal(torch.isinf(got), torch.isinf(expect)), params
        keep = ~torch.isinf(expect)
        assert torch.allclose(got[keep], expect[keep])


def test_sampling_follows_the_filtered_distribution():
    """The exponential-race sampler draws tokens with the softmax probabilities (chi-square-style bound)."""
    from slmkit.engine.sampling import Sampler

    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    sampler = Sampler(SamplingParams(temperature=1.0, seed=0), 1, 4, torch.device("cpu"))
    counts = torch.zeros(4)
    for _ in range(4000):
        counts[sampler(probs.log()[None])] += 1
    assert (counts / 4000 - probs).abs().max() < 0.03


def test_bad_sampling_params_are_one_line_errors():
    for kw in [dict(temperature=-1), dict(top_p=0), dict(top_p=1.5), dict(min_p=1), dict(top_k=-2),
               dict(repetition_penalty=0)]:
        with pytest.raises(SlmError):
            SamplingParams(**kw)


def test_prefix_reuse_equals_a_fresh_prefill():
    """A chat's next turn runs only its new tokens and gets the logits a fresh prefill of the whole gets."""
    model = _model("llama (SmolLM2, GQA, tied)")
    engine = Engine(model)
    first = _prompts(model.config.vocab_size, (8,))[0]
    reply = engine.generate([first], 5, SamplingParams(temperature=0))[0]
    second = first + reply + [7, 8, 9]
    with torch.inference_mode():
        reused = engine.prefill([second], reuse_prefix=True)
        fresh = Engine(model)
        fresh.setup_caches(1, 64)
        ref = fresh.prefill([second])
    assert (reused - ref).abs().max().item() <= 1e-5


def test_cache_full_and_empty_prompt_errors():
    model = _model("llama (SmolLM2, GQA, tied)")
    engine = Engine(model)
    engine.setup_caches(1, 8)
    with pytest.raises(SlmError, match="empty prompt"):
        engine.prefill([[]])
    with pytest.raises(SlmError, match="shorten the prompt"):
        engine.prefill([list(range(3, 11))])
    with torch.inference_mode():
        engine.prefill([[3, 4, 5, 6, 7, 8, 9]])
        engine.decode(torch.tensor([3]))
        with pytest.raises(SlmError, match="cache is full"):
            engine.decode(torch.tensor([3]))


def test_stop_string_matcher_holds_back_possible_starts():
    m = StopStringMatcher(["\n\nUser:", "###"])
    assert m.feed("Hello") == ("Hello", False)
    assert m.feed(" world\n") == (" world", False)  # "\n" may start "\n\nUser:"
    assert m.feed("\nUs") == ("", False)
    assert m.feed("e") == ("", False)
    assert m.feed("r: hi") == ("", True)
    m = StopStringMatcher(["###"])
    assert m.feed("a#") == ("a", False)
    assert m.feed("b") == ("#b", False)
    assert m.flush() == ""


class _FakeTok:
    """Byte-level decode with replacement characters for incomplete UTF-8, as `tokenizers` decodes byte BPE."""

    def decode(self, ids, skip_special_tokens=True):
        return bytes(ids).decode("utf-8", errors="replace")


class _ByteTok(_FakeTok):
    eos_id = None

    def encode(self, text, add_special_tokens=True):
        return list(text.encode())

    def token_to_id(self, name):
        return None


@pytest.mark.parametrize("speculative", [False, True])
def test_stop_strings_end_the_batch_early_with_the_same_text(speculative):
    case = next(iter(CASES))
    model = _model(case)
    engine = SpeculativeEngine(Engine(model), Engine(_model(case, seed=1)), k=3) if speculative else Engine(model)
    tok, prompts, n = _ByteTok(), ["ab", "xyz", "q"], 60
    greedy = SamplingParams(temperature=0)
    full = [c.text for c in generate_text(engine, tok, prompts, n, greedy)]

    def window(text, start):  # a 2-character stop string from the row's text (no replacement characters)
        i = next(i for i in range(start, len(text) - 1) if "\ufffd" not in text[i:i + 2])
        return text[i:i + 2]

    stop = [window(full[0], 4), window(full[1], 9), window(full[2], 14)]
    stats = GenerationStats()
    got = generate_text(engine, tok, prompts, n, greedy, stop=stop, stats=stats)
    for text, c in zip(full, got):
        cut = min(i for i in (text.find(s) for s in stop) if i >= 0)
        assert c.text == text[:cut] and c.finish == "stop"
        assert len(c.token_ids) < n  # the row ended soon after its stop string, not at max_new_tokens
    assert stats.new_tokens < len(prompts) * n


def test_incremental_decoder_never_splits_characters():
    text = "naïve café — 東京 🚀!"
    dec = IncrementalDecoder(_FakeTok())
    pieces = [dec.push(b) for b in text.encode()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
    cut = text.encode()[:-2]  # generation ended inside the rocket's 4 bytes: flush gives what a full decode gives
    dec = IncrementalDecoder(_FakeTok())
    pieces = [dec.push(b) for b in cut] + [dec.flush()]
    assert "".join(pieces) == cut.decode("utf-8", "replace") and pieces[-1].endswith("\ufffd")


@pytest.mark.slow
def test_compiled_decode_equals_eager():
    """The torch.compile'd decode step (static shapes, freezing) gives the eager step's tokens and logits."""
    model = _model("llama (SmolLM2, GQA, tied)")
    prompts = _prompts(model.config.vocab_size, (7, 4))
    eager = Engine(model)
    compiled = Engine(model, compile=True)
    eager.setup_caches(2, 32)
    compiled.setup_caches(2, 32)
    if not compiled.compile:
        pytest.skip("torch.compile is unavailable here (the engine fell back to eager)")
    assert compiled.compile_s is not None and compiled.compile_s > 0
    with torch.inference_mode():
        a, b = eager.prefill(prompts), compiled.prefill(prompts)
        for _ in range(6):
            token = a.argmax(-1)
            assert torch.equal(token, b.argmax(-1))
            assert (a - b).abs().max().item() <= 1e-4
            a, b = eager.decode(token), compiled.decode(token)


def test_repetition_penalty_in_the_loop_matches_transformers():
    """Greedy with a repetition penalty over prompt + generated tokens, batched and left-padded, picks the
    tokens that full forwards plus transformers' RepetitionPenaltyLogitsProcessor pick."""
    tf = pytest.importorskip("transformers")
    model = _model("llama (SmolLM2, GQA, tied)")
    prompts = _prompts(model.config.vocab_size, (6, 3))
    got = Engine(model).generate(prompts, 12, SamplingParams(temperature=0, repetition_penalty=1.8))
    penalty = tf.RepetitionPenaltyLogitsProcessor(1.8)
    for prompt, row in zip(prompts, got):
        seq = torch.tensor([prompt])
        with torch.no_grad():
            for _ in range(12):
                logits = penalty(seq, model(seq)[:, -1])
                seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], 1)
        assert row == seq[0, len(prompt):].tolist()
    assert got != Engine(model).generate(prompts, 12, SamplingParams(temperature=0)), "the penalty changed nothing"


@pytest.mark.parametrize("case", ["llama (SmolLM2, GQA, tied)", "gemma2 (softcaps, sandwich norms, local/global)",
                                  "bloom (ALiBi, 6 heads)", "gpt2 (learned positions)"])
def test_rows_at_different_lengths_equal_single_runs(case):
    """Requests joining and leaving cache rows at different times get the tokens each gets alone."""
    model = _model(case)
    prompts = _prompts(model.config.vocab_size, (7, 3, 11, 5, 9))
    want = [Engine(model).generate([p], 10, SamplingParams(temperature=0))[0] for p in prompts]
    engine = RowEngine(model)
    engine.setup_caches(3, 64)
    got: dict[int, list[int]] = {i: [] for i in range(len(prompts))}
    rows: dict[int, int] = {}  # request -> row
    tokens, lengths = torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long)
    waiting, step = list(range(len(prompts))), 0
    with torch.inference_mode():
        while waiting or rows:
            if waiting and len(rows) < 3 and step % 3 == 0:  # a new request every third step, into the lowest row
                i = waiting.pop(0)
                row = min(set(range(3)) - set(rows.values()))
                t = int(engine.prefill_row(row, prompts[i]).argmax())
                got[i].append(t)
                rows[i], tokens[row], lengths[row] = row, t, len(prompts[i])
            step += 1
            for i, row in list(rows.items()):
                if len(got[i]) == 10:
                    del rows[i]
                    tokens[row] = lengths[row] = 0
            if not rows:
                continue
            logits = engine.decode_rows(tokens, lengths, busy=max(rows.values()) + 1)
            for i, row in rows.items():
                t = int(logits[row].argmax())
                got[i].append(t)
                tokens[row], lengths[row] = t, lengths[row] + 1
    assert [got[i] for i in range(len(prompts))] == want


@pytest.mark.slow
def test_compiled_row_decode_equals_eager():
    """The compiled continuous-batching step (per-row slots, static batch) gives the eager step's logits."""
    model = _model("llama (SmolLM2, GQA, tied)")
    prompts = _prompts(model.config.vocab_size, (7, 4, 9))
    eager, compiled = RowEngine(model), RowEngine(model, compile=True)
    eager.setup_caches(3, 32)
    compiled.setup_caches(3, 32)
    if not compiled.compile:
        pytest.skip("torch.compile is unavailable here (the engine fell back to eager)")
    with torch.inference_mode():
        lengths = torch.tensor([len(p) for p in prompts])
        for row, p in enumerate(prompts):
            assert torch.equal(eager.prefill_row(row, p), compiled.prefill_row(row, p))
        tokens = torch.tensor([3, 4, 5])
        for _ in range(5):
            a, b = eager.decode_rows(tokens, lengths, busy=3), compiled.decode_rows(tokens, lengths)
            assert (a - b).abs().max().item() <= 1e-4
            tokens, lengths = a.argmax(-1), lengths + 1


def test_text_stream_is_the_one_state_machine(default_tokenizer):
    """TextStream (used by stream_text, generate_text, the server and eval): the pieces add up to the full decode
    cut at the first stop string; a stop id ends it with the held text; running out flushes what was held."""
    from slmkit.engine.text import TextStream

    tok = default_tokenizer
    text = "Answer: 42 dollars, café ☕.\nQuestion: next one"
    ids = tok.encode(text, add_special_tokens=False)
    s = TextStream(tok, ["\nQuestion:"])
    pieces = []
    for t in ids:
        pieces.append(s.push(t))
        if s.done:
            break
    pieces.append(s.close())
    assert "".join(pieces) == s.text == "Answer: 42 dollars, café ☕." and s.finish == "stop" and s.stopped_by_string
    assert s.push(ids[0]) == "" and s.ids == s.text_ids  # ended: nothing more; no stop id among the ids

    eos = tok.eos_id
    s = TextStream(tok, ["never"], [eos])
    got = "".join(s.push(t) for t in ids[:6]) + s.push(eos) + s.close()
    assert got == tok.decode(ids[:6]) and s.finish == "stop" and not s.stopped_by_string and s.ids[-1] == eos
    assert s.text_ids == ids[:6]

    s = TextStream(tok, ["dollars!"])  # "dollars" could start the stop string: held back until the end
    shown = "".join(s.push(t) for t in tok.encode("42 dollars", add_special_tokens=False))
    assert not shown.endswith("dollars") and shown + s.close() == "42 dollars" and s.finish == "length"


def test_models_honour_the_contract_and_engines_own_their_caches():
    """Transformer and EFTModel are LanguageModels; the model keeps no cache, so two engines on one model
    interleave without disturbing each other (each gives what it gives alone)."""
    from slmkit.combine.eft import EFTModel
    from slmkit.model.contract import LanguageModel

    case = next(iter(CASES))
    model, other = _model(case), _model(case, seed=1)
    assert isinstance(model, LanguageModel) and isinstance(EFTModel(model, [(other, model, 1.0)]), LanguageModel)
    assert not hasattr(model, "caches")
    greedy = SamplingParams(temperature=0)
    a, b = _prompts(model.config.vocab_size, (6, 9))
    alone = [Engine(model).generate([p], 8, greedy)[0] for p in (a, b)]
    first, second = Engine(model), Engine(model)
    first.setup_caches(1, 32)
    second.setup_caches(1, 32)
    ta, tb = first.prefill([a]).argmax(-1), second.prefill([b]).argmax(-1)
    out_a, out_b = [int(ta)], [int(tb)]
    for _ in range(7):  # the steps interleave on one model
        ta, tb = first.decode(ta).argmax(-1), second.decode(tb).argmax(-1)
        out_a.append(int(ta))
        out_b.append(int(tb))
    assert [out_a, out_b] == alone
    assert first.caches is not second.caches and first.caches[0].k.data_ptr() != second.caches[0].k.data_ptr()
