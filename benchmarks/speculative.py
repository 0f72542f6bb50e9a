#!/usr/bin/env python
"""Speculative decoding on the embedded default model: greedy tokens/s of the target alone, with prompt-lookup
drafts, with draft models, and llama.cpp alone and with its own prompt lookup on the same GGUF, with every
drafted output checked token for token against the target's.

Target: SmolLM2-135M-Instruct (the embedded Q4_1 GGUF, dequantised to fp32; --model names another, e.g.
gemma3-270m), compiled (its decode step alone; its (k+1)-token verify step, and with lookup its decode step
too, with a draft). Drafts (--drafts): `lookup` (no second model) and/or draft models (e.g. default-draft, in
--draft-dtype, compiled). Two prompt suites, 128 greedy tokens each, stopping at the end-of-turn token:
  chat      held-out chat instructions (self-instruct's user-oriented set, which the drafts never trained on)
  grounded  replies that draw on their input: summarise a passage, answer a question over it, fix the spelling
            of a passage with typos put in, rename a function in C code and return it (BoolQ passages and
            HumanEval-Decompile functions from ../shared/data)
The engines run in one process, in turns per prompt, so they see the same memory-bandwidth phase.

    python benchmarks/speculative.py                              # lookup k = 3, 5, 8 on both suites
    python benchmarks/speculative.py --drafts lookup,default-draft --ks 4
    python benchmarks/speculative.py --model gemma3-270m --suites grounded
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch

DATA = Path(os.environ.get("SLMKIT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
MAX_PROMPT = 360  # tokens: every prompt plus 128 new tokens and a draft fits one 512-slot cache


def _encode(tok, text: str) -> list[int]:
    if tok.chat_template:
        return tok.encode(tok.apply_chat_template([{"role": "user", "content": text}]), add_special_tokens=False)
    return tok.encode(text + "\n\n")


def chat_prompts(tok, n: int) -> list[list[int]]:
    """The first n user-oriented self-instruct tasks (instruction + first input) in the model's chat template."""
    out = []
    with open(DATA / "instruct/self_instruct/user_oriented_instructions.jsonl") as f:
        for line in f:
            task = json.loads(line)
            inp = task["instances"][0]["input"]
            ids = _encode(tok, task["instruction"] + ("\n\n" + inp if inp else ""))
            if len(ids) <= 256:
                out.append(ids)
            if len(out) == n:
                return out
    return out


def _typos(text: str, rng: random.Random, every: int = 6) -> str:
    """Swap two inner letters of every `every`-th longer word: a passage with spelling mistakes to fix."""
    words = text.split(" ")
    for i in range(2, len(words), every):
        w = words[i]
        if len(w) > 4 and w.isalpha():
            j = rng.randrange(1, len(w) - 2)
            words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    return " ".join(words)


def grounded_prompts(tok, n: int) -> list[tuple[str, list[int]]]:
    """n prompts of each kind whose answers draw on their input: (kind, ids)."""
    rng = random.Random(31)
    passages = []
    with open(DATA / "eval/boolq/llmfoundry_boolq.jsonl") as f:
        for line in f:
            query = json.loads(line)["query"]
            passage, _, question = query.partition("\nQuestion: ")
            passage = passage.removeprefix("Passage: ").strip()
            if 400 < len(passage) < 900:
                passages.append((passage, question.split("?")[0].strip() + "?"))
    funcs = []
    for task in json.loads((DATA / "decompile/humaneval_decompile_objdump.json").read_text()):
        if task["type"] == "O0" and 200 < len(task["c_func"]) < 700:
            funcs.append(task["c_func"].strip())
    rng.shuffle(passages)
    kinds = {
        "summarise": [f"Summarise this passage in two sentences.\n\n{p}" for p, _ in passages[:n]],
        "question": [f"{p}\n\nAnswer from the passage above, in one or two sentences: {q}"
                     for p, q in passages[n:2 * n]],
        "spelling": [f"Correct the spelling mistakes in this passage and write it out in full.\n\n{_typos(p, rng)}"
                     for p, _ in passages[2 * n:3 * n]],
        "code edit": [f"Rename the function func0 to solve in this C code and give the whole code.\n\n{c}"
                      for c in funcs[:n]],
    }
    out = []
    for kind, texts in kinds.items():
        ids = [_encode(tok, t) for t in texts]
        out += [(kind, i) for i in ids if len(i) <= MAX_PROMPT]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--model", default="default")
    ap.add_argument("--drafts", default="lookup", help="comma-separated: lookup and/or draft models")
    ap.add_argument("--ks", default="3,5,8", help="comma-separated draft lengths")
    ap.add_argument("--lookup-ngram", type=int, default=3)
    ap.add_argument("--draft-dtype", default="bfloat16")
    ap.add_argument("--suites", default="chat,grounded")
    ap.add_argument("--prompts", type=int, default=8, help="chat prompts; grounded: a quarter as many per kind")
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--no-llamacpp", action="store_true")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--json", help="also write the table's numbers here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    import slmkit
    from slmkit.checkpoint import resolve
    from slmkit.engine import Engine, SamplingParams
    from slmkit.engine.engine import cache_length
    from slmkit.engine.speculative import LookupDraft, SpeculativeEngine, SpeculativeStats
    from slmkit.engine.text import stop_ids_for

    target = slmkit.load(a.model, dtype="float32")
    tok = target.tokenizer
    suites = a.suites.split(",")
    prompts: list[tuple[str, list[int]]] = []
    if "chat" in suites:
        prompts += [("chat", ids) for ids in chat_prompts(tok, a.prompts)]
    if "grounded" in suites:
        prompts += grounded_prompts(tok, max(1, a.prompts // 4))
    stop = stop_ids_for(tok)
    greedy = SamplingParams(temperature=0)
    ks = [int(x) for x in a.ks.split(",")]
    length = cache_length(max(len(p) for _, p in prompts) + a.new + max(ks) + 1, target.config.context_length)

    def run(engine, p: list[int]) -> tuple[list[int], float, SpeculativeStats]:
        """One prompt: the tokens, the decode tok/s (tokens after the first / time after the prefill), stats."""
        stats = SpeculativeStats()
        row = engine.generate([p], a.new, greedy, stop, stats=stats)[0]
        return row, (len(row) - 1) / stats.decode_s, stats

    print("compiling (target decode step, then a verify step per k and a decode step per draft)...", file=sys.stderr)
    alone = Engine(target.model, compile=True)
    alone.setup_caches(1, length)  # one cache length for every engine: one compile each
    configs: dict[str, object] = {"target alone": alone}
    drafts = a.drafts.split(",")
    models = {name: slmkit.load(name, dtype=a.draft_dtype) for name in drafts if name != "lookup"}
    for k in ks:
        if "lookup" in drafts:
            verifier = Engine(target.model, compile=True, compile_widths=(1, k + 1))
            verifier.setup_caches(1, length)
            configs[f"lookup k={k}"] = SpeculativeEngine(verifier, LookupDraft(k, a.lookup_ngram), k=k)
        for name, draft in models.items():
            verifier = Engine(target.model, compile=True, compile_widths=(k + 1,))
            verifier.setup_caches(1, length)
            small = Engine(draft.model, compile=True)
            small.setup_caches(1, length)
            configs[f"{Path(name).name} k={k}"] = SpeculativeEngine(verifier, small, k=k)
    for engine in configs.values():  # warm up on the first prompt
        engine.generate([prompts[0][1]], 8, greedy, stop)
    peers = {}
    if not a.no_llamacpp and importlib.util.find_spec("llama_cpp") is not None:
        import llama_cpp
        from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

        gguf = str(resolve(a.model))
        if gguf.endswith(".gguf"):
            kw = dict(model_path=gguf, n_ctx=length, n_threads=a.threads, n_threads_batch=a.threads, verbose=False)
            peers["llama.cpp alone"] = llama_cpp.Llama(**kw)
            # llama-cpp-python's prompt lookup (its generate loop); its defaults: 2-grams, 10 tokens
            peers["llama.cpp lookup"] = llama_cpp.Llama(**kw, draft_model=LlamaPromptLookupDecoding(
                max_ngram_size=a.lookup_ngram, num_pred_tokens=max(ks)))

    def llama_generate(llm, p):
        """Greedy tokens through llama-cpp-python's generate loop (which drafts when a draft_model is set)."""
        out, t0 = [], None
        for t in llm.generate(p, top_k=1, temp=0.0, reset=True):
            out.append(t)
            if t0 is None:
                t0 = time.perf_counter()
            if t in stop or len(out) >= a.new:
                break
        return out, (len(out) - 1) / (time.perf_counter() - t0) if len(out) > 1 else 0.0

    fields = ("drafted", "accepted", "cycles", "verifies", "draft_s", "verify_s")
    results = {name: {} for name in list(configs) + list(peers)}  # name -> suite -> (rows, rates, stats)
    for i, (suite, p) in enumerate(prompts):  # in turns per prompt: every engine sees the same bandwidth phase
        print(f"prompt {i + 1}/{len(prompts)} ({suite}, {len(p)} tokens)", file=sys.stderr)
        group = "chat" if suite == "chat" else "grounded"
        for name, engine in configs.items():
            row, rate, stats = run(engine, p)
            rows, rates, total = results[name].setdefault(group, ([], [], SpeculativeStats()))
            rows.append(row)
            rates.append(rate)
            for f in fields:
                setattr(total, f, getattr(total, f) + getattr(stats, f))
        for name, llm in peers.items():
            row, rate = llama_generate(llm, p)
            rows, rates, _ = results[name].setdefault(group, ([], [], SpeculativeStats()))
            rows.append(row)
            rates.append(rate)

    print(f"\nmodel {a.model} (fp32, compiled), lookup n-grams 2..{a.lookup_ngram}, drafts in {a.draft_dtype}, "
          f"{len(prompts)} prompts, up to {a.new} greedy tokens, {a.threads} threads, torch {torch.__version__}, "
          f"{platform.machine()}, {os.cpu_count()} cpus\n")
    print("| prompts | engine | decode tok/s (median) | vs target alone | acceptance | steps with a proposal | "
          "tokens per target forward | output = target alone |")
    print("|---|---|---|---|---|---|---|---|")
    table = []
    for group in ("chat", "grounded"):
        if group not in results["target alone"]:
            continue
        base_rows, base_rates, _ = results["target alone"][group]
        base = statistics.median(base_rates)
        for name in results:
            rows, rates, stats = results[name][group]
            if name.startswith("llama.cpp"):
                ref_rows, ref_rates, _ = results["llama.cpp alone"][group]
                same = sum(r == b for r, b in zip(rows, ref_rows))
                rel = statistics.median(rates) / statistics.median(ref_rates)
                vs = f"{statistics.median(rates) / base:.2f}x ({rel:.2f}x llama.cpp alone)"
                acc = tpf = steps = "-"
                same_text = f"{same}/{len(rows)} (= llama.cpp alone)"
            else:
                same = sum(r == b for r, b in zip(rows, base_rows))
                vs = f"{statistics.median(rates) / base:.2f}x"
                acc = f"{100 * stats.acceptance_rate:.0f}%" if stats.cycles else "-"
                tpf = f"{stats.tokens_per_cycle:.2f}" if stats.cycles else "1"
                steps = f"{100 * stats.verifies / stats.cycles:.0f}%" if stats.cycles else "-"
                same_text = f"{same}/{len(rows)}"
            med = statistics.median(rates)
            print(f"| {group} ({len(rows)}) | {name} | {med:.1f} | {vs} | {acc} | {steps} | {tpf} | {same_text} |")
            table.append({"suite": group, "engine": name, "tok_s": round(med, 2), "vs_alone": round(med / base, 3),
                          "acceptance": round(stats.acceptance_rate, 3) if stats.cycles else None,
                          "tokens_per_forward": round(stats.tokens_per_cycle, 3) if stats.cycles else None,
                          "identical": same, "prompts": len(rows)})
    if a.json:
        Path(a.json).write_text(json.dumps({"model": a.model, "rows": table}, indent=1) + "\n")


if __name__ == "__main__":
    main()
