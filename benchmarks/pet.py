"""PET and iPET on FewGLUE, measured (issue 25): from the same 32 labelled examples per task, for a masked-LM
encoder or a decoder (Gemma 3 270M base with LoRA), each method scored on the task's dev documents (slm eval's):

  zero  each pattern the model uses, scored by the untrained model (no example seen; one run, no seed)
  head  supervised fine-tuning of a classification head on the 32 (encoders; a LoRA decoder has no head)
  pet   one model per pattern (this seed), their ensemble; for an encoder also the classifier distilled from it
  ipet  iPET: --generations more generations, each pattern's model retrained on the 32 plus ensemble-labelled ones
  icl   in-context learning: --shots examples drawn from the 32 into each prompt (slm eval --fewshot-file; decoders);
        the seed orders the pool, so each seed draws other examples

FewGLUE ships no unlabelled RTE, CB or BoolQ set, so distillation and iPET label the dev inputs without their labels
(transductive, as `slm pet --unlabelled dev`); the table says so.

    python benchmarks/pet.py --name encoder --model runs/encoders-bench/mlm/model --max-len 128
    python benchmarks/pet.py --name gemma --model gemma3-270m --lora 8 --lr 5e-4 --batch 8 --steps 40 \\
        --methods zero,pet,icl
    python benchmarks/pet.py --name gemma --table

Results: runs/pet-bench/NAME/TASK-METHOD-sSEED.json; a finished one is not rerun.
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
WORK = ROOT / "runs/pet-bench"
METHODS = ("zero", "head", "pet", "ipet", "icl")


def fewglue_root() -> Path:
    from slmkit.eval.data import shared_data_dir

    root = shared_data_dir()
    if root is None or not (root / "fewglue").is_dir():
        sys.exit("pet.py: FewGLUE comes from the shared data folder (../shared/data/fewglue); set SLMKIT_DATA")
    return root / "fewglue"


def config(a, seed: int):
    from slmkit.pet.run import PetConfig

    lora = dict(r=a.lora, alpha=2 * a.lora, targets=["all-linear"], base=a.precision) if a.lora else None
    return PetConfig(model=a.model, steps=a.steps, batch=a.batch, lr=a.lr, max_len=a.max_len, seeds=(seed,),
                     distill_steps=a.steps, generations=0, lora=lora, precision=a.precision)


def pool_file(pset, labelled: list[dict], seed: int, work: Path) -> Path:
    """The 32 examples as documents of the slm eval task, in an order the seed shuffles."""
    from slmkit.pet.run import as_task_docs

    docs = as_task_docs(pset, labelled)
    random.Random(seed).shuffle(docs)
    path = work / f"{pset.task}-pool-s{seed}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    return path


def run_method(a, task: str, method: str, seed: int) -> dict | None:
    import dataclasses

    from slmkit.pet import run as P
    from slmkit.pet.patterns import load_patterns

    path = WORK / a.name / f"{task}-{method}-s{seed}.json"
    if path.is_file():
        return json.loads(path.read_text())
    pset = load_patterns(task)
    cfg = config(a, seed)
    if method == "head" and cfg.causal:
        return None  # a classification head beside a LoRA adapter is not supported
    if method == "icl" and not cfg.causal:
        return None  # an encoder does not continue a prompt
    labelled = P.read_fewglue(pset, fewglue_root(), "train")
    dev = P.dev_records(pset, a.limit)
    unl = [{k: v for k, v in r.items() if k != "label"} for r in dev]  # transductive: the dev inputs
    work = WORK / a.name / "work" / f"{task}-{method}-s{seed}"
    t0 = time.perf_counter()
    info: dict = {"task": task, "method": method, "seed": seed, "model": a.model, "labelled": len(labelled),
                  "dev": len(dev), "config": {k: v for k, v in cfg.__dict__.items()}}
    if method == "zero":
        per = P.zero_shot(pset, cfg, dev)
        acc = statistics.mean(r["acc"] for r in per.values())  # the patterns' mean
        info.update(patterns=per, acc=acc, stderr=math.sqrt(acc * (1 - acc) / len(dev)),
                    best=max(r["acc"] for r in per.values()))
    elif method == "head":
        res, _ = P.classifier(pset, cfg, labelled, dev, work / "head", seed, a.steps)
        info.update(res)
    elif method in ("pet", "ipet"):
        cfg = dataclasses.replace(cfg, generations=a.generations if method == "ipet" else 0)
        res = P.run_pet(pset, cfg, labelled, unl if (method == "ipet" or not cfg.causal) else [], dev, work,
                        distill=not cfg.causal, progress=lambda *x: None)
        last = res["generations"][-1]
        info.update(last["ensemble"], generations=res["generations"], unlabelled="dev inputs (transductive)")
        if "distilled" in res:
            info["distilled"] = res["distilled"]
    else:  # icl
        from slmkit.eval.job import evaluate_model

        run = evaluate_model(a.model, [pset.task], [a.shots], limit=a.limit, cache=False, progress=False,
                             fewshot_file=str(pool_file(pset, labelled, seed, work)))
        m = run.results[str(a.shots)][pset.task]
        info.update(acc=m["acc"], stderr=m["acc_stderr"], n=len(dev), shots=a.shots)
    info["seconds"] = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=2))
    print(f"{a.name} {task} {method} seed {seed}: {100 * info['acc']:.1f}% on {len(dev)} "
          f"({info['seconds']:.0f} s)", flush=True)
    return info


def table(name: str) -> str:
    from encoders import seed_cells  # benchmarks/ is on the path of a script run from it
    rows = [json.loads(p.read_text()) for p in sorted((WORK / name).glob("*.json"))]
    lines = ["| task | method | seeds | dev acc %, mean over seeds | ± SE over seeds | per seed | item SE (one run) |",
             "|---|---|---|---|---|---|---|"]
    for task in dict.fromkeys(r["task"] for r in rows):
        for method in METHODS:
            got = [r for r in rows if r["task"] == task and r["method"] == method]
            variants = [(" (mean of patterns)" if method == "zero" else "", [r["acc"] for r in got])]
            if any("distilled" in r for r in got):
                variants.append((" (distilled)", [r["distilled"]["acc"] for r in got if "distilled" in r]))
            for suffix, accs in variants:
                if not accs:
                    continue
                lines.append(f"| {task} | {method}{suffix} | " + seed_cells(accs, got[0]["stderr"]))
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True, help="the results folder under runs/pet-bench")
    p.add_argument("--model", help="a masked LM folder or a decoder (gemma3-270m)")
    p.add_argument("--tasks", default="rte,cb,boolq,copa")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=250, help="steps per trained model (PET: 250 of 16)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--lora", type=int, default=0, help="LoRA rank for a decoder (0: full fine-tuning)")
    p.add_argument("--precision", default="fp32", help="training precision (and the LoRA base's)")
    p.add_argument("--generations", type=int, default=2, help="iPET generations after the first")
    p.add_argument("--shots", type=int, default=4, help="in-context examples per prompt (icl)")
    p.add_argument("--limit", type=int, default=300, help="dev documents per task (BoolQ has 3,270)")
    p.add_argument("--table", action="store_true")
    a = p.parse_args()
    bad = [m for m in a.methods.split(",") if m and m not in METHODS]
    if bad:
        sys.exit(f"pet.py: unknown method {bad[0]!r}; methods: {', '.join(METHODS)}")
    if not a.table:
        if not a.model:
            sys.exit("pet.py: --model is needed to run (or --table)")
        for task in filter(None, a.tasks.split(",")):
            for method in filter(None, a.methods.split(",")):
                for seed in [int(s) for s in a.seeds.split(",") if s.strip()]:
                    run_method(a, task, method, seed)
                    if method == "zero":
                        break  # the untrained model has no seed
    print(table(a.name))


if __name__ == "__main__":
    main()
