"""`slm eval --backend openai`: lm-eval's tasks scored through a running OpenAI-compatible server (a real
`slm serve` app on loopback): prompt scoring with echo + logprobs, and results that equal the local backend's."""

from __future__ import annotations

import time

import pytest
import torch

pytest.importorskip("openai", reason="the server tests need the openai client: pip install -e '.[test]'")
pytest.importorskip("uvicorn", reason="slm serve needs its extra: pip install -e '.[serve]'")

from slmkit.checkpoint import load  # noqa: E402
from slmkit.eval.data import shared_data_dir  # noqa: E402
from slmkit.eval.evaluator import prepare, run_requests, score  # noqa: E402
from slmkit.eval.lm import load_lm  # noqa: E402
from slmkit.eval.tasks import resolve  # noqa: E402
from tests.test_errors import assert_one_line, run_cli  # noqa: E402
from tests.test_serve import _client, _free_port, serving  # noqa: E402

needs_data = pytest.mark.skipif(shared_data_dir() is None, reason="no evaluation data: set SLMKIT_DATA or put "
                                                                  "../shared/data beside the checkout")


@pytest.fixture(scope="module")
def lm(tiny_eval_dir):
    return load(tiny_eval_dir)


@pytest.fixture(scope="module")
def url(lm):
    with serving(lm, slots=4, context=2048) as base:
        yield base


def test_echo_with_logprobs_scores_the_prompt(url, lm):
    """OpenAI's legacy format: None at the first token, then each token's log-probability after the ones before
    it, equal to a forward pass of the model here; the N most likely tokens; the prompt back as text."""
    ids = lm.tokenizer.encode("The quick brown fox jumps over the lazy dog", add_special_tokens=False)
    r = _client(url).completions.create(model="tiny", prompt=ids, echo=True, max_tokens=0, logprobs=3)
    lp = r.choices[0].logprobs
    with torch.no_grad():
        ref = lm.model(torch.tensor([ids])).float().log_softmax(-1)[0]
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    for t in range(1, len(ids)):
        assert abs(lp.token_logprobs[t] - ref[t - 1, ids[t]].item()) < 1e-4
        assert len(lp.top_logprobs[t]) == 3
        assert max(lp.top_logprobs[t].values()) == pytest.approx(ref[t - 1].max().item(), abs=1e-4)
    assert lp.tokens == [lm.tokenizer.decode([i]) for i in ids] and r.choices[0].text == lm.tokenizer.decode(ids)
    assert r.usage.prompt_tokens == len(ids) and r.usage.completion_tokens == 0
    for bad in (dict(echo=True, max_tokens=0, stream=True), dict(echo=True, max_tokens=4), dict(max_tokens=0),
                dict(logprobs=2), dict(echo=True, max_tokens=0, logprobs=21)):
        with pytest.raises(Exception) as e:
            _client(url).completions.create(model="tiny", prompt=ids, **bad)
        assert getattr(e.value, "status_code", None) == 400, bad


@needs_data
def test_eval_through_the_server_equals_the_local_backend(url, tiny_eval_dir):
    """Multiple choice with multi-token endings (piqa), a 5-shot MMLU subject and generation (gsm8k): the same
    metrics and greedy flags, log-likelihoods to float32 rounding, the same generated text."""
    local = load_lm(tiny_eval_dir, "slmkit", "fp32", "cpu", batch_size=4)
    remote = load_lm(tiny_eval_dir, "openai", batch_size=4, url=url + "/v1")
    assert remote.served == "tiny" and remote.max_length == 2048
    for name, shots, limit in (("piqa", 0, 8), ("mmlu_anatomy", 5, 6), ("gsm8k", 5, 2)):
        prep = prepare(resolve([name])[0], shots, limit)
        a = run_requests(local, prep, None, progress=False)
        b = run_requests(remote, prep, None, progress=False)
        assert score(prep, a) == score(prep, b), name
        if name == "gsm8k":
            assert a == b
        else:
            assert max(abs(x[0] - y[0]) for ra, rb in zip(a, b) for x, y in zip(ra, rb)) < 1e-4
            assert [[x[1] for x in r] for r in a] == [[y[1] for y in r] for r in b]


def test_unreachable_server_and_a_url_without_the_backend_are_one_line(tiny_eval_dir, capsys):
    t0 = time.perf_counter()
    code, err = run_cli(capsys, "eval", "-m", tiny_eval_dir, "--backend", "openai", "--url",
                        f"http://127.0.0.1:{_free_port()}/v1", "--tasks", "piqa", "--limit", "2", "--no-cache")
    assert_one_line(code, err, "cannot reach", "slm serve")
    assert time.perf_counter() - t0 < 30  # no retries
    code, err = run_cli(capsys, "eval", "-m", tiny_eval_dir, "--url", "http://127.0.0.1:1/v1", "--tasks", "piqa")
    assert_one_line(code, err, "--backend openai")
