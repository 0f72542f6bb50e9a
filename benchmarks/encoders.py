"""RoBERTa-style masked-LM pretraining measured (issue 25): a small RoBERTa pretrained on ../shared/data/corpus
(recipes/roberta-small-mlm.yaml), its MLM loss curve, and what pretraining buys downstream: SST-2 accuracy after
fine-tuning a classification head (recipes/sst2-classify.yaml) from the pretrained encoder, from the same
architecture untrained, and from MiniLM (all-MiniLM-L6-v2, 22M parameters, distilled from a large model on far more
text), 3 seeds each.

    python benchmarks/encoders.py                 # tokenizer, shards, pretraining, fine-tuning, the table
    python benchmarks/encoders.py --mlm-steps 300 # a shorter pretraining
    python benchmarks/encoders.py --table         # the table from stored results

SST-2 here: its 872 validation sentences (the labelled ones in the data here), split in two halves by a fixed
shuffle: 436 to fine-tune on, 436 to score. Results go to runs/encoders-bench/; finished steps are not rerun.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WORK = ROOT / "runs/encoders-bench"
SEEDS = (0, 1, 2)
ARMS = ("pretrained", "untrained", "minilm")


def data_root() -> Path:
    from slmkit.eval.data import shared_data_dir

    root = shared_data_dir()
    if root is None:
        sys.exit("encoders.py: the shared data folder was not found; set SLMKIT_DATA")
    return root


def corpus() -> list[str]:
    return [str(data_root() / "corpus")]


def tokenizer_dir() -> Path:
    from slmkit.tokenizer.train import train_bpe

    out = WORK / "tokenizer"
    if not (out / "tokenizer.json").is_file():
        train_bpe(corpus(), vocab_size=8192, style="roberta").save_to(out)
    return out


def shards_dir() -> Path:
    from slmkit.tokenizer.tokenizer import Tokenizer
    from slmkit.train.data import prepare

    out = WORK / "shards"
    if not (out / "meta.json").is_file():
        prepare(corpus(), out, Tokenizer.from_dir(tokenizer_dir()), str(tokenizer_dir()), val_fraction=0.01,
                block=128, progress=False, overwrite=True)
    return out


def pretrain(steps: int) -> dict:
    from slmkit.train.loop import train
    from slmkit.train.recipe import load_recipe

    out = WORK / "mlm"
    done = out / "model" / "config.json"
    if not done.is_file():
        recipe = load_recipe(ROOT / "recipes/roberta-small-mlm.yaml",
                             [f"out={out}", f"data={{{shards_dir()}: 1.0}}", f"steps={steps}",
                              f"optim.warmup_steps={max(1, steps * 6 // 100)}", "save_every=0"])
        t0 = time.perf_counter()
        train(recipe, progress=True, overwrite=True)
        (out / "wall.json").write_text(json.dumps({"seconds": time.perf_counter() - t0}))
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    start = next(e for e in log if e["event"] == "start")
    return dict(steps=steps, params=start["params"], tokens=steps * 32 * 128,
                seconds=json.loads((out / "wall.json").read_text())["seconds"],
                val=[(e["step"], e["val_loss"]) for e in log if e["event"] == "eval"],
                train=[(e["step"], e["loss"]) for e in log if e["event"] == "train"])


def sst2_halves(out: Path = WORK / "sst2", limit: int | None = None) -> tuple[Path, Path]:
    """SST-2's 872 validation sentences halved by a fixed shuffle (seed 25): train.jsonl, test.jsonl (its first
    `limit` sentences when given). benchmarks/lad.py uses the same halves."""
    import random

    from slmkit.eval.data import load_task_data

    train, test = out / "train.jsonl", out / "test.jsonl"
    if not test.is_file():
        docs = load_task_data("sst2").docs["validation"]
        order = list(range(len(docs)))
        random.Random(25).shuffle(order)
        half = len(docs) // 2
        out.mkdir(parents=True, exist_ok=True)
        for path, idx in ((train, order[:half]), (test, order[half:half + limit] if limit else order[half:])):
            path.write_text("".join(json.dumps({"sentence": docs[i]["sentence"], "label": docs[i]["label"]}) + "\n"
                                    for i in idx), encoding="utf-8")
    return train, test


def finetune(arm: str, seed: int, steps: int, lr: float) -> dict:
    from slmkit.combine.supericl import minilm_path
    from slmkit.train.loop import train
    from slmkit.train.recipe import load_recipe

    path = WORK / "results" / f"{arm}-{seed}.json"
    if path.is_file():
        return json.loads(path.read_text())
    train_f, test_f = sst2_halves()
    out = WORK / f"cls-{arm}-{seed}"
    sets = [f"out={out}", f"seed={seed}", f"task.train={train_f}", f"task.val={test_f}", f"steps={steps}",
            f"optim.lr={lr}", f"optim.warmup_steps={max(1, steps * 6 // 100)}", f"eval_every={steps}"]
    if arm == "pretrained":
        sets.append(f"model.init={WORK / 'mlm/model'}")
    elif arm == "minilm":
        sets.append(f"model.init={minilm_path()}")
    else:  # the pretrained run's architecture, freshly initialised, with its tokenizer
        cfg = json.loads((WORK / "mlm/model/config.json").read_text())
        over = dict(n_layer=cfg["num_hidden_layers"], d_model=cfg["hidden_size"], n_head=cfg["num_attention_heads"],
                    intermediate_size=cfg["intermediate_size"], vocab_size=cfg["vocab_size"],
                    context_length=cfg["max_position_embeddings"] - 2)
        sets += ["model.init=null", "model.preset=RoBERTa-base", f"model.overrides={json.dumps(over)}",
                 f"task.tokenizer={tokenizer_dir()}"]
    recipe = load_recipe(ROOT / "recipes/sst2-classify.yaml", sets)
    t0 = time.perf_counter()
    train(recipe, progress=False, echo=lambda *a: None, overwrite=True)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    final = [e for e in log if e["event"] == "eval"][-1]
    n = sum(1 for _ in open(test_f, encoding="utf-8"))
    acc = final["val_acc"]
    info = dict(arm=arm, seed=seed, acc=acc, stderr=math.sqrt(acc * (1 - acc) / n), n=n, val_loss=final["val_loss"],
                params=next(e for e in log if e["event"] == "start")["params"], seconds=time.perf_counter() - t0,
                steps=steps, lr=lr)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=2))
    print(f"{arm} seed {seed}: SST-2 {100 * acc:.1f}% ({info['seconds']:.0f} s)", flush=True)
    return info


def plot(mlm: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(*zip(*mlm["train"]), label="train (masked positions)", alpha=0.6)
    ax.plot(*zip(*mlm["val"]), "o-", label="validation (fixed masks)")
    ax.set_xlabel("step (32 x 128 tokens)")
    ax.set_ylabel("masked-LM loss (nats)")
    ax.set_title(f"Small RoBERTa ({mlm['params'] / 1e6:.1f}M) on ../shared/data/corpus")
    ax.legend()
    fig.tight_layout()
    out = ROOT / "docs/img/mlm-loss.png"
    fig.savefig(out, dpi=120)
    return out


def table(mlm: dict | None, rows: list[dict]) -> str:
    import statistics

    lines = []
    if mlm:
        v = mlm["val"]
        lines += [f"MLM pretraining: {mlm['params'] / 1e6:.1f}M parameters, {mlm['steps']} steps, "
                  f"{mlm['tokens']:,} tokens, {mlm['seconds'] / 60:.1f} min; val loss {v[0][1]:.3f} (step {v[0][0]}) "
                  f"-> {v[-1][1]:.3f} (step {v[-1][0]})", ""]
    lines += ["| init | params | seeds | SST-2 acc, mean over seeds | ± SE over seeds | per seed | item SE (one run) |",
              "|---|---|---|---|---|---|---|"]
    for arm in ARMS:
        got = [r for r in rows if r["arm"] == arm]
        if not got:
            continue
        lines.append(f"| {arm} | {got[0]['params'] / 1e6:.1f}M | "
                     + seed_cells([r["acc"] for r in got], got[0]["stderr"]))
    return "\n".join(lines)


def seed_cells(accs: list[float], item_se: float) -> str:
    """Table cells (percent) for one setting run over seeds: seeds | mean | SE over seeds | per seed | item SE |."""
    import statistics

    se = statistics.stdev(accs) / math.sqrt(len(accs)) if len(accs) > 1 else None
    return (f"{len(accs)} | {100 * statistics.mean(accs):.1f} | {'-' if se is None else f'{100 * se:.1f}'} | "
            f"{', '.join(f'{100 * a:.1f}' for a in accs)} | {100 * item_se:.1f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mlm-steps", type=int, default=800)
    p.add_argument("--ft-steps", type=int, default=150)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--table", action="store_true")
    a = p.parse_args()
    arms = [x for x in a.arms.split(",") if x]
    mlm = None
    if not a.table:
        mlm = pretrain(a.mlm_steps)
        print(f"plot: {plot(mlm)}")
        for arm in arms:
            for seed in SEEDS:
                finetune(arm, seed, a.ft_steps, a.lr)
    elif (WORK / "mlm/log.jsonl").is_file():
        mlm = pretrain(a.mlm_steps)
    rows = [json.loads(f.read_text()) for f in sorted((WORK / "results").glob("*.json"))] if (WORK / "results").is_dir() else []
    print(table(mlm, rows))


if __name__ == "__main__":
    main()
