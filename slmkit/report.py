"""`slm report RESULT_DIRS...`: eval results (results.json) and bench results (bench.json) merged into one table per
model (with its adapter, if any) x backend x precision, with accuracy against decode latency and against memory
(Pareto frontiers), as a self-contained HTML page (plots embedded as data URIs) and markdown with PNG files beside it.

Joining: an eval run and a bench run describe the same row when they name the same model file (or folder), the same
LoRA adapter (none for a bench), the same backend and the same precision (the registry's names,
slmkit.runtime.precision: fp32, int8, int8+head, ...; llama.cpp's file types as they are: q4_1, q8_0, f32). Files
are read as typed results (load_result below). Accuracy is the mean of the survey's group scores at 0 shots
(commonsense reasoning, problem solving, math) over the groups every evaluated row has, so rows compare on the
same tasks; the ICL gain is the mean of the groups' gains at the largest shot count. Decode is the bench's tg test at
depth 0, prefill its longest pp test; memory is peak resident memory. A pruned forward (slm bench --prune-keep R) is
the row of backend slmkit+pruneR (a decoder's prefill) or slmkit-classifier+pruneR (a classifier: the row slm eval
--prune-keep R scores), so pruning's speed and accuracy meet in one row. The survey's on-phone measurements (INT4,
llama.cpp, four phones) appear beside any model the survey measured.
"""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from slmkit.bench.results import BenchRun
from slmkit.errors import SlmError
from slmkit.eval.results import EvalRun

GROUPS = ("commonsense_reasoning", "problem_solving", "math")


@dataclass
class Row:
    model: str  # a short label: the model file's or folder's name (+ the adapter's)
    source: str
    backend: str
    precision: str
    adapter: str | None = None  # the LoRA adapter folder the eval attached
    groups: dict[str, float] = field(default_factory=dict)  # 0-shot group scores (fractions)
    group_stderr: dict[str, float | None] = field(default_factory=dict)  # their standard errors (lm-eval's)
    tasks: dict[str, float] = field(default_factory=dict)  # 0-shot main metric per task
    icl_gain: float | None = None
    icl_shots: int | None = None
    prefill_tok_s: float | None = None
    prefill_tokens: int | None = None
    decode_tok_s: float | None = None
    ttft_ms: float | None = None
    peak_mb: float | None = None  # the bench process's peak (for slmkit, it includes the float load before quantising)
    model_mb: float | None = None  # weights + KV cache + activations, as the bench accounts them
    weights_mb: float | None = None
    eager: bool = False  # slmkit's decode ran uncompiled
    data_source: str | None = None  # where the eval data came from

    accuracy: float | None = None  # the mean of the groups every evaluated row has (set by merge)
    accuracy_stderr: float | None = None  # its standard error (the groups' errors, independent)

    @property
    def decode_ms(self) -> float | None:
        return 1000 / self.decode_tok_s if self.decode_tok_s else None


def model_label(source: str, adapter: str | None = None) -> str:
    """A short label: the model file's or folder's name, with '+' and the adapter's folder name (its parent's, the
    training run's, when the folder is the loop's generic 'adapter')."""
    path = Path(source)
    label = path.stem if path.suffix == ".gguf" else path.name or source
    if adapter:
        a = Path(adapter)
        label += "+" + (a.parent.name if a.name == "adapter" and a.parent.name else a.name)
    return label


RESULT_TYPES = {EvalRun.kind: EvalRun, BenchRun.kind: BenchRun}


def load_result(path: str | Path) -> EvalRun | BenchRun:
    """The typed result in a results.json or bench.json file (its class chosen by `kind`)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SlmError(f"{path} is not readable JSON ({e}); rerun the step that wrote it") from None
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in RESULT_TYPES:
        raise SlmError(f"{path} is not an slmkit result (kind {kind!r}; expected one of {', '.join(RESULT_TYPES)}); "
                       "files from before slmkit's typed results need their step rerun")
    return RESULT_TYPES[kind].from_json(data, str(path))


def find_results(paths: Iterable[str]) -> tuple[list[EvalRun], list[BenchRun]]:
    """(eval runs, bench runs) from files or folders (searched recursively for results.json and bench.json)."""
    evals, benches = [], []
    for p in map(Path, paths):
        if not p.exists():
            raise SlmError(f"{p} does not exist; give folders written by `slm eval -o` or `slm bench -o`")
        files = [p] if p.is_file() else sorted([*p.rglob(EvalRun.filename), *p.rglob(BenchRun.filename)])
        for f in files:
            run = load_result(f)
            (evals if isinstance(run, EvalRun) else benches).append(run)
    if not evals and not benches:
        raise SlmError(f"no results.json (slm eval -o) or bench.json (slm bench -o) under {', '.join(map(str, paths))}")
    return evals, benches


def merge(evals: Sequence[EvalRun], benches: Sequence[BenchRun]) -> list[Row]:
    rows: dict[tuple[str, str, str], Row] = {}

    def row(source: str, backend: str, precision: str, adapter: str | None = None) -> Row:
        key = (model_label(source, adapter), backend, precision)
        if key not in rows:
            rows[key] = Row(key[0], source, backend, key[2], adapter=adapter)
        return rows[key]

    gains: dict[tuple, dict[str, float]] = {}
    sources: dict[tuple, set[str]] = {}
    for ev in evals:  # several evals of one row (different tasks) add up
        r = row(ev.model, ev.backend, ev.precision, ev.adapter)
        key = (r.model, r.backend, r.precision)
        shots = sorted(int(s) for s in ev.results)
        zero = str(shots[0]) if shots else None
        if zero is not None:
            at_zero = ev.groups.get(zero, {})
            r.groups.update({g: v["score"] for g, v in at_zero.items() if g in GROUPS})
            r.group_stderr.update({g: v.get("score_stderr") for g, v in at_zero.items() if g in GROUPS})
            for task, metrics in ev.results[zero].items():
                main = next((m for m in ("acc_norm", "acc", "exact_match", "mcc", "f1") if m in metrics), None)
                if main:
                    r.tasks[task] = metrics[main]
        if ev.icl_gain:
            k = max(ev.icl_gain, key=int)
            at_k = ev.icl_gain[k]
            gains.setdefault(key, {}).update({g: v for g, v in at_k.items() if g in GROUPS} or at_k)
            r.icl_shots = max(r.icl_shots or 0, int(k))
        sources.setdefault(key, set()).update(d.get("source") for d in ev.data.values() if d.get("source"))
    for key, r in rows.items():
        if not r.groups and r.tasks:  # tasks outside the survey's groups: their mean
            r.groups = {"tasks": sum(r.tasks.values()) / len(r.tasks)}
        if gains.get(key):
            r.icl_gain = sum(gains[key].values()) / len(gains[key])
        r.data_source = ", ".join(sorted(sources.get(key, ()))) or None
    for bench in benches:
        for b in bench.rows:
            backend = b["backend"]
            if "keep" in b:  # a pruned forward (slm bench --prune-keep): the row slm eval --prune-keep names alike
                if b.get("forward") == "prefill" and b["keep"] >= 1:
                    continue  # the uncached peer of a decoder's pruned prefill; its own row is the engine's
                backend = ("slmkit-classifier" if b.get("forward") == "classifier" else backend) + (
                    f"+prune{b['keep']:g}" if b["keep"] < 1 else "")
            r = row(bench.source or b.get("model_filename", "?"), backend, b["precision"])
            if b.get("avg_ts") is None:
                continue
            if b.get("n_gen", 0) == 0 and b.get("n_prompt", 0) > 0:  # a prefill test: keep the longest prompt
                if r.prefill_tokens is None or b["n_prompt"] > r.prefill_tokens:
                    r.prefill_tok_s, r.prefill_tokens, r.ttft_ms = b["avg_ts"], b["n_prompt"], b.get("ttft_ms")
            elif b.get("n_depth", 0) == 0 and b.get("n_gen", 0) > 0:
                r.decode_tok_s = b["avg_ts"]
            peak = b.get("peak_rss_mb") or b.get("peak_cuda_mb")
            if peak:
                r.peak_mb = max(r.peak_mb or 0.0, peak)
            if b.get("weights_mb"):
                r.weights_mb = b["weights_mb"]
                r.model_mb = b["weights_mb"] + (b.get("kv_cache_mb") or 0) + (b.get("activations_mb") or 0)
            r.eager = r.eager or (b["backend"] == "slmkit" and b.get("n_gen", 0) > 0 and b.get("compile_s") is None)
    out = sorted(rows.values(), key=lambda r: (r.model, r.backend, r.precision))
    groups = common_groups(out)
    for r in out:
        if r.groups and groups:
            r.accuracy = sum(r.groups[g] for g in groups) / len(groups)
            ses = [r.group_stderr.get(g) for g in groups]
            if all(se is not None for se in ses):
                r.accuracy_stderr = sum(se * se for se in ses) ** 0.5 / len(groups)
    return out


def _noise_floor(ax, values: Sequence[float], errors: Sequence[float]) -> None:
    """Keep the accuracy axis from zooming in below the sampling noise: it spans at least four standard errors
    (and 5 points) around the points, so differences inside the error bars look as small as they are."""
    if not values:
        return
    lo = min(v - e for v, e in zip(values, errors))
    hi = max(v + e for v, e in zip(values, errors))
    need = max(4 * max(errors, default=0.0), 5.0)
    if hi - lo < need:
        mid = (hi + lo) / 2
        lo, hi = mid - need / 2, mid + need / 2
    pad = 0.08 * (hi - lo)
    ax.set_ylim(max(0.0, lo - pad), min(100.0, hi + pad))


def common_groups(rows: Sequence[Row]) -> list[str]:
    """The groups every evaluated row has: accuracies are compared over the same tasks."""
    sets = [set(r.groups) for r in rows if r.groups]
    return sorted(set.intersection(*sets)) if sets else []


# --- phones ----------------------------------------------------------------------------------------------------------

def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def survey_match(row: Row):
    """The catalogue model a row's model is (by name), or None."""
    from slmkit.zoo.catalogue import catalogue

    label = _norm(row.model)
    best = None
    for m in catalogue():
        name = _norm(m.name.split("/")[-1])
        if label.startswith(name) and (best is None or len(name) > len(_norm(best.name.split("/")[-1]))):
            rest = label[len(name):]
            if not rest or not rest[0].isdigit():  # "qwen1505b" must not match "qwen15..." of another size
                best = m
    return best


def phone_rows(rows: Sequence[Row]) -> list[tuple[str, object]]:
    from slmkit.zoo.catalogue import phone_runs

    out, done = [], set()
    for r in rows:
        m = survey_match(r)
        if m is None or m.name in done:
            continue
        done.add(m.name)
        out += [(r.model, p) for p in phone_runs() if p.hub_id == m.name]
    return out


# --- plots -----------------------------------------------------------------------------------------------------------

def _scatter(rows: Sequence[Row], x_of, xlabel: str, title: str) -> bytes:
    from slmkit.plots import COLORS, figure, pareto, png

    fig, ax = figure()
    pts = [(x_of(r), 100 * r.accuracy, r) for r in rows if x_of(r) is not None and r.accuracy is not None]
    if not pts:
        ax.text(0.5, 0.5, "no row has both an accuracy and this measurement", ha="center", va="center",
                transform=ax.transAxes)
    backends = sorted({p[2].backend for p in pts})
    for i, b in enumerate(backends):
        sel = [p for p in pts if p[2].backend == b]
        ax.errorbar([p[0] for p in sel], [p[1] for p in sel], yerr=[100 * (p[2].accuracy_stderr or 0) for p in sel],
                    fmt="o", markersize=6, capsize=3, color=COLORS[i % len(COLORS)], label=b, zorder=3)
    one_model = len({p[2].model for p in pts}) == 1
    for x, y, r in pts:
        label = f"{r.backend} {r.precision}" if one_model else f"{r.model} {r.precision}"
        ax.annotate(label, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    if one_model and pts:
        ax.set_title(f"{title}\n{pts[0][2].model}", fontsize=10)
    front = [pts[i] for i in pareto([(p[0], p[1]) for p in pts])]
    if len(front) > 1:
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="#444", linestyle="--",
                linewidth=1, label="Pareto frontier", zorder=2)
    elif front:
        ax.scatter([front[0][0]], [front[0][1]], s=160, facecolors="none", edgecolors="#444", label="Pareto frontier")
    _noise_floor(ax, [p[1] for p in pts], [100 * (p[2].accuracy_stderr or 0) for p in pts])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%, 0-shot, ±1 s.e.)")
    if not (one_model and pts):
        ax.set_title(title)
    if pts:
        ax.legend(fontsize=8)
    return png(fig)


def _bars(rows: Sequence[Row], value, ylabel: str, title: str, error=None) -> bytes:
    from slmkit.plots import COLORS, figure, png

    fig, ax = figure()
    sel = [(f"{r.model}\n{r.backend} {r.precision}", value(r), r.backend, (error(r) if error else None) or 0.0)
           for r in rows if value(r) is not None]
    backends = sorted({s[2] for s in sel})
    ax.bar([s[0] for s in sel], [s[1] for s in sel], color=[COLORS[backends.index(s[2]) % len(COLORS)] for s in sel],
           yerr=[s[3] for s in sel] if error else None, capsize=3)
    if error:
        _noise_floor(ax, [s[1] for s in sel], [s[3] for s in sel])
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.tick_params(axis="x", labelsize=7)
    return png(fig)


def plots(rows: Sequence[Row]) -> dict[str, bytes]:
    out = {"accuracy_vs_decode_latency.png": _scatter(rows, lambda r: r.decode_ms, "decode latency (ms per token)",
                                                      "accuracy against decode latency"),
           "accuracy_vs_memory.png": _scatter(rows, lambda r: r.model_mb or r.peak_mb,
                                              "memory (MB): weights + KV cache + activations",
                                              "accuracy against memory")}
    if any(r.decode_tok_s for r in rows):
        out["decode_speed.png"] = _bars(rows, lambda r: r.decode_tok_s, "tokens/s", "decode speed (batch 1)")
    if any(r.groups for r in rows):
        out["accuracy.png"] = _bars(rows, lambda r: None if r.accuracy is None else 100 * r.accuracy,
                                    "accuracy (%, ±1 standard error)", "accuracy (mean of groups, 0-shot)",
                                    error=lambda r: 100 * (r.accuracy_stderr or 0))
    return out


# --- pages -----------------------------------------------------------------------------------------------------------

COLUMNS = ["model", "backend", "precision", "commonsense", "problem solving", "math", "accuracy", "ICL gain",
           "prefill tok/s", "decode tok/s", "TTFT ms", "peak MB", "model MB", "weights MB"]


def _cells(r: Row) -> list[str]:
    def pct(x, se=None):
        return "" if x is None else f"{100 * x:.1f}" + ("" if se is None else f" ± {100 * se:.1f}")

    def num(x, fmt="{:.1f}"):
        return "" if x is None else fmt.format(x)

    gain = "" if r.icl_gain is None else f"{100 * r.icl_gain:+.1f} ({r.icl_shots}-shot)"
    prefill = "" if r.prefill_tok_s is None else f"{r.prefill_tok_s:.1f} (pp{r.prefill_tokens})"
    g, se = r.groups.get, r.group_stderr.get
    return [r.model, r.backend, r.precision, pct(g("commonsense_reasoning"), se("commonsense_reasoning")),
            pct(g("problem_solving"), se("problem_solving")), pct(g("math"), se("math")),
            pct(r.accuracy, r.accuracy_stderr), gain, prefill,
            num(r.decode_tok_s), num(r.ttft_ms), num(r.peak_mb, "{:.0f}"), num(r.model_mb, "{:.0f}"),
            num(r.weights_mb, "{:.0f}")]


def _phone_cells(model: str, p) -> list[str]:
    return [model, p.model, p.device, p.quantization, f"{p.prefill_tok_s:.1f}", f"{p.decode_tok_s:.1f}",
            f"{p.memory_gb:.2f}"]


PHONE_COLUMNS = ["your model", "survey model", "phone", "quantisation", "prefill tok/s", "decode tok/s", "memory GB"]


def _notes(rows: Sequence[Row], phones) -> list[str]:
    notes = []
    sources = sorted({r.data_source for r in rows if r.data_source})
    if sources:
        notes.append("Evaluation data: " + "; ".join(sources) + ".")
    groups = common_groups(rows)
    if groups:
        notes.append("Accuracy: the mean of " + ", ".join(groups) + " (the groups every evaluated row has), at 0 "
                     "shots; a group marked partial in the eval results has only some of its tasks. ± is one "
                     "standard error (lm-eval's, over documents; the groups' combined as independent): rows "
                     "within a few standard errors of each other are not shown to differ, and the plots' "
                     "accuracy axes never zoom in below four of them.")
    if any(r.peak_mb for r in rows):
        notes.append("Peak MB is the bench process's peak resident memory (for slmkit's int8/int4 it includes "
                     "loading the float weights before quantising); model MB is weights + KV cache + activations, "
                     "what the memory plot uses.")
    if any(r.eager for r in rows):
        notes.append("slmkit's decode ran eager (uncompiled: `--no-compile`); `slm bench` and `slm tour` compile "
                     "the decode step by default (about 2-3x faster decode on a CPU after a one-off compile).")
    if not any(r.groups for r in rows):
        notes.append("No accuracy: no `slm eval` results were given (with no eval data here, `slm eval` says how "
                     "to get it).")
    if not phones:
        notes.append("None of these models is among the survey's on-phone measurements (27 models on 4 phones, "
                     "INT4 llama.cpp); see `slm zoo`.")
    return notes


def markdown(rows: Sequence[Row], images: Sequence[str], title: str) -> str:
    phones = phone_rows(rows)
    lines = [f"# {title}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    lines += ["", *[f"- {n}" for n in _notes(rows, phones)], ""]
    if phones:
        lines += ["## The survey's on-phone measurements of the same models", "",
                  "| " + " | ".join(PHONE_COLUMNS) + " |", "|" + "---|" * len(PHONE_COLUMNS)]
        lines += ["| " + " | ".join(_phone_cells(m, p)) + " |" for m, p in phones] + [""]
    lines += [f"![{Path(i).stem}]({i})" for i in images]
    return "\n".join(lines) + "\n"


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,td:nth-child(2),td:nth-child(3){text-align:left}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plots img{max-width:580px;border:1px solid #eee}"""
SCRIPT = """window.addEventListener('load',function(){var imgs=document.querySelectorAll('.plots img');var n=0;
imgs.forEach(function(i){if(i.complete&&i.naturalWidth>0)n++;});document.body.setAttribute('data-plots-rendered',n);
document.body.setAttribute('data-table-rows',document.querySelectorAll('#results tbody tr').length);});"""


def html_page(rows: Sequence[Row], images: dict[str, bytes], title: str, extra: str = "") -> str:
    esc = html.escape
    phones = phone_rows(rows)

    def table(cols, body, ident=""):
        head = "".join(f"<th>{esc(c)}</th>" for c in cols)
        trs = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>" for cells in body)
        return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>"

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>{CSS}</style>"
             f"<script>{SCRIPT}</script></head><body><h1>{esc(title)}</h1>",
             table(COLUMNS, [_cells(r) for r in rows], " id='results'"),
             "<ul>" + "".join(f"<li>{esc(n)}</li>" for n in _notes(rows, phones)) + "</ul>"]
    if phones:
        parts += ["<h2>The survey's on-phone measurements of the same models</h2>",
                  table(PHONE_COLUMNS, [_phone_cells(m, p) for m, p in phones])]
    parts.append("<div class='plots'>" + "".join(
        f"<img alt='{esc(Path(n).stem)}' src='data:image/png;base64,{base64.b64encode(b).decode()}'>"
        for n, b in images.items()) + "</div>")
    parts.append(extra)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


@dataclass
class Report:
    """The merged rows and the page's parts; write() puts report.html, report.md and the PNG plots in a folder."""

    rows: list[Row]
    title: str = "slmkit report"
    extra_html: str = ""

    def write(self, out_dir: str | Path) -> list[Path]:
        from slmkit.paths import write_atomic

        out = Path(out_dir)
        images = plots(self.rows)
        for name, data in images.items():
            write_atomic(out / name, data)
        write_atomic(out / "report.md", markdown(self.rows, list(images), self.title))
        write_atomic(out / "report.html", html_page(self.rows, images, self.title, self.extra_html))
        return [out / "report.html", out / "report.md", *(out / n for n in images)]

    def row(self, model: str, backend: str, precision: str) -> Row | None:
        return next((r for r in self.rows if (r.model, r.backend, r.precision) == (model, backend, precision)), None)


def build(paths: Sequence[str], title: str = "slmkit report", extra_html: str = "") -> Report:
    """The report on the eval and bench results under `paths` (files or folders)."""
    return Report(merge(*find_results(paths)), title, extra_html)
