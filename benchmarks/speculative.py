#!/usr/bin/env python
"""Speculative decoding on the embedded default model: greedy tokens/s of the target alone, the target with a draft,
and llama.cpp on the same GGUF, with the drafted output checked token for token against the target's.

Target: SmolLM2-135M-Instruct (the embedded Q4_1 GGUF, dequantised to fp32), compiled (its decode step alone; its
(k+1)-token verify step with a draft). Draft: default-draft (the distilled student) unless --drafts names others,
compiled, in --draft-dtype. Prompts: held-out chat instructions (self-instruct's user-oriented set, which the
drafts never trained on), 128 greedy tokens each, stopping at the end-of-turn token. The engines run in one
process, in turns per prompt, so they see the same memory-bandwidth phase.

    python benchmarks/speculative.py                       # k = 3 and 5, default-draft in bf16
    python benchmarks/speculative.py --ks 4 --drafts default-draft,runs/draft-spec/final --prompts 4
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

DATA = Path(os.environ.get("SLMKIT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def chat_prompts(tok, n: int) -> list[list[int]]:
    """The first n user-oriented self-instruct tasks (instruction + first input) in the model's chat template."""
    out = []
    with open(DATA / "instruct/self_instruct/user_oriented_instructions.jsonl") as f:
        for line in f:
            task = json.loads(line)
            inp = task["instances"][0]["input"]
            text = task["instruction"] + ("\n\n" + inp if inp else "")
            ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": text}]), add_special_tokens=False)
            if len(ids) <= 256:
                out.append(ids)
            if len(out) == n:
                return out
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--drafts", default="default-draft", help="comma-separated draft models")
    ap.add_argument("--ks", default="3,5", help="comma-separated draft lengths")
    ap.add_argument("--draft-dtype", default="bfloat16")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    import slmkit
    from slmkit.checkpoint import default_model_path
    from slmkit.engine import Engine, SamplingParams
    from slmkit.engine.speculative import SpeculativeEngine, SpeculativeStats
    from slmkit.engine.text import stop_ids_for

    target = slmkit.load(a.model, dtype="float32")
    tok = target.tokenizer
    prompts = chat_prompts(tok, a.prompts)
    stop = stop_ids_for(tok)
    greedy = SamplingParams(temperature=0)
    need = max(len(p) for p in prompts) + a.new

    def run(engine, p: list[int]) -> tuple[list[int], float, SpeculativeStats]:
        """One prompt: the tokens, the decode tok/s (tokens after the first / time after the prefill), stats."""
        stats = SpeculativeStats()
        row = engine.generate([p], a.new, greedy, stop, stats=stats)[0]
        return row, (len(row) - 1) / stats.decode_s, stats

    print("compiling (target decode step, then a verify step per k and a decode step per draft)...", file=sys.stderr)
    alone = Engine(target.model, compile=True)
    alone.setup_caches(1, 512)  # the cache length both engines pick for these prompts (cache_length)
    configs: dict[str, object] = {"target alone": alone}
    drafts = {name: slmkit.load(name, dtype=a.draft_dtype) for name in a.drafts.split(",")}
    for k in (int(x) for x in a.ks.split(",")):
        verifier = Engine(target.model, compile=True, compile_widths=(k + 1,))
        for name, draft in drafts.items():
            configs[f"{Path(name).name} k={k}"] = SpeculativeEngine(verifier, Engine(draft.model, compile=True), k=k)
    for engine in configs.values():  # compile and warm up on the first prompt
        engine.generate([prompts[0]], 8, greedy, stop)
    llm = None
    if importlib.util.find_spec("llama_cpp") is not None:
        import llama_cpp
        import numpy as np

        llm = llama_cpp.Llama(model_path=str(default_model_path()), n_ctx=need + 8, n_threads=a.threads,
                              n_threads_batch=a.threads, verbose=False)

        def llama_generate(p):
            llm.reset()
            llm.eval(p)
            out, t0 = [], None
            while len(out) < a.new:
                row = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
                t = int(np.ctypeslib.as_array(row, shape=(llm.n_vocab(),)).argmax())
                out.append(t)
                if t0 is None:
                    t0 = time.perf_counter()
                if t in stop:
                    break
                llm.eval([t])
            return out, (len(out) - 1) / (time.perf_counter() - t0)

    fields = ("drafted", "accepted", "cycles", "draft_s", "verify_s")
    results = {name: ([], [], SpeculativeStats()) for name in configs}
    llama_rows, llama_rates = [], []
    for p in prompts:  # in turns per prompt: every engine sees the same bandwidth phase
        for name, engine in configs.items():
            row, rate, stats = run(engine, p)
            rows, rates, total = results[name]
            rows.append(row)
            rates.append(rate)
            for f in fields:
                setattr(total, f, getattr(total, f) + getattr(stats, f))
        if llm is not None:
            out, rate = llama_generate(p)
            llama_rows.append(out)
            llama_rates.append(rate)

    base_rows, base_rates, _ = results["target alone"]
    base = statistics.median(base_rates)
    print(f"\nmodel {a.model} (fp32, compiled), drafts in {a.draft_dtype}, {len(prompts)} held-out chat prompts, "
          f"up to {a.new} greedy tokens, {a.threads} threads, torch {torch.__version__}, {platform.machine()}, "
          f"{os.cpu_count()} cpus\n")
    print("| engine | decode tok/s (median over prompts) | vs target alone | draft acceptance | tokens per target "
          "forward | draft / verify time | output = target alone |")
    print("|---|---|---|---|---|---|---|")
    for name, (rows, rates, stats) in results.items():
        same = sum(r == b for r, b in zip(rows, base_rows))
        med = statistics.median(rates)
        acc = f"{100 * stats.acceptance_rate:.0f}%" if stats.cycles else "-"
        tpf = f"{stats.tokens_per_cycle:.2f}" if stats.cycles else "1"
        split = f"{stats.draft_s:.1f} s / {stats.verify_s:.1f} s" if stats.cycles else "-"
        print(f"| {name} | {med:.1f} | {med / base:.2f}x | {acc} | {tpf} | {split} | {same}/{len(rows)} |")
    if llm is not None:
        same = sum(r == b for r, b in zip(llama_rows, base_rows))
        med = statistics.median(llama_rates)
        print(f"| llama.cpp (Q4_1 GGUF) | {med:.1f} | {med / base:.2f}x | - | 1 | - | {same}/{len(llama_rows)} |")


if __name__ == "__main__":
    main()
