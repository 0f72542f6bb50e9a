"""`slm bench`: every backend x precision in a worker process of its own, then one table, JSON and CSV.

The JSON has one object per test with llama-bench's field names (model_filename, backend, type, n_threads,
n_prompt, n_gen, n_depth, avg_ns, stddev_ns, avg_ts, stddev_ts, samples_ts) plus slmkit's (precision, ttft_ms,
p50/p90/p99_ms, load_s, compile_s, memory measured and predicted).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field

from slmkit.bench.backends import FLOAT_PRECISIONS, LLAMACPP_TYPES
from slmkit.bench.results import BenchRun
from slmkit.errors import SlmError
from slmkit.runtime import BACKENDS, PRECISIONS
TEXT = ("The lighthouse keeper wrote in his log every evening, noting the wind, the colour of the water and the "
        "ships that passed the point. Over forty years the entries grew shorter, but he never missed a day. When "
        "the light was finally automated, the harbour office asked him to hand the books over to the archive, "
        "and the young clerk who received them spent a whole winter reading them from the first page to the last. ")
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
    adapter: str | None = None  # a LoRA adapter on the slmkit backend
    prune_keeps: list[float] = field(default_factory=list)  # token pruning's keep ratios (pp{n}@keep{r} tests)

    def check(self) -> None:
        for name, values, allowed in (("backend", self.backends, BACKENDS), ("precision", self.precisions, PRECISIONS)):
            bad = [v for v in values if v not in allowed]
            if bad:
                raise SlmError(f"unknown {name} {', '.join(bad)}; choose from {', '.join(allowed)}")
        if not self.backends or not self.precisions:
            raise SlmError("give at least one backend and one precision")
        if self.adapter is not None and self.backends != ["slmkit"]:
            raise SlmError("--adapter benches the slmkit backend only (--backends slmkit); to compare backends, merge "
                           "it (slm merge BASE ADAPTER -o OUT) and bench the merged model")
        if any(n < 1 for n in self.prompts) or any(d < 0 for d in self.depths):
            raise SlmError("prompt lengths must be >= 1 and KV depths >= 0")
        if self.n_gen < 1 or self.repeats < 1 or self.warmup < 0 or self.threads < 1:
            raise SlmError("--n-gen, --repeats and --threads must be >= 1 and --warmup >= 0")
        if not all(0 < r <= 1 for r in self.prune_keeps):
            raise SlmError(f"--prune-keep ratios must be in (0, 1], got {','.join(map(str, self.prune_keeps))}")


def plan(spec: BenchSpec, encoder: bool = False) -> tuple[list[dict], list[str]]:
    """The worker runs (backend, precision) to do and the ones skipped, each with its reason. encoder: a model
    without decode (an encoder or a classifier), whose forward slmkit alone times."""
    import torch

    from slmkit.device import default_device, supports_bf16

    device = torch.device(spec.device) if spec.device else default_device()
    runs, skipped = [], []
    for backend in spec.backends:
        if encoder and backend != "slmkit":
            skipped.append(f"{backend}: an encoder's or classifier's forward is timed on slmkit only")
            continue
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
            if encoder and p not in FLOAT_PRECISIONS:
                skipped.append(f"{backend} {p}: weight quantisation is for causal language models, not an encoder's "
                               f"or classifier's forward")
                continue
            for kind in kinds:
                if backend == "transformers" and kind not in FLOAT_PRECISIONS:
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
                   group_size=spec.group_size, symmetric=spec.symmetric, adapter=spec.adapter,
                   gpu=device.startswith("cuda"), prune_keeps=spec.prune_keeps if run["backend"] == "slmkit" else [])
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


def bench(spec: BenchSpec, echo=print) -> BenchRun:
    """Run every planned worker: a BenchRun with a row per test, the runs skipped and failed, and provenance."""
    import torch

    from slmkit.bench.costmodel import load_calibration, predict
    from slmkit.checkpoint import load_config
    from slmkit.model.prune import unsupported

    spec.check()
    config, source = load_config(spec.model)
    encoder = not config.causal or config.head != "lm"
    if encoder:
        spec.depths = []  # no decode: the forward alone, at keep 1.0 and each --prune-keep
        if "slmkit" not in spec.backends:
            raise SlmError(f"{source} is {'an encoder' if not config.causal else 'a classifier'} (head "
                           f"{config.head!r}): slm bench times its forward on the slmkit backend; add slmkit to "
                           f"--backends")
    if config.pos_type == "learned" and max(spec.prompts) > config.context_length:
        raise SlmError(f"{source} has learned positions for {config.context_length} tokens; give --prompts up to "
                       f"{config.context_length}")
    if spec.prune_keeps and (why := unsupported(config)):
        raise SlmError(f"--prune-keep: {why}")
    runs, skipped = plan(spec, encoder)
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
    from slmkit.results import machine, versions

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    where = {**machine(spec.threads, device), "gpu": gpu}
    return BenchRun(model=spec.model, source=str(source), config_name=config.name, rows=rows, skipped=skipped,
                    errors=errors, prompt_source=id_source, calibrated=cal is not None, compiled=spec.compile,
                    repeats=spec.repeats, warmup=spec.warmup, machine=where, versions=versions())


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
