"""An evaluation's typed result (EvalRun: metrics, groups, ICL gain, data sources, timings and provenance) and its
markdown table (tasks and groups by shot count, with the ICL gain); results.json is EvalRun.to_json()."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from slmkit.eval.tasks import TASKS
from slmkit.paths import write_atomic
from slmkit.results import Result


@dataclass
class EvalRun(Result):
    """One model x backend x precision on a set of tasks at one or more shot counts.

    results[shots][task] holds the metrics with their standard errors (lm-eval's names); groups[shots][group] the
    survey's groups; icl_gain[shots][name] the gain over 0 shots; data[task] where each task's documents came
    from; seeds, versions and machine what the figures depend on."""

    kind: ClassVar[str] = "eval"
    filename: ClassVar[str] = "results.json"

    model: str
    backend: str
    precision: str
    results: dict[str, dict[str, dict[str, Any]]]
    groups: dict[str, dict[str, dict[str, Any]]]
    data: dict[str, dict[str, Any]]
    timings: dict[str, dict[str, Any]]
    icl_gain: dict[str, dict[str, float]] = field(default_factory=dict)
    shots: list[int] | None = None
    limit: int | None = None
    batch_size: int | None = None
    seeds: dict[str, int] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    load_s: float | None = None
    total_s: float | None = None
    samples: dict[str, Any] = field(default_factory=dict)
    adapter: str | None = None  # a LoRA adapter folder attached to the model (slm eval --adapter)
    processes: int = 1  # torchrun processes the documents were sharded over

    def markdown(self) -> str:
        return markdown(self)

    def write(self, out_dir: str | Path) -> tuple[Path, Path]:
        """results.json and results.md in out_dir, each written atomically."""
        out = Path(out_dir)
        js, md = out / self.filename, out / "results.md"
        write_atomic(js, self.dumps())
        write_atomic(md, self.markdown())
        return js, md

    def summary(self) -> dict[str, Any]:
        """to_json() without the per-request samples."""
        return {k: v for k, v in self.to_json().items() if k != "samples"}


def _fmt(value, se=None, pct=True) -> str:
    if value is None:
        return "-"
    if pct:
        return f"{100 * value:.1f}" + (f" ± {100 * se:.1f}" if se is not None else "")
    return f"{value:.3f}" + (f" ± {se:.3f}" if se is not None else "")


def _task_cell(entry: dict, metric: str) -> str:
    pct = metric.startswith(("acc", "exact_match"))
    return _fmt(entry.get(metric), entry.get(metric + "_stderr"), pct)


def markdown(run: EvalRun) -> str:
    results = {"results": run.results, "groups": run.groups, "icl_gain": run.icl_gain}
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

