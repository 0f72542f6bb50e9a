"""Validate `slm bench --predict` on architectures that differ in depth, width, FFN ratio, vocabulary and GQA.

    python benchmarks/cost_model.py                    # calibrates if needed, then 8 architectures, fp32
    python benchmarks/cost_model.py --plot docs/img/cost_model.png --precisions fp32,int8

Each architecture is a random-weight checkpoint (speed does not depend on the values) saved under
.cache/bench/cost-model/; `slm bench --no-compile` measures it (the eager engine the cost model describes) and
the cost model predicts it from the calibration alone. Prints one row per test with predicted / measured, and
the share within +-30%; --plot draws predicted against measured.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("SLMKIT_BENCH_CACHE", ROOT / ".cache" / "bench")) / "cost-model"

# name -> ModelConfig fields; each changes one or two things against the SmolLM-135M shape
ARCHS = {
    "smollm-135m": dict(vocab_size=49152, n_layer=30, d_model=576, n_head=9, n_kv_head=3, intermediate_size=1536,
                        tie_embeddings=True),
    "deep-narrow": dict(vocab_size=32000, n_layer=40, d_model=384, n_head=6, n_kv_head=2, intermediate_size=1024,
                        tie_embeddings=True),
    "shallow-wide": dict(vocab_size=32000, n_layer=6, d_model=1280, n_head=20, n_kv_head=20,
                         intermediate_size=3456),
    "big-vocab": dict(vocab_size=151936, n_layer=12, d_model=512, n_head=8, n_kv_head=2, intermediate_size=1408,
                      tie_embeddings=True),
    "ffn-x8": dict(vocab_size=32000, n_layer=12, d_model=512, n_head=8, n_kv_head=8, intermediate_size=4096),
    "mha-768": dict(vocab_size=32000, n_layer=16, d_model=768, n_head=12, n_kv_head=12, intermediate_size=2048),
    "mqa-768": dict(vocab_size=32000, n_layer=16, d_model=768, n_head=12, n_kv_head=1, intermediate_size=2048),
    "gpt2-plain": dict(family="gpt2", vocab_size=50257, n_layer=12, d_model=768, n_head=12, mlp_type="plain",
                       activation="gelu_tanh", norm_type="layernorm", pos_type="learned", qkv_bias=True,
                       out_bias=True, mlp_bias=True, norm_bias=True, tie_embeddings=True, context_length=1024),
}


def checkpoint(name: str, fields: dict) -> Path:
    import slmkit
    from slmkit.checkpoint import init_model
    from slmkit.model.config import ModelConfig

    path = CACHE / name
    if not (path / "config.json").is_file():
        config = ModelConfig(name=name, context_length=fields.pop("context_length", 2048), **fields)
        slmkit.save(init_model(config, "float32", "cpu", seed=0), path)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", default=",".join(ARCHS), help="comma-separated subset")
    p.add_argument("--precisions", default="fp32")
    p.add_argument("--recalibrate", action="store_true", help="calibrate again even if a calibration exists")
    p.add_argument("--plot", help="PNG of predicted against measured")
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()

    from slmkit.bench.costmodel import calibrate, load_calibration
    from slmkit.bench.run import BenchSpec, bench

    cal = None if a.recalibrate else load_calibration("cpu")
    if cal is None:
        print("calibrating ...", file=sys.stderr)
        cal = calibrate("cpu")
    points = []
    rows = ["| architecture | layers | width | FFN | heads / KV | vocab | precision | test | measured ms | "
            "predicted ms | pred / meas |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in a.archs.split(","):
        fields = dict(ARCHS[name])
        path = checkpoint(name, dict(fields))
        print(f"{name} ...", file=sys.stderr, flush=True)
        spec = BenchSpec(model=str(path), backends=["slmkit"], precisions=a.precisions.split(","),
                         prompts=[32, 128, 512], depths=[0, 512], n_gen=16, repeats=a.repeats, compile=False)
        result = bench(spec, echo=lambda line: None)
        for err in result.errors:
            print(f"  {err}", file=sys.stderr)
        for r in result.rows:
            if r.get("pred_ms") is None:
                continue
            measured = r["avg_ns"] / 1e6 / (r["n_gen"] or 1)
            ratio = r["pred_ms"] / measured
            points.append((name, r["type"], r["test"], measured, r["pred_ms"]))
            kv = fields.get("n_kv_head", fields["n_head"])
            rows.append(f"| {name} | {fields['n_layer']} | {fields['d_model']} | {fields.get('intermediate_size')} | "
                        f"{fields['n_head']} / {kv} | {fields['vocab_size']} | {r['type']} | {r['test']} | "
                        f"{measured:.2f} | {r['pred_ms']:.2f} | {ratio:.2f} |")
    print("\n".join(rows))
    for kind, test in (("prefill", "pp"), ("decode", "tg")):
        sel = [m / pr for _, _, t, m, pr in points if t.startswith(test)]
        if sel:
            within = sum(0.7 <= 1 / x <= 1.3 for x in sel)
            print(f"- {kind}: {within}/{len(sel)} predictions within +-30% of measured "
                  f"(predicted/measured {min(1 / x for x in sel):.2f}-{max(1 / x for x in sel):.2f})")
    print(f"- calibration: {cal.machine}, read bandwidth {cal.stream_gbs:.1f} GB/s when calibrated")
    if a.plot:
        plot(points, a.plot)
        print(f"- plot: {a.plot}")


def plot(points, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, test, title in ((axes[0], "pp", "prefill (ms per prompt)"), (axes[1], "tg", "decode (ms per token)")):
        sel = [p for p in points if p[2].startswith(test)]
        names = sorted({p[0] for p in sel})
        for name in names:
            xs = [p[3] for p in sel if p[0] == name]
            ys = [p[4] for p in sel if p[0] == name]
            ax.scatter(xs, ys, label=name, s=28)
        lo = min(min(p[3], p[4]) for p in sel) * 0.8
        hi = max(max(p[3], p[4]) for p in sel) * 1.2
        ax.plot([lo, hi], [lo, hi], "k-", lw=1)
        ax.plot([lo, hi], [0.7 * lo, 0.7 * hi], "k:", lw=1)
        ax.plot([lo, hi], [1.3 * lo, 1.3 * hi], "k:", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("measured")
        ax.set_ylabel("predicted")
        ax.set_title(title)
    axes[1].legend(fontsize=8)
    fig.suptitle("slm bench --predict against measurement (slmkit eager engine, batch 1; dotted: +-30%)")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
