"""Load test: `slm serve` against llama.cpp's OpenAI-compatible server on the same GGUF, loopback only.

    python benchmarks/serve_load.py                      # 32 clients x 10 requests each, 32 tokens per answer
    python benchmarks/serve_load.py --clients 8 --requests 4 --skip-llamacpp
    python benchmarks/serve_load.py --contexts 512 --draft-lookup     # slm serve with and without --draft lookup
    python benchmarks/serve_load.py --contexts 2048 --precisions fp32,int8   # slm serve --precision int8 beside fp32

Each server runs in its own process on 127.0.0.1 and gets the same load, one after the other: `--clients`
threads, each sending `--requests` streamed chat completions (greedy, max_tokens `--max-tokens`) with the
official openai client, one after another. Reported per server: throughput (completion tokens / wall time),
p50/p99 request latency and time to first token, failures (any error or a request past the deadline).
Completion tokens are counted by re-encoding each answer with the model's tokenizer, the same way for both.
llama.cpp's server is llama-cpp-python's (`pip install 'llama-cpp-python[server]'`), which answers one request
at a time (run with interrupt_requests off: by default a new request cuts off the one streaming); slm serve
batches up to `--slots` requests per decode step. Bounded: every request has a timeout
and the whole run a deadline (`--deadline`).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

TOPICS = ["the sea", "a lighthouse", "bread", "a fox", "winter", "trains", "the moon", "a library", "rain",
          "mountains", "a garden", "coffee", "bees", "a river", "clocks", "the desert"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=2) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except OSError:
            time.sleep(0.25)
    raise SystemExit(f"server at {url} not up after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def start(cmd: list[str], url: str, log: Path, timeout: float) -> tuple[subprocess.Popen, float]:
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ,
                                                                                     "PYTHONUNBUFFERED": "1"})
    return proc, wait_healthy(url, proc, timeout, log)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))]


def load(url: str, model: str, clients: int, requests: int, max_tokens: int, deadline: float, count) -> dict:
    """`clients` threads x `requests` streamed chat completions each; per-request latency, TTFT, tokens."""
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=max(60.0, deadline))
    t_end = time.perf_counter() + deadline
    results: list[dict] = []

    def one(cid: int, k: int) -> dict:
        if time.perf_counter() > t_end:
            return {"ok": False, "error": "deadline passed before the request was sent"}
        t0 = time.perf_counter()
        ttft, parts = None, []
        try:
            stream = client.chat.completions.create(
                model=model, max_tokens=max_tokens, temperature=0, stream=True,
                messages=[{"role": "user", "content": f"Write two sentences about {TOPICS[(cid + k) % len(TOPICS)]}."}])
            for chunk in stream:
                if time.perf_counter() > t_end:
                    stream.close()
                    return {"ok": False, "error": "deadline passed mid-answer"}
                piece = chunk.choices[0].delta.content if chunk.choices else None
                if piece:
                    ttft = ttft if ttft is not None else time.perf_counter() - t0
                    parts.append(piece)
        except Exception as e:  # noqa: BLE001 - a failure is a result here
            return {"ok": False, "error": f"{type(e).__name__}: {str(e)[:200]}"}
        text = "".join(parts)
        return {"ok": True, "latency": time.perf_counter() - t0, "ttft": ttft, "tokens": count(text), "text": text,
                "prompt": (cid + k) % len(TOPICS)}

    def client_loop(cid: int) -> list[dict]:
        return [one(cid, k) for k in range(requests)]

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for rows in pool.map(client_loop, range(clients)):
            results.extend(rows)
    wall = time.perf_counter() - t0
    ok = [r for r in results if r["ok"]]
    tokens = sum(r["tokens"] for r in ok)
    return {"requests": len(results), "failures": len(results) - len(ok),
            "errors": sorted({r["error"] for r in results if not r["ok"]})[:5], "wall_s": wall, "tokens": tokens,
            "tok_s": tokens / wall, "req_s": len(ok) / wall,
            "latency_p50": percentile([r["latency"] for r in ok], 50),
            "latency_p99": percentile([r["latency"] for r in ok], 99),
            "ttft_p50": percentile([r["ttft"] for r in ok if r["ttft"] is not None], 50),
            "ttft_p99": percentile([r["ttft"] for r in ok if r["ttft"] is not None], 99),
            "mean_tokens": statistics.mean(r["tokens"] for r in ok) if ok else 0.0,
            "answers": {r["prompt"]: r["text"] for r in ok}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default", help="a GGUF file or 'default' (the embedded SmolLM2-135M Q4_1)")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--requests", type=int, default=10, help="requests per client, one after another (default 10)")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--slots", type=int, default=4, help="slm serve --slots (default 4)")
    p.add_argument("--contexts", default="2048,512",
                   help="slm serve --context values, one server each (default 2048,512: its default, and sized to "
                        "this load; the compiled step reads every row's whole cache)")
    p.add_argument("--eager", action="store_true", help="slm serve without --compile")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="llama.cpp threads (default: all)")
    p.add_argument("--deadline", type=float, default=900, help="seconds per server for the whole load (default 900)")
    p.add_argument("--skip-llamacpp", action="store_true")
    p.add_argument("--draft-lookup", action="store_true",
                   help="also run each slm serve with --draft lookup (prompt-lookup drafts per request)")
    p.add_argument("--draft-k", type=int, default=4, help="with --draft-lookup: slm serve --draft-k (default 4)")
    p.add_argument("--precisions", default="fp32",
                   help="slm serve --precision values, one server each per context (default fp32; e.g. fp32,int8)")
    p.add_argument("--json", help="write the results here")
    a = p.parse_args()

    from slmkit.checkpoint import default_model_path, load_tokenizer

    gguf = str(default_model_path()) if a.model == "default" else a.model
    tokenizer = load_tokenizer(gguf)

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False))

    servers = {f"slm serve ({a.slots} slots x {ctx})": [
        sys.executable, "-m", "slmkit.cli", "serve", "-m", gguf, "--served-name", "m", "--slots", str(a.slots),
        "--context", ctx, "--log-level", "warning", "--max-queue", str(a.clients * 2)] + ([] if a.eager else
                                                                                         ["--compile"])
        for ctx in a.contexts.split(",")}
    precisions = [x for x in a.precisions.split(",") if x]
    servers = {(name if prec == "fp32" else name.replace("slm serve", f"slm serve {prec}")):
               cmd + ([] if prec == "fp32" else ["--precision", prec])
               for prec in precisions for name, cmd in servers.items()}
    if a.draft_lookup:
        for name, cmd in list(servers.items()):
            servers[name.replace("slm serve", "slm serve --draft lookup")] = cmd + ["--draft", "lookup", "--draft-k",
                                                                                   str(a.draft_k)]
    if not a.skip_llamacpp:
        try:
            import llama_cpp.server  # noqa: F401
        except ImportError as e:
            print(f"llama.cpp server unavailable ({e}); pip install 'llama-cpp-python[server]'", file=sys.stderr)
        else:
            servers["llama.cpp server"] = [sys.executable, "-m", "llama_cpp.server", "--model", gguf,
                                           "--model_alias", "m", "--n_ctx", "2048", "--n_threads", str(a.threads),
                                           "--n_threads_batch", str(a.threads), "--verbose", "false",
                                           "--interrupt_requests", "false"]  # else a new request cuts off a stream
    out: dict = {"config": {k: v for k, v in vars(a).items()}, "servers": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cmd in servers.items():
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            log = Path(tmp) / f"{name.split()[0]}.log"
            print(f"== {name}: starting", file=sys.stderr, flush=True)
            proc, up = start(cmd + ["--host", "127.0.0.1", "--port", str(port)], url, log, timeout=600)
            try:
                print(f"   up in {up:.1f} s; {a.clients} clients x {a.requests} requests", file=sys.stderr, flush=True)
                load(url, "m", min(a.clients, 2), 1, 4, 120, count)  # warm-up, not timed
                r = load(url, "m", a.clients, a.requests, a.max_tokens, a.deadline, count)
                r["startup_s"] = up
                out["servers"][name] = r
                print(f"   {r['tokens']} tokens in {r['wall_s']:.1f} s = {r['tok_s']:.1f} tok/s, "
                      f"{r['failures']} failures", file=sys.stderr, flush=True)
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    rows = out["servers"]
    print(f"\n{a.clients} clients x {a.requests} streamed chat requests, greedy, max_tokens {a.max_tokens}, "
          f"loopback, {os.cpu_count()} CPU cores; slm serve: {'eager' if a.eager else 'compiled'} decode, fp32 "
          f"weights; llama.cpp server: {a.threads} threads, n_ctx 2048\n")
    print("| server | requests | failures | tokens | wall s | tok/s | req/s | latency p50 / p99 s | TTFT p50 / p99 s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        print(f"| {name} | {r['requests']} | {r['failures']} | {r['tokens']} | {r['wall_s']:.1f} | {r['tok_s']:.1f} | "
              f"{r['req_s']:.2f} | {r['latency_p50']:.2f} / {r['latency_p99']:.2f} | "
              f"{r['ttft_p50']:.2f} / {r['ttft_p99']:.2f} |")
    theirs = rows.get("llama.cpp server")
    for name, ours in rows.items():
        if theirs is None or ours is theirs:
            continue
        same = sum(ours["answers"].get(k) == v for k, v in theirs["answers"].items())
        print(f"\n- {name} / llama.cpp server: throughput {ours['tok_s'] / theirs['tok_s']:.2f}x; "
              f"p50 latency ratio {ours['latency_p50'] / theirs['latency_p50']:.2f}; "
              f"TTFT p50 ratio {ours['ttft_p50'] / theirs['ttft_p50']:.2f}; identical greedy answers: {same} of "
              f"{len(theirs['answers'])} prompts (fp32 dequantised weights vs llama.cpp's Q4_1 x Q8 dot products)")
    for name, ours in rows.items():
        if "--draft lookup" not in name:
            continue
        plain = rows[name.replace("slm serve --draft lookup", "slm serve")]
        same = sum(ours["answers"].get(k) == v for k, v in plain["answers"].items())
        print(f"\n- {name} / without drafts: throughput {ours['tok_s'] / plain['tok_s']:.2f}x; p50 latency ratio "
              f"{ours['latency_p50'] / plain['latency_p50']:.2f}; identical greedy answers: {same} of "
              f"{len(plain['answers'])} prompts")
    for name, r in rows.items():
        for e in r["errors"]:
            print(f"- {name} error: {e}")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
