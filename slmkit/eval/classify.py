"""Scoring a classification head (`slm eval` on a model whose config.head is "classify"): the head reads what the
task's `classify` field names of each document (a text, or a text pair: premise and hypothesis, question and
passage), its label i stands for the task's choice i, and accuracy is the share of documents whose gold choice
is the head's argmax. The documents, splits and limit are those `slm eval` uses for the same task in its
log-likelihood form, so the two kinds of model are scored on the same items."""

from __future__ import annotations

import time
from typing import Sequence

import torch

from slmkit.errors import SlmError
from slmkit.eval.results import EvalRun
from slmkit.eval.tasks import TASKS, Task


def classifier_tasks() -> list[str]:
    return [n for n, t in TASKS.items() if t.classify is not None]


@torch.no_grad()
def predict(model, tokenizer, items: Sequence[tuple[str, str | None]], batch_size: int = 16,
            max_len: int = 512, prune_keep: float | None = None, counts: list | None = None) -> torch.Tensor:
    """Label probabilities (N, L) for texts or text pairs, encoded and cut as training encodes them, batched and
    padded on the right. prune_keep: dynamic token pruning at this keep ratio (slmkit.model.prune); counts, a
    list, then receives each batch's (tokens the layers ran on, tokens x layers unpruned)."""
    from slmkit.model.prune import TokenPruning
    from slmkit.train.labelled import Example, collate, encode_text

    pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    examples = [Example(*encode_text(tokenizer, first, second, max_len), 0) for first, second in items]
    out = []
    for i in range(0, len(examples), batch_size):
        b = collate(examples[i:i + batch_size], pad).to(model.device)
        prune = TokenPruning(model.n_exec_layers, keep=prune_keep) if prune_keep is not None else None
        logits = model(b.x, key_valid=b.valid, token_types=b.types, prune=prune)
        if prune is not None and counts is not None:
            counts.append((sum(prune.lengths), prune.lengths[0] * len(prune.lengths)))
        out.append(torch.softmax(logits.float(), dim=-1).cpu())
    return torch.cat(out)


def evaluate_classifier(loaded, tasks: list[Task], shots: Sequence[int] | None, limit: int | None,
                        source: str = "auto", batch_size: int = 16, progress: bool = True,
                        precision: str = "fp32", prune_keep: float | None = None) -> EvalRun:
    """Accuracy (with its standard error) of a classification head on each task, as an EvalRun at 0 shots.
    prune_keep: with dynamic token pruning at this keep ratio (the backend is then named for it, so a report
    keeps pruned and unpruned runs apart), each task recording the share of token-layers that ran."""
    from tqdm import tqdm

    from slmkit.eval.evaluator import groups, prepare, summarize
    from slmkit.results import machine, versions

    model, tok = loaded.model, loaded.tokenizer
    if tok is None:
        raise SlmError(f"{loaded.source} has no tokenizer; a classifier is scored on text")
    if shots and any(k for k in shots):
        raise SlmError("a classification head reads no few-shot examples; drop --shots (or give 0)")
    bad = [t.name for t in tasks if t.classify is None]
    if bad:
        raise SlmError(f"{bad[0]} has no fixed labels for a classification head; classifiers are scored on "
                       f"{', '.join(classifier_tasks())}")
    res, sizes, data, timings = {}, {}, {}, {}
    for task in tqdm(tasks, desc="classify", disable=True if not progress else None):
        t0 = time.perf_counter()
        prep = prepare(task, 0, limit, source)
        n_choices = len(task.doc_to_choice(prep.docs[0]))
        if n_choices != model.config.n_labels:
            raise SlmError(f"{task.name} has {n_choices} labels but the classifier has {model.config.n_labels}; "
                           f"train one on this task (objective classify)")
        counts: list = []
        probs = predict(model, tok, [task.classify(d) for d in prep.docs], batch_size,
                        model.config.context_length, prune_keep, counts)
        gold = [task.doc_to_target(d) for d in prep.docs]
        gold = [task.doc_to_choice(d).index(g) if isinstance(g, str) else g for d, g in zip(prep.docs, gold)]
        per = {"acc": [float(p) for p in (probs.argmax(-1) == torch.tensor(gold)).tolist()]}
        res[task.name] = summarize(per)
        sizes[task.name] = len(prep.docs)
        dt = time.perf_counter() - t0
        timings[f"{task.name}@0"] = {"seconds": round(dt, 3), "items": len(prep.docs),
                                     "items_per_s": round(len(prep.docs) / dt, 2) if dt else None}
        data[task.name] = {"source": prep.source, "eval_split": prep.eval_split, "n": len(prep.docs),
                           "scored_by": "classification head"}
        if prune_keep is not None:
            data[task.name]["pruning"] = {"keep": prune_keep, "token_layers_run": round(
                sum(a for a, _ in counts) / max(1, sum(b for _, b in counts)), 4)}
    backend = "slmkit-classifier" + (f"+prune{prune_keep:g}" if prune_keep is not None else "")
    return EvalRun(model=loaded.source, backend=backend, precision=precision, results={"0": res},
                   groups={"0": groups(res, sizes, {t.name: "acc" for t in tasks})}, data=data, timings=timings,
                   shots=list(shots) if shots else None, limit=limit, batch_size=batch_size, versions=versions(),
                   machine=machine())
