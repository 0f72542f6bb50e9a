"""Orca 2's prompt erasure, measured (issue 24): a teacher answers Flan CoT items under strategy system prompts;
Gemma 3 270M base students train on those answers (kept: the detailed prompt kept; erased: replaced by a generic
prompt; answers: the reference answer alone, no teacher reasoning); all are scored under the generic prompt on
held-out items: exact match, and how often the answer has the form the task type's strategy asks for.

    python benchmarks/orca.py                         # teacher = the default model (SmolLM2-135M-Instruct)
    python benchmarks/orca.py --teacher http://127.0.0.1:8000   # any OpenAI-compatible server
    python benchmarks/orca.py --table

Each student trains for the same number of passes (--epochs) over the same teacher items, LoRA r=16 on every
linear layer (recipes/instruct-gemma-lora.yaml), 8 x 256-token batches. Results: runs/orca-bench/results/*.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WORK = ROOT / "runs/orca-bench"
MODEL = "gemma3-270m"
STUDENTS = ("base", "kept", "erased", "answers")



def data_root() -> Path:
    from slmkit.eval.data import shared_data_dir

    root = shared_data_dir()
    if root is None:
        sys.exit("orca.py: the shared data folder was not found; set SLMKIT_DATA")
    return root


def teacher_data(teacher: str, per_task: int, n_eval: int) -> Path:
    from slmkit.instruct import orca

    out = WORK / "data"
    if not (out / "orca.json").is_file():
        train, held = orca.items(data_root(), orca.DEFAULT_TASKS, per_task, n_eval)
        t0 = time.perf_counter()
        data = orca.build(orca.teacher_for(teacher), train, held, max_tokens=160, progress=False)
        data.stats["teacher_s"] = time.perf_counter() - t0
        orca.write(data, out, overwrite=True)
        gc.collect()
    return out


def shards(student: str) -> tuple[Path, int]:
    from slmkit.checkpoint import load_tokenizer
    from slmkit.train.data import prepare

    out = WORK / f"shards-{student}"
    if not (out / "meta.json").is_file():
        prepare([str(WORK / "data" / f"{student}.jsonl")], out, load_tokenizer(MODEL), MODEL, val_fraction=0.0,
                block=256, prompt_template="{prompt}", template="{response}", progress=False, overwrite=True)
    meta = json.loads((out / "meta.json").read_text())
    return out, meta["train_tokens"]


def run_student(student: str, epochs: float) -> dict:
    from slmkit.eval.lm import SlmkitLM
    from slmkit.instruct import orca

    path = WORK / "results" / f"{student}.json"
    if path.is_file():
        return json.loads(path.read_text())
    info: dict = {"student": student, "model": MODEL}
    adapter = None
    if student != "base":
        from slmkit.device import native_precision
        from slmkit.train.loop import train
        from slmkit.train.recipe import load_recipe

        folder, tokens = shards(student)
        steps = max(6, math.ceil(epochs * tokens / 2048))
        out = WORK / f"run-{student}"
        recipe = load_recipe(ROOT / "recipes/instruct-gemma-lora.yaml",
                             [f"out={out}", f"data={{{folder}: 1.0}}", f"tokens={steps * 2048}", "save_every=0",
                              "log_every=1", "eval_every=0", f"precision={native_precision()}"])
        t0 = time.perf_counter()
        result = train(recipe, progress=False, echo=lambda *a: None, overwrite=True)
        log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        losses = [r["loss"] for r in log if r.get("event") == "train"]
        info["train"] = dict(steps=steps, data_tokens=tokens, train_s=time.perf_counter() - t0,
                             loss_first5=sum(losses[:5]) / 5, loss_last5=sum(losses[-5:]) / 5)
        adapter = str(result.model_dir)
        gc.collect()
    held = [json.loads(line) for line in (WORK / "data/heldout.jsonl").read_text().splitlines()]
    lm = SlmkitLM.load(MODEL, batch_size=16, adapter=adapter)
    t0 = time.perf_counter()
    scores = orca.evaluate(lm, held, max_tokens=128)
    info["eval_s"] = time.perf_counter() - t0
    info["scores"] = {"all": scores["all"], "per_task": scores["per_task"]}
    info["examples"] = scores["rows"][::16]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=2))
    a = scores["all"]
    print(f"{student}: EM {100 * a['em']:.1f}±{100 * a['em_stderr']:.1f}, follows "
          f"{100 * a['follows']:.1f}±{100 * a['follows_stderr']:.1f}", flush=True)
    del lm
    gc.collect()
    return info


def table(results: list[dict], stats: dict | None) -> str:
    def pct(v: float, se: float) -> str:
        return f"{100 * v:.1f} ± {100 * se:.1f}"

    tasks = list(results[0]["scores"]["per_task"]) if results else []
    head = ("| student | steps | loss first5 -> last5 | EM (all) | follows strategy (all) | "
            + " | ".join(f"{t} follows" for t in tasks) + " |")
    lines = [head, "|" + "---|" * (5 + len(tasks))]
    for r in results:
        a, t = r["scores"]["all"], r.get("train")
        lines.append(f"| {r['student']} | {t['steps'] if t else 0} | "
                     + (f"{t['loss_first5']:.3f} -> {t['loss_last5']:.3f}" if t else "") + " | "
                     + f"{pct(a['em'], a['em_stderr'])} | {pct(a['follows'], a['follows_stderr'])} | "
                     + " | ".join(f"{100 * r['scores']['per_task'][k]['follows']:.0f}" for k in tasks) + " |")
    if stats:
        per = ", ".join(f"{k} ({v['strategy']}) follows {v['follows'] / v['n']:.0%}, "
                        f"correct {v['correct'] / v['n']:.0%}" for k, v in stats["per_task"].items())
        lines.append(f"\nTeacher {stats['teacher']}: {stats['items']} items, {stats['failed']} failed; follows the "
                     f"strategy {stats['teacher_follows']:.1%}, correct {stats['teacher_correct']:.1%} ({per}).")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="default")
    p.add_argument("--per-task", type=int, default=64)
    p.add_argument("--eval", type=int, default=16)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--students", default=",".join(STUDENTS))
    p.add_argument("--table", action="store_true")
    a = p.parse_args()
    names = [s for s in a.students.split(",") if s]
    if not a.table:
        teacher_data(a.teacher, a.per_task, a.eval)
        for s in names:
            run_student(s, a.epochs)
    stats_path = WORK / "data/orca.json"
    stats = json.loads(stats_path.read_text()) if stats_path.is_file() else None
    done = [json.loads((WORK / "results" / f"{s}.json").read_text()) for s in names
            if (WORK / "results" / f"{s}.json").is_file()]
    print(table(done, stats))


if __name__ == "__main__":
    main()
