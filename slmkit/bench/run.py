"""`slm bench`: every backend x precision in a worker process of its own, then one table, JSON and CSV.

The JSON has one object per test with llama-bench's field names (model_filename, backend, type, n_threads,
n_prompt, n_gen, n_depth, avg_ns, stddev_ns, avg_ts, stddev_ts, samples_ts) plus slmkit's (precision, ttft_ms,
p50/p90/p99_ms, load_s, compile_s, memory measured and predicted).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from slmkit.bench.backends import LLAMACPP_TYPES, PRECISIONS, TRANSFORMERS_DTYPES
from slmkit.errors import SlmError

BACKENDS = ("slmkit", "transformers", "llamacpp")
TEXT = ("The lighthouse keeper wrote in his log every evening, noting the wind, the colour of the water and the "
        "ships that passed the point. Over forty years the entries grew shorter, but he never missed a day. When "
        "the light was finally automated, the harbour office asked him to hand the books over to the archive, "
        "and the young clerk who received them spent a whole winter reading them from the first page to the last. ")
CSV_FIELDS = ["model_filename", "backend", "precision", "type", "n_threads", "test", "n_prompt", "n_gen", "n_depth",
              "avg_ts", "stddev_ts", "avg_ns", "stddev_ns", "ttft_ms", "p50_ms", "p90_ms", "p99_ms", "load_s",
              "compile_s", "peak_rss_mb", "peak_cuda_mb", "weights_mb", "kv_cache_mb", "activations_mb",
              "pred_ms", "pred_weights_mb", "pred_kv_cache_mb", "pred_activations_mb"]


@dataclass
class BenchSpec:
    model: str = "default"
    backends: list[str] = field(default_factory=lambda: ["slmkit"])
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    prompts: list[int] = field(default_factory=lambda: [32, 128, 512])
    depths: list[int] = field(default_factory=lambda: [0, 512])
    n_gen: int = 32
    repeats: int = 3
    warmup: int = 1
    threads: int = os.cpu_count() or 1
    device: str | None = None
    compile: bool = True
    group_size: int = 32
    symmetric: bool = True

    def check(self) -> None:
        for name, values, allowed in (("backend", self.backends, BACKENDS), ("precision", self.precisions, PRECISIONS)):
            bad = [v for v in values if v not in allowed]
            if bad:
                raise SlmError(f"unknown {name} {', '.join(bad)}; choose from {', '.join(allowed)}")
        if not self.backends or not self.precisions:
            raise SlmError("give at least one backend and one precision")
        if any(n < 1 for n in self.prompts) or any(d < 0 for d in self.depths):
            raise SlmError("prompt lengths must be >= 1 and KV depths >= 0")
        if self.n_gen < 1 or self.repeats < 1 or self.warmup < 0 or self.threads < 1:
            raise SlmError("--n-gen, --repeats and --threads must be >= 1 and --warmup >= 0")


def plan(spec: BenchSpec) -> tuple[list[dict], list[str]]:
    """The worker runs (backend, precision) to do and the ones skipped, each with its reason."""
    import torch

    from slmkit.device import default_device, supports_bf16

    device = torch.device(spec.device) if spec.device else default_device()
    runs, skipped = [], []
    for backend in spec.backends:
        if backend == "transformers" and importlib.util.find_spec("transformers") is None:
            skipped.append("transformers: not installed (pip install transformers)")
            continue
        if backend == "llamacpp" and importlib.util.find_spec("llama_cpp") is None:
            skipped.append("llamacpp: llama-cpp-python is not installed (pip install 'slmkit[llamacpp]')")
            continue
        done = set()
        for p in spec.precisions:
            if p == "bf16" and not supports_bf16(device):
                skipped.append(f"{backend} bf16: no native bfloat16 on {device}")
                continue
            kinds = LLAMACPP_TYPES[p] if backend == "llamacpp" else [p]
            for kind in kinds:
                if backend == "transformers" and kind not in TRANSFORMERS_DTYPES:
                    skipped.append(f"transformers {kind}: weight-only quantisation is slmkit's and llama.cpp's")
                    continue
                if (backend, kind) not in done:
                    done.add((backend, kind))
                    runs.append(dict(backend=backend, precision=kind, compared=p))
    return runs, skipped


def prompt_ids(model: str, n: int) -> tuple[list[int], str]:
    """n prompt ids from the model's own tokenizer on an English text, or seeded random ids without one."""
    from slmkit.checkpoint import load_tokenizer

    tokenizer = load_tokenizer(model)
    if tokenizer is not None:
        ids = tokenizer.encode(TEXT * (1 + n // 60))
        return ids[:n], "text"
    import torch

    from slmkit.checkpoint import load_config

    config, _ = load_config(model)
    g = torch.Generator().manual_seed(0)
    return torch.randint(3, config.vocab_size, (n,), generator=g).tolist(), "random ids (no tokenizer)"


def run_worker(spec: BenchSpec, run: dict, ids: list[int], device: str, echo=print) -> dict:
    """One backend x precision in its own process; its result, or {'error': ...}."""
    payload = dict(backend=run["backend"], precision=run["precision"], model=spec.model, ids=ids,
                   prompts=spec.prompts, depths=spec.depths, n_gen=spec.n_gen, repeats=spec.repeats,
                   warmup=spec.warmup, threads=spec.threads, device=spec.device, compile=spec.compile,
                   group_size=spec.group_size, symmetric=spec.symmetric,
                   gpu=device.startswith("cuda"))
    env = {**os.environ, "OMP_NUM_THREADS": str(spec.threads)}
    proc = subprocess.Popen([sys.executable, "-m", "slmkit.bench.measure", json.dumps(payload)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err_lines = []
    for line in proc.stderr:  # the worker's progress lines, as they come
        line = line.rstrip()
        if line.startswith("  ") and "tok/s" in line:
            echo(f"  {run['backend']} {run['precision']}{line}")
        elif line:
            err_lines.append(line)
    out = proc.stdout.read()
    proc.wait()
    lines = out.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = next((x for x in reversed(err_lines) if x.strip() and not x.startswith(" ")), "no output")
        return {"error": f"worker exited with {proc.returncode}: {tail[:300]}"}
    return json.loads(lines[-1])


def bench(spec: BenchSpec, echo=print) -> dict:
    """Run every planned worker; returns {'rows': [...], 'skipped': [...], 'errors': [...], 'machine': ...}."""
    import torch

    from slmkit.bench.costmodel import load_calibration, predict
    from slmkit.checkpoint import load_config

    spec.check()
    config, source = load_config(spec.model)
    runs, skipped = plan(spec)
    ids, id_source = prompt_ids(spec.model, max(spec.prompts + [d for d in spec.depths]) + 1)
    device = spec.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cal = load_calibration(device)
    rows, errors = [], []
    for i, run in enumerate(runs, 1):
        echo(f"[{i}/{len(runs)}] {run['backend']} {run['precision']} ...")
        result = run_worker(spec, run, ids, device, echo)
        if "error" in result:
            errors.append(f"{run['backend']} {run['precision']}: {result['error']}")
            echo(f"  failed: {result['error']}")
            continue
        pred = None
        if cal is not None and run["backend"] == "slmkit" and run["precision"] in cal.matvec:
            pred = predict(config, cal, run["precision"], spec.prompts, spec.depths, result["memory"]["kv_tokens"])
        rows += _rows(spec, run, result, pred)
    return dict(model=spec.model, source=source, config_name=config.name, rows=rows, skipped=skipped, errors=errors,
                prompt_source=id_source, calibrated=cal is not None,
                machine=dict(machine=platform.machine(), processor=platform.processor(), cpus=os.cpu_count(),
                             threads=spec.threads, torch=torch.__version__, device=device,
                             gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None))


def _rows(spec: BenchSpec, run: dict, result: dict, pred) -> list[dict]:
    """One flat row per test; with a prediction, its memory always and its latency for the eager engine (the
    one the cost model describes)."""
    mem = result["memory"]
    out = []
    for r in result["records"]:
        row = dict(model_filename=spec.model, backend=run["backend"], precision=run["precision"],
                   type=result.get("label", run["precision"]), n_threads=spec.threads, load_s=result["load_s"],
                   compile_s=result.get("compile_s"), **r,
                   peak_rss_mb=mem["peak_rss_mb"], peak_cuda_mb=mem.get("peak_cuda_mb"), weights_mb=mem["weights_mb"],
                   kv_cache_mb=mem["kv_cache_mb"], activations_mb=mem["activations_mb"])
        if pred is not None:
            ms = (pred.prefill_s.get(r["n_prompt"]) if r["n_gen"] == 0 else pred.decode_s.get(r["n_depth"]))
            if spec.compile:
                ms = None
            row.update(pred_ms=ms * 1e3 if ms is not None else None, pred_weights_mb=pred.weights_mb,
                       pred_kv_cache_mb=pred.kv_cache_mb, pred_activations_mb=pred.activations_mb)
        out.append(row)
    return out


# --- output ---------------------------------------------------------------------------------------------------


def table(result: dict) -> str:
    """Markdown: one row per backend x precision with every test's tok/s, then the memory breakdown."""
    rows = result["rows"]
    tests = list(dict.fromkeys(r["test"] for r in rows))
    runs = list(dict.fromkeys((r["backend"], r["precision"]) for r in rows))
    by = {(r["backend"], r["precision"], r["test"]): r for r in rows}
    head = ["backend", "precision", "load s"] + [f"{t} tok/s" for t in tests]
    first_pp = next((t for t in tests if t.startswith("pp")), None)
    first_tg = next((t for t in tests if t.startswith("tg")), None)
    head += ([f"TTFT {first_pp[2:]} ms"] if first_pp else []) + (["p50/p90/p99 ms"] if first_tg else [])
    head += ["peak RSS MB" if result["machine"]["device"] == "cpu" else "peak GPU MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for backend, precision in runs:
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
        peak = any_row["peak_cuda_mb"] if result["machine"]["device"] != "cpu" else any_row["peak_rss_mb"]
        cells.append(f"{peak:.0f}" if peak is not None else "-")
        lines.append("| " + " | ".join(cells) + " |")
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
    return "\n".join(lines)


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_FIELDS})
    return buf.getvalue()


def write_outputs(result: dict, out_dir: str | Path) -> Path:
    """bench.json, bench.csv and bench.md in out_dir, each written to a temporary name and renamed."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("bench.json", json.dumps(result, indent=1)), ("bench.csv", to_csv(result["rows"])),
                       ("bench.md", table(result) + "\n")):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)
    return out
