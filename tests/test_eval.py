"""`slm eval`: batch-size invariance, the request cache, rolling log-likelihood, the CLI's outputs and errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from slmkit.eval.data import shared_data_dir
from slmkit.eval.evaluator import prepare, run_requests, score
from slmkit.eval.lm import load_lm
from slmkit.eval.tasks import resolve
from tests.conftest import CASES, TINY, perturb_
from tests.test_errors import assert_one_line, run_cli

needs_data = pytest.mark.skipif(shared_data_dir() is None, reason="no evaluation data: set SLMKIT_DATA or put "
                                                                  "../shared/data beside the checkout")


@needs_data
@pytest.mark.parametrize("shots", [0, 5])
def test_batch_size_1_and_8_give_identical_loglikelihoods(tiny_eval_dir, shots):
    names = ["hellaswag", "arc_easy", "winogrande", "lambada_openai", "mmlu_anatomy"]
    runs = {}
    for bs in (1, 8):
        lm = load_lm(tiny_eval_dir, "slmkit", "fp32", "cpu", batch_size=bs)
        runs[bs] = {}
        for task in resolve(names):
            prep = prepare(task, shots, limit=16)
            results = run_requests(lm, prep, None, progress=False)
            runs[bs][task.name] = (results, score(prep, results))
    for name in names:
        assert runs[1][name][0] == runs[8][name][0], name  # every (logprob, is_greedy), bit for bit
        assert runs[1][name][1] == runs[8][name][1], name


@pytest.mark.parametrize("case", list(CASES))
def test_packed_choices_score_as_separate_sequences(case):
    """Every family: a context with its choices packed in one row (tree mask, branch positions) gives the
    log-likelihoods of running context + choice as separate plain sequences."""
    import slmkit
    from slmkit.eval.scorer import Group, score_groups

    preset, overrides = CASES[case]
    model = slmkit.init_model(slmkit.from_name(preset, **{**TINY, **overrides}), device="cpu", seed=0)
    perturb_(model)
    g = torch.Generator().manual_seed(0)
    draw = lambda n: torch.randint(3, 256, (n,), generator=g).tolist()  # noqa: E731
    groups = [Group(draw(9), [draw(1), draw(4), draw(7)]), Group(draw(3), [draw(5)]), Group(draw(12), [draw(2), draw(2)])]
    for group in groups:
        (packed,) = score_groups(model, [group])
        for cont, (ll, greedy) in zip(group.continuations, packed):
            seq = torch.tensor([group.context + cont[:-1]])
            with torch.no_grad():
                logp = model(seq).float().log_softmax(-1)[0, len(group.context) - 1 :]
            ref = logp[torch.arange(len(cont)), torch.tensor(cont)].double().sum().item()
            # float32 rounding only (these random models give log-likelihoods of hundreds); a wrong mask or
            # position is off by whole units
            assert math.isclose(ll, ref, rel_tol=1e-6, abs_tol=1e-4), (case, ll, ref)
            assert greedy == bool((logp.argmax(-1) == torch.tensor(cont)).all())


def test_rolling_loglikelihood_equals_one_full_forward(tiny_eval_dir):
    """Windows of max_length tokens (here 64) sum to the full sequence's log-likelihood."""
    lm = load_lm(tiny_eval_dir, "slmkit", "fp32", "cpu", batch_size=4, max_length=64)
    text = "The quick brown fox jumps over the lazy dog. " * 20
    (ll,) = lm.loglikelihood_rolling([text])
    ids = lm.tok_encode(text)
    assert len(ids) > 3 * 64
    # the reference: each window scored by a plain forward pass over [context + continuation]
    total = 0.0
    for ctx, cont in lm.rolling_windows(text):
        seq = torch.tensor([ctx + cont])
        with torch.no_grad():
            logp = lm.model(seq).float().log_softmax(-1)[0]
        total += sum(logp[len(ctx) - 1 + j, t].item() for j, t in enumerate(cont))
    assert sum(len(c) for _, c in lm.rolling_windows(text)) == len(ids)
    assert math.isclose(ll, total, abs_tol=1e-3)


def test_shared_context_rows_are_split_at_the_branch_budget(tiny_eval_dir, monkeypatch):
    """Every document's first rolling window starts from the same one-token context; past BRANCH_BUDGET branch
    tokens they go to separate rows (one row of all of them once needed 64 GB), with the same results."""
    import slmkit.eval.lm as lm_module
    import slmkit.eval.scorer as scorer

    lm = load_lm(tiny_eval_dir, "slmkit", "fp32", "cpu", batch_size=4, max_length=64)
    texts = [f"Document {i}: " + "the quick brown fox jumps over the lazy dog. " * (8 + i) for i in range(4)]
    packed = lm.loglikelihood_rolling(texts)
    rows = []
    real = scorer.score_groups
    monkeypatch.setattr(scorer, "score_groups", lambda model, groups, prefix=None:
                        rows.extend(g.length for g in groups) or real(model, groups, prefix))
    monkeypatch.setattr(lm_module, "BRANCH_BUDGET", 100)
    split = lm.loglikelihood_rolling(texts)
    assert max(rows) <= 1 + 100 and len(rows) >= 8
    assert all(math.isclose(a, b, abs_tol=1e-4) for a, b in zip(packed, split))


@needs_data
def test_cache_resumes_a_run(tiny_eval_dir, tmp_path):
    from slmkit.eval.cache import RequestCache

    lm = load_lm(tiny_eval_dir, "slmkit", "fp32", "cpu", batch_size=8)
    task = resolve(["piqa"])[0]
    cache = RequestCache(tmp_path / "c.sqlite", lm.fingerprint)
    first = run_requests(lm, prepare(task, 0, limit=10), cache, progress=False)  # an "interrupted" run
    calls = []
    real = lm.score_tokens
    lm.score_tokens = lambda reqs, on_done=None: (calls.append(len(reqs)), real(reqs, on_done))[1]
    second = run_requests(lm, prepare(task, 0, limit=20), cache, progress=False)
    assert calls == [20]  # only the 10 new documents' 2 choices each were computed
    assert second[:10] == first
    planned = []
    real_plan = lm.plan
    lm.plan = lambda reqs: (planned.append(reqs), real_plan(reqs))[1]
    assert run_requests(lm, prepare(task, 0, limit=20), cache, progress=False) == second and calls == [20]
    assert planned == [None, None]  # all from the cache: nothing tokenised for a prefix plan


@needs_data
def test_cli_sweep_writes_results_and_gain(tiny_eval_dir, tmp_path, capsys):
    from slmkit.cli import main

    out = tmp_path / "res"
    rc = main(["eval", "-m", tiny_eval_dir, "--tasks", "arc_easy,piqa,mmlu_anatomy,mmlu_astronomy",
               "--shots", "0,1", "--limit", "8", "-o", str(out), "--no-cache", "-q"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    res = json.loads((out / "results.json").read_text())
    assert set(res["results"]) == {"0", "1"}
    assert res["data"]["arc_easy"]["eval_split"] == "test" and res["data"]["arc_easy"]["n"] == 8
    assert res["groups"]["0"]["mmlu"]["n_tasks"] == 2 and not res["groups"]["0"]["mmlu"]["complete"]
    gain = res["icl_gain"]["1"]["arc_easy"]
    assert gain == pytest.approx(res["results"]["1"]["arc_easy"]["acc_norm"] - res["results"]["0"]["arc_easy"]["acc_norm"])
    assert res["versions"]["torch"] == torch.__version__ and res["seeds"]["fewshot"] == 1234
    md = (out / "results.md").read_text()
    assert "| arc_easy | acc_norm |" in md and "gain 1" in md and "problem_solving" in md
    assert "| arc_easy | acc_norm |" in captured.out


def test_unknown_task_lists_the_valid_ones(tiny_eval_dir, capsys):
    assert_one_line(*run_cli(capsys, "eval", "-m", tiny_eval_dir, "--tasks", "hellaswg"),
                    "unknown task 'hellaswg'", "hellaswag", "gsm8k", "commonsense_reasoning")


def test_missing_data_says_where_it_looked(tiny_eval_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SLMKIT_DATA", str(tmp_path / "nowhere"))
    assert_one_line(*run_cli(capsys, "eval", "-m", tiny_eval_dir, "--tasks", "gsm8k", "--data", "shared",
                             "--no-cache"), "no data for task 'gsm8k'", "SLMKIT_DATA")


@needs_data
def test_too_many_shots_is_an_error(tiny_eval_dir, capsys):
    assert_one_line(*run_cli(capsys, "eval", "-m", tiny_eval_dir, "--tasks", "mmlu_anatomy", "--shots", "6",
                             "--limit", "2", "--no-cache"), "6 shots but its few-shot split (dev) holds only 5")


def test_bad_shots_argument(tiny_eval_dir, capsys):
    assert_one_line(*run_cli(capsys, "eval", "-m", tiny_eval_dir, "--shots", "0,x"), "--shots")


def test_malformed_rows_are_skipped_or_fail_past_the_threshold(tmp_path, monkeypatch):
    from slmkit.errors import SlmError
    from slmkit.eval.data import load_task_data

    gsm = tmp_path / "eval" / "gsm8k"
    gsm.mkdir(parents=True)
    good = [json.dumps({"question": f"q{i}", "answer": f"#### {i}"}) for i in range(300)]
    (gsm / "train.jsonl").write_text("\n".join(good) + "\n")
    (gsm / "test.jsonl").write_text("\n".join(good + ["{not json", json.dumps({"question": "no answer"})]) + "\n")
    monkeypatch.setenv("SLMKIT_DATA", str(tmp_path))
    splits = load_task_data("gsm8k", "shared")
    assert len(splits.docs["test"]) == 300  # 2 of 302 malformed: skipped
    (gsm / "test.jsonl").write_text("\n".join(good[:10] + ["{bad"] * 5) + "\n")
    with pytest.raises(SlmError, match="5 of 15 rows .* are malformed"):
        load_task_data("gsm8k", "shared")


@pytest.mark.slow
@pytest.mark.llamacpp
def test_llamacpp_backend_agrees_with_slmkit(default_gguf, tmp_path):
    """The default model's exact weights as an F32 GGUF through llama.cpp: log-likelihoods close to slmkit's
    (llama.cpp accumulates differently; seen up to 7e-3 on sums of several tokens), same greedy flags and
    the same greedy generation."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from slmkit.model.gguf import write_dequantized

    f32 = write_dequantized(default_gguf, tmp_path / "smollm2-f32.gguf", "F32")
    requests = [("Question: Which is a planet?\nAnswer:", c) for c in (" Mars", " the Moon", " a comet tail")]
    requests += [("The capital of France is", " Paris"), ("", "Hello world")]
    gen = [("Question: What is 2+3?\nAnswer:", {"until": ["Question:", "\n\n"], "max_gen_toks": 24})]
    cpp = load_lm(str(f32), "llamacpp")
    try:
        ours_cpp, gen_cpp = cpp.loglikelihood(requests), cpp.generate_until(gen)
    finally:
        cpp.close()
    slm = load_lm(str(default_gguf), "slmkit", "fp32", "cpu")
    ours = slm.loglikelihood(requests)
    for (a, ga), (b, gb) in zip(ours_cpp, ours):
        assert abs(a - b) < 2e-2 and ga == gb
    assert gen_cpp == slm.generate_until(gen)
