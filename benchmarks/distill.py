"""The survey's knowledge-distillation claim, measured: a ~28M student distilled from SmolLM2-135M-Instruct against
the same student trained without a teacher on the same tokens (recipes/distill-smollm2.yaml, with and without its
distill section). Reports each model's validation loss on every data source, and WikiText-2 test perplexity
(lm-eval's wikitext task, rolling windows of --window tokens, the students' training length), with the teacher
as the reference.

    python benchmarks/distill.py            # trains what is missing (about 55 + 15 min on 2 CPU cores), then evaluates
    python benchmarks/distill.py --eval-only

Needs ../shared/data (or $SLMKIT_DATA) for the corpora and WikiText-2.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes/distill-smollm2.yaml"


def sh(*args: str) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run(args, check=True, cwd=ROOT)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--eval-only", action="store_true", help="evaluate the runs already in runs/")
    p.add_argument("--window", type=int, default=256, help="WikiText-2 rolling window in tokens (default 256)")
    p.add_argument("--no-teacher", action="store_true", help="skip the teacher's (slow) reference row")
    a = p.parse_args()

    kd, nokd = ROOT / "runs/distill-smollm2", ROOT / "runs/distill-smollm2-nokd"
    if not a.eval_only:
        if not (ROOT / "runs/data/t0/meta.json").is_file():
            sh("bash", "scripts/distill-default-draft.sh", "--data-only")
        if not (kd / "model/config.json").is_file():
            sh("slm", "distill", str(RECIPE), "--resume" if (kd / "latest").is_file() else "-q")
        if not (nokd / "model/config.json").is_file():
            sh("slm", "train", str(RECIPE), "--set", "distill=null", "--set", "export_as=null", "--out", str(nokd),
               *(["--resume"] if (nokd / "latest").is_file() else []))

    import torch

    from slmkit.checkpoint import load
    from slmkit.eval.evaluator import evaluate
    from slmkit.eval.lm import SlmkitLM
    from slmkit.eval.tasks import resolve
    from slmkit.train.data import TokenData
    from slmkit.train.loop import validation_loss
    from slmkit.train.recipe import load_recipe

    recipe = load_recipe(RECIPE)
    sources = sorted({p for s in recipe.all_stages() for p in s.data})
    models = {"distilled (KD)": kd / "model", "no KD, same tokens": nokd / "model"}
    if not a.no_teacher:
        models["teacher SmolLM2-135M-Instruct"] = "default"
    rows = []
    for name, path in models.items():
        t0 = time.time()
        lm = load(str(path), dtype="float32", device="cpu")
        row = {"model": name, "params_M": round(sum(p.numel() for p in lm.model.parameters()) / 1e6, 1)}
        for src in sources:
            windows = TokenData({src: 1.0}, recipe.batch.seq_len, recipe.seed).val_windows(recipe.eval_tokens)
            row[f"val_loss {Path(src).name}"] = round(validation_loss(lm.model, windows, 8, torch.device("cpu"),
                                                                      lambda: torch.autocast("cpu", enabled=False)), 4)
        res = evaluate(SlmkitLM(lm.model, lm.tokenizer, str(path), 8, a.window), resolve(["wikitext"]), [0],
                       progress=False).results["0"]["wikitext"]
        row["wikitext2 word_ppl"] = round(res["word_perplexity"], 2)
        row["wikitext2 bits/byte"] = round(res["bits_per_byte"], 4)
        if (Path(str(path)).parent / "log.jsonl").is_file():
            log = [json.loads(x) for x in (Path(str(path)).parent / "log.jsonl").read_text().splitlines()]
            train = [r for r in log if r.get("event") == "train"]
            row["train_minutes"] = round((train[-1]["time"] - log[0]["time"]) / 60, 1) if train else None
            row["tokens"] = train[-1]["tokens"] if train else None
        rows.append(row)
        print(f"{name}: {row} ({time.time() - t0:.0f} s)", flush=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r.get(k, "")) for k in keys) + " |")
    a_, b_ = rows[0], rows[1]
    print(f"\nKD vs no KD: WikiText-2 word perplexity {a_['wikitext2 word_ppl']} vs {b_['wikitext2 word_ppl']} "
          f"({b_['wikitext2 word_ppl'] / a_['wikitext2 word_ppl']:.2f}x); mean val loss "
          f"{sum(a_[f'val_loss {Path(s).name}'] for s in sources) / len(sources):.3f} vs "
          f"{sum(b_[f'val_loss {Path(s).name}'] for s in sources) / len(sources):.3f}")
    out = ROOT / "runs/distill-benchmark.json"
    out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
