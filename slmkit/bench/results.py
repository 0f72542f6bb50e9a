"""A bench run's typed result (BenchRun: one row per test with llama-bench's fields, the skipped and failed runs,
the machine and the versions) and its outputs: the markdown table, bench.csv, and bench.json = to_json()."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from slmkit.paths import write_atomic
from slmkit.results import Result

CSV_FIELDS = ["model_filename", "backend", "precision", "type", "n_threads", "test", "n_prompt", "n_gen", "n_depth",
              "avg_ts", "stddev_ts", "avg_ns", "stddev_ns", "keep", "token_layers", "ttft_ms", "p50_ms", "p90_ms",
              "p99_ms", "load_s", "compile_s", "peak_rss_mb", "peak_cuda_mb", "weights_mb", "kv_cache_mb",
              "activations_mb", "pred_ms", "pred_weights_mb", "pred_kv_cache_mb", "pred_activations_mb"]


@dataclass
class BenchRun(Result):
    """Every backend x precision `slm bench` ran on one model: rows[i] is one test (pp{n} or tg{n}@d{d}) of one
    run; `precision` is the registry's name (or llama.cpp's file type), `type` the precision in detail."""

    kind: ClassVar[str] = "bench"
    filename: ClassVar[str] = "bench.json"

    model: str
    source: str
    config_name: str
    rows: list[dict[str, Any]]
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    prompt_source: str = "text"
    calibrated: bool = False
    compiled: bool = True
    repeats: int = 3
    warmup: int = 1
    machine: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    def header(self) -> str:
        m = self.machine
        return (f"{self.model} ({self.config_name}), batch 1, greedy, prompt ids: {self.prompt_source}; "
                f"{m.get('threads')} threads, torch {self.versions.get('torch')}, "
                f"{m.get('gpu') or m.get('processor') or m.get('machine')}, {m.get('cpus')} cpus; {self.repeats} "
                f"repeats after {self.warmup} warm-up")

    def table(self) -> str:
        return table(self)

    def csv(self) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in self.rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_FIELDS})
        return buf.getvalue()

    def write(self, out_dir: str | Path) -> Path:
        """bench.json, bench.csv and bench.md in out_dir, each written atomically."""
        out = Path(out_dir)
        write_atomic(out / self.filename, self.dumps())
        write_atomic(out / "bench.csv", self.csv())
        write_atomic(out / "bench.md", self.table() + "\n")
        return out


def table(result: BenchRun) -> str:
    """Markdown: one row per backend x precision with every test's tok/s, then the memory breakdown."""
    rows = result.rows
    tests = list(dict.fromkeys(r["test"] for r in rows if "keep" not in r))
    runs = list(dict.fromkeys((r["backend"], r["precision"]) for r in rows))
    by = {(r["backend"], r["precision"], r["test"]): r for r in rows}
    head = ["backend", "precision", "load s"] + [f"{t} tok/s" for t in tests]
    first_pp = next((t for t in tests if t.startswith("pp")), None)
    first_tg = next((t for t in tests if t.startswith("tg")), None)
    head += ([f"TTFT {first_pp[2:]} ms"] if first_pp else []) + (["p50/p90/p99 ms"] if first_tg else [])
    head += ["peak RSS MB" if result.machine["device"] == "cpu" else "peak GPU MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for backend, precision in runs if tests else []:
        any_row = next(r for r in rows if (r["backend"], r["precision"]) == (backend, precision))
        cells = [backend, any_row["type"], f"{any_row['load_s']:.1f}" + (
            f" (+{any_row['compile_s']:.0f} compile)" if any_row.get("compile_s") else "")]
        for t in tests:
            r = by.get((backend, precision, t))
            cells.append("-" if r is None else f"{r['avg_ts']:.1f} ± {r['stddev_ts']:.1f}")
        if first_pp:
            r = by.get((backend, precision, first_pp))
            cells.append("-" if r is None else f"{r['ttft_ms']:.0f}")
        if first_tg:
            r = by.get((backend, precision, first_tg))
            cells.append("-" if r is None else f"{r['p50_ms']:.1f}/{r['p90_ms']:.1f}/{r['p99_ms']:.1f}")
        peak = any_row["peak_cuda_mb"] if result.machine["device"] != "cpu" else any_row["peak_rss_mb"]
        cells.append(f"{peak:.0f}" if peak is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
    if not tests:
        lines = []
    pruned = [r for r in rows if "keep" in r]
    if pruned:
        lines += ["", "Token pruning: one uncached forward (a decoder's prefill to its last-token logits, an encoder's "
                  "whole forward) at each keep ratio, beside the same forward unpruned, interleaved", "",
                  "| backend | precision | tokens | keep | token-layers run | ms (median) | tok/s | time vs keep 1 |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in pruned:
            base = by.get((r["backend"], r["precision"], f"pp{r['n_prompt']}@keep1"))
            ratio = f"{r['ttft_ms'] / base['ttft_ms']:.2f}" if base else "-"
            lines.append(f"| {r['backend']} | {r['type']} | {r['n_prompt']} | {r['keep']:g} | {r['token_layers']:.2f} "
                         f"| {r['ttft_ms']:.1f} | {r['avg_ts']:.0f} ± {r['stddev_ts']:.0f} | {ratio} |")
    lines += ["", "Memory (MB): measured, and predicted by the cost model for slmkit (after slm bench --calibrate)", "",
              "| backend | precision | weights | KV cache (tokens) | activations (largest prefill) | peak RSS |",
              "|---|---|---|---|---|---|"]
    for backend, precision in runs:
        r = next(x for x in rows if (x["backend"], x["precision"]) == (backend, precision))

        def both(key):
            pred = r.get(f"pred_{key}")
            return f"{r[key]:.1f}" + (f" (pred {pred:.1f})" if pred is not None else "")

        lines.append(f"| {backend} | {r['type']} | {both('weights_mb')} | {both('kv_cache_mb')} | "
                     f"{both('activations_mb')} | {r['peak_rss_mb']:.0f} |")
    if any(r.get("pred_ms") is not None for r in rows):
        lines += ["", "Latency predicted by the cost model (slmkit eager) against measured:", "",
                  "| precision | test | measured ms | predicted ms | predicted / measured |", "|---|---|---|---|---|"]
        for r in rows:
            if r.get("pred_ms") is not None:
                measured = r["avg_ns"] / 1e6 / (r["n_gen"] or 1)
                lines.append(f"| {r['type']} | {r['test']} | {measured:.2f} | {r['pred_ms']:.2f} | "
                             f"{r['pred_ms'] / measured:.2f} |")
    return "\n".join(lines).strip("\n")


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_FIELDS})
    return buf.getvalue()
