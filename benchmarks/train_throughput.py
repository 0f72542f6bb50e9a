"""Training throughput and MFU of slmkit's loop on a ~30M model (the distillation student's shape), against the
machine's matmul peak measured in the same run, and against a plain transformers training step (the same
architecture as LlamaForCausalLM, the same batch, fused AdamW) as the peer.

    python benchmarks/train_throughput.py [--steps 12] [--precisions fp32,bf16]

MFU counts 6 x (matmul parameters, the output head included) + 12 x layers x seq_len x d_model FLOPs per token
(PaLM's formula, attention counted without the causal saving), over the peak of a 2048^3 matmul in the same
precision. Data: tinyshakespeare from ../shared/data (or $SLMKIT_DATA) with the default model's tokenizer.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHAPE = dict(n_layer=6, d_model=384, n_head=6, n_kv_head=2, intermediate_size=1024, context_length=2048)


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def flops_per_token(config, seq_len: int) -> float:
    c = config
    per_layer = c.d_model * (c.n_head + 2 * c.n_kv_head) * c.head_dim + c.n_head * c.head_dim * c.d_model
    per_layer += c.d_model * c.intermediate_size * (3 if c.mlp_type == "gated" else 2)
    n_matmul = c.n_layer * per_layer + c.vocab_size * c.d_model
    return 6 * n_matmul + 12 * c.n_layer * seq_len * c.d_model


def slmkit_rate(shards: Path, precision: str, steps: int, seq: int, batch: int, micro: int) -> float:
    import json

    from slmkit.train.loop import train
    from slmkit.train.recipe import load_recipe

    with tempfile.TemporaryDirectory() as tmp:
        over = [f"out={tmp}/run", "model.preset=SmolLM2-135M", f"model.overrides={json.dumps(SHAPE)}",
                f"data={{{shards}: 1.0}}", f"tokens={steps * seq * batch}", f"batch.seq_len={seq}",
                f"batch.global_batch={batch}", f"batch.micro_batch={micro}", "optim.warmup_steps=1",
                f"precision={precision}", "eval_every=0", "save_every=0", "log_every=1", "eval_tokens=1"]
        train(load_recipe(None, over), progress=False, echo=lambda *a: None)
        log = [json.loads(x) for x in Path(f"{tmp}/run/log.jsonl").read_text().splitlines()]
    times = [r["step_s"] for r in log if r.get("event") == "train"][2:]  # after two warm-up steps
    return seq * batch / statistics.median(times)


def transformers_rate(config, shards: Path, precision: str, steps: int, seq: int, batch: int, micro: int) -> float:
    from transformers import AutoConfig, AutoModelForCausalLM

    from slmkit.model.hf import config_to_hf
    from slmkit.train.data import TokenData

    hf_config = AutoConfig.for_model(**config_to_hf(config))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    data = TokenData({str(shards): 1.0}, seq, 0)
    times = []
    for step in range(steps):
        x, y = data.batch(step, 0, slice(0, batch), batch)
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        t0 = time.perf_counter()
        for i in range(0, batch, micro):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                logits = model(input_ids=x[i:i + micro]).logits
            loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), y[i:i + micro].flatten())
            (loss * micro / batch).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return seq * batch / statistics.median(times[2:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--micro-batch", type=int, default=8)
    a = p.parse_args()

    from slmkit.checkpoint import load_tokenizer
    from slmkit.device import supports_bf16
    from slmkit.model.config import ModelConfig
    from slmkit.model.summary import count_parameters
    from slmkit.train.data import prepare
    from tests.conftest import shared_dir

    shared = shared_dir()
    if shared is None:
        sys.exit("needs ../shared/data (tinyshakespeare); set SLMKIT_SHARED")
    config = ModelConfig.from_name("SmolLM2-135M", **SHAPE)
    n = count_parameters(config).total
    fpt = flops_per_token(config, a.seq_len)
    print(f"model: {n / 1e6:.1f}M parameters, {fpt / 1e6:.0f} MFLOP per token; batch {a.batch} x {a.seq_len}, "
          f"micro-batch {a.micro_batch}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        shards, _ = prepare([str(shared / "data/corpus/tinyshakespeare")], Path(tmp) / "s", load_tokenizer("default"),
                            "default", progress=False)
        rows = []
        for precision in a.precisions.split(","):
            if precision == "bf16" and not supports_bf16(torch.device("cpu")):
                print("bf16: not supported on this CPU, skipped")
                continue
            peak = matmul_peak(torch.bfloat16 if precision == "bf16" else torch.float32)
            ours = slmkit_rate(shards, precision, a.steps, a.seq_len, a.batch, a.micro_batch)
            peer = transformers_rate(config, shards, precision, a.steps, a.seq_len, a.batch, a.micro_batch)
            rows.append((precision, peak / 1e9, ours, ours * fpt / peak, peer, peer * fpt / peak, ours / peer))
    print("\n| precision | matmul peak GFLOP/s | slmkit tok/s | slmkit MFU | transformers tok/s | transformers MFU | "
          "ratio |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:.0f} | {r[2]:,.0f} | {r[3]:.1%} | {r[4]:,.0f} | {r[5]:.1%} | {r[6]:.2f}x |")


if __name__ == "__main__":
    main()
