"""slm eval vs lm-evaluation-harness (HF backend) on the same model and documents, in one run: items/s and
whether every score agrees. Default: SmolLM2-135M-Instruct (the embedded GGUF, dequantised to an fp32
checkpoint folder both read), 500 hellaswag items, 0 shots; lm-eval at batch sizes 1 (its default) and 8,
slm eval at batch 8 in fp32 and bf16. Speed-ups are against lm-eval at the same batch size (8).

    python benchmarks/eval_speed.py [--task hellaswag] [--limit 500] [--shots 0] [--ref-batch-sizes 1,8]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "bench"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="hellaswag")
    p.add_argument("--limit", type=int, default=500)
    p.add_argument("--shots", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--ref-batch-sizes", default="1,8", help="lm-eval batch sizes to time (comma-separated)")
    p.add_argument("--dtypes", default="fp32,bf16", help="slm eval precisions to time")
    a = p.parse_args()
    import torch

    from slmkit.eval.evaluator import prepare, run_requests, score
    from slmkit.eval.harness import run_reference
    from slmkit.eval.lm import load_lm
    from slmkit.eval.tasks import resolve

    model_dir = CACHE / "smollm2-135m-instruct-hf"
    if not model_dir.is_dir():
        subprocess.run([sys.executable, "-m", "slmkit.cli", "convert", "default", str(model_dir)], check=True)
    tasks = resolve([a.task])
    print(f"torch threads {torch.get_num_threads()}; {a.task} {a.shots}-shot, {a.limit} items", flush=True)

    rows = []  # (harness, precision, batch, seconds, per-doc metrics, per-doc loglikelihoods)
    for bs in [int(x) for x in a.ref_batch_sizes.split(",") if x]:
        t0 = time.perf_counter()
        ref = run_reference(str(model_dir), tasks, a.shots, a.limit, CACHE / "lm-eval-tasks", bs)[a.task]
        metrics = {m: [s[m] for s in ref] for m in ("acc", "acc_norm") if m in ref[0]}
        rows.append((f"lm-eval {__import__('lm_eval').__version__} (HF)", "fp32", bs,
                     time.perf_counter() - t0, metrics, [[r[0][0] for r in s["resps"]] for s in ref]))
    for dtype in [x for x in a.dtypes.split(",") if x]:
        t0 = time.perf_counter()
        lm = load_lm(str(model_dir), "slmkit", dtype, "cpu", a.batch_size)
        prep = prepare(tasks[0], a.shots, a.limit)
        results = run_requests(lm, prep, None, progress=False)
        metrics = score(prep, results)
        rows.append(("slm eval", dtype, a.batch_size, time.perf_counter() - t0, metrics,
                     [[x[0] for x in res] for res in results]))

    base = next((r for r in rows if r[0] != "slm eval" and r[2] == a.batch_size), rows[0])
    names = list(base[4])
    print(f"| harness | precision | batch | seconds (incl. load) | items/s | speed-up | "
          + " | ".join(names) + " | docs whose metrics differ | max abs loglikelihood diff |")
    print("|---|---|---|---|---|---|" + "---|" * len(names) + "---|---|")
    for name, dtype, bs, secs, metrics, lls in rows:
        n = len(lls)
        differ = sum(any(metrics[m][i] != base[4][m][i] for m in names) for i in range(n))
        maxd = max(abs(x - y) for la, lb in zip(lls, base[5]) for x, y in zip(la, lb))
        print(f"| {name} | {dtype} | {bs} | {secs:.1f} | {n / secs:.2f} | {base[3] / secs:.2f}x | "
              + " | ".join(f"{100 * sum(metrics[m]) / n:.1f}" for m in names) + f" | {differ} | {maxd:.1e} |")
    print(f"speed-up and differences are against {base[0]} at batch {base[2]}")


if __name__ == "__main__":
    main()
