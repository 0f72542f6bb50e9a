"""muP's promise, measured: the best learning rate found on a narrow model carries over to a wider one.

Trains the same 2-layer model at two widths (head size fixed, so width adds heads) over a sweep of learning
rates, in standard parametrisation (one init std, one lr) and in muP (slmkit.train.mup, base width = the narrow
one), on tinyshakespeare with a 2048-token BPE tokenizer, and prints validation loss per (width, lr) and each
width's best lr. With muP the best lr should be the same at both widths; without it, it shifts.

    python benchmarks/mup_transfer.py [--widths 64,256] [--lrs ...] [--steps 120]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run(shards: Path, width: int, lr: float, use_mup: bool, steps: int, base: int, tmp: str) -> float:
    from slmkit.train.loop import train
    from slmkit.train.recipe import load_recipe

    over = dict(vocab_size=2048, n_layer=2, d_model=width, n_head=width // 32, n_kv_head=width // 32,
                intermediate_size=2 * width, context_length=128, tie_embeddings=False)
    sets = [f"out={tmp}/w{width}-lr{lr}-{use_mup}", "model.preset=SmolLM2-135M", f"model.overrides={json.dumps(over)}",
            f"data={{{shards}: 1.0}}", f"tokens={steps * 16 * 128}", "batch.seq_len=128", "batch.global_batch=16",
            "batch.micro_batch=16", f"optim.lr={lr}", "optim.warmup_steps=20", "optim.weight_decay=0.0",
            "optim.clip=0", "precision=fp32", "eval_every=0", "save_every=0", "eval_tokens=32768", "log_every=50"]
    if use_mup:
        sets.append(f"mup.base_width={base}")
    from slmkit.errors import SlmError

    try:
        return train(load_recipe(None, sets), progress=False, echo=lambda *a: None).final_val_loss
    except SlmError as e:  # a diverged run (NaN loss) is a data point: the lr is too high
        if "loss became" not in str(e):
            raise
        return float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", default="64,256")
    p.add_argument("--lrs", default="0.002,0.004,0.008,0.016,0.032,0.064")
    p.add_argument("--steps", type=int, default=120)
    a = p.parse_args()

    from slmkit.tokenizer.train import train_bpe
    from slmkit.train.data import prepare
    from tests.conftest import shared_dir

    shared = shared_dir()
    if shared is None:
        sys.exit("needs ../shared/data (tinyshakespeare); set SLMKIT_SHARED")
    widths = [int(w) for w in a.widths.split(",")]
    lrs = [float(x) for x in a.lrs.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        text = str(shared / "data/corpus/tinyshakespeare")
        shards, _ = prepare([text], Path(tmp) / "s", train_bpe([text], vocab_size=2048), "bpe-2048",
                            val_fraction=0.05, progress=False)
        table = {}
        for use_mup in (False, True):
            for w in widths:
                for lr in lrs:
                    loss = run(shards, w, lr, use_mup, a.steps, widths[0], tmp)
                    table[(use_mup, w, lr)] = loss
                    print(f"{'muP' if use_mup else 'SP '} width {w:4d} lr {lr:.4f}: val loss {loss:.4f}", flush=True)
    print("\n| parametrisation | width | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | best lr |")
    print("|---|---|" + "---|" * (len(lrs) + 1))
    for use_mup in (False, True):
        for w in widths:
            losses = [table[(use_mup, w, lr)] for lr in lrs]
            best = lrs[min(range(len(lrs)), key=lambda i: losses[i] if losses[i] == losses[i] else 1e9)]
            cells = " | ".join(f"**{x:.3f}**" if lr == best else f"{x:.3f}" for lr, x in zip(lrs, losses))
            print(f"| {'muP' if use_mup else 'standard'} | {w} | {cells} | {best:g} |")


if __name__ == "__main__":
    main()
