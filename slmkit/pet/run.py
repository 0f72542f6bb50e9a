"""PET and iPET end to end, each step through the one training loop (objective classify):

1. one model per pattern (and seed), trained on the labelled examples as a cloze: cross-entropy over the
   verbalizers' logits at the mask (task.verbalizer) of a masked LM, or after the pattern for a decoder (its
   patterns end with the mask; with a LoRA adapter, PetConfig.lora, or fully fine-tuned);
2. the ensemble: the models' label logits averaged (PET's merge_logits, uniform weights);
3. distillation: a sequence classifier (the same pretrained encoder with a classification head; for a decoder, a
   cloze model on its first pattern) trained on the unlabelled examples with the ensemble's logits as soft
   targets, KL at temperature 2 (task.soft_labels);
4. iPET: generations in which each pattern's model is retrained on the labelled set plus unlabelled examples
   labelled by the previous generation's other models, d times more each generation (d = 5 in the paper), drawn
   class-balanced and weighted by the ensemble's confidence.

Scores on the task's dev set (slm eval's documents) by each pattern model, the ensemble and the distilled
classifier; zero-shot pattern scores of the untrained model are the baseline PET starts from.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from slmkit.errors import SlmError
from slmkit.pet.patterns import PatternSet
from slmkit.pet.score import decoder_probs, mlm_probs


@dataclass
class PetConfig:
    model: str  # a masked LM or a decoder slmkit loads (a folder, a GGUF file, a registry name)
    steps: int = 250  # PET: 250 steps of 16 (4 labelled + 12 unlabelled in the paper's setting; labelled only here)
    batch: int = 16
    lr: float = 1e-5
    max_len: int = 256
    seeds: tuple[int, ...] = (0,)
    distill_steps: int = 250
    temperature: float = 2.0
    generations: int = 0  # iPET generations after the first (0: PET)
    growth: int = 5  # iPET's d: each generation labels d times more unlabelled examples
    others: float = 0.25  # iPET's lambda: the share of the other patterns' models whose ensemble labels for one model
    lora: dict | None = None  # a LoRA adapter in place of full fine-tuning (the recipe's lora section)
    precision: str = "fp32"  # the training precision (bf16 with a bf16 LoRA base)

    @property
    def causal(self) -> bool:
        from slmkit.checkpoint import load_config

        return load_config(self.model)[0].causal


def read_fewglue(pset: PatternSet, root: Path, split: str, labelled: bool = True) -> list[dict]:
    path = root / pset.fewglue / f"{split}.jsonl"
    if not path.is_file():
        raise SlmError(f"{path} is missing: FewGLUE's {pset.fewglue} {split} set (../shared/data/fewglue)")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            raw = json.loads(line)
            out.append(pset.record(raw, pset.fields, f"{path}:{n}", raw["label"] if labelled else None))
    return out


def as_task_docs(pset: PatternSet, records: list[dict]) -> list[dict]:
    """Pattern records (FewGLUE's, say) as documents of the slm eval task: its field names, label indices; the
    few-shot pool of `slm eval --fewshot-file` (in-context learning from the same 32 examples PET trains on)."""
    return [{**{pset.eval_fields[f]: r[f + "_full"] for f in pset.eval_fields}, "label": r["label"]} for r in records]


def dev_records(pset: PatternSet, limit: int | None = None) -> list[dict]:
    """The task's evaluation documents (those slm eval scores) as pattern records with gold label indices."""
    from slmkit.eval.evaluator import prepare
    from slmkit.eval.tasks import TASKS

    if pset.task not in TASKS:
        raise SlmError(f"{pset.source}: task {pset.task!r} is not an slm eval task")
    docs = prepare(TASKS[pset.task], 0, limit).docs
    return [pset.record(d, pset.eval_fields, f"{pset.task} doc {i}", int(d["label"])) for i, d in enumerate(docs)]


def _write(records: list[dict], path: Path, soft: list[list[float]] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i, r in enumerate(records):
            row = dict(r)
            if soft is not None:
                row["logits"] = soft[i]
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def _train(init: str, task: dict, out: Path, seed: int, steps: int, cfg: PetConfig) -> Path:
    from slmkit.train.loop import train
    from slmkit.train.recipe import Recipe, _build

    recipe = _build(Recipe, dict(
        out=str(out), seed=seed, model={"init": init}, objective="classify", task=task, steps=steps,
        batch=dict(seq_len=cfg.max_len, global_batch=cfg.batch, micro_batch=cfg.batch),
        optim=dict(lr=cfg.lr, betas=[0.9, 0.999], eps=1e-8, weight_decay=0.01, warmup_steps=0, schedule="linear",
                   min_lr_ratio=0.0, clip=1.0),
        precision=cfg.precision, eval_every=0, save_every=0, log_every=10,
        **({"lora": cfg.lora} if cfg.lora else {})), "pet", "")
    return Path(train(recipe, progress=False, echo=lambda *a: None, overwrite=True).model_dir)


def pattern_task(pset: PatternSet, i: int, train_file: Path, cfg: PetConfig) -> dict:
    labels = list(range(len(pset.labels)))
    p = pset.patterns[i]
    return dict(train=str(train_file), text=p.text, labels=labels, max_len=cfg.max_len,
                verbalizer={str(j): p.verbalizer[v] for j, v in enumerate(pset.labels)})


def logits_of(model_dir: Path | str, pset: PatternSet, i: int, records: list[dict], cfg: PetConfig,
              causal: bool = False) -> torch.Tensor:
    """A pattern model's label log-probabilities (N, L) on records (its pattern, its mask). A decoder's are read
    as lm-eval reads choices; model_dir is then a LoRA adapter of cfg.model when cfg.lora is set."""
    if causal:
        from slmkit.eval.lm import load_lm

        adapter = str(model_dir) if cfg.lora else None
        lm = load_lm(cfg.model if adapter else str(model_dir), "slmkit", "fp32", batch_size=8,
                     max_length=cfg.max_len + 16, adapter=adapter)
        try:
            probs = decoder_probs(lm, pset.patterns[i], pset.labels, records)
        finally:
            lm.close()
        return probs.clamp_min(1e-12).log()
    import slmkit

    lm = slmkit.load(model_dir, dtype="float32")
    return mlm_probs(lm.model, lm.tokenizer, pset.patterns[i], pset.labels, records,
                     cfg.max_len).clamp_min(1e-12).log()


def accuracy(logits: torch.Tensor, records: list[dict]) -> dict:
    gold = torch.tensor([r["label"] for r in records])
    acc = (logits.argmax(-1) == gold).float().mean().item()
    return {"acc": acc, "stderr": math.sqrt(acc * (1 - acc) / len(records)), "n": len(records)}


def label_balanced(records: list[dict], logits: torch.Tensor, n: int, rng: random.Random) -> tuple[list[dict], list]:
    """iPET's selection: n unlabelled examples, the same number per predicted label, drawn with probability
    proportional to the ensemble's confidence; returns them with hard labels (their argmax) and their logits."""
    probs = logits.softmax(-1)
    pred = probs.argmax(-1)
    L = logits.shape[-1]
    chosen: list[int] = []
    for label in range(L):
        pool = [j for j in range(len(records)) if pred[j] == label]
        k = min(len(pool), n // L)
        weights = [float(probs[j, label]) for j in pool]
        picked: list[int] = []
        while len(picked) < k:  # weighted sampling without replacement
            j = rng.choices(range(len(pool)), weights=weights)[0]
            picked.append(pool[j])
            weights[j] = 0.0
            if not any(weights):
                break
        chosen += picked
    return [dict(records[j], label=int(pred[j])) for j in chosen], [logits[j].tolist() for j in chosen]


def run_pet(pset: PatternSet, cfg: PetConfig, labelled: list[dict], unlabelled: list[dict], dev: list[dict],
            work: Path, distill: bool = True, progress=print) -> dict:
    """PET (generations=0) or iPET: pattern models, their ensemble, the distilled classifier; scores on dev."""
    work.mkdir(parents=True, exist_ok=True)
    causal = cfg.causal
    idx = pset.usable(causal)
    results: dict = {"generations": [], "patterns": idx, "causal": causal}
    rng = random.Random(0)
    train_sets = {i: labelled for i in idx}
    unl_logits = None
    for gen in range(cfg.generations + 1):
        models: dict[tuple[int, int], Path] = {}
        for i in idx:
            f = _write(train_sets[i], work / f"g{gen}" / f"p{i}-train.jsonl")
            for seed in cfg.seeds:
                models[(i, seed)] = _train(cfg.model, pattern_task(pset, i, f, cfg), work / f"g{gen}" / f"p{i}-s{seed}",
                                           seed, cfg.steps, cfg)
        both = {k: logits_of(m, pset, k[0], dev + unlabelled, cfg, causal) for k, m in models.items()}  # one load
        dev_logits = {k: v[:len(dev)] for k, v in both.items()}
        gen_res = {"generation": gen, "train_sizes": {i: len(t) for i, t in train_sets.items()},
                   "models": {f"p{i}-s{s}": accuracy(v, dev) for (i, s), v in dev_logits.items()}}
        gen_res["ensemble"] = accuracy(torch.stack(list(dev_logits.values())).mean(0), dev)
        progress(f"generation {gen}: ensemble {100 * gen_res['ensemble']['acc']:.1f}% on {len(dev)} dev items")
        results["generations"].append(gen_res)
        if not unlabelled:
            break
        unl = {k: v[len(dev):] for k, v in both.items()}
        unl_logits = torch.stack(list(unl.values())).mean(0)
        if gen < cfg.generations:  # iPET: the next generation's training sets
            n = len(labelled) * cfg.growth ** (gen + 1)
            for i in idx:
                others = [k for k in unl if k[0] != i] or list(unl)  # one pattern: its own models label
                pick = rng.sample(others, max(1, round(cfg.others * len(others))))
                ens = torch.stack([unl[k] for k in pick]).mean(0)
                extra, _ = label_balanced(unlabelled, ens, n, rng)
                train_sets[i] = labelled + extra
    if distill and unlabelled and unl_logits is not None:
        if causal:  # no classification head beside a LoRA adapter: a cloze model on the first pattern
            f = _write(unlabelled, work / "distill-train.jsonl", unl_logits.tolist())
            task = dict(pattern_task(pset, idx[0], f, cfg), soft_labels="logits", temperature=cfg.temperature)
            final = _train(cfg.model, task, work / "distilled", 0, cfg.distill_steps, cfg)
            results["distilled"] = accuracy(logits_of(final, pset, idx[0], dev, cfg, causal), dev)
        else:
            results["distilled"], final = classifier(pset, cfg, unlabelled, dev, work / "distilled", 0,
                                                     cfg.distill_steps, soft=unl_logits.tolist())
        results["distilled_dir"] = str(final)
    return results


def classifier(pset: PatternSet, cfg: PetConfig, records: list[dict], dev: list[dict], work: Path, seed: int,
               steps: int, soft: list[list[float]] | None = None) -> tuple[dict, Path]:
    """A sequence classifier (the pretrained encoder with a classification head over the pattern's fields as a
    text pair) trained on records, with their labels (supervised head fine-tuning, PET's baseline) or soft targets
    (PET's distillation, KL at cfg.temperature); its dev accuracy and folder."""
    from slmkit.eval.classify import predict
    import slmkit

    f = _write(records, work.parent / f"{work.name}-train.jsonl", soft)
    names = list(pset.fields)
    task = dict(train=str(f), text=pset.classifier.get("text", "{" + names[0] + "}"),
                text_pair=pset.classifier.get("text_pair", "{" + names[1] + "}" if len(names) > 1 else None),
                labels=list(range(len(pset.labels))), max_len=cfg.max_len)
    if soft is not None:
        task.update(soft_labels="logits", temperature=cfg.temperature)
    final = _train(cfg.model, task, work, seed, steps, cfg)
    lm = slmkit.load(final, dtype="float32")
    probs = predict(lm.model, lm.tokenizer, [pset.classifier_input(r) for r in dev], max_len=cfg.max_len)
    return accuracy(probs.clamp_min(1e-12).log(), dev), final


def zero_shot(pset: PatternSet, cfg: PetConfig, dev: list[dict]) -> dict:
    """Each usable pattern's dev accuracy with the untrained model (no labelled example seen)."""
    causal = cfg.causal
    return {f"p{i}": accuracy(logits_of(cfg.model, pset, i, dev, dataclasses.replace(cfg, lora=None), causal), dev)
            for i in pset.usable(causal)}
