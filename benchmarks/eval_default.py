"""The default model (SmolLM2-135M-Instruct) on every `slm eval` task at 0 and 5 shots, next to published
scores for SmolLM2-135M(-Instruct) and the survey's measurements of its relatives (../shared/data/zoo/SLM.json).

    python benchmarks/eval_default.py --run [--limit 100] [--mmlu-limit 10] [--gsm8k-limit 50] [--wikitext-limit 5]
    python benchmarks/eval_default.py            # only render the tables from the last run's results.json files

Four `slm eval` runs (the main tasks; mmlu with a per-subject limit; gsm8k, which generates; wikitext, whose
documents are scored in 8192-token windows) write to .cache/bench/eval-default/{main,mmlu,gsm8k,wikitext}; the
tables merge them and recompute the survey's groups.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / ".cache" / "bench" / "eval-default"
MAIN_TASKS = ("hellaswag,winogrande,piqa,social_iqa,openbookqa,arc_easy,arc_challenge,boolq,commonsense_qa,sst2,"
              "lambada_openai")
RUNS = ("main", "mmlu", "gsm8k", "wikitext")

# Published for SmolLM2-135M-Instruct and SmolLM2-135M (base) in the HuggingFaceTB model cards' evaluation
# tables (lighteval, zero-shot unless stated, their own prompt formulations, MMLU as cloze, ARC the average
# of easy and challenge): different prompts from lm-eval's, so a guide, not a like-for-like comparison.
# Written down from memory of the cards (this machine is offline): unverified, check before relying on them.
CARD = {
    "hellaswag": (40.9, 42.1), "arc (average)": (37.3, 43.9), "piqa": (66.3, 68.4), "mmlu (cloze)": (29.3, 31.5),
    "commonsense_qa": (None, 33.9), "winogrande": (None, 51.3), "openbookqa": (None, 34.6),
    "gsm8k (5-shot)": (1.4, 1.4),
}
RELATIVES = ("HuggingFaceTB/SmolLM-135M", "HuggingFaceTB/SmolLM-360M", "facebook/opt-125m", "EleutherAI/pythia-160m",
             "facebook/galactica-125m", "Qwen/Qwen2-0.5B", "Qwen/Qwen2.5-0.5B")


def run(a: argparse.Namespace) -> None:
    slm = [sys.executable, "-m", "slmkit.cli", "eval", "-m", "default", "--shots", "0,5", "-q"]
    for name, tasks, limit in (("main", MAIN_TASKS, a.limit), ("mmlu", "mmlu", a.mmlu_limit),
                               ("gsm8k", "gsm8k", a.gsm8k_limit), ("wikitext", "wikitext", a.wikitext_limit)):
        subprocess.run(slm + ["--tasks", tasks, "--limit", str(limit), "-o", str(a.results / name)], check=True)


def merged(where: Path) -> dict:
    from slmkit.eval.evaluator import groups
    from slmkit.eval.tasks import TASKS

    out: dict = {"results": {}, "data": {}, "timings": {}}
    for name in RUNS:
        r = json.loads((where / name / "results.json").read_text())
        for k, res in r["results"].items():
            out["results"].setdefault(k, {}).update(res)
        out["data"].update(r["data"])
        out["timings"].update(r["timings"])
    out["groups"] = {k: groups(res, {t: out["data"][t]["n"] for t in res}, {t: TASKS[t].main_metric for t in res})
                     for k, res in out["results"].items()}
    return out


def pct(entry: dict | None, metric: str) -> str:
    if entry is None or entry.get(metric) is None:
        return "-"
    v, se = entry[metric], entry.get(metric + "_stderr")
    if metric.startswith(("acc", "exact_match", "score")):
        return f"{100 * v:.1f}" + (f" ± {100 * se:.1f}" if se else "")
    return f"{v:.2f}"


def render(r: dict) -> str:
    from slmkit.eval.tasks import MMLU_GROUPS, SURVEY_GROUPS, TASKS

    zero, five = r["results"]["0"], r["results"]["5"]
    lines = ["| task | items | metric | 0-shot | 5-shot | gain |", "|---|---|---|---|---|---|"]
    for name in [n for n in TASKS if n in zero and not n.startswith("mmlu_")]:
        for metric in TASKS[name].metrics:
            a, b = zero[name].get(metric), five[name].get(metric)
            gain = f"{100 * (b - a):+.1f}" if metric.startswith(("acc", "exact")) else f"{b - a:+.2f}"
            lines.append(f"| {name} | {r['data'][name]['n']} | {metric.replace(',', ' ')} | {pct(zero[name], metric)} "
                         f"| {pct(five[name], metric)} | {gain} |")
    g0, g5 = r["groups"]["0"], r["groups"]["5"]
    for name in ("mmlu", "mmlu_stem", "mmlu_humanities", "mmlu_social_sciences", "mmlu_other",
                 "commonsense_reasoning", "problem_solving", "math"):
        metric = "acc" if name.startswith("mmlu") else "score"
        members = MMLU_GROUPS.get(name) or [m for t in SURVEY_GROUPS[name] for m in (MMLU_GROUPS["mmlu"] if t == "mmlu"
                                                                                   else [t])]
        n = sum(r["data"][m]["n"] for m in members if m in r["data"])
        lines.append(f"| **{name}** | {n} | {'acc' if metric == 'acc' else 'mean'} | {pct(g0.get(name), metric)} | "
                     f"{pct(g5.get(name), metric)} | {100 * (g5[name][metric] - g0[name][metric]):+.1f} |")
    return "\n".join(lines)


def comparison(r: dict) -> str:
    z, g = r["results"]["0"], r["groups"]["0"]
    f = r["results"]["5"]
    ours = {"hellaswag": z["hellaswag"]["acc_norm"], "arc (average)": (z["arc_easy"]["acc_norm"] +
                                                                      z["arc_challenge"]["acc_norm"]) / 2,
            "piqa": z["piqa"]["acc_norm"], "mmlu (cloze)": g["mmlu"]["acc"],
            "commonsense_qa": z["commonsense_qa"]["acc"], "winogrande": z["winogrande"]["acc"],
            "openbookqa": z["openbookqa"]["acc_norm"], "gsm8k (5-shot)": f["gsm8k"]["exact_match,strict-match"]}
    lines = ["| benchmark | slm eval (lm-eval prompts, 0-shot; gsm8k 5-shot) | card: SmolLM2-135M-Instruct | "
             "card: SmolLM2-135M |", "|---|---|---|---|"]
    for k, (inst, base) in CARD.items():
        note = " (multiple-choice letters, not cloze)" if k.startswith("mmlu") else ""
        lines.append(f"| {k} | {100 * ours[k]:.1f}{note} | {inst if inst is not None else '-'} | {base} |")
    return "\n".join(lines)


def relatives(r: dict) -> str:
    data = Path(__import__("os").environ.get("SLMKIT_DATA", ROOT.parent / "shared" / "data")) / "zoo" / "SLM.json"
    rows = {m["Model"]: m for m in json.loads(data.read_text())}
    g0, g5 = r["groups"]["0"], r["groups"]["5"]
    lines = ["| model | params | commonsense reasoning | problem solving | math (gsm8k) |", "|---|---|---|---|---|"]
    for k, g in (("0", g0), ("5", g5)):
        lines.append(f"| SmolLM2-135M-Instruct, slm eval {k}-shot | 135M | {100 * g['commonsense_reasoning']['score']:.1f} "
                     f"| {100 * g['problem_solving']['score']:.1f} | {100 * g['math']['score']:.1f} |")
    for name in RELATIVES:
        m = rows[name]
        lines.append(f"| {name} (survey) | {m['Parameters'].strip()} | {100 * float(m['Commonsensereasoning']):.1f} "
                     f"| {100 * float(m['Problemsolving']):.1f} | {float(m['Math']):.1f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="store_true", help="run the evaluations first (else render the last run)")
    p.add_argument("--limit", type=int, default=100, help="documents per main task (default 100)")
    p.add_argument("--mmlu-limit", type=int, default=10, help="documents per mmlu subject (default 10)")
    p.add_argument("--gsm8k-limit", type=int, default=50, help="gsm8k problems (default 50)")
    p.add_argument("--wikitext-limit", type=int, default=5,
                   help="wikitext documents (default 5: a few thousand tokens each, scored in 8192-token windows)")
    p.add_argument("--results", type=Path, default=OUT, help=f"where the runs write (default {OUT})")
    a = p.parse_args()
    if a.run:
        run(a)
    r = merged(a.results)
    print(render(r), end="\n\n")
    print(comparison(r), end="\n\n")
    print(relatives(r))
    secs = sum(t["seconds"] for t in r["timings"].values())
    print(f"\nevaluation time {secs / 60:.1f} min in all")


if __name__ == "__main__":
    main()
