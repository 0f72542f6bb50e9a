#!/usr/bin/env python
"""Instruction data for a short instruction fine-tune (EFT's small_tuned): FLAN CoT and T0 from ../shared/data as
JSONL records {"prompt", "response", "source"} with the prompt in SmolLM2's chat format, split into a training
file and a held-out file (the last 5% of each source, never trained on).

    python scripts/instruct-data.py -o runs/data/instruct           # writes train.jsonl and heldout.jsonl
    slm data prepare runs/data/instruct/train.jsonl -o runs/data/instruct-sft --prompt-template '{prompt}' \\
        --template '{response}' --val-fraction 0.02                # the loss on the responses only
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import random
from pathlib import Path

DATA = Path(os.environ.get("SLMKIT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"  # SmolLM2's template, without a system turn
END = "<|im_end|>"


def flan_cot() -> dict[str, list[dict]]:
    out = {}
    for path in sorted((DATA / "instruct/flan_cot").glob("*_train.tsv")):
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if len(r) >= 3]
        rows = [[c.replace("\\n", "\n").replace("\\t", "\t").strip() for c in r[:3]] for r in rows]  # TSV escapes
        out[f"flan_cot/{path.stem}"] = [{"prompt": q, "response": f"{why} So the answer is {a}."} for q, a, why in rows]
    return out


def t0(per_template: int = 40) -> dict[str, list[dict]]:
    """Up to per_template records of each of T0's prompt templates (the file is grouped by template)."""
    by_template: dict[str, list[dict]] = {}
    index = DATA / "instruct/t0_train_50k/template_index.tsv"
    with open(index, encoding="utf-8") as f:
        spans = [(r["template"], int(r["first_line"]), int(r["num_lines"])) for r in csv.DictReader(f, delimiter="\t")]
    with gzip.open(DATA / "instruct/t0_train_50k/t0_train_50k_by_template.jsonl.gz", "rt", encoding="utf-8") as f:
        lines = f.readlines()
    for name, first, n in spans:
        recs = [json.loads(line) for line in lines[first - 1:first - 1 + min(n, per_template)]]
        by_template[name] = [{"prompt": r["prompt"].strip(), "response": r["completion"].replace("<|endoftext|>", "").strip()}
                             for r in recs]
    return {"t0": [r for recs in by_template.values() for r in recs]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--heldout", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    train, held = [], []
    for source, recs in {**flan_cot(), **t0()}.items():
        recs = [r for r in recs if r["prompt"] and r["response"]]
        random.Random(a.seed).shuffle(recs)
        cut = int(len(recs) * (1 - a.heldout))
        for part, rows in ((train, recs[:cut]), (held, recs[cut:])):
            part += [{"prompt": CHAT.format(r["prompt"]), "response": r["response"] + END, "source": source}
                     for r in rows]
    random.Random(a.seed).shuffle(train)
    for name, rows in (("train.jsonl", train), ("heldout.jsonl", held)):
        tmp = out / f".{name}.tmp"
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        tmp.replace(out / name)
    print(f"wrote {out / 'train.jsonl'} ({len(train)} records) and {out / 'heldout.jsonl'} ({len(held)} records)")


if __name__ == "__main__":
    main()
