"""Prefill and decode speed: slmkit vs transformers vs llama.cpp, on the same weights, in one run.

    python benchmarks/decode.py                      # default SmolLM2-135M, 128-token prompt, 128 new tokens
    python benchmarks/decode.py --backends slmkit,llamacpp-f32 --json out.json

Every backend runs in its own process (so peak RSS is its own) on the same prompt ids, greedy:
  slmkit         fp32, decode step compiled (torch.compile, max-autotune-no-cudagraphs, freezing)
  slmkit-eager   fp32, no compile
  slmkit-bf16    bf16 linears (float32 KV cache), compiled; only where the CPU has native bf16
  transformers   fp32, the same dequantised weights (saved by slmkit as an HF folder), sdpa attention
  llamacpp-f32   llama.cpp through llama-cpp-python on the GGUF with every tensor dequantised to F32
  llamacpp-f16   the same with matrices in F16 (the peer of slmkit-bf16)
  llamacpp-file  llama.cpp on the GGUF file as shipped (Q4_1 for the default model)
  paired         slmkit fp32 (compiled) and llamacpp-f32 decoding in turns in one process: the drift-free ratio
  paired-bf16    the same for slmkit-bf16 and llamacpp-f16
Each worker probes memory read bandwidth right before each decode run, so "of BW limit" (the median over runs
of decode tok/s over bandwidth / bytes streamed per token) compares engines fairly on a machine whose
bandwidth drifts; the raw tok/s ratios are printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("SLMKIT_BENCH_CACHE", ROOT / ".cache" / "bench"))
BACKENDS = ["slmkit", "slmkit-eager", "slmkit-bf16", "transformers", "llamacpp-f32", "llamacpp-f16", "llamacpp-file",
            "paired", "paired-bf16"]

from slmkit.bench.run import TEXT  # noqa: E402 - the prompt text `slm bench` uses too


# --- workers (one process each) ---------------------------------------------------------------------


def _decode_repeats(run, repeats: int) -> tuple[list[float], list[float], float, list[int]]:
    """Decode `repeats` times, probing memory bandwidth right before each run (the machine's bandwidth drifts).

    run() -> (tok/s, tokens). Returns per-run tok/s, per-run GB/s, the peak RSS before the first probe, tokens.
    """
    from slmkit.bench.hardware import bandwidth_without_rss

    rates, bandwidths, peak, tokens = [], [], 0.0, []
    for _ in range(repeats):
        bandwidth, before = bandwidth_without_rss(256)
        peak = peak or before
        rate, tokens = run()
        rates.append(rate)
        bandwidths.append(bandwidth)
    return rates, bandwidths, peak, tokens


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def worker_slmkit(a, prompts: dict) -> dict:
    import torch

    import slmkit
    from slmkit.engine import Engine, SamplingParams
    from slmkit.engine.engine import cache_length

    dtype = "bfloat16" if a.worker == "slmkit-bf16" else "float32"
    t0 = time.perf_counter()
    lm = slmkit.load(a.model, dtype=dtype, device="cpu")
    load_s = time.perf_counter() - t0
    short, long_ = prompts["short"], prompts["long"]
    engine = Engine(lm.model, compile=a.worker != "slmkit-eager")
    engine.setup_caches(1, cache_length(len(short) + a.new, lm.config.context_length))  # compiles here
    greedy = SamplingParams(temperature=0)

    def prefill(eng, ids):
        eng.setup_caches(eng.batch, eng.max_len)  # same shape: just resets
        with torch.inference_mode():
            return int(eng.prefill([ids])[0].argmax())

    engine.generate([short], 4, greedy)  # warm-up
    prefill_short = _median_time(lambda: prefill(engine, short), a.repeats)
    long_engine = Engine(lm.model)  # prefill runs eagerly in both engines
    long_engine.setup_caches(1, 1024)
    prefill(long_engine, long_)
    prefill_long = _median_time(lambda: prefill(long_engine, long_), a.repeats)
    rates, bandwidth, peak, tokens = _decode_repeats(_slmkit_run(engine, short, a.new), a.repeats)
    weight_bytes = sum(p.numel() * p.element_size() for p in {id(p): p for p in lm.model.parameters()}.values())
    return dict(load_s=load_s, prefill_short_s=prefill_short, prefill_long_s=prefill_long, decode=rates,
                bandwidth=bandwidth, peak_before_mb=peak, weight_bytes=weight_bytes, tokens=tokens,
                compile_s=engine.compile_s)


def worker_transformers(a, prompts: dict) -> dict:
    import torch
    import transformers


    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(a.hf_dir, dtype=torch.float32,
                                                              attn_implementation="sdpa").eval()
    load_s = time.perf_counter() - t0
    short, long_ = torch.tensor([prompts["short"]]), torch.tensor([prompts["long"]])

    def prefill(ids):
        with torch.inference_mode():
            return int(model(ids, use_cache=True).logits[0, -1].argmax())

    prefill(short)
    prefill_short = _median_time(lambda: prefill(short), a.repeats)
    prefill_long = _median_time(lambda: prefill(long_), a.repeats)

    class Clock(transformers.generation.streamers.BaseStreamer):
        """Timestamps each put(): the first is the prompt, the next ones are new tokens."""

        def __init__(self):
            self.times = []

        def put(self, value):
            self.times.append(time.perf_counter())

        def end(self):
            pass

    def run():
        clock = Clock()
        with torch.inference_mode():
            out = model.generate(short, max_new_tokens=a.new, min_new_tokens=a.new, do_sample=False,
                                 streamer=clock, pad_token_id=0, attention_mask=torch.ones_like(short))
        first, last = clock.times[1], clock.times[-1]
        return (len(clock.times) - 2) / (last - first), out[0, short.shape[1]:].tolist()

    rates, bandwidth, peak, tokens = _decode_repeats(run, a.repeats)
    weight_bytes = sum(p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values())
    return dict(load_s=load_s, prefill_short_s=prefill_short, prefill_long_s=prefill_long, decode=rates,
                bandwidth=bandwidth, peak_before_mb=peak, weight_bytes=weight_bytes, tokens=tokens)


def worker_llamacpp(a, prompts: dict) -> dict:
    import llama_cpp

    from slmkit.model.gguf import GGUFFile
    from slmkit.runtime.files import gguf_file_type

    path = {"llamacpp-f32": a.gguf_f32, "llamacpp-f16": a.gguf_f16}.get(a.worker, a.gguf)
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(model_path=path, n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=a.threads,
                          n_threads_batch=a.threads, verbose=False)
    load_s = time.perf_counter() - t0
    short, long_ = prompts["short"], prompts["long"]
    prefill, run = _llamacpp_steps(llm, short, a.new)
    prefill(short)
    prefill_short = _median_time(lambda: prefill(short), a.repeats)
    prefill_long = _median_time(lambda: prefill(long_), a.repeats)
    rates, bandwidth, peak, tokens = _decode_repeats(run, a.repeats)
    g = GGUFFile(path)
    weight_bytes = sum(int(t.n_bytes) for t in g.tensors.values())
    return dict(load_s=load_s, prefill_short_s=prefill_short, prefill_long_s=prefill_long, decode=rates,
                bandwidth=bandwidth, peak_before_mb=peak, weight_bytes=weight_bytes, tokens=tokens,
                weight_type=gguf_file_type(g).upper())


def _llamacpp_steps(llm, short: list[int], new: int):
    """prefill(ids) -> first token, and run() -> (decode tok/s, tokens): llama.cpp's low-level loop (evaluate,
    then argmax of the last row's logits), which cannot overshoot as create_completion can."""
    import llama_cpp
    import numpy as np

    n_vocab = llm.n_vocab()

    def step(ids) -> int:
        llm.eval(ids)
        return int(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,)).argmax())

    def prefill(ids) -> int:
        llm.reset()
        return step(ids)

    def run():
        tokens = [prefill(short)]
        t0 = time.perf_counter()
        for _ in range(new - 1):
            tokens.append(step([tokens[-1]]))
        return (new - 1) / (time.perf_counter() - t0), tokens

    return prefill, run


def _slmkit_run(engine, short: list[int], new: int):
    """run() -> (decode tok/s, tokens) for an slmkit engine, greedy."""
    from slmkit.engine import GenerationStats, SamplingParams

    def run():
        stats = GenerationStats()
        tokens = engine.generate([short], new, SamplingParams(temperature=0), stats=stats)[0]
        return stats.decode_tok_s, tokens

    return run


def worker_paired(a, prompts: dict) -> dict:
    """slmkit (compiled) and llama.cpp in one process, decode runs alternating, so each ratio compares two
    runs a few seconds apart (the machine's bandwidth drifts between 30 and 50 GB/s over minutes)."""
    import llama_cpp

    import slmkit
    from slmkit.engine import Engine
    from slmkit.engine.engine import cache_length

    bf16 = a.worker == "paired-bf16"
    lm = slmkit.load(a.model, dtype="bfloat16" if bf16 else "float32", device="cpu")
    engine = Engine(lm.model, compile=True)
    engine.setup_caches(1, cache_length(len(prompts["short"]) + a.new, lm.config.context_length))
    llm = llama_cpp.Llama(model_path=a.gguf_f16 if bf16 else a.gguf_f32, n_ctx=1024, n_threads=a.threads,
                          n_threads_batch=a.threads, verbose=False)
    ours, (_, theirs) = _slmkit_run(engine, prompts["short"], a.new), _llamacpp_steps(llm, prompts["short"], a.new)
    ours(), theirs()  # warm-up
    pairs = [(ours()[0], theirs()[0]) for _ in range(a.repeats)]
    return dict(pairs=pairs, ratio=statistics.median(x / y for x, y in pairs))


def _kv_bytes(config, elem: int) -> int:
    return 2 * config.n_layer * config.layer_repeat * config.n_kv_head * config.head_dim * elem


# --- parent ----------------------------------------------------------------------------------------


def prepare(a) -> dict:
    """Prompt ids, the F32 GGUF and the HF folder the workers share (cached under .cache/bench)."""
    import slmkit
    from slmkit.checkpoint import resolve
    from slmkit.model.gguf import write_dequantized

    CACHE.mkdir(parents=True, exist_ok=True)
    src = resolve(a.model)
    lm = slmkit.load(src, dtype="float32", device="cpu")
    ids = lm.tokenizer.encode(TEXT * 40)
    prompts = {"short": ids[: a.prompt], "long": ids[: a.long_prompt]}
    stem = src.stem if src.is_file() else src.name
    a.hf_dir = str(CACHE / f"{stem}-hf")
    if not Path(a.hf_dir).is_dir():
        slmkit.save(lm, a.hf_dir)
    a.gguf = str(src) if src.suffix == ".gguf" else None
    a.gguf_f32 = a.gguf_f16 = None
    if a.gguf:
        for kind in ("f32", "f16"):
            path = CACHE / f"{stem}-{kind}.gguf"
            if not path.is_file():
                write_dequantized(src, path, kind.upper())
            setattr(a, f"gguf_{kind}", str(path))
    a.config = lm.config
    return prompts


def run_worker(a, backend: str, prompts_file: Path) -> dict | None:
    cmd = [sys.executable, __file__, "--worker", backend, "--prompts-file", str(prompts_file), "--model", a.model,
           "--new", str(a.new), "--repeats", str(a.repeats), "--threads", str(a.threads),
           "--hf-dir", a.hf_dir, "--gguf", a.gguf or "", "--gguf-f32", a.gguf_f32 or "",
           "--gguf-f16", a.gguf_f16 or ""]
    print(f"running {backend} ...", file=sys.stderr, flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        print(f"  {backend} failed: {tail}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(a, prompts: dict, results: dict) -> str:
    c = a.config
    kv = _kv_bytes(c, 4) * (len(prompts["short"]) + a.new // 2)  # KV read per step at the mean depth
    n_short, n_long = len(prompts["short"]), len(prompts["long"])
    rows = [f"| backend | weights | load s | prefill {n_short} tok/s | prefill {n_long} tok/s | TTFT {n_short} ms | "
            "decode tok/s "
            "(median, spread) | of BW limit | BW GB/s (median, spread) | peak RSS MB | compile s | greedy = slmkit |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    ref_tokens = results.get("slmkit", {}).get("tokens")
    for name, r in results.items():
        if name.startswith("paired"):
            continue
        dec = statistics.median(r["decode"])
        bytes_per_token = r["weight_bytes"] + kv
        frac = statistics.median(x / (bw * 1e9 / bytes_per_token) for x, bw in zip(r["decode"], r["bandwidth"]))
        weights = r.get("weight_type") or ("bf16" if name == "slmkit-bf16" else "fp32")
        same = "-" if name == "slmkit" or not ref_tokens else (
            "yes" if r["tokens"] == ref_tokens else f"first {_agree(r['tokens'], ref_tokens)}")
        comp = f"{r['compile_s']:.0f}" if r.get("compile_s") else "-"
        rows.append(
            f"| {name} | {weights} | {r['load_s']:.1f} | {len(prompts['short']) / r['prefill_short_s']:.0f} | "
            f"{len(prompts['long']) / r['prefill_long_s']:.0f} | {r['prefill_short_s'] * 1e3:.0f} | "
            f"{dec:.1f} ({min(r['decode']):.1f}-{max(r['decode']):.1f}) | {frac:.2f} | "
            f"{statistics.median(r['bandwidth']):.0f} ({min(r['bandwidth']):.0f}-{max(r['bandwidth']):.0f}) | "
            f"{r['rss_mb']:.0f} | {comp} | {same} |")
    lines = ["\n".join(rows), ""]

    def ratio(x, y, key):
        if x in results and y in results:
            if key == "decode":
                vx, vy = statistics.median(results[x]["decode"]), statistics.median(results[y]["decode"])
            else:
                vx, vy = 1 / results[x][key], 1 / results[y][key]
            lines.append(f"- {key.replace('_s', '').replace('_', ' ')}: {x} / {y} = {vx / vy:.2f}x")

    ratio("slmkit", "llamacpp-f32", "decode")
    ratio("slmkit", "transformers", "decode")
    ratio("slmkit", "llamacpp-f32", "prefill_long_s")
    ratio("slmkit-bf16", "llamacpp-f16", "decode")
    ratio("slmkit-bf16", "llamacpp-f16", "prefill_long_s")
    ratio("slmkit", "transformers", "prefill_long_s")
    for name, peers in (("paired", "slmkit / llamacpp-f32"), ("paired-bf16", "slmkit-bf16 / llamacpp-f16")):
        if name in results:
            runs = ", ".join(f"{x:.1f}/{y:.1f}" for x, y in results[name]["pairs"])
            lines.append(f"- decode, alternating runs in one process: {peers} = {results[name]['ratio']:.2f}x "
                         f"(median; tok/s pairs {runs})")
    return "\n".join(lines)


def _agree(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default")
    p.add_argument("--prompt", type=int, default=128, help="prompt tokens for decode and TTFT (default 128)")
    p.add_argument("--long-prompt", type=int, default=512, help="prompt tokens of the long prefill (default 512)")
    p.add_argument("--new", type=int, default=128, help="new tokens (default 128)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--backends", default=",".join(BACKENDS), help=f"comma-separated subset of {BACKENDS}")
    p.add_argument("--json", help="write the raw results here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--prompts-file", help=argparse.SUPPRESS)
    p.add_argument("--hf-dir", help=argparse.SUPPRESS)
    p.add_argument("--gguf", help=argparse.SUPPRESS)
    p.add_argument("--gguf-f32", help=argparse.SUPPRESS)
    p.add_argument("--gguf-f16", help=argparse.SUPPRESS)
    a = p.parse_args()

    if a.worker:
        import torch

        from slmkit.bench.hardware import peak_rss_mb

        torch.set_num_threads(a.threads)
        prompts = json.loads(Path(a.prompts_file).read_text())
        fn = {"slmkit": worker_slmkit, "slmkit-eager": worker_slmkit, "slmkit-bf16": worker_slmkit,
              "transformers": worker_transformers, "llamacpp-f32": worker_llamacpp,
              "llamacpp-f16": worker_llamacpp, "llamacpp-file": worker_llamacpp, "paired": worker_paired,
              "paired-bf16": worker_paired}[a.worker]
        result = fn(a, prompts)
        result["rss_mb"] = max(peak_rss_mb(), result.pop("peak_before_mb", 0.0))
        print(json.dumps(result))
        return

    import importlib.util

    from slmkit.device import default_device, supports_bf16

    backends = [b for b in a.backends.split(",") if b]
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        sys.exit(f"unknown backends {sorted(unknown)}; choose from {BACKENDS}")
    skipped = []
    if not supports_bf16(default_device()):
        skipped += [f"{b} (no native bf16 on this CPU)" for b in ("slmkit-bf16", "paired-bf16") if b in backends]
    if importlib.util.find_spec("transformers") is None:
        skipped.append("transformers (not installed)")
    if importlib.util.find_spec("llama_cpp") is None:
        skipped += [f"{b} (llama-cpp-python not installed)" for b in backends
                    if b.startswith(("llamacpp", "paired"))]
    prompts = prepare(a)
    if not a.gguf:
        skipped += [f"{b} (the model is not a GGUF file)" for b in backends if b.startswith(("llamacpp", "paired"))]
    backends = [b for b in backends if not any(s.startswith(b + " ") for s in skipped)]
    prompts_file = CACHE / "prompts.json"
    prompts_file.write_text(json.dumps(prompts))
    results = {}
    for b in backends:
        r = run_worker(a, b, prompts_file)
        if r is not None:
            results[b] = r
    import platform

    import torch

    print(f"\nmodel {a.model} ({a.config.name or a.config.family}), batch 1, prompt {len(prompts['short'])} tokens, "
          f"{a.new} new tokens (greedy), long prefill {len(prompts['long'])} tokens, {a.threads} threads, "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} cpus\n")
    print(table(a, prompts, results))
    for s in skipped:
        print(f"- skipped: {s}")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": {k: v for k, v in vars(a).items() if k != "config"},
                                            "prompts": prompts, "results": results}, indent=1))


if __name__ == "__main__":
    main()
