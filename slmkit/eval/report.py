"""The results as a markdown table (tasks and groups by shot count, with the ICL gain) and an atomic JSON file."""

from __future__ import annotations

import json
from pathlib import Path

from slmkit.eval.tasks import TASKS
from slmkit.paths import write_atomic


def _fmt(value, se=None, pct=True) -> str:
    if value is None:
        return "-"
    if pct:
        return f"{100 * value:.1f}" + (f" ± {100 * se:.1f}" if se is not None else "")
    return f"{value:.3f}" + (f" ± {se:.3f}" if se is not None else "")


def _task_cell(entry: dict, metric: str) -> str:
    pct = metric.startswith(("acc", "exact_match"))
    return _fmt(entry.get(metric), entry.get(metric + "_stderr"), pct)


def markdown(results: dict) -> str:
    shots = list(results["results"])
    head = ["task", "metric", *[f"{k}-shot" for k in shots], *[f"gain {k}" for k in results.get("icl_gain", {})]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    names = [n for n in TASKS if any(n in results["results"][k] for k in shots)]
    hidden = {n for n in names if n.startswith("mmlu_")}  # subjects collapse into the mmlu groups
    for n in names:
        if n in hidden and len(hidden) > 4:
            continue
        task = TASKS[n]
        for metric in task.metrics:
            row = [n, metric.replace(",", " ")]
            row += [_task_cell(results["results"][k][n], metric) if n in results["results"][k] else "-" for k in shots]
            if metric == task.main_metric:
                pct = metric.startswith(("acc", "exact_match"))
                row += [_fmt(g.get(n), pct=pct) if n in g else "-" for g in results.get("icl_gain", {}).values()]
            else:
                row += [""] * len(results.get("icl_gain", {}))
            lines.append("| " + " | ".join(row) + " |")
    group_names = list(dict.fromkeys(g for k in shots for g in results["groups"][k]))
    for g in group_names:
        entries = [results["groups"][k].get(g) for k in shots]
        metric = "acc" if g.startswith("mmlu") else "score"
        label = g + ("" if all(e is None or e.get("complete") for e in entries) else " (partial)")
        row = [f"**{label}**", "acc" if metric == "acc" else "mean"]
        row += [_fmt(e[metric], e.get(metric + "_stderr")) if e else "-" for e in entries]
        row += [_fmt(gain.get(g)) if g in gain else "-" for gain in results.get("icl_gain", {}).values()]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"



def write_results(results: dict, out_dir: str | Path) -> tuple[Path, Path]:
    out = Path(out_dir)
    js, md = out / "results.json", out / "results.md"
    write_atomic(js, json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    write_atomic(md, markdown(results))
    return js, md
