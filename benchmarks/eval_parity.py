"""slm eval against lm-evaluation-harness itself on the default SmolLM2-135M-Instruct (the embedded GGUF as an
fp32 folder both read): lm-eval's HF backend runs its own task YAMLs on the same documents. Per task and shot
count: identical prompt strings, the largest |log-likelihood difference|, and documents whose acc/acc_norm
differ; gsm8k 5-shot: prompts, filtered answers and exact match. tests/test_eval_parity.py holds the same
checks on a tiny model in CI.

    python benchmarks/eval_parity.py [--limit 50] [--gsm8k-limit 50]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "bench"
TASKS = ["hellaswag", "arc_easy", "arc_challenge", "piqa", "winogrande", "boolq", "openbookqa", "mmlu_anatomy",
         "mmlu_formal_logic", "mmlu_high_school_macroeconomics"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--gsm8k-limit", type=int, default=50)
    a = p.parse_args()
    from slmkit.eval.evaluator import prepare, run_requests, score
    from slmkit.eval.harness import compare_gsm8k, compare_loglikelihood, run_reference
    from slmkit.eval.lm import load_lm
    from slmkit.eval.tasks import resolve

    model_dir = CACHE / "smollm2-135m-instruct-hf"
    if not model_dir.is_dir():
        subprocess.run([sys.executable, "-m", "slmkit.cli", "convert", "default", str(model_dir)], check=True)
    lm = load_lm(str(model_dir), "slmkit", "fp32", "cpu", 8)
    print("| task | shots | items | identical prompts | max abs loglikelihood diff | docs whose acc/acc_norm differ |")
    print("|---|---|---|---|---|---|")
    t0 = time.perf_counter()
    for shots in (0, 5):
        ref = run_reference(str(model_dir), resolve(TASKS), shots, a.limit, CACHE / "lm-eval-tasks")
        for task in resolve(TASKS):
            prep = prepare(task, shots, a.limit)
            results = run_requests(lm, prep, None, progress=False)
            s = compare_loglikelihood(ref[task.name], prep, results, score(prep, results))
            print(f"| {task.name} | {shots} | {s['n']} | {s['same_prompts']} | {s['max_ll_diff']:.1e} | "
                  f"{s['metric_diffs']} |", flush=True)
    task = resolve(["gsm8k"])[0]
    ref = run_reference(str(model_dir), [task], 5, a.gsm8k_limit, CACHE / "lm-eval-tasks")["gsm8k"]
    prep = prepare(task, 5, a.gsm8k_limit)
    results = run_requests(lm, prep, None, progress=False)
    s = compare_gsm8k(ref, prep, results, score(prep, results))
    print(f"\ngsm8k 5-shot, {s['n']} problems: identical prompts {s['same_prompts']}, filtered answers that differ "
          f"{s['answer_diffs']}, exact-match values that differ {s['metric_diffs']} (both filters)")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
