#!/usr/bin/env python
"""Greedy answers of a target model to instruction prompts, as JSONL {"prompt", "response", "text"}: the data for
sequence-level distillation of a speculative-decoding draft (a draft accepts more of the target's tokens when it
has learned the target's own outputs; DistillSpec, Zhou et al. 2023).

Prompts come from ../shared/data/instruct (T0 prompts, FLAN CoT questions, self-instruct seed tasks), rendered
with the target's chat template. The self-instruct *user-oriented* set is left out: benchmarks/speculative.py
measures on it. Resumable: prompts already answered in the output file are skipped.

    python scripts/target-generations.py -o runs/data/target-gen.jsonl --count 2000
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import random
import sys
import time
from pathlib import Path

import torch

import slmkit
from slmkit.engine import Engine, SamplingParams
from slmkit.engine.text import stop_ids_for

DATA = Path(os.environ.get("SLMKIT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def instruction_prompts(seed: int) -> list[str]:
    """T0 prompts, FLAN CoT questions and self-instruct seed tasks, shuffled (user-oriented set excluded)."""
    rng = random.Random(seed)
    out: list[str] = []
    with gzip.open(DATA / "instruct/t0_train_50k/t0_train_50k_by_template.jsonl.gz", "rt") as f:
        t0 = [json.loads(line)["prompt"].strip() for line in f]
    out += rng.sample(t0, 6000)
    for path in sorted((DATA / "instruct/flan_cot").glob("*_train.tsv")):
        with open(path, newline="") as f:
            rows = [r[0] for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if r]
        out += rng.sample(rows, min(600, len(rows)))
    with open(DATA / "instruct/self_instruct/seed_tasks.jsonl") as f:
        for line in f:
            task = json.loads(line)
            inp = task["instances"][0]["input"]
            out.append(task["instruction"] + ("\n\n" + inp if inp else ""))
    rng.shuffle(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default="default")
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--count", type=int, default=2000, help="prompts to answer")
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--max-prompt-tokens", type=int, default=320)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    lm = slmkit.load(a.model, dtype=a.dtype)
    tok = lm.tokenizer
    done = set()
    out = Path(a.out)
    if out.exists():
        done = {json.loads(line)["prompt"] for line in out.open()}
    todo = []
    for p in instruction_prompts(a.seed):
        text = tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True)
        ids = tok.encode(text, add_special_tokens=False)
        if len(ids) <= a.max_prompt_tokens:
            todo.append((text, ids))
        if len(todo) >= a.count:
            break
    todo = [t for t in todo if t[0] not in done]
    todo.sort(key=lambda t: len(t[1]))  # similar lengths per batch: less padding
    engine, stop = Engine(lm.model), stop_ids_for(tok)
    t0, tokens = time.perf_counter(), 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        for i in range(0, len(todo), a.batch):
            chunk = todo[i:i + a.batch]
            rows = engine.generate([ids for _, ids in chunk], a.max_new_tokens, SamplingParams(temperature=0), stop)
            for (text, _), row in zip(chunk, rows):
                response = tok.decode([t for t in row if t not in stop]) + ("<|im_end|>" if row and row[-1] in stop else "")
                f.write(json.dumps({"prompt": text, "response": response, "text": text + response}) + "\n")
                tokens += len(row)
            f.flush()
            rate = tokens / (time.perf_counter() - t0)
            print(f"{min(i + a.batch, len(todo))}/{len(todo)} prompts, {tokens} tokens, {rate:.0f} tok/s", file=sys.stderr)


if __name__ == "__main__":
    torch.set_num_threads(os.cpu_count() or 1)
    main()
