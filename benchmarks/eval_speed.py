"""slm eval vs lm-evaluation-harness (HF backend) on the same model and documents, in one run: items/s and
whether every score agrees. Default: SmolLM2-135M-Instruct (the embedded GGUF, dequantised to an fp32
checkpoint folder both read), 500 hellaswag items, 0 shots; lm-eval at batch sizes 1 (its default) and 8,
slm eval at batch 8 in fp32 and bf16. Speed-ups are against lm-eval at the same batch size (8).

    python benchmarks/eval_speed.py [--tasks hellaswag] [--limit 500] [--shots 0] [--ref-batch-sizes 1,8]
    python benchmarks/eval_speed.py --suite five-shot       # 5-shot: MMLU subjects, arc_easy, hellaswag

The five-shot suite is where shared prefixes pay: an MMLU subject's prompts repeat its description and the same
five demonstrations (lm-eval's first_n sampler), which slm eval computes once per subject (`--no-share` turns
that off, to show what it buys); arc_easy and hellaswag draw their shots per document, so only the packing of
each item's choices into one row applies there.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "bench"
SUITES = {"five-shot": dict(tasks="mmlu_anatomy,mmlu_astronomy,mmlu_college_biology,mmlu_high_school_geography,"
                                  "arc_easy,hellaswag", shots=5, limit=40, ref_batch_sizes="8", dtypes="fp32")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=list(SUITES), help="a preset of the options below")
    p.add_argument("--tasks", default="hellaswag", help="comma-separated tasks (each scored on --limit documents)")
    p.add_argument("--limit", type=int, default=500)
    p.add_argument("--shots", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--ref-batch-sizes", default="1,8", help="lm-eval batch sizes to time (comma-separated)")
    p.add_argument("--dtypes", default="fp32,bf16", help="slm eval precisions to time")
    p.add_argument("--no-share", action="store_true", help="also time fp32 slm eval with shared prefixes off")
    a = p.parse_args()
    if a.suite:
        for k, v in SUITES[a.suite].items():
            setattr(a, k, v)
    import torch

    import slmkit.eval.scorer as scorer
    from slmkit.eval.evaluator import prepare, run_requests, score
    from slmkit.eval.harness import run_reference
    from slmkit.eval.lm import load_lm
    from slmkit.eval.tasks import resolve

    model_dir = CACHE / "smollm2-135m-instruct-hf"
    if not model_dir.is_dir():
        subprocess.run([sys.executable, "-m", "slmkit.cli", "convert", "default", str(model_dir)], check=True)
    tasks = resolve([t for t in a.tasks.split(",") if t])
    names = [t.name for t in tasks]
    print(f"torch threads {torch.get_num_threads()}; {', '.join(names)}; {a.shots}-shot, {a.limit} items each",
          flush=True)

    rows = []  # (harness, precision, batch, seconds, {task: per-doc metrics}, {task: per-doc loglikelihoods})
    for bs in [int(x) for x in a.ref_batch_sizes.split(",") if x]:
        t0 = time.perf_counter()
        ref = run_reference(str(model_dir), tasks, a.shots, a.limit, CACHE / "lm-eval-tasks", bs)
        metrics = {t: {m: [s[m] for s in ref[t]] for m in ("acc", "acc_norm") if m in ref[t][0]} for t in names}
        lls = {t: [[r[0][0] for r in s["resps"]] for s in ref[t]] for t in names}
        rows.append((f"lm-eval {__import__('lm_eval').__version__} (HF)", "fp32", bs, time.perf_counter() - t0,
                     metrics, lls))
    variants = [(d, True) for d in a.dtypes.split(",") if d] + ([("fp32", False)] if a.no_share else [])
    for dtype, share in variants:
        scorer.MIN_SHARED = 32 if share else 10**9
        t0 = time.perf_counter()
        lm = load_lm(str(model_dir), "slmkit", dtype, "cpu", a.batch_size)
        metrics, lls = {}, {}
        for task in tasks:
            prep = prepare(task, a.shots, a.limit)
            results = run_requests(lm, prep, None, progress=False)
            metrics[task.name] = score(prep, results)
            lls[task.name] = [[x[0] for x in res] for res in results]
        rows.append(("slm eval" + ("" if share else " (no shared prefixes)"), dtype, a.batch_size,
                     time.perf_counter() - t0, metrics, lls))
    scorer.MIN_SHARED = 32

    base = next((r for r in rows if not r[0].startswith("slm eval") and r[2] == a.batch_size), rows[0])
    shown = [(t, m) for t in names for m in base[4][t]]
    print(f"| harness | precision | batch | seconds (incl. load) | items/s | speed-up | "
          + " | ".join(f"{t} {m}" for t, m in shown) + " | docs whose metrics differ | max abs loglikelihood diff |")
    print("|---|---|---|---|---|---|" + "---|" * len(shown) + "---|---|")
    for name, dtype, bs, secs, metrics, lls in rows:
        n = sum(len(lls[t]) for t in names)
        differ = sum(any(metrics[t][m][i] != base[4][t][m][i] for m in base[4][t])
                     for t in names for i in range(len(lls[t])))
        maxd = max(abs(x - y) for t in names for la, lb in zip(lls[t], base[5][t]) for x, y in zip(la, lb))
        cells = [f"{100 * sum(metrics[t][m]) / len(metrics[t][m]):.1f}" for t, m in shown]
        print(f"| {name} | {dtype} | {bs} | {secs:.1f} | {n / secs:.2f} | {base[3] / secs:.2f}x | "
              + " | ".join(cells) + f" | {differ} | {maxd:.1e} |")
    print(f"speed-up and differences are against {base[0]} at batch {base[2]}")


if __name__ == "__main__":
    main()
