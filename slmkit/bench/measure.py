"""Time one backend: load, prefill at several prompt lengths, decode at several KV depths, and memory.

Runs inside a worker process of its own (`python -m slmkit.bench.measure SPEC_JSON`), so the peak RSS it
reports belongs to that backend alone; it prints one JSON object on its last stdout line.

Conventions (llama-bench's): `pp{n}` is a prefill of n prompt tokens from an empty cache; `tg{n}@d{d}` is n
greedy decode steps after a prefill of d tokens (d = 0 decodes from a one-token prompt). Each test runs
`warmup` untimed times, then `repeats` timed ones; avg and stddev are over the repeats' tokens/s.
"""

from __future__ import annotations

import json
import statistics
import sys
import time


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between order statistics (numpy's default)."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _record(test: str, n_prompt: int, n_gen: int, n_depth: int, rates: list[float], **extra) -> dict:
    avg = statistics.fmean(rates)
    ns = [(n_prompt or n_gen) / r * 1e9 for r in rates]
    return dict(test=test, n_prompt=n_prompt, n_gen=n_gen, n_depth=n_depth, avg_ts=avg,
                stddev_ts=statistics.stdev(rates) if len(rates) > 1 else 0.0, samples_ts=rates,
                avg_ns=statistics.fmean(ns), stddev_ns=statistics.stdev(ns) if len(ns) > 1 else 0.0, **extra)


def measure(backend, ids: list[int], prompts: list[int], depths: list[int], n_gen: int, repeats: int,
            warmup: int, progress=None, prune_keeps: list[float] = ()) -> dict:
    """Load `backend` and run every test on prefixes of `ids`; the records and the memory readings. prune_keeps:
    also pp{n}@keep{r}, one uncached forward with token pruning at keep ratio r, and pp{n}@keep1.0, the same
    forward unpruned (slmkit's backend; the only tests of a model without decode)."""
    import torch

    from slmkit.bench.hardware import peak_rss_mb, reset_peak_rss, rss_mb
    from slmkit.engine.engine import cache_length

    need = max(max(prompts, default=1) + 1, max(depths, default=0) + n_gen + 2)
    max_len = cache_length(need, 1 << 30)
    base_rss = rss_mb()
    t0 = time.perf_counter()
    backend.load(max_len)
    load_s = time.perf_counter() - t0 - (backend.compile_s or 0.0)  # compile is reported on its own
    cuda = torch.cuda.is_available() and str(getattr(backend, "dev", "cpu")).startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    loaded_rss = rss_mb()
    records = []
    # activations: the longest prefill, run first, so that the heap has to grow for it (later runs reuse it)
    before, load_peak = rss_mb(), peak_rss_mb()  # the peak so far (the load's) is kept: the reset drops it
    reset_peak_rss()
    cuda_load_peak = torch.cuda.max_memory_reserved() if cuda else 0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        cuda_before = torch.cuda.memory_allocated()
    decodes = getattr(backend, "decodes", True)
    if decodes:
        backend.prefill(ids[: max(prompts or [1])])
    else:
        backend.forward(ids[: max(prompts or [1])], 1.0)
    activation_mb = (torch.cuda.max_memory_allocated() - cuda_before) / 2**20 if cuda else peak_rss_mb() - before
    for _ in range(warmup if decodes else 0):
        backend.prefill(ids[: min(prompts or [8])])
        backend.step(0)

    keeps = list(dict.fromkeys([1.0, *sorted(prune_keeps, reverse=True)])) if prune_keeps or not decodes else []
    for n in prompts:
        if keeps:  # the pruned forwards beside the same forward unpruned, interleaved repeat by repeat
            times = {k: [] for k in keeps}
            share = {}
            for r in range(warmup + repeats):
                for k in keeps:
                    sync()
                    t = time.perf_counter()
                    share[k] = backend.forward(ids[:n], k)
                    sync()
                    if r >= warmup:
                        times[k].append(time.perf_counter() - t)
            for k in keeps:
                records.append(_record(f"pp{n}@keep{k:g}", n, 0, 0, [n / t for t in times[k]], keep=k,
                                       token_layers=share[k], ttft_ms=statistics.median(times[k]) * 1e3,
                                       forward=backend.forward_kind))
                if progress:
                    progress(records[-1])
        if not decodes:
            continue
        times = []
        for r in range(warmup + repeats):
            sync()
            t = time.perf_counter()
            backend.prefill(ids[:n])
            sync()
            if r >= warmup:
                times.append(time.perf_counter() - t)
        rates = [n / t for t in times]
        records.append(_record(f"pp{n}", n, 0, 0, rates, ttft_ms=statistics.median(times) * 1e3))
        if progress:
            progress(records[-1])

    for d in depths if decodes else []:
        rates, latencies = [], []
        for r in range(warmup + repeats):
            token = backend.prefill(ids[: max(d, 1)])
            steps, tokens = [], [token]
            for _ in range(n_gen):
                sync()
                t = time.perf_counter()
                token = backend.step(token)
                sync()
                steps.append(time.perf_counter() - t)
                tokens.append(token)
            if r >= warmup:
                rates.append(n_gen / sum(steps))
                latencies += steps
        ms = [x * 1e3 for x in latencies]
        records.append(_record(f"tg{n_gen}@d{d}", 0, n_gen, d, rates, p50_ms=percentile(ms, 50),
                               p90_ms=percentile(ms, 90), p99_ms=percentile(ms, 99), tokens=tokens))
        if progress:
            progress(records[-1])

    memory = dict(base_rss_mb=base_rss, loaded_rss_mb=loaded_rss, peak_rss_mb=max(load_peak, peak_rss_mb()),
                  weights_mb=backend.weight_bytes / 2**20, kv_cache_mb=backend.kv_bytes / 2**20,
                  activations_mb=max(activation_mb, 0.0), kv_tokens=max_len)
    if cuda:
        memory["peak_cuda_mb"] = max(cuda_load_peak, torch.cuda.max_memory_reserved()) / 2**20
    return dict(load_s=load_s, compile_s=backend.compile_s, records=records, memory=memory,
                label=getattr(backend, "label", backend.precision))


def make_backend(spec: dict):
    from slmkit.bench.backends import LlamaCppBackend, SlmkitBackend, TransformersBackend

    kind = spec["backend"]
    if kind == "slmkit":
        return SlmkitBackend(spec["model"], spec["precision"], spec.get("device"), spec.get("compile", True),
                             spec.get("group_size", 32), spec.get("symmetric", True), spec.get("adapter"))
    if kind == "transformers":
        return TransformersBackend(spec["model"], spec["precision"], spec.get("device"))
    if kind == "llamacpp":
        return LlamaCppBackend(spec["model"], spec["precision"], spec["threads"], spec.get("gpu", False))
    raise ValueError(kind)


def main() -> None:
    import torch

    from slmkit.errors import SlmError

    spec = json.loads(sys.argv[1])
    torch.set_num_threads(spec["threads"])
    try:
        result = measure(make_backend(spec), spec["ids"], spec["prompts"], spec["depths"], spec["n_gen"],
                         spec["repeats"], spec["warmup"],
                         progress=lambda r: print(f"  {r['test']}: {r['avg_ts']:.1f} tok/s", file=sys.stderr,
                                                  flush=True), prune_keeps=spec.get("prune_keeps", []))
    except SlmError as e:
        print(json.dumps({"error": str(e)}))
        return
    print(json.dumps(result))


if __name__ == "__main__":
    main()
