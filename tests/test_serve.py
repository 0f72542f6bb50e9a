"""`slm serve`: the official openai client against a server on loopback, started inside the test.

A tiny random SmolLM2-shaped model with the real SmolLM2 tokenizer and chat template: its text is noise, but
greedy output is deterministic, so the server's answers can be compared token for token with the engine's.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager

import pytest

openai = pytest.importorskip("openai", reason="the server tests need the openai client: pip install -e '.[test]'")
uvicorn = pytest.importorskip("uvicorn", reason="slm serve needs its extra: pip install -e '.[serve]'")

from slmkit.checkpoint import load  # noqa: E402
from slmkit.engine import Engine, SamplingParams  # noqa: E402
from slmkit.engine.text import generate_text, stream_text  # noqa: E402
from slmkit.serve.app import ServeConfig, create_app  # noqa: E402
from slmkit.serve.http import KEEP_ALIVE_S, uvicorn_config  # noqa: E402

GREEDY = dict(temperature=0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(lm, **config):
    """Run create_app(...) under uvicorn on a loopback port in a thread; yield its base URL."""
    app = create_app(lm.model, lm.tokenizer, ServeConfig(**{"name": "tiny", "context": 256, **config}))
    port = _free_port()
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert thread.is_alive() and time.time() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def _client(url: str, key: str = "none") -> "openai.OpenAI":
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)


def _get(url: str) -> dict | str:
    with urllib.request.urlopen(url, timeout=10) as r:
        body = r.read().decode()
    return json.loads(body) if r.headers.get_content_type() == "application/json" else body


def _post_raw(url: str, body: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _wait_for(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def lm(tiny_eval_dir):
    return load(tiny_eval_dir)


@pytest.fixture(scope="module")
def url(lm):
    with serving(lm, slots=2) as base:
        yield base


def _engine_text(lm, prompt_ids: list[int], n: int) -> str:
    """What the plain engine generates greedily, alone: the reference for the server's answers."""
    return "".join(stream_text(Engine(lm.model), lm.tokenizer, prompt_ids, n, SamplingParams(temperature=0)))


# --- the API ---------------------------------------------------------------------------------------


def test_models_health_and_metrics(url):
    c = _client(url)
    assert [m.id for m in c.models.list().data] == ["tiny"]
    health = _get(url + "/health")
    assert health["status"] == "ok" and health["slots"] == 2
    c.completions.create(model="tiny", prompt="Hello", max_tokens=3, **GREEDY)
    text = _get(url + "/metrics")
    assert 'slmkit_requests_total{path="/v1/completions",status="200"}' in text
    for name in ("slmkit_generated_tokens_total", "slmkit_time_to_first_token_seconds_bucket",
                 "slmkit_request_latency_seconds_count", "slmkit_queue_depth", "slmkit_busy_slots"):
        assert name in text, name
    assert float(re.search(r"^slmkit_generated_tokens_total (\S+)$", text, re.M).group(1)) >= 1


def test_completion_equals_the_engine_alone(url, lm):
    """Greedy /v1/completions text (and usage) equals what the engine generates for the prompt by itself."""
    c = _client(url)
    prompt = "The quick brown fox"
    r = c.completions.create(model="tiny", prompt=prompt, max_tokens=12, **GREEDY)
    ids = lm.tokenizer.encode(prompt)
    assert r.choices[0].text == _engine_text(lm, ids, 12)
    assert r.usage.prompt_tokens == len(ids) and 1 <= r.usage.completion_tokens <= 12
    assert r.choices[0].finish_reason in ("stop", "length") and r.object == "text_completion"
    # token ids as the prompt give the same answer
    assert c.completions.create(model="tiny", prompt=ids, max_tokens=12, **GREEDY).choices[0].text == r.choices[0].text


def test_chat_streaming_equals_non_streaming(url, lm):
    c = _client(url)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    whole = c.chat.completions.create(model="tiny", messages=messages, max_tokens=16, **GREEDY)
    ids = lm.tokenizer.apply_chat_template(messages, tokenize=True)
    assert whole.choices[0].message.content == _engine_text(lm, ids, 16)
    assert whole.choices[0].message.role == "assistant" and whole.usage.prompt_tokens == len(ids)
    chunks = list(c.chat.completions.create(model="tiny", messages=messages, max_tokens=16, stream=True,
                                            stream_options={"include_usage": True}, **GREEDY))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(ch.object == "chat.completion.chunk" and ch.id == chunks[0].id for ch in chunks)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole.choices[0].message.content
    finals = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finals == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_stop_sequences_cut_the_text(url):
    """A stop string from the middle of the unstopped answer ends it there, streamed or not."""
    c = _client(url)
    full = c.completions.create(model="tiny", prompt="Once upon a time", max_tokens=24, **GREEDY).choices[0].text
    assert len(full) >= 12, f"the tiny model stopped too early for this test: {full!r}"
    stop = full[8:11]
    before = full[: full.index(stop)]
    r = c.completions.create(model="tiny", prompt="Once upon a time", max_tokens=24, stop=[stop, "\x00never"],
                             **GREEDY)
    assert r.choices[0].text == before and r.choices[0].finish_reason == "stop"
    streamed = list(c.completions.create(model="tiny", prompt="Once upon a time", max_tokens=24, stop=stop,
                                         stream=True, **GREEDY))
    assert "".join(ch.choices[0].text for ch in streamed) == before
    assert streamed[-1].choices[0].finish_reason == "stop"


def test_concurrent_requests_share_the_model(url, lm):
    """Eight requests at once on two slots (six wait in the queue): each gets its own greedy answer, and a
    seeded sampled request repeats exactly under concurrency."""
    c = _client(url)
    prompts = [f"Story number {i}:" for i in range(8)]

    def ask(p):
        return c.completions.create(model="tiny", prompt=p, max_tokens=10, **GREEDY).choices[0].text

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(ask, prompts))
        sampled = list(pool.map(lambda _: c.completions.create(model="tiny", prompt="Hi", max_tokens=10,
                                                               temperature=1.0, seed=42).choices[0].text, range(4)))
    assert got == [_engine_text(lm, lm.tokenizer.encode(p), 10) for p in prompts]
    assert len(set(sampled)) == 1
    alone = generate_text(Engine(lm.model), lm.tokenizer, ["Hi"], 10, SamplingParams(temperature=1.0, top_k=0,
                                                                                      seed=42))
    assert sampled[0] == alone[0].text  # the same draw as the engine's with that seed


def test_bad_requests_get_openai_errors(url):
    c = _client(url)
    status, body = _post_raw(url + "/v1/completions", b'{"model": "tiny", "prompt": ')
    assert status == 400 and "not valid JSON" in body["error"]["message"]
    with pytest.raises(openai.BadRequestError, match="temperature"):
        c.completions.create(model="tiny", prompt="x", temperature="hot")
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        c.completions.create(model="gpt-4", prompt="x")
    for bad in (dict(max_tokens=-1), dict(max_tokens=10**12), dict(temperature=-0.5), dict(top_p=0),
                dict(seed=-3), dict(n=2), dict(logprobs=5)):
        with pytest.raises(openai.BadRequestError) as e:
            c.completions.create(model="tiny", prompt="x", **bad)
        assert e.value.body is not None and e.value.status_code == 400, bad
    with pytest.raises(openai.BadRequestError, match="context"):
        c.completions.create(model="tiny", prompt="word " * 400, max_tokens=5)
    with pytest.raises(openai.BadRequestError, match="messages"):
        c.chat.completions.create(model="tiny", messages=[])
    status, body = _post_raw(url + "/v1/chat/completions", json.dumps(
        {"model": "tiny", "messages": [{"role": "wizard", "content": "hi"}]}).encode())
    assert status == 400 and body["error"]["param"] == "messages"
    # a huge max_tokens within the context is capped, not refused
    r = c.completions.create(model="tiny", prompt="x", max_tokens=2000, **GREEDY)
    assert r.usage.completion_tokens <= 256


def test_disconnect_mid_stream_frees_the_slot(lm):
    with serving(lm, slots=1, context=2048, max_tokens=2000) as base:
        conn = http.client.HTTPConnection("127.0.0.1", int(base.rsplit(":", 1)[1]), timeout=10)
        conn.request("POST", "/v1/completions", json.dumps(
            {"model": "tiny", "prompt": "Go on and on", "max_tokens": 2000, "temperature": 0, "stream": True,
             "stop": ["\x00never"]}), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.readline().startswith(b"data: ")
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
        _wait_for(lambda: _get(base + "/health")["busy_slots"] == 0, what="the slot to be freed")
        metrics = _get(base + "/metrics")
        assert 'slmkit_finished_requests_total{reason="cancelled"} 1.0' in metrics
        generated = float(re.search(r"^slmkit_generated_tokens_total (\S+)$", metrics, re.M).group(1))
        assert generated < 2000
        # the freed slot serves the next request
        assert _client(base).completions.create(model="tiny", prompt="Next", max_tokens=3).choices
        # a plain (non-streamed) request whose client goes away is cancelled too
        conn = http.client.HTTPConnection("127.0.0.1", int(base.rsplit(":", 1)[1]), timeout=10)
        conn.request("POST", "/v1/chat/completions", json.dumps(
            {"model": "tiny", "messages": [{"role": "user", "content": "Go on"}], "max_tokens": 2000,
             "temperature": 0, "stop": ["\x00never"]}), {"Content-Type": "application/json"})
        _wait_for(lambda: _get(base + "/health")["busy_slots"] == 1, what="the request to start")
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
        _wait_for(lambda: _get(base + "/health")["busy_slots"] == 0, what="the slot to be freed")
        assert 'slmkit_finished_requests_total{reason="cancelled"} 2.0' in _get(base + "/metrics")


def test_full_queue_answers_429(lm):
    """One slot and a queue of one: with one request generating and one waiting, the third gets 429."""
    with serving(lm, slots=1, max_queue=1, context=2048, max_tokens=2000) as base:
        c = _client(base)
        body = dict(model="tiny", prompt="Go on", max_tokens=1500, temperature=0, stop=["\x00never"])
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            first = pool.submit(c.completions.create, **body)
            _wait_for(lambda: _get(base + "/health")["busy_slots"] == 1, what="the first request to start")
            second = pool.submit(c.completions.create, **body)
            _wait_for(lambda: _get(base + "/health")["queue_depth"] == 1, what="the second request to queue")
            with pytest.raises(openai.RateLimitError, match="busy"):
                c.completions.create(**body)
            assert first.result().choices and second.result().choices
        assert "slmkit_rejected_requests_total 1.0" in _get(base + "/metrics")


def test_api_key_is_required_when_set(lm):
    with serving(lm, api_key="s3cret") as base:
        with pytest.raises(openai.AuthenticationError, match="API key"):
            _client(base, key="wrong").models.list()
        assert _client(base, key="s3cret").models.list().data[0].id == "tiny"
        assert _get(base + "/health")["status"] == "ok"  # health stays open for probes
        with pytest.raises(urllib.error.HTTPError) as e:  # metrics sit behind the key
            _get(base + "/metrics")
        assert e.value.code == 401 and "API key" in json.loads(e.value.read())["error"]["message"]
        req = urllib.request.Request(base + "/metrics", headers={"Authorization": "Bearer s3cret"})
        assert b"slmkit_requests_total" in urllib.request.urlopen(req, timeout=10).read()
        # the key is checked before the body is read: a wrong key with a huge declared body is answered at once
        status, body = _raw_request(base, "POST", "/v1/chat/completions", b"{" * 10, {"Content-Length": str(10**9)})
        assert status == 401 and body["error"]["code"] == "invalid_api_key"


# --- the CLI ---------------------------------------------------------------------------------------


def _slm(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "slmkit.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}, **kw)


def test_cli_serves_and_refuses_a_busy_port(tiny_eval_dir):
    port = _free_port()
    proc = _slm("serve", "-m", tiny_eval_dir, "--port", str(port), "--served-name", "tiny", "--log-level", "warning")
    try:
        def listening() -> bool:
            assert proc.poll() is None, f"slm serve exited: {proc.communicate()[1][-2000:]}"
            return _port_open(port)

        _wait_for(listening, timeout=120, what="slm serve to listen")
        r = _client(f"http://127.0.0.1:{port}").chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert r.choices[0].message.role == "assistant"
        busy = _slm("serve", "-m", tiny_eval_dir, "--port", str(port))
        out, err = busy.communicate(timeout=120)
        assert busy.returncode == 2 and err.strip().splitlines()[-1].startswith("slm serve: error: cannot listen")
        assert "Traceback" not in err
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and err.strip().endswith("slm serve: stopped"), err[-2000:]


def test_cli_serves_int8_weights_as_the_int8_engine_answers(tiny_eval_dir):
    """--precision int8: the server's greedy text equals the int8 model's engine alone (the same quantised
    weights), and --precision with --dtype is one line."""
    from slmkit.runtime import SlmkitRuntime

    port = _free_port()
    proc = _slm("serve", "-m", tiny_eval_dir, "--port", str(port), "--served-name", "tiny", "--precision", "int8",
                "--log-level", "warning")
    try:
        def listening() -> bool:
            assert proc.poll() is None, f"slm serve exited: {proc.communicate()[1][-2000:]}"
            return _port_open(port)

        _wait_for(listening, timeout=120, what="slm serve to listen")
        rt = SlmkitRuntime.load(tiny_eval_dir, "int8")
        ids = rt.tokenizer.encode("The quick brown fox")
        r = _client(f"http://127.0.0.1:{port}").completions.create(model="tiny", prompt=ids, max_tokens=10, **GREEDY)
        assert r.choices[0].text == _engine_text(rt, ids, 10)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    both = _slm("serve", "-m", tiny_eval_dir, "--port", str(_free_port()), "--precision", "int8", "--dtype", "bfloat16")
    _, err = both.communicate(timeout=120)
    assert both.returncode == 2 and "not both" in err and "Traceback" not in err


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


# --- hostile requests --------------------------------------------------------------------------------


def _raw_request(base: str, method: str, path: str, body: bytes, headers: dict, timeout: float = 10):
    """Send headers and the given body bytes (which may be fewer than Content-Length says); read the answer."""
    host, port = base.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        s.sendall(head.encode() + body)
        data = b""
        while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + int(
                re.search(rb"content-length: (\d+)", data.lower()).group(1)):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.split(b"\r\n\r\n", 1)[1])


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS")).split()[1])


def test_hostile_requests_are_refused_fast_and_cheaply(tiny_eval_dir):
    """A real `slm serve`: a 30 MB body is refused within a second while /health answers, and the server's RSS
    stays near its level; a prompt too long for the context is refused before tokenising; invalid UTF-8, deep
    JSON and unknown paths get OpenAI's error shape; idle connections are closed."""
    port = _free_port()
    proc = _slm("serve", "-m", tiny_eval_dir, "--port", str(port), "--served-name", "tiny", "--log-level", "warning",
                "--context", "256")
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: proc.poll() is None and _port_open(port), timeout=120, what="slm serve to listen")
        assert _get(base + "/health")["status"] == "ok"
        before = _rss_kb(proc.pid)
        huge = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x" * (30 << 20)}]}).encode()
        health: list[float] = []

        def probe():
            t = time.perf_counter()
            _get(base + "/health")
            health.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            sent = pool.submit(_post_raw, base + "/v1/chat/completions", huge)
            pool.submit(probe).result(timeout=5)
            status, body = sent.result(timeout=30)
        assert status == 413 and body["error"]["code"] == "request_too_large", body
        # one far over the drain size is answered from its headers alone, before the rest is sent
        status, body = _raw_request(base, "POST", "/v1/chat/completions", huge[:1 << 16],
                                    {"Content-Length": str(10**10)})
        assert status == 413, body
        assert time.perf_counter() - t0 < 3 and health and health[0] < 1, (time.perf_counter() - t0, health)
        # a chunked body (no Content-Length) is cut off at the limit too
        chunked = b"".join(b"%x\r\n%s\r\n" % (1 << 16, b"y" * (1 << 16)) for _ in range(64)) + b"0\r\n\r\n"
        status, body = _raw_request(base, "POST", "/v1/completions", chunked, {"Transfer-Encoding": "chunked"})
        assert status == 413, body
        # within the body limit but more bytes than the context can hold: refused before the tokenizer runs
        t1 = time.perf_counter()
        status, body = _post_raw(base + "/v1/completions", json.dumps(
            {"model": "tiny", "prompt": "word " * 120_000, "max_tokens": 1}).encode())
        assert status == 400 and body["error"]["code"] == "context_length_exceeded" and "bytes" in \
            body["error"]["message"] and time.perf_counter() - t1 < 2, body
        assert _rss_kb(proc.pid) - before < 100 * 1024, (before, _rss_kb(proc.pid))
        status, body = _post_raw(base + "/v1/completions", b'{"model": "tiny", "prompt": "\xff\xfe"}')
        assert status == 400 and "UTF-8" in body["error"]["message"], body
        status, body = _post_raw(base + "/v1/completions", b"[" * 100_000 + b"]" * 100_000)
        assert status == 400 and "nested" in body["error"]["message"], body
        for path in ("/v2/nothing", "/v1/completions"):
            try:
                urllib.request.urlopen(base + path, timeout=10)
            except urllib.error.HTTPError as e:
                err = json.loads(e.read())["error"]
                assert e.code in (404, 405) and err["message"], err
        # idle connections (never a request) are closed after the keep-alive timeout
        idle = [socket.create_connection(("127.0.0.1", port), timeout=KEEP_ALIVE_S + 5) for _ in range(20)]
        time.sleep(KEEP_ALIVE_S + 1.5)
        closed = sum(s.recv(1) == b"" for s in idle)
        for s in idle:
            s.close()
        assert closed == 20, f"{20 - closed} of 20 idle connections still open"
        assert _get(base + "/health")["status"] == "ok"
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


# --- drafting: prompt lookup per row ----------------------------------------------------------------------


def _batcher_tokens(batcher, requests: list[tuple[list[int], int, SamplingParams]]) -> list[list[int]]:
    """Submit every request at once to a started Batcher; each one's tokens once all have finished."""
    from slmkit.serve.batcher import Request

    out: list[list[int]] = [[] for _ in requests]
    done = [threading.Event() for _ in requests]

    def emit(i):
        def on(event):
            if event.token is not None:
                out[i].append(event.token)
            if event.finish is not None:
                assert event.finish in ("stop", "length"), event
                done[i].set()
        return on

    for i, (ids, n, sampling) in enumerate(requests):
        batcher.submit(Request(ids, n, sampling, frozenset(), emit(i)))
    for d in done:
        assert d.wait(120), "a request did not finish"
    return out


@pytest.mark.parametrize("compile", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["eager", "compiled"])
def test_lookup_drafting_batcher_equals_the_engine_alone(lm, compile):
    """Five greedy requests on three rows with lookup drafts of single-token matches (so rows draft and are
    rejected at different steps, next to rows without a match): each row's tokens equal the engine's alone,
    and a request with a repetition penalty (which does not draft) is served exactly too."""
    from slmkit.serve.batcher import Batcher

    loop = [1, 40, 41, 42, 43, 44, 40, 41, 42, 43, 44, 40, 41]
    prompts = [loop, [1, 17, 33, 90, 4], loop[:9] + [7, 8], [1, 200, 201, 200, 201, 200], [1, 5, 6, 7, 8]]
    lengths = [40, 30, 25, 3, 40]
    greedy = SamplingParams(temperature=0)
    penalised = SamplingParams(temperature=0, repetition_penalty=1.3)
    samplings = [greedy, greedy, greedy, greedy, penalised]
    batcher = Batcher(lm.model, slots=3, max_len=128, compile=compile, draft="lookup", draft_k=3,
                      lookup_ngram=1).start()
    try:
        got = _batcher_tokens(batcher, list(zip(prompts, lengths, samplings)))
    finally:
        batcher.stop()
    want = [Engine(lm.model).generate([p], n, s)[0] for p, n, s in zip(prompts, lengths, samplings)]
    assert got == want
    assert 0 < batcher.verify_steps < batcher.steps and batcher.drafted > 0, vars(batcher)
    if compile and batcher.engine.compile_s:
        assert set(batcher.engine._blocks) == {4}


def test_lookup_drafting_batcher_on_the_default_model_accepts_copies(default_gguf):
    """The real default model serving three requests on two rows, two of which ask it to repeat a sentence:
    most proposals are accepted (rows advance several slots a step), and every reply is the model's own alone."""
    from slmkit.checkpoint import load as load_model
    from slmkit.engine.text import stop_ids_for
    from slmkit.serve.batcher import Batcher, Request

    lm = load_model(default_gguf, dtype="float32", device="cpu")
    tok = lm.tokenizer
    asks = ["Repeat this sentence exactly: The lighthouse keeper counted forty-two ships and wrote to his sister.",
            "Name a colour.",
            "Repeat exactly: Seven bakers sold ninety loaves of rye bread before the market closed at noon."]
    prompts = [tok.apply_chat_template([{"role": "user", "content": a}], tokenize=True) for a in asks]
    greedy, stop = SamplingParams(temperature=0), stop_ids_for(tok)
    batcher = Batcher(lm.model, slots=2, max_len=256, draft="lookup", draft_k=5).start()
    out: list[list[int]] = [[] for _ in prompts]
    done = [threading.Event() for _ in prompts]
    try:
        for i, ids in enumerate(prompts):
            def emit(event, i=i):
                if event.token is not None:
                    out[i].append(event.token)
                if event.finish is not None:
                    done[i].set()
            batcher.submit(Request(ids, 32, greedy, frozenset(stop), emit))
        assert all(d.wait(300) for d in done)
    finally:
        batcher.stop()
    assert out == [Engine(lm.model).generate([ids], 32, greedy, stop)[0] for ids in prompts]
    assert batcher.accepted > 0.5 * batcher.drafted > 0 and batcher.tokens_generated > 1.5 * batcher.steps, \
        (batcher.accepted, batcher.drafted, batcher.tokens_generated, batcher.steps)


def test_serving_with_lookup_drafts_answers_as_without(lm):
    """slm serve --draft lookup: concurrent greedy completions equal the engine's alone; /metrics counts the
    draft's proposed and accepted tokens; a seeded sampled request repeats."""
    prompt = "one two three four five one two three four five one two three"
    with serving(lm, slots=2, draft="lookup", draft_k=4) as base:
        c = _client(base)
        prompts = [prompt, "Story number 1:", prompt + " four", "a b a b a b a"]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda p: c.completions.create(model="tiny", prompt=p, max_tokens=16,
                                                                  **GREEDY).choices[0].text, prompts))
        sampled = [c.completions.create(model="tiny", prompt=prompt, max_tokens=10, temperature=1.0,
                                        seed=3).choices[0].text for _ in range(2)]
        text = _get(base + "/metrics")
    assert got == [_engine_text(lm, lm.tokenizer.encode(p), 16) for p in prompts]
    assert sampled[0] == sampled[1]
    proposed = float(re.search(r"^slmkit_draft_proposed_tokens (\S+)$", text, re.M).group(1))
    accepted = float(re.search(r"^slmkit_draft_accepted_tokens (\S+)$", text, re.M).group(1))
    assert proposed > 0 and 0 <= accepted <= proposed


def test_batcher_refuses_a_bad_draft_in_one_line(lm):
    from slmkit.errors import SlmError
    from slmkit.serve.batcher import Batcher

    with pytest.raises(SlmError, match="prompt lookup only"):
        Batcher(lm.model, draft="default-draft")
    with pytest.raises(SlmError, match="lookup n-gram"):
        Batcher(lm.model, draft="lookup", lookup_ngram=0)
