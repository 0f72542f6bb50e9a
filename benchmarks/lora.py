#!/usr/bin/env python
"""Full fine-tuning against LoRA against QLoRA on one task, with transformers + peft as the peer (issue 23).

    python benchmarks/lora.py                         # default and gemma3-270m
    python benchmarks/lora.py --models default --steps 30

The task: SST-2 sentiment answered as text ("Review: ...\\nSentiment:" -> " positive" / " negative"), the loss on
the answer only. The packages hold only SST-2's 872 validation sentences, so a fixed seeded split makes 572 of
them the training set and 300 the held-out test set. Every method trains on the same batches (slmkit's seeded
sampler over the same token shards, `--steps` steps of 8 x 64 tokens, AdamW, warmup then constant lr, clip 1):

  full    slm train on every weight (lr 2e-5)
  lora    slm train with a LoRA adapter r=8, alpha=16 on q, k, v, o (lr 1e-3); the base frozen in fp32
  qlora   the same adapter on an int4 (group 32) base
  peft    transformers + peft, the same adapter and optimizer in a plain loop (the peer)
  lora-bf16, peft-bf16   the LoRA and peft runs on a bf16 base under bf16 autocast (adapters in fp32), where
          this CPU's AMX units run the matmuls (--methods full,lora,qlora,peft,lora-bf16,peft-bf16)

Each runs in a fresh process (its own peak RSS). Reported: trainable parameters, peak RSS, training tokens/s
(every token of every batch over the summed step times), the loss curve, and test accuracy before and after with
its standard error. Accuracy compares the first token of " positive" and " negative" after the prompt.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "runs/lora-bench"
PROMPT = "Review: {sentence}\nSentiment:"
LABELS = (" negative", " positive")
SEQ, BATCH = 64, 8
LR = {"full": 2e-5, "lora": 1e-3, "qlora": 1e-3, "peft": 1e-3, "lora-bf16": 1e-3, "peft-bf16": 1e-3}


def sst2() -> list[tuple[str, int]]:
    import os

    data = Path(os.environ.get("SLMKIT_DATA", ROOT.parent / "shared/data")) / "eval/sst2/dev.tsv"
    if not data.is_file():
        sys.exit(f"lora.py: {data} not found; set SLMKIT_DATA to the shared data folder")
    rows = [line.rsplit("\t", 1) for line in data.read_text(encoding="utf-8").splitlines()[1:]]
    return [(s.strip(), int(label)) for s, label in rows]


def split() -> tuple[list, list]:
    import random

    rows = sst2()
    random.Random(0).shuffle(rows)
    return rows[:572], rows[572:]


def prepare(model: str) -> tuple[Path, Path]:
    """The base as an HF folder both libraries read, and the training shards (loss masks on the answers)."""
    import slmkit
    from slmkit.train.data import prepare as prepare_shards

    base = WORK / f"base-{model}"
    if not (base / "config.json").is_file():
        slmkit.save(slmkit.load(model, dtype="float32", device="cpu"), base)
    shards = WORK / f"data-{model}"
    if not (shards / "meta.json").is_file():
        train, _ = split()
        WORK.mkdir(parents=True, exist_ok=True)
        jsonl = WORK / f"sst2-train-{model}.jsonl"
        jsonl.write_text("".join(json.dumps({"prompt": PROMPT.format(sentence=s), "completion": LABELS[y]}) + "\n"
                                 for s, y in train), encoding="utf-8")
        from slmkit.checkpoint import load_tokenizer

        tok = load_tokenizer(base)
        prepare_shards([str(jsonl)], shards, tok, str(base), val_fraction=0.0, prompt_template="{prompt}",
                       template="{completion}", progress=False)
    return base, shards


# --- accuracy ----------------------------------------------------------------------------------------------


def accuracy(logits_fn, tokenizer) -> tuple[float, float]:
    """(accuracy, standard error) on the held-out 300: the label whose first token scores higher."""
    import torch

    _, test = split()
    ids = [tokenizer.encode(label, add_special_tokens=False)[0] for label in LABELS]
    right = 0
    for i in range(0, len(test), 16):
        chunk = test[i:i + 16]
        rows = [tokenizer.encode(PROMPT.format(sentence=s)) for s, _ in chunk]
        width = max(map(len, rows))
        x = torch.tensor([[0] * (width - len(r)) + r for r in rows])  # left-padded
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        with torch.no_grad():
            last = logits_fn(x, mask)[:, -1].float()
        pred = (last[:, ids[1]] > last[:, ids[0]]).long()
        right += int((pred == torch.tensor([y for _, y in chunk])).sum())
    p = right / len(test)
    return p, math.sqrt(p * (1 - p) / len(test))


def slmkit_logits(model):
    def run(x, mask):
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return model(x, positions=positions, key_valid=mask.bool())
    return run


def hf_logits(model):
    def run(x, mask):
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return model(input_ids=x, attention_mask=mask, position_ids=positions).logits
    return run


# --- workers (one per process) -------------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def work_slmkit(method: str, model: str, steps: int) -> dict:
    import yaml

    from slmkit.train.loop import train
    from slmkit.train.recipe import load_recipe

    base, shards = prepare(model)
    out = WORK / f"{model}-{method}"
    recipe = dict(out=str(out), model=dict(init=str(base)), data={str(shards): 1.0}, tokens=steps * SEQ * BATCH,
                  batch=dict(seq_len=SEQ, global_batch=BATCH, micro_batch=BATCH),
                  optim=dict(lr=LR[method], warmup_steps=4, schedule="constant", weight_decay=0.0, clip=1.0),
                  eval_every=0, save_every=0, log_every=1, precision="bf16" if method == "lora-bf16" else "fp32")
    if method != "full":
        recipe["lora"] = dict(r=8, alpha=16, targets=["attn"],
                              base={"qlora": "int4", "lora-bf16": "bf16"}.get(method, "fp32"))
    path = WORK / f"{model}-{method}.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    result = train(load_recipe(path), progress=False, echo=lambda *a: None, overwrite=True)
    rss = peak_rss_mb()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps_log = [r for r in log if r.get("event") == "train"]
    start = next(r for r in log if r.get("event") == "start")
    precision = {"qlora": "int4", "lora-bf16": "bf16"}.get(method, "fp32")
    from slmkit.runtime import SlmkitRuntime

    before = SlmkitRuntime.load(str(base), precision)
    acc0 = accuracy(slmkit_logits(before.model), before.tokenizer)
    after = (SlmkitRuntime.load(str(base), precision, adapter=str(result.model_dir)) if method != "full"
             else SlmkitRuntime.load(str(result.model_dir), "fp32"))
    acc1 = accuracy(slmkit_logits(after.model), after.tokenizer)
    return dict(method=method, trainable=start["trainable"], params=start["params"], peak_rss_mb=rss,
                tok_s=steps * SEQ * BATCH / sum(r["step_s"] for r in steps_log),
                losses=[r["loss"] for r in steps_log], acc_before=acc0, acc_after=acc1)


def work_peft(model: str, steps: int, bf16: bool = False) -> dict:
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model

    from slmkit.train.data import TokenData
    from slmkit.train.losses import IGNORE
    from slmkit.train.schedule import lr_multiplier

    base, shards = prepare(model)
    torch.manual_seed(1337)
    import contextlib

    hf = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16 if bf16 else torch.float32)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    tuned = get_peft_model(hf, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    params = [p for p in tuned.parameters() if p.requires_grad]  # fp32: peft upcasts bf16 adapters
    lr = LR["peft-bf16" if bf16 else "peft"]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0, fused=True)
    data = TokenData({str(shards): 1.0}, SEQ, 1337)
    losses, times = [], []
    tuned.train()
    for step in range(steps):
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr * lr_multiplier(step, steps, 4, "constant")
        x, y = data.batch(step, 0, slice(0, BATCH), BATCH)
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        with autocast():
            logits = tuned(input_ids=x).logits
        n = (y != IGNORE).sum().clamp(min=1)
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE,
                                                 reduction="sum") / n
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    rss = peak_rss_mb()
    tuned.eval()
    from slmkit.checkpoint import load_tokenizer

    tok = load_tokenizer(base)
    with autocast():
        acc1 = accuracy(hf_logits(tuned), tok)
    return dict(method="peft-bf16" if bf16 else "peft", trainable=sum(p.numel() for p in params),
                params=sum(p.numel() for p in hf.parameters()), peak_rss_mb=rss,
                tok_s=steps * SEQ * BATCH / sum(times), losses=losses, acc_before=None, acc_after=acc1)


# --- driver ------------------------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="default,gemma3-270m")
    p.add_argument("--methods", default="full,lora,qlora,peft")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--table", action="store_true", help="print the table of the last results.json")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.table:
        print(table(json.loads((WORK / "results.json").read_text())))
        return
    if a.worker:
        job = json.loads(a.worker)
        if job["method"].startswith("peft"):
            out = work_peft(job["model"], job["steps"], job["method"] == "peft-bf16")
        else:
            out = work_slmkit(job["method"], job["model"], job["steps"])
        print("RESULT " + json.dumps(out))
        return
    results = []
    for model in a.models.split(","):
        prepare(model)
        for method in a.methods.split(","):
            t0 = time.time()
            job = json.dumps(dict(model=model, method=method, steps=a.steps))
            proc = subprocess.run([sys.executable, __file__, "--worker", job], capture_output=True, text=True)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{model} {method} failed:\n{proc.stderr[-3000:]}")
            r = dict(json.loads(line[7:]), model=model, wall_s=round(time.time() - t0, 1))
            results.append(r)
            print(f"{model} {method}: loss {r['losses'][0]:.3f} -> {r['losses'][-1]:.3f}, {r['tok_s']:.0f} tok/s, "
                  f"acc {r['acc_after'][0]:.3f}, {r['wall_s']} s", flush=True)
    WORK.mkdir(parents=True, exist_ok=True)
    done = WORK / "results.json"  # earlier runs' rows stay, unless this run redid them
    fresh = {(r["model"], r["method"]) for r in results}
    kept = [r for r in json.loads(done.read_text()) if (r["model"], r["method"]) not in fresh] if done.is_file() else []
    results = kept + results
    done.write_text(json.dumps(results, indent=2))
    print(table(results))


def table(results: list[dict]) -> str:
    def acc(v):
        return "-" if v is None else f"{100 * v[0]:.1f} ± {100 * v[1]:.1f}"

    def mean(xs):
        return sum(xs) / len(xs)

    lines = ["| model | method | trainable | peak RSS MiB | train tok/s | loss first 5 -> last 5 steps | "
             "test acc before % | test acc after % |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lo = r["losses"]
        lines.append(f"| {r['model']} | {r['method']} | {r['trainable'] / 1e6:.2f}M of {r['params'] / 1e6:.0f}M | "
                     f"{r['peak_rss_mb']:.0f} | {r['tok_s']:.0f} | {mean(lo[:5]):.3f} -> {mean(lo[-5:]):.3f} | "
                     f"{acc(r['acc_before'])} | {acc(r['acc_after'])} |")
    by = {(r["model"], r["method"]): r for r in results}
    for model in dict.fromkeys(r["model"] for r in results):
        for ours, theirs in (("lora", "peft"), ("lora-bf16", "peft-bf16")):
            if (model, ours) in by and (model, theirs) in by:
                ratio = by[model, ours]["tok_s"] / by[model, theirs]["tok_s"]
                lines.append(f"\n{model}: slmkit {ours} / {theirs} tokens/s = {ratio:.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
