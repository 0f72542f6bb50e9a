"""`evaluate_model`: the whole evaluation job a library caller or `slm eval` runs. Load a model on a runtime at a
named precision (or the EFT combination), open the resumable request cache, evaluate the tasks, and return the
EvalRun with its provenance and timings."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from slmkit.errors import SlmError
from slmkit.eval.results import EvalRun


def check_shots(shots: Sequence[int] | None) -> list[int] | None:
    if shots is None:
        return None
    shots = list(shots)
    if not shots or min(shots) < 0 or len(set(shots)) != len(shots):
        raise SlmError("shots: give distinct non-negative counts, like 0,1,5")
    return shots


def evaluate_model(model: str, tasks: Sequence[str], shots: Sequence[int] | None = None, limit: int | None = None,
                   backend: str = "slmkit", precision: str = "fp32", device: str | None = None, batch_size: int = 8,
                   data: str = "auto", cache: str | Path | None | bool = True, progress: bool = True,
                   log_samples: bool = False, eft: Sequence[Sequence[str]] | None = None,
                   adapter: str | None = None, fewshot_file: str | None = None,
                   prune_keep: float | None = None, url: str | None = None) -> EvalRun:
    """Evaluate `model` on tasks or groups (lm-eval's names) at each shot count (None: each task's own).

    cache: True for the default request cache ($SLMKIT_CACHE/eval-cache.sqlite), a path for another, False or None
    for none. eft: TUNED BASE [WEIGHT] pairs evaluate the EFT combination (slmkit backend, float precisions).
    adapter: a LoRA adapter folder attached to `model` (slmkit backend). fewshot_file: a JSONL file of documents in
    the (one) task's schema, the pool few-shot examples are drawn from (`slm data fewglue` writes FewGLUE's).
    prune_keep: score a classification head with dynamic token pruning at this keep ratio (slmkit.model.prune).
    url: the OpenAI-compatible server of backend "openai" (its /v1 root); `model` then names the tokenizer.

    Under torchrun the documents are sharded over the processes (and nodes) and every process returns the whole
    run, equal to one process's; rank 0 alone uses the cache."""
    from slmkit.eval.tasks import resolve
    from slmkit.runtime.precision import precision as lookup

    names = [t.strip() for t in tasks if t.strip()]
    if not names:
        raise SlmError("no tasks given; name one or more tasks or groups, e.g. hellaswag,arc_easy or a group such "
                       "as mmlu")
    resolved = resolve(names)
    shots = check_shots(shots)
    if limit is not None and limit < 1:
        raise SlmError(f"the limit must be >= 1, got {limit}")
    if batch_size < 1:
        raise SlmError(f"the batch size must be >= 1, got {batch_size}")
    p = lookup(precision)
    fewshot = _fewshot_docs(fewshot_file, resolved) if fewshot_file else None
    t0 = time.perf_counter()
    shard = _join_processes(device)
    if shard is None:
        return _evaluate(model, resolved, shots, limit, backend, p, device, batch_size, data, cache, progress,
                         log_samples, eft, adapter, fewshot, fewshot_file, prune_keep, t0, url=url)
    from slmkit.train.dist import teardown

    try:
        return _evaluate(model, resolved, shots, limit, backend, p, str(shard.device), batch_size, data, cache,
                         progress and shard.main, log_samples, eft, adapter, fewshot, fewshot_file, prune_keep, t0,
                         shard, url)
    finally:
        teardown(shard)


def _join_processes(device: str | None):
    """Under torchrun (WORLD_SIZE > 1): this process's place in the group (gloo on CPU, nccl on GPUs), with the
    machine's cores shared among its processes; else None."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch

    from slmkit.device import threads_per_process
    from slmkit.train.dist import setup

    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
    if not torch.cuda.is_available():
        torch.set_num_threads(threads_per_process(local_world))
    return setup(device)


def _evaluate(model, resolved, shots, limit, backend, p, device, batch_size, data, cache, progress, log_samples,
              eft, adapter, fewshot, fewshot_file, prune_keep, t0, shard=None, url=None) -> EvalRun:
    """evaluate_model's job in this process (shard: its place among torchrun's)."""
    from slmkit.eval.cache import RequestCache
    from slmkit.eval.evaluator import evaluate
    from slmkit.eval.lm import SlmkitLM, load_lm

    if prune_keep is not None and not 0 < prune_keep <= 1:
        raise SlmError(f"the keep ratio must be in (0, 1], got {prune_keep}")
    if not eft and url is None and _is_classifier(model):
        if shard is not None:
            raise SlmError("a classification head is scored in one process; run slm eval without torchrun")
        return _evaluate_classifier(model, resolved, shots, limit, backend, p, device, batch_size, data, progress,
                                    adapter, t0, prune_keep)
    if prune_keep is not None:
        raise SlmError("token pruning in slm eval scores a classification head (an encoder's or a decoder's): "
                       "lm-eval's log-likelihoods need every position, which pruning drops")
    if eft:
        if adapter is not None:
            raise SlmError("--eft and --adapter do not combine; merge the adapter first (slm merge)")
        if backend != "slmkit" or p.quantised:
            raise SlmError("--eft runs on the slmkit backend at a float precision; drop --backend and the int "
                           "precision")
        from slmkit.combine.eft import load_model

        loaded = load_model(model, eft, p.dtype, device)
        lm = SlmkitLM(loaded.model, loaded.tokenizer, loaded.source, batch_size)
    else:
        lm = load_lm(model, backend, p.name, device, batch_size, adapter=adapter, url=url)
    load_s = time.perf_counter() - t0
    store = None
    if cache and (shard is None or shard.main):  # rank 0 alone reads and writes the cache
        from slmkit.paths import cache_dir

        store = RequestCache(Path(cache) if not isinstance(cache, bool) else cache_dir("eval-cache.sqlite"),
                             lm.fingerprint)
    try:
        run = evaluate(lm, resolved, shots, limit, data, store, progress=progress, log_samples=log_samples,
                       fewshot_docs=fewshot, shard=shard)
        if fewshot_file:
            for task in run.data.values():
                if "fewshot_split" in task:
                    task["fewshot_split"] = f"file:{fewshot_file}"
    finally:
        lm.close()
        if store:
            store.close()
    run.load_s, run.total_s = round(load_s, 2), round(time.perf_counter() - t0, 2)
    run.adapter = adapter
    return run


def _fewshot_docs(path: str, tasks) -> dict[str, list[dict]]:
    """The few-shot pool from a JSONL file, for exactly one task, checked against the task's own fields."""
    from slmkit.corpus import read_records

    if len(tasks) != 1:
        raise SlmError(f"--fewshot-file is the pool of one task; {len(tasks)} tasks were named")
    task = tasks[0]
    docs = []
    for where, doc in read_records(Path(path)):
        try:  # the task renders it: a document of another schema fails here, with the field it lacks
            task.doc_to_text(task.process_docs(doc) if task.process_docs else doc)
            task.doc_to_target(task.process_docs(doc) if task.process_docs else doc)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise SlmError(f"{where}: not a {task.name} document ({type(e).__name__}: {e})") from None
        docs.append(doc)
    if not docs:
        raise SlmError(f"{path}: no documents")
    return {task.name: docs}


def _is_classifier(model: str) -> bool:
    """Whether `model` is a folder whose config.json carries a classification head (no weights read)."""
    from slmkit.checkpoint import load_config

    try:
        return load_config(model)[0].head == "classify"
    except SlmError:
        return False  # the loader says what is wrong with it


def _evaluate_classifier(model, tasks, shots, limit, backend, p, device, batch_size, data, progress, adapter, t0,
                         prune_keep=None):
    from slmkit.checkpoint import load
    from slmkit.eval.classify import evaluate_classifier

    if backend != "slmkit" or p.quantised or adapter is not None:
        raise SlmError("a classification head is scored on the slmkit backend at a float precision, without "
                       "--adapter")
    loaded = load(model, dtype=p.dtype, device=device)
    load_s = time.perf_counter() - t0
    run = evaluate_classifier(loaded, tasks, shots, limit, data, batch_size, progress, p.name, prune_keep)
    run.load_s, run.total_s = round(load_s, 2), round(time.perf_counter() - t0, 2)
    return run
