#!/usr/bin/env python
"""Load time of the packaged real models against llama.cpp's on the same GGUF files, each in a fresh process.

    python benchmarks/load_time.py                  # default and gemma3-270m, 3 runs each
    python benchmarks/load_time.py --repeats 5

Three measurements per model, medians of `--repeats` fresh processes (wall clock, from process start):
  slm info      `slm info MODEL` to its exit (config only: GGUF metadata, no weights)
  slmkit ttft   python: slmkit.load(MODEL) and the first greedy token of a short prompt (imports included)
  llama.cpp     python: llama_cpp.Llama(path) and the first greedy token of the same prompt ids
The issue-22 targets: `slm info` <= 2 s, load to the first token <= 5 s for both models.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

PROMPT = "The capital of France is"
SLMKIT = """
import sys, time, json
t0 = float(sys.argv[2])
import torch, slmkit
from slmkit.engine import Engine, SamplingParams
lm = slmkit.load(sys.argv[1], dtype="float32", device="cpu")
t_load = time.time()
ids = lm.tokenizer.encode(%r)
tok = Engine(lm.model).generate([ids], 1, SamplingParams(temperature=0))[0]
print(json.dumps({"load": t_load - t0, "ttft": time.time() - t0, "ids": ids, "token": tok[0]}))
""" % PROMPT
LLAMACPP = """
import sys, time, json
t0 = float(sys.argv[2])
import numpy as np, llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=256, verbose=False)
t_load = time.time()
ids = json.loads(sys.argv[3])
llm.eval(ids)
tok = int(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),)).argmax())
print(json.dumps({"load": t_load - t0, "ttft": time.time() - t0, "token": tok}))
llm.close()
"""


def _run(args: list[str]) -> dict:
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip().splitlines()
    return json.loads(out[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="default,gemma3-270m")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    from slmkit.checkpoint import resolve

    rows = []
    for model in a.models.split(","):
        path = str(resolve(model))  # assembled once here, outside the timed runs
        info, ours, ours_load, theirs, theirs_load, ids, tokens = [], [], [], [], [], None, set()
        for _ in range(a.repeats):
            t0 = time.time()
            subprocess.run([sys.executable, "-m", "slmkit.cli", "info", model], capture_output=True, check=True)
            info.append(time.time() - t0)
            r = _run([sys.executable, "-c", SLMKIT, model, repr(time.time())])
            ours.append(r["ttft"])
            ours_load.append(r["load"])
            ids = r["ids"]
            tokens.add(("slmkit", r["token"]))
            r = _run([sys.executable, "-c", LLAMACPP, path, repr(time.time()), json.dumps(ids)])
            theirs.append(r["ttft"])
            theirs_load.append(r["load"])
            tokens.add(("llama.cpp", r["token"]))
            print(f"{model}: info {info[-1]:.1f} s, slmkit {ours[-1]:.1f} s, llama.cpp {theirs[-1]:.1f} s",
                  file=sys.stderr, flush=True)
        med = statistics.median
        rows.append((model, med(info), med(ours_load), med(ours), med(theirs_load), med(theirs),
                     len({t for _, t in tokens}) == 1))
    print("| model | slm info s | slmkit load s | slmkit to first token s | llama.cpp load s | llama.cpp to first "
          "token s | slmkit / llama.cpp (first token) | same first token |")
    print("|---|---|---|---|---|---|---|---|")
    for model, info, ol, ot, tl, tt, same in rows:
        print(f"| {model} | {info:.2f} | {ol:.2f} | {ot:.2f} | {tl:.2f} | {tt:.2f} | {ot / tt:.1f}x | {same} |")


if __name__ == "__main__":
    main()
