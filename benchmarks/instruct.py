"""FLAN's protocol on Gemma 3 270M base, measured (issue 24): hold the sentiment cluster out of the instruction
mixture, train a LoRA adapter on the rest, score SST-2 zero-shot (lm-eval's prompt) before and after; and
Flan 2022's ablations on the same token budget, scored on held-out chain-of-thought items by exact match.

    python benchmarks/instruct.py                      # every variant, then the table
    python benchmarks/instruct.py --variants base,flan --steps 20
    python benchmarks/instruct.py --report             # + slm eval on the survey's groups and slm report
    python benchmarks/instruct.py --variants "" --report --report-limit 10   # the report page alone
    python benchmarks/instruct.py --table              # the table from stored results

Variants (each a mixture of the same size and seed, trained for the same steps x 8 x 256 tokens):
  base          no training
  flan          all templates, formats drawn zero 0.5 / few 0.3 / cot 0.2, T0 + Flan CoT + CommonsenseQA train
  one_template  one template per task (FLAN's ablation of template count)
  zero_only     zero-shot format only (Flan 2022's ablation of mixed formats)
  no_cot        without the Flan CoT data (Flan 2022: CoT data is needed to keep CoT ability)
  flan_seed1    flan with another seed for the mixture draw and the training run: how far two runs of the same
                recipe land apart, beside the item-sampling standard errors

Scores: SST-2 validation (872, zero-shot, acc); StrategyQA and GSM8K exact match after "Let's think step by step"
(StrategyQA: 64 of the 200 items `--reserve` keeps out of the mixture; GSM8K: the first 64 test problems;
128 new tokens, greedy).
Results go to runs/instruct-bench/results/VARIANT.json; a finished variant is not rerun.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WORK = ROOT / "runs/instruct-bench"
MODEL = "gemma3-270m"
VARIANTS = {
    "base": None,
    "flan": {},
    "one_template": {"templates": "one"},
    "zero_only": {"formats": {"zero": 1.0}},
    "no_cot": {"sources": ("t0", "eval")},
    "flan_seed1": {"seed": 1},  # flan again with another mixture and training seed: the run-to-run spread
}
MIX = dict(hold_out=("sentiment",), size=6000, reserve=200, max_prompt_chars=1500, seed=0)
COT_PROMPT = "{question}\nLet's think step by step.\n"  # the cot_step_by_step training template's prompt
N_COT = 64



def data_root() -> Path:
    from slmkit.eval.data import shared_data_dir

    root = shared_data_dir()
    if root is None:
        sys.exit("instruct.py: the shared data folder was not found; set SLMKIT_DATA")
    return root


def mixture(variant: str) -> Path:
    from slmkit.instruct.mixture import MixtureSpec, build, write

    out = WORK / f"mix-{variant}"
    if not (out / "train.jsonl").is_file():
        spec = MixtureSpec(**{**MIX, **VARIANTS[variant]})
        write(build(data_root(), spec), out, overwrite=True)
    return out


def shards(variant: str) -> Path:
    from slmkit.checkpoint import load_tokenizer
    from slmkit.train.data import prepare

    out = WORK / f"shards-{variant}"
    if not (out / "meta.json").is_file():
        prepare([str(mixture(variant) / "train.jsonl")], out, load_tokenizer(MODEL), MODEL, val_fraction=0.02,
                block=256, prompt_template="{prompt}", template="{response}", progress=False, overwrite=True)
    return out


def train_variant(variant: str, steps: int) -> tuple[Path, dict]:
    from slmkit.train.loop import train
    from slmkit.device import native_precision
    from slmkit.train.recipe import load_recipe

    out = WORK / f"run-{variant}"
    recipe = load_recipe(ROOT / "recipes/instruct-gemma-lora.yaml",
                         [f"out={out}", f"data={{{shards(variant)}: 1.0}}", f"tokens={steps * 8 * 256}",
                          "save_every=0", "log_every=1", f"seed={24 + (VARIANTS[variant] or {}).get('seed', 0)}",
                          f"precision={native_precision()}"])
    t0 = time.perf_counter()
    result = train(recipe, progress=False, echo=lambda *a: None, overwrite=True)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps_log = [r for r in log if r.get("event") == "train"]
    losses = [r["loss"] for r in steps_log]
    return Path(result.model_dir), dict(train_s=time.perf_counter() - t0, steps=len(steps_log),
                                        loss_first5=sum(losses[:5]) / 5, loss_last5=sum(losses[-5:]) / 5,
                                        tokens=steps * 8 * 256)


def cot_items(reserved: Path) -> dict[str, list[dict]]:
    rows = [json.loads(line) for line in (reserved / "reserved.jsonl").read_text(encoding="utf-8").splitlines()]
    strategy = [r for r in rows if r["_task"] == "flan_cot/strategyqa"][:N_COT]
    gsm = []
    with open(data_root() / "eval/gsm8k/test.jsonl", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            gsm.append({"question": r["question"], "answer": r["answer"].split("####")[-1].strip()})
            if len(gsm) == N_COT:
                break
    return {"strategyqa": strategy, "gsm8k": gsm}


def evaluate(adapter: Path | None) -> dict:
    from slmkit.eval.job import evaluate_model
    from slmkit.eval.lm import SlmkitLM
    from slmkit.instruct.score import generate, score

    out: dict = {}
    run = evaluate_model(MODEL, ["sst2"], [0], adapter=str(adapter) if adapter else None, cache=False,
                         progress=False)
    r = run.results.get("0", run.results.get(0))["sst2"]
    out["sst2"] = {"acc": r["acc"], "stderr": r["acc_stderr"], "n": 872}
    lm = SlmkitLM.load(MODEL, batch_size=16, adapter=str(adapter) if adapter else None)
    for name, items in cot_items(WORK / "mix-flan").items():
        t0 = time.perf_counter()
        texts = generate(lm, [COT_PROMPT.format(question=i["question"]) for i in items], max_gen_toks=128)
        s, rows = score(texts, [i["answer"] for i in items])
        out[name] = {"acc": s.accuracy, "stderr": s.stderr, "n": s.n, "answered": s.answered,
                     "gen_s": time.perf_counter() - t0, "examples": rows[:3]}
    del lm
    gc.collect()
    return out


def run_variant(variant: str, steps: int) -> dict:
    path = WORK / "results" / f"{variant}.json"
    if path.is_file():
        return json.loads(path.read_text())
    mixture("flan")  # the reserved CoT items come from the flan mixture (the same seed and reserve everywhere)
    info: dict = {"variant": variant, "model": MODEL}
    adapter = None
    if VARIANTS[variant] is not None:
        stats = json.loads((mixture(variant) / "mixture.json").read_text())
        info["mixture"] = {k: stats[k] for k in ("records", "formats", "clusters", "templates", "inverted")}
        adapter, info["train"] = train_variant(variant, steps)
        gc.collect()
    info["scores"] = evaluate(adapter)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=2))
    print(f"{variant}: " + ", ".join(f"{k} {100 * v['acc']:.1f}±{100 * v['stderr']:.1f}"
                                     for k, v in info["scores"].items()), flush=True)
    return info


def report(variants: list[str], limit: int, steps: int) -> None:
    """slm eval on the survey's groups (limit documents per task) for each variant, then one slm report. A variant
    whose adapter is not there yet is trained first (the same run run_variant makes, without its scoring)."""
    from slmkit.eval.job import evaluate_model
    from slmkit.outputs import mark_dir

    dirs = []
    for v in variants:
        out = WORK / "report-evals" / v
        if not (out / "results.json").is_file():
            adapter = WORK / f"run-{v}/adapter" if VARIANTS[v] is not None else None
            if adapter is not None and not (adapter / "adapter_config.json").is_file():
                train_variant(v, steps)
                gc.collect()
            run = evaluate_model(MODEL, ["commonsense_reasoning", "problem_solving", "math"], [0], limit=limit,
                                 adapter=str(adapter) if adapter else None, cache=False, progress=False)
            run.write(out)
            mark_dir(out, "eval")
        dirs.append(str(out))
    import subprocess

    subprocess.run([sys.executable, "-m", "slmkit.cli", "report", *dirs, "-o", str(WORK / "report"), "--overwrite"],
                   check=True)


def table(results: list[dict]) -> str:
    def cell(s: dict | None) -> str:
        return "" if s is None else f"{100 * s['acc']:.1f} ± {100 * s['stderr']:.1f}"

    def answered(s: dict | None) -> str:
        return "" if s is None else f"{s['answered']}/{s['n']}"

    base = next((r for r in results if r["variant"] == "base"), None)
    lines = ["| variant | records | formats z/f/c | templates | train loss first5 -> last5 | SST-2 (held out) | "
             "Δ vs base | StrategyQA CoT EM | answered | GSM8K CoT EM | answered |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        s, m, t = r["scores"], r.get("mixture"), r.get("train")
        fm = "/".join(str(m["formats"][f]) for f in ("zero", "few", "cot")) if m else ""
        delta = ""
        if base and r is not base:
            d = s["sst2"]["acc"] - base["scores"]["sst2"]["acc"]
            se = math.hypot(s["sst2"]["stderr"], base["scores"]["sst2"]["stderr"])
            delta = f"{100 * d:+.1f} ± {100 * se:.1f}"
        lines.append(f"| {r['variant']} | {m['records'] if m else ''} | {fm} | {m['templates'] if m else ''} | "
                     + (f"{t['loss_first5']:.3f} -> {t['loss_last5']:.3f}" if t else "") + " | "
                     f"{cell(s['sst2'])} | {delta} | {cell(s.get('strategyqa'))} | {answered(s.get('strategyqa'))} | "
                     f"{cell(s.get('gsm8k'))} | {answered(s.get('gsm8k'))} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--report", action="store_true", help="also slm eval the survey's groups and write slm report")
    p.add_argument("--report-variants", default="base,flan")
    p.add_argument("--report-limit", type=int, default=20)
    p.add_argument("--table", action="store_true", help="print the table from stored results only")
    a = p.parse_args()
    names = [v for v in a.variants.split(",") if v]
    bad = [v for v in names if v not in VARIANTS]
    if bad:
        sys.exit(f"instruct.py: unknown variant {bad[0]!r}; variants: {', '.join(VARIANTS)}")
    if not a.table:
        for v in names:
            run_variant(v, a.steps)
        if a.report:
            report([v for v in a.report_variants.split(",") if v], a.report_limit, a.steps)
    done = [json.loads((WORK / "results" / f"{v}.json").read_text()) for v in names
            if (WORK / "results" / f"{v}.json").is_file()]
    print(table(done))


if __name__ == "__main__":
    main()
