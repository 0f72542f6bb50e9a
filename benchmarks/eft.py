#!/usr/bin/env python
"""Emulated fine-tuning, up-scaling: does adding a small model's fine-tuning delta to a larger model help?

large = the default SmolLM2-135M-Instruct (fp32); small_base = default-draft (the 28M distilled student);
small_tuned = default-draft-sft (that student after recipes/sft-draft.yaml: FLAN CoT + T0, loss on the responses).
Measured: (1) the mean negative log-likelihood per response token on held-out instruction records
(runs/data/instruct/heldout.jsonl, never trained on; by source family), and (2) ARC-Easy 0-shot accuracy through
slm eval's evaluator (lm-eval's prompts and metrics), for each model alone and for the EFT combinations
large + w * (small_tuned - small_base) at several w.

    python benchmarks/eft.py --heldout 300 --arc-limit 500
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--large", default="default")
    ap.add_argument("--base", default="default-draft")
    ap.add_argument("--tuned", default="default-draft-sft")
    ap.add_argument("--weights", default="0.5,1,2")
    ap.add_argument("--heldout-file", default="runs/data/instruct/heldout.jsonl")
    ap.add_argument("--heldout", type=int, default=300, help="held-out records (seeded sample)")
    ap.add_argument("--arc-limit", type=int, default=500)
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    import slmkit
    from slmkit.combine.eft import EFTModel
    from slmkit.eval.evaluator import evaluate
    from slmkit.eval.lm import SlmkitLM
    from slmkit.eval.tasks import resolve

    large, base, tuned = (slmkit.load(m, dtype="float32") for m in (a.large, a.base, a.tuned))
    tok = large.tokenizer
    models = {"large alone": large.model, "small_base alone": base.model, "small_tuned alone": tuned.model}
    for w in (float(x) for x in a.weights.split(",")):
        models[f"EFT large + {w:g} x (tuned - base)"] = EFTModel(large.model, [(tuned.model, base.model, w)])

    records = [json.loads(line) for line in open(a.heldout_file, encoding="utf-8")]
    records = random.Random(0).sample(records, min(a.heldout, len(records)))
    family = [("flan_cot" if r["source"].startswith("flan") else "t0") for r in records]
    rows = {}
    for name, model in models.items():
        t0 = time.perf_counter()
        lm = SlmkitLM(model, tok, name, batch_size=8)
        scores = lm.loglikelihood([(r["prompt"], r["response"]) for r in records])
        n_tokens = [len(lm.encode_pair(r["prompt"], r["response"])[1]) for r in records]
        nll = defaultdict(lambda: [0.0, 0])
        for (lp, _), n, fam in zip(scores, n_tokens, family):
            for key in (fam, "all"):
                nll[key][0] -= lp
                nll[key][1] += n
        res = evaluate(lm, resolve(["arc_easy"]), [0], a.arc_limit, progress=False)
        arc = res.results["0"]["arc_easy"]
        rows[name] = dict(nll={k: v[0] / v[1] for k, v in nll.items()}, arc=arc, seconds=time.perf_counter() - t0)
        print(f"{name}: {rows[name]}", file=sys.stderr, flush=True)

    print(f"\nheld-out instruction records: {len(records)} ({family.count('flan_cot')} FLAN CoT, {family.count('t0')} T0), "
          f"ARC-Easy 0-shot, first {a.arc_limit} test items; torch {torch.__version__}, {os.cpu_count()} cpus\n")
    print("| model | NLL / response token, all | FLAN CoT | T0 | ARC-Easy acc | acc_norm | seconds |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        arc = r["arc"]
        print(f"| {name} | {r['nll']['all']:.3f} | {r['nll'].get('flan_cot', float('nan')):.3f} | "
              f"{r['nll'].get('t0', float('nan')):.3f} | {100 * arc['acc']:.1f} | {100 * arc['acc_norm']:.1f} | "
              f"{r['seconds']:.0f} |")
    Path("runs").mkdir(exist_ok=True)
    Path("runs/eft-bench.json").write_text(json.dumps(rows, indent=2, default=str))


if __name__ == "__main__":
    main()
