"""Shared few-shot prefixes in `slm eval`: which prefixes are shared, rows that continue a prefix's cached keys
score as whole rows do (every family), and results stay independent of the cache, the batch and the plan."""

from __future__ import annotations

import math

import pytest
import torch

from slmkit.eval.data import shared_data_dir
from slmkit.eval.evaluator import prepare, run_requests, score
from slmkit.eval.lm import load_lm
from slmkit.eval.scorer import MIN_SHARED, Group, encode_prefix, score_groups, shared_prefixes
from slmkit.eval.tasks import resolve
from tests.conftest import CASES, TINY, perturb_

needs_data = pytest.mark.skipif(shared_data_dir() is None, reason="no evaluation data: set SLMKIT_DATA or put "
                                                                  "../shared/data beside the checkout")


def test_shared_prefixes_finds_the_demonstrations_and_leaves_the_rest():
    demo_a, demo_b = list(range(100, 400)), list(range(1000, 1200))  # two subjects' description + shots
    a = [tuple(demo_a + [7, i, i + 1]) for i in range(10)]
    b = [tuple(demo_b + [i] * 5) for i in range(5)]
    lone = tuple(demo_a[:40] + [9, 9, 9])  # shares 40 tokens with subject a: not worth cutting a's prefix to 40
    short = [tuple([5] * (MIN_SHARED - 1) + [i, i]) for i in range(50)]  # too short a prefix to share
    plan = shared_prefixes(a + b + [lone] + short)
    assert {plan[c] for c in a} == {len(demo_a) + 1} and {plan[c] for c in b} == {len(demo_b)}
    assert lone not in plan and not any(c in plan for c in short)
    # a context that is the prefix of another keeps its last token in its row
    whole = tuple(range(50, 450))
    plan = shared_prefixes([whole] + [whole + (i,) for i in range(3)])
    assert plan[whole] == len(whole) - 1 and plan[whole + (0,)] == len(whole) - 1
    assert shared_prefixes([]) == {}


@pytest.mark.parametrize("case", list(CASES))
def test_rows_after_a_shared_prefix_score_as_whole_rows(case):
    """Every family (sliding windows, ALiBi, soft-caps included): groups scored after a prefix computed once,
    packed and plain, give the log-likelihoods and greedy flags of scoring each whole context."""
    import slmkit

    preset, overrides = CASES[case]
    model = slmkit.init_model(slmkit.from_name(preset, **{**TINY, **overrides}), device="cpu", seed=0)
    perturb_(model)
    g = torch.Generator().manual_seed(1)
    draw = lambda n: torch.randint(3, 256, (n,), generator=g).tolist()  # noqa: E731
    head = draw(11)
    packed = [Group(head + draw(3), [draw(1), draw(4), draw(2)]), Group(head + draw(6), [draw(3), draw(2)])]
    plain = [Group(head + draw(2), [draw(4)]), Group(head + draw(1), [draw(1)])]  # one length bucket
    prefix = encode_prefix(model, head)
    for batch in (packed, plain):
        whole = score_groups(model, batch)
        for grp in batch:
            grp.shared = len(head)
        shared = score_groups(model, batch, prefix)
        for w, s in zip(whole, shared):
            for (ll_w, gr_w), (ll_s, gr_s) in zip(w, s):
                assert math.isclose(ll_w, ll_s, rel_tol=1e-6, abs_tol=1e-4), (case, ll_w, ll_s)
                assert gr_w == gr_s
    with pytest.raises(ValueError, match="shared prefix"):
        score_groups(model, [Group(draw(14), [draw(2)], shared=len(head))], prefix)


@needs_data
def test_five_shot_mmlu_with_shared_prefixes_equals_whole_prompts(tiny_eval_dir, monkeypatch):
    """The 5-shot prompts of an MMLU subject share their description and demonstrations: computed once, the
    results equal scoring every prompt whole (log-likelihoods to float32 rounding, identical metrics)."""
    import slmkit.eval.scorer as scorer

    task = resolve(["mmlu_anatomy"])[0]
    lm = load_lm(tiny_eval_dir, "slmkit", "fp32", "cpu", batch_size=8)
    prep = prepare(task, 5, limit=24)
    calls = []
    real = scorer.encode_prefix
    monkeypatch.setattr(scorer, "encode_prefix", lambda model, tokens: calls.append(len(tokens)) or real(model, tokens))
    shared = run_requests(lm, prep, None, progress=False)
    assert len(calls) == 1 and calls[0] > 200  # the subject's description and five shots, once
    monkeypatch.setattr(scorer, "MIN_SHARED", 10**9)
    whole = run_requests(lm, prep, None, progress=False)
    assert max(abs(a[0] - b[0]) for ra, rb in zip(shared, whole) for a, b in zip(ra, rb)) < 1e-5
    assert [[a[1] for a in r] for r in shared] == [[b[1] for b in r] for r in whole]
    assert score(prep, shared) == score(prep, whole)


@needs_data
def test_shared_prefixes_do_not_depend_on_what_the_cache_held(tiny_eval_dir, tmp_path):
    """The prefixes are planned from all of a task's requests, so a resumed run (half of them cached, scored
    in an earlier run) gives bit-for-bit what one uninterrupted run gives."""
    from slmkit.eval.cache import RequestCache

    task = resolve(["mmlu_anatomy"])[0]
    lm = load_lm(tiny_eval_dir, "slmkit", "fp32", "cpu", batch_size=3)
    full = run_requests(lm, prepare(task, 5, limit=20), None, progress=False)
    cache = RequestCache(tmp_path / "c.sqlite", lm.fingerprint)
    run_requests(lm, prepare(task, 5, limit=20), cache, progress=False)
    cache.close()
    # a cache holding the odd documents only: the even ones are scored again, with the same prefix
    cache = RequestCache(tmp_path / "c.sqlite", lm.fingerprint)
    prep = prepare(task, 5, limit=20)
    keep = {cache.key(k, a) for d, reqs in enumerate(prep.requests) if d % 2 for k, a in reqs}
    cache.db.execute("DELETE FROM results WHERE key NOT IN (%s)" % ",".join("?" * len(keep)), list(keep))
    cache.db.commit()
    assert run_requests(lm, prep, cache, progress=False) == full


# --- sharded over torchrun processes -------------------------------------------------------------------------------


def _torchrun_eval(n: int, model: str, out, *args) -> "subprocess.CompletedProcess":
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n),
                           "--master_port", str(29600 + os.getpid() % 1000), "-m", "slmkit.cli", "eval", "-m", model,
                           "-o", str(out), "-q", *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@needs_data
def test_two_processes_give_one_process_results(tiny_eval_dir, tmp_path, monkeypatch):
    """torchrun with 2 gloo processes: the documents are sharded, and results.json holds the same metrics, groups
    and per-document samples as one process's (a 5-shot MMLU subject with its shared prefix, a 0-shot task with
    several choices and a rolling-window perplexity); rank 0 wrote every process's results to the cache."""
    import json

    from slmkit.cli import main
    from slmkit.eval.lm import SlmkitLM

    args = ["--tasks", "mmlu_anatomy,piqa,wikitext", "--shots", "5", "--limit", "7", "--log-samples"]
    assert main(["eval", "-m", tiny_eval_dir, "-o", str(tmp_path / "one"), "-q", "--no-cache", *args]) == 0
    cache = str(tmp_path / "cache.sqlite")
    res = _torchrun_eval(2, tiny_eval_dir, tmp_path / "two", "--cache", cache, *args)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("| mmlu_anatomy |") == 1  # rank 0 alone printed the table

    def nothing_left(*a, **k):
        raise AssertionError("a request was not in the cache the sharded run wrote")

    monkeypatch.setattr(SlmkitLM, "score_tokens", nothing_left)
    assert main(["eval", "-m", tiny_eval_dir, "-o", str(tmp_path / "cached"), "-q", "--cache", cache, *args]) == 0
    one, two, cached = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two", "cached"))
    assert two["processes"] == 2 and one["processes"] == 1
    for key in ("results", "groups", "samples", "data"):
        assert one[key] == two[key] == cached[key], key
