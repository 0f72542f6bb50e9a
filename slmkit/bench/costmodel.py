"""Predict prefill latency, decode latency and memory from a config and the machine's measured ceilings.

The model is a roofline plus a fixed cost per executed layer, with every constant measured on this machine
by `calibrate()` (`slm bench --calibrate`), for slmkit's eager engine:

  decode step  = bytes streamed / matvec bandwidth of the precision's kernel + layers * c_layer + c_step
                 (bytes: every block linear and the output head once, plus the KV cache read at that depth)
  prefill of T = matmul FLOPs / GEMM rate + layers * c_layer_prefill + c_prefill
                 (FLOPs: 2 * T * block-linear parameters, causal attention 2 * T^2 * heads * head_dim per
                 layer, and the head on the last position only)
  memory       = weights (bytes per parameter of the precision) + KV cache (float32 on CPU) + the largest
                 prefill's activations (T * (3 * FFN width + 4 * width + q/k/v widths) * 4 bytes)

This is what the survey's finding rests on: at equal size, a deeper and narrower model pays more per-layer
costs, a wider vocabulary streams a bigger head, and grouped-query attention reads less KV cache.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from slmkit.errors import SlmError
from slmkit.model.config import ModelConfig

# bytes per block-linear parameter: read per decode step (the kernel's layout), and held in memory (int4 keeps
# its checkpoint buffers, nibbles plus float32 scales and zeros, beside the kernel's packed copy)
TRAFFIC = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "int8": 1.0, "int4": 0.5 + 4 / 32}
STORED = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "int8": 1.0, "int4": 0.5 + 8 / 32 + 0.5 + 4 / 32}
MATVEC_IN = (512, 2048, 8192)  # the grid of layer shapes timed one row at a time, per precision:
MATVEC_OUT = (512, 2048, 8192, 32768)  # one-row speed depends on the shape, not only on the bytes
MAX_LAYER_BYTES = 300 * 2**20  # grid points whose float32 layer is bigger are extrapolated
GEMM_ROWS = (32, 128, 512)  # prompt lengths the prefill linears are timed at, on a smaller grid of shapes
GEMM_IN = (512, 2048)
GEMM_OUT = (512, 2048, 8192)
STREAM_BYTES = 192 * 2**20  # each timing cycles through this many bytes of distinct weights, as decode does


@dataclass
class Calibration:
    device: str
    threads: int
    machine: str
    stream_gbs: float  # plain memory read bandwidth (a sum over a large buffer)
    matvec: dict[str, dict[str, float]] = field(default_factory=dict)  # precision -> {"in x out": s per call}
    gemm: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # precision -> rows -> {shape: s}
    c_layer: float = 0.0  # s per executed layer per decode step outside its linears (eager engine)
    c_step: float = 0.0  # s per decode step outside the layers (embedding, sampling, bookkeeping)
    c_layer_prefill: float = 0.0
    c_prefill: float = 0.0
    seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def calibration_path(device: str = "cpu") -> Path:
    from slmkit.paths import cache_dir

    return cache_dir(f"calibration-{device.replace(':', '')}.json")


def _best(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _layer(precision: str, n_in: int, n_out: int, device: torch.device) -> tuple[torch.nn.Module, float]:
    """A random linear layer at this precision, made as slm bench makes it, and its weight bytes per call."""
    from slmkit.quant.linear import Int4Linear, Int8Linear

    linear = torch.nn.Linear(n_in, n_out, bias=False, device=device)
    if precision == "int8":
        layer = Int8Linear.from_linear(linear)
    elif precision == "int4":
        layer = Int4Linear.from_linear(linear, 32)
    else:
        layer = linear.to(_dtype(precision))
    x = torch.zeros(1, n_in, device=device, dtype=_dtype(precision))
    layer(x)  # builds the kernel's packed layout
    return layer, n_in * n_out * TRAFFIC[precision]


def _dtype(precision: str) -> torch.dtype:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


def _matvec(precision: str, device: torch.device, stream_bytes: int) -> dict[str, float] | None:
    """Seconds per one-row call for each grid shape, timed while cycling through enough distinct layers
    (STREAM_BYTES) that the weights come from memory, as they do in decode."""
    out = {}
    with torch.inference_mode():
        for n_in in MATVEC_IN:
            for n_out in MATVEC_OUT:
                if n_in * n_out * 4 > MAX_LAYER_BYTES:
                    continue
                layer, bytes_ = _layer(precision, n_in, n_out, device)
                count = min(max(2, int(stream_bytes // bytes_)), 512)
                layers = [layer] + [_layer(precision, n_in, n_out, device)[0] for _ in range(count - 1)]
                x = torch.randn(1, n_in, device=device, dtype=_dtype(precision))
                try:
                    out[f"{n_in}x{n_out}"] = _best(lambda: [m(x) for m in layers], 2) / len(layers)
                except RuntimeError:
                    return None
                del layers, layer
    return out


def matvec_seconds(cal: Calibration, precision: str, n_in: int, n_out: int) -> float:
    """One-row call time of an (n_in -> n_out) layer, interpolated over the calibrated grid."""
    return _interpolate(cal.matvec[precision], n_in, n_out)


def gemm_seconds(cal: Calibration, precision: str, rows: int, n_in: int, n_out: int) -> float:
    """Call time of an (n_in -> n_out) layer on `rows` rows: interpolated over shapes, then over log(rows)."""
    import math

    table = sorted((int(m), _interpolate(g, n_in, n_out)) for m, g in cal.gemm[precision].items())
    (m0, t0), (m1, t1) = (table[0], table[1]) if rows <= table[1][0] else (table[-2], table[-1])
    f = (math.log(rows) - math.log(m0)) / (math.log(m1) - math.log(m0))
    return math.exp(math.log(t0) + f * (math.log(t1) - math.log(t0)))


def _interpolate(times: dict[str, float], n_in: int, n_out: int) -> float:
    """Bilinear in log(in), log(out) over a grid {"in x out": seconds} (on log time), extrapolated linearly."""
    import math

    grid = {tuple(map(int, k.split("x"))): math.log(v) for k, v in times.items()}
    ins = sorted({i for i, _ in grid})

    def bracket(values, x):
        if len(values) == 1:
            return values[0], values[0], 0.0
        k = max(1, min(len(values) - 1, sum(v <= x for v in values)))
        a, b = values[k - 1], values[k]
        return a, b, (math.log(x) - math.log(a)) / (math.log(b) - math.log(a))

    def along_out(i):  # log time at (i, n_out), from the grid points of that input width
        row = sorted((o, t) for (ii, o), t in grid.items() if ii == i)
        xs = [o for o, _ in row]
        a, b, f = bracket(xs, n_out)
        ta, tb = dict(row)[a], dict(row)[b]
        return ta + f * (tb - ta)

    a, b, f = bracket(ins, n_in)
    ta, tb = along_out(a), along_out(b)
    return math.exp(ta + f * (tb - ta))


def _gemm(precision: str, device: torch.device) -> dict[str, dict[str, float]]:
    """Seconds per call of prefill-sized linears: {rows: {"in x out": s}} over GEMM_ROWS x the shape grid."""
    out: dict[str, dict[str, float]] = {str(m): {} for m in GEMM_ROWS}
    with torch.inference_mode():
        for n_in in GEMM_IN:
            for n_out in GEMM_OUT:
                layer, _ = _layer(precision, n_in, n_out, device)
                for m in GEMM_ROWS:
                    x = torch.randn(m, n_in, device=device, dtype=_dtype(precision))
                    out[str(m)][f"{n_in}x{n_out}"] = _best(lambda: layer(x), 3)
    return out


def _overheads(device: torch.device, per_call: float) -> tuple[float, float, float, float]:
    """Per-layer and fixed costs of the eager engine outside the linears, from two tiny models that differ
    only in depth: their weights are a few KB, so their time is dispatch, not arithmetic or memory traffic."""
    from slmkit.checkpoint import init_model
    from slmkit.engine import Engine

    per = {}
    for layers in (2, 10):
        config = ModelConfig(vocab_size=256, n_layer=layers, d_model=64, n_head=4, n_kv_head=2,
                             intermediate_size=128, context_length=512)
        engine = Engine(init_model(config, "float32", device, seed=0))
        engine.setup_caches(1, 256)
        ids = list(range(1, 65))

        def prefill():
            engine.setup_caches(1, 256)
            return engine.prefill([ids])

        def decode():
            token = torch.tensor([1], device=device)
            for _ in range(32):
                engine.decode(token)

        with torch.inference_mode():
            t_prefill = _best(prefill, 5)
            t_decode = _best(lambda: (prefill(), decode()), 5) - t_prefill
        per[layers] = (t_prefill, t_decode / 32)
    n_lin = len(_linear_shapes(config))
    (p2, d2), (p10, d10) = per[2], per[10]
    c_layer, c_layer_prefill = (d10 - d2) / 8, (p10 - p2) / 8
    c_step, c_prefill = d2 - 2 * c_layer - per_call, p2 - 2 * c_layer_prefill - per_call  # minus the head's call
    return (max(c_layer - n_lin * per_call, 0.0), max(c_step, 0.0), max(c_layer_prefill - n_lin * per_call, 0.0),
            max(c_prefill, 0.0))


def calibrate(device: str | torch.device = "cpu", save: bool = True, precisions: list[str] | None = None,
              stream_bytes: int = STREAM_BYTES) -> Calibration:
    """Measure this machine's ceilings and the engine's fixed costs (about a minute on a 2-core CPU).

    precisions: the kernels to time (default fp32, int8, int4, and bf16 where native); stream_bytes: the
    weight bytes each one-row timing cycles through (smaller is quicker but lets caches flatter the result).
    """
    from slmkit.bench.hardware import memory_bandwidth
    from slmkit.device import supports_bf16

    device = torch.device(device)
    t0 = time.perf_counter()
    cal = Calibration(device=str(device), threads=torch.get_num_threads(),
                      machine=f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus".strip(),
                      stream_gbs=max(memory_bandwidth(512, device=device) for _ in range(3)))
    if precisions is None:
        precisions = ["fp32", "int8", "int4"] + (["bf16"] if supports_bf16(device) else [])
    for p in dict.fromkeys(["fp32"] + precisions):  # fp32 always: the overheads are measured against it
        grid = _matvec(p, device, stream_bytes)
        if grid:
            cal.matvec[p] = grid
            cal.gemm[p] = _gemm(p, device)
    per_call = matvec_seconds(cal, "fp32", 64, 64)  # a tiny layer's call: dispatch alone
    cal.c_layer, cal.c_step, cal.c_layer_prefill, cal.c_prefill = _overheads(device, per_call)
    cal.seconds = time.perf_counter() - t0
    if save:
        path = calibration_path(str(device))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(cal.to_json())
        os.replace(tmp, path)
    return cal


def load_calibration(device: str = "cpu") -> Calibration | None:
    path = calibration_path(device)
    if not path.is_file():
        return None
    try:
        return Calibration(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError):
        return None  # an older or damaged file: calibrate again


@dataclass
class Prediction:
    precision: str
    prefill_s: dict[int, float]  # prompt tokens -> seconds
    decode_s: dict[int, float]  # KV depth -> seconds per token
    weights_mb: float
    kv_cache_mb: float
    activations_mb: float


def _linear_shapes(config: ModelConfig) -> list[tuple[int, int]]:
    """(in, out) of every linear in one block, read off the model built on the meta device."""
    from slmkit.model.model import Transformer

    with torch.device("meta"):
        model = Transformer(config)
    return [(m.in_features, m.out_features) for m in model.blocks[0].modules() if isinstance(m, torch.nn.Linear)]


def predict(config: ModelConfig, cal: Calibration, precision: str = "fp32", prompts=(32, 128, 512),
            depths=(0, 128, 512), kv_tokens: int = 1024) -> Prediction:
    """Latency and memory of slmkit's eager engine for this config at a named precision (runtime.precision), batch
    1: int8 and int4 quantise the block linears, "+head" the output head too (to int8)."""
    from slmkit.runtime.precision import precision as lookup

    p = lookup(precision)
    kernel = {8: "int8", 4: "int4"}.get(p.bits, p.name)  # the calibrated kernel of the block linears
    if kernel not in TRAFFIC:
        raise SlmError(f"no cost model for precision {precision!r}; use one of {', '.join(TRAFFIC)}")
    if kernel not in cal.matvec:
        raise SlmError(f"the calibration has no {kernel} kernel measurement on {cal.device}; "
                       "run slm bench --calibrate")
    quantised = p.quantised
    head_precision = "int8" if p.head else ("fp32" if quantised else kernel)
    layers = config.n_layer * config.layer_repeat
    shapes = _linear_shapes(config)
    width = config.embed_dim or config.d_model
    head = config.vocab_size * width
    kv_per_token = 2 * layers * config.n_kv_head * config.head_dim * 4  # float32 cache on CPU
    linears = layers * sum(matvec_seconds(cal, kernel, i, o) for i, o in shapes)
    head_s = matvec_seconds(cal, head_precision, width, config.vocab_size)
    decode = {}
    for d in depths:
        kv_s = kv_per_token * max(d, 1) / (cal.stream_gbs * 1e9)
        decode[d] = linears + head_s + kv_s + layers * cal.c_layer + cal.c_step
    q_width = config.n_head * config.head_dim
    prefill = {}
    attention_rate = 2 * 512 * 2048 * 2048 / gemm_seconds(cal, "fp32", 512, 2048, 2048)  # FLOP/s
    for t in prompts:
        linears = layers * sum(gemm_seconds(cal, kernel, t, i, o) for i, o in shapes)
        attention = layers * 2 * t * t * q_width / attention_rate  # QK^T and PV, causal halves of each
        prefill[t] = linears + head_s + attention + layers * cal.c_layer_prefill + cal.c_prefill
    t = max(prompts)
    ffn = config.intermediate_size or 4 * config.d_model
    act = t * (3 * ffn + 4 * config.d_model + q_width + 2 * config.n_kv_head * config.head_dim) * 4
    stored_blocks = config.n_layer * sum(i * o for i, o in shapes)
    emb_elem = 4.0 if quantised else TRAFFIC[kernel]  # the token embedding stays float32 when quantised
    weights = stored_blocks * STORED[kernel] + head * emb_elem
    if p.head:
        weights += head * (1 + 2 / width)  # the int8 head and its scales
    elif not config.tie_embeddings:
        weights += head * emb_elem
    return Prediction(precision, prefill, decode, weights / 2**20, kv_per_token * kv_tokens / 2**20, act / 2**20)


def describe(cal: Calibration) -> str:
    """The calibration for people: bandwidth, kernel rates per precision and the engine's overheads."""
    lines = [f"machine: {cal.machine}, {cal.threads} threads, device {cal.device} (measured in {cal.seconds:.0f} s)",
             f"memory read bandwidth: {cal.stream_gbs:.1f} GB/s"]
    for p, grid in cal.matvec.items():
        rates = [int(k.split("x")[0]) * int(k.split("x")[1]) * TRAFFIC[p] / t / 1e9 for k, t in grid.items()]
        lines.append(f"one-row linear ({p}): {min(rates):.1f}-{max(rates):.1f} GB/s of weights over "
                     f"{len(grid)} shapes")
    for p, by_rows in cal.gemm.items():
        rates = []
        for m, grid in by_rows.items():
            flops = [2 * int(m) * int(k.split("x")[0]) * int(k.split("x")[1]) / t for k, t in grid.items()]
            rates.append(f"{max(flops) / 1e9:.0f} at {m} rows")
        lines.append(f"prefill linear ({p}): best GFLOP/s " + ", ".join(rates))
    lines.append(f"eager engine overheads: {cal.c_layer * 1e6:.0f} us per layer and {cal.c_step * 1e6:.0f} us per "
                 f"decode step; {cal.c_layer_prefill * 1e6:.0f} us per layer and {cal.c_prefill * 1e6:.0f} us per "
                 "prefill")
    return "\n".join(lines)


def prediction_table(model: str, cal: Calibration, precisions: list[str], prompts: list[int], depths: list[int]) -> str:
    """Markdown: predicted prefill ms and decode tok/s per precision for a preset, config folder or GGUF."""
    from slmkit.checkpoint import load_config
    from slmkit.model.summary import count_parameters, human
    from slmkit.runtime.precision import precision as lookup

    config, source = load_config(model)
    params = count_parameters(config).total
    kv_tokens = max(prompts + [d + 32 for d in depths])
    lines = [f"predicted for {source} ({human(params)} parameters), slmkit eager engine, batch 1, on {cal.machine}",
             "", "| precision | " + " | ".join(f"prefill {t} ms" for t in prompts) + " | "
             + " | ".join(f"decode @{d} tok/s" for d in depths) + " | weights MB | KV cache MB | activations MB |",
             "|---|" + "---|" * (len(prompts) + len(depths) + 3)]
    for p in precisions:
        kernel = {8: "int8", 4: "int4"}.get(lookup(p).bits, p)
        if kernel not in cal.matvec:
            lines.append(f"| {p} | no calibration for this precision on {cal.device} |")
            continue
        pr = predict(config, cal, p, prompts, depths, kv_tokens)
        lines.append(f"| {p} | " + " | ".join(f"{pr.prefill_s[t] * 1e3:.1f}" for t in prompts) + " | "
                     + " | ".join(f"{1 / pr.decode_s[d]:.1f}" for d in depths)
                     + f" | {pr.weights_mb:.0f} | {pr.kv_cache_mb:.1f} ({kv_tokens} tokens) "
                     f"| {pr.activations_mb:.1f} |")
    return "\n".join(lines)
