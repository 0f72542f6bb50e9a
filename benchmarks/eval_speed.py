"""slm eval vs lm-evaluation-harness (HF backend) on the same model and documents, in one run: items/s and
whether every score agrees. Default: SmolLM2-135M-Instruct (the embedded GGUF, dequantised to an fp32
checkpoint folder both read), 500 hellaswag items, 0 shots, batch size 8.

    python benchmarks/eval_speed.py [--task hellaswag] [--limit 500] [--shots 0]
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
    print(f"torch threads {torch.get_num_threads()}; {a.task} {a.shots}-shot, {a.limit} items, batch {a.batch_size}",
          flush=True)
    t0 = time.perf_counter()
    ref = run_reference(str(model_dir), tasks, a.shots, a.limit, CACHE / "lm-eval-tasks", a.batch_size)[a.task]
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    lm = load_lm(str(model_dir), "slmkit", "float32", "cpu", a.batch_size)
    prep = prepare(tasks[0], a.shots, a.limit)
    results = run_requests(lm, prep, None, progress=False)
    per = score(prep, results)
    t_ours = time.perf_counter() - t0
    maxd = max(abs(r[0][0] - x[0]) for s, res in zip(ref, results) for r, x in zip(s["resps"], res))
    same = {m: all(s[m] == v for s, v in zip(ref, per[m])) for m in per if m in ref[0]}
    n = len(prep.docs)
    print("| harness | seconds (incl. load) | items/s | " + " | ".join(per) + " |")
    print("|---|---|---|" + "---|" * len(per))
    print(f"| lm-eval {__import__('lm_eval').__version__} (HF) | {t_ref:.1f} | {n / t_ref:.2f} | " +
          " | ".join(f"{100 * sum(s[m] for s in ref) / n:.1f}" for m in per) + " |")
    print(f"| slm eval | {t_ours:.1f} | {n / t_ours:.2f} | " +
          " | ".join(f"{100 * sum(v) / n:.1f}" for v in per.values()) + " |")
    print(f"speed-up {t_ref / t_ours:.2f}x; per-document metrics identical: {same}; "
          f"max |loglikelihood difference| {maxd:.2e}")


if __name__ == "__main__":
    main()
