"""Accuracy of the default model at each precision: fp32, slmkit int8/int4 and llama.cpp's GGUF types.

    python benchmarks/quant_accuracy.py                     # 500 items each of arc_easy, hellaswag, piqa, 0-shot
    python benchmarks/quant_accuracy.py --limit 100 --variants fp32,int8

Variants (all from the shipped Q4_1 GGUF, whose dequantised weights are the fp32 reference):
  fp32        the shipped weights dequantised to float32 (what the Q4_1 file itself computes, up to llama.cpp's
              8-bit activation rounding)
  int8        slm quantize --bits 8 --head (int8 blocks and head, bf16 activations)
  int4        slm quantize --bits 4 --group 32 --head (symmetric, q4_0's grid; int8 head)
  int4-asym   the same with --asym (q4_1's grid)
  q8_0, q4_0  llama.cpp's own quantiser (llama_model_quantize) on an F32 GGUF of the same weights; slmkit
              reads the file and dequantises it, so this row is llama.cpp's weight rounding with float
              activations
  llamacpp-q8_0, llamacpp-q4_0, llamacpp-q4_1
              the same files (q4_1: the shipped one) evaluated by llama.cpp itself (slm eval --backend
              llamacpp), with its 8-bit activation rounding
Each variant is one `slm eval` run (in its own process, results in .cache/bench/quant-accuracy/VARIANT/).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(os.environ.get("SLMKIT_BENCH_CACHE", ROOT / ".cache" / "bench")) / "quant-accuracy"
VARIANTS = ["fp32", "int8", "int4", "int4-asym", "q8_0", "q4_0", "llamacpp-q8_0", "llamacpp-q4_0", "llamacpp-q4_1"]
QUANTIZE = {"int8": ["--bits", "8", "--head"], "int4": ["--bits", "4", "--group", "32", "--head"],
            "int4-asym": ["--bits", "4", "--group", "32", "--asym", "--head"]}


def model_for(variant: str) -> str:
    if variant == "fp32":
        return "default"
    if variant in QUANTIZE:
        path = OUT / "models" / variant
        if not (path / "config.json").is_file():
            subprocess.run(["slm", "quantize", "default", "-o", str(path), *QUANTIZE[variant]], check=True)
        return str(path)
    from slmkit.runtime.files import llamacpp_file

    return str(llamacpp_file("default", variant.removeprefix("llamacpp-")))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--tasks", default="arc_easy,hellaswag,piqa")
    p.add_argument("--limit", type=int, default=500)
    a = p.parse_args()
    tasks = a.tasks.split(",")
    rows = {}
    for variant in a.variants.split(","):
        out = OUT / f"{variant}-{a.limit}"
        if not (out / "results.json").is_file():
            print(f"{variant} ...", file=sys.stderr, flush=True)
            backend = ["--backend", "llamacpp"] if variant.startswith("llamacpp-") else []
            subprocess.run(["slm", "eval", "-m", model_for(variant), "--tasks", a.tasks, "--limit", str(a.limit),
                            "--shots", "0", "-o", str(out), "--no-cache", "-q", *backend], check=True)
        result = json.loads((out / "results.json").read_text())
        rows[variant] = (result["results"]["0"], result["total_s"])
    head = "| variant | " + " | ".join(f"{t} acc / acc_norm" for t in tasks) + " | mean acc_norm | eval s |"
    lines = [head, "|---|" + "---|" * (len(tasks) + 2)]
    for variant, (res, seconds) in rows.items():
        cells = [f"{100 * res[t]['acc']:.1f} / {100 * res[t]['acc_norm']:.1f}" for t in tasks]
        mean = sum(res[t]["acc_norm"] for t in tasks) / len(tasks)
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {100 * mean:.1f} | {seconds:.0f} |")
    stderr = max(res[t]["acc_norm_stderr"] for res, _ in rows.values() for t in tasks)
    print("\n".join(lines))
    print(f"\n{a.limit} items per task, 0-shot; the largest standard error of one cell is {100 * stderr:.1f} points")


if __name__ == "__main__":
    main()
