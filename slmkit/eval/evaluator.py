"""Build each task's requests as lm-evaluation-harness does (splits, few-shot sampling with seed 1234, prompt
assembly), run them on an EvalLM with a resumable cache and a progress bar, and score them."""

from __future__ import annotations

import random
import re
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from slmkit.errors import SlmError
from slmkit.eval import metrics as M
from slmkit.eval.cache import RequestCache
from slmkit.eval.data import Splits, load_task_data
from slmkit.eval.lm import EvalLM
from slmkit.eval.results import EvalRun
from slmkit.eval.tasks import MMLU_GROUPS, SURVEY_GROUPS, Task
from slmkit.results import machine, versions

if TYPE_CHECKING:
    from slmkit.train.dist import DistContext

FEWSHOT_SEED = 1234  # lm-eval's default fewshot_random_seed


@dataclass
class Prepared:
    """A task's evaluation documents and, per document, its requests (kind, args)."""

    task: Task
    shots: int
    eval_split: str
    fewshot_split: str | None
    docs: list[dict]
    requests: list[list[tuple[str, Any]]] = field(default_factory=list)
    source: str = ""


def _effective(task: Task, splits: Splits) -> dict[str, str | None]:
    have = splits.docs
    pick = lambda s: s if s is not None and s in have else None  # noqa: E731
    return {"train": pick(task.training_split), "validation": pick(task.validation_split),
            "test": pick(task.test_split), "fewshot": task.fewshot_split}


def _processed(task: Task, docs: list[dict]) -> list[dict]:
    return [task.process_docs(d) for d in docs] if task.process_docs else docs


def _fewshot_pool(task: Task, splits: Splits, eff: dict) -> tuple[str | None, list[dict]]:
    """lm-eval's fewshot_docs(): the fewshot split, else training, else validation, else test docs."""
    if eff["fewshot"] is not None:
        if eff["fewshot"] not in splits.docs:
            raise SlmError(f"{task.name}: its few-shot split {eff['fewshot']!r} is not in the data "
                           f"({', '.join(splits.docs)}) from {splits.where}")
        return eff["fewshot"], _processed(task, splits.docs[eff["fewshot"]])
    for key in ("train", "validation", "test"):
        if eff[key]:
            return eff[key], _processed(task, splits.docs[eff[key]])
    return None, []


class _Sampler:
    """lm-eval's ContextSampler ("default": random.Random(seed).sample per document, in document order) and
    FirstNSampler ("first_n"); both drop the evaluated document when few-shot and test split are the same."""

    def __init__(self, task: Task, pool: list[dict], exclude_self: bool):
        self.kind, self.pool, self.exclude = task.sampler, pool, exclude_self
        self.rnd = random.Random(FEWSHOT_SEED)

    def sample(self, n: int, doc: dict) -> list[dict]:
        if n == 0:
            return []
        if self.kind == "first_n":
            pool = [d for d in self.pool if d != doc] if self.exclude else self.pool
            return pool[:n]
        if not self.exclude:
            return self.rnd.sample(self.pool, n)
        res = [d for d in self.rnd.sample(self.pool, n + 1) if d != doc][:n]
        if len(res) < n:
            res = self.rnd.sample([d for d in self.pool if d != doc], n)
        return res


def _answer(task: Task, doc: dict) -> tuple[str, str]:
    """(question, answer text) of a few-shot example, as lm-eval's build_qa_turn renders it."""
    q, a = task.doc_to_text(doc), task.doc_to_target(doc)
    c = task.doc_to_choice(doc) if task.doc_to_choice else None
    if task.multiple_input:
        q, c = c[q], None
    text = c[a] if (c and isinstance(a, int)) else a[0] if isinstance(a, list) else a
    return q, str(text)


def contexts(task: Task, doc: dict, shots: list[dict]) -> list[str]:
    """The prompt(s) for one document: description, few-shot turns, then the question (one per choice for
    multiple-input tasks)."""
    head = task.description(doc) if task.description else ""
    for ex in shots:
        q, a = _answer(task, ex)
        has_answer = a != ""
        head += q + (task.target_delimiter if has_answer else "") + a + task.fewshot_delimiter
    if task.multiple_input:
        return [head + c for c in task.doc_to_choice(doc)]
    return [head + task.doc_to_text(doc)]


def prepare(task: Task, shots: int, limit: int | None = None, source: str = "auto",
            fewshot_docs: list[dict] | None = None) -> Prepared:
    """The task's evaluation documents and their requests. fewshot_docs: the few-shot pool to draw from instead of
    the task's own split (documents in the task's schema: FewGLUE's 32 examples, say)."""
    splits = load_task_data(task.data_name, source)
    eff = _effective(task, splits)
    eval_split = eff["test"] or eff["validation"]
    if eval_split is None:
        raise SlmError(f"{task.name}: the data from {splits.where} has no {task.test_split or task.validation_split} "
                       f"split (it has {', '.join(splits.docs)})")
    docs = _processed(task, splits.docs[eval_split])
    if limit is not None:
        docs = docs[:limit]
    if fewshot_docs is not None:
        fs_split, pool = "file", _processed(task, fewshot_docs)
    else:
        fs_split, pool = _fewshot_pool(task, splits, eff) if shots else (None, [])
    exclude = eff["fewshot"] == eff["test"] and fewshot_docs is None
    if shots and shots + (1 if exclude and fs_split == eval_split else 0) > len(pool):
        raise SlmError(f"{task.name}: {shots} shots but its few-shot split ({fs_split}) holds only {len(pool)} "
                       "examples; use fewer shots")
    sampler = _Sampler(task, pool, exclude)
    prep = Prepared(task, shots, eval_split, fs_split, docs, source=f"{splits.source}:{splits.where}")
    for doc in docs:
        ctxs = contexts(task, doc, sampler.sample(shots, doc))
        if task.output_type == "multiple_choice":
            if task.multiple_input:
                reqs = [("loglikelihood", (c, task.target_delimiter + task.doc_to_target(doc))) for c in ctxs]
            else:
                reqs = [("loglikelihood", (ctxs[0], task.target_delimiter + c)) for c in task.doc_to_choice(doc)]
        elif task.output_type == "loglikelihood":
            reqs = [("loglikelihood", (ctxs[0], task.doc_to_target(doc)))]
        elif task.output_type == "loglikelihood_rolling":
            reqs = [("loglikelihood_rolling", (task.doc_to_target(doc),))]
        else:
            reqs = [("generate_until", (ctxs[0], {"until": list(task.until), "max_gen_toks": task.max_gen_toks}))]
        prep.requests.append(reqs)
    return prep


def run_requests(lm: EvalLM, prep: Prepared, cache: RequestCache | None, progress: bool = True,
                 shard: "DistContext | None" = None) -> list[list]:
    """Results for every request of every document, from the cache where present.

    shard: this process's place among torchrun's processes: each scores the documents d with d % world == rank
    that the cache (read by rank 0 only) lacks, and all of them end with every result; rank 0 writes the cache."""
    import torch.distributed as dist

    world, rank = (shard.world, shard.rank) if shard is not None and shard.distributed else (1, 0)
    flat = [(d, j, kind, args) for d, reqs in enumerate(prep.requests) for j, (kind, args) in enumerate(reqs)]
    results: list[list] = [[None] * len(reqs) for reqs in prep.requests]
    left = [len(reqs) for reqs in prep.requests]
    keys = [cache.key(kind, args) for _, _, kind, args in flat] if cache and rank == 0 else []
    hits = cache.get(keys) if cache and rank == 0 else {}
    if world > 1:  # every process must agree on what is left to score
        box = [{n: hits[k] for n, k in enumerate(keys) if k in hits}]
        dist.broadcast_object_list(box, src=0)
        cached = box[0]
    else:
        cached = {n: hits[k] for n, k in enumerate(keys) if k in hits}
    mine = sum(1 for d in range(len(prep.docs)) if d % world == rank)
    desc = f"{prep.task.name} {prep.shots}-shot" + (f" (shard {rank + 1}/{world})" if world > 1 else "")
    bar = tqdm(total=mine, desc=desc, unit="item", disable=not progress or rank != 0, file=sys.stderr, leave=False,
               dynamic_ncols=True)
    todo: dict[str, list[int]] = {}
    for n, (d, j, kind, args) in enumerate(flat):
        if n in cached:
            results[d][j] = cached[n]
            left[d] -= 1
        elif d % world == rank:
            todo.setdefault(kind, []).append(n)
    bar.update(sum(1 for d, x in enumerate(left) if x == 0 and d % world == rank))
    fresh_here: dict[int, Any] = {}  # what this process scored, by flat index, for the others

    # planned from every request, so a result does not depend on what the cache held; a run the cache answers
    # whole tokenises nothing
    lls = [tuple(args) for _, _, kind, args in flat if kind == "loglikelihood"] if "loglikelihood" in todo else []
    lm.plan(lls or None)
    for kind, ns in todo.items():
        def done(idx: list[int], res: list, ns=ns) -> None:
            fresh = {}
            finished = 0
            for i, r in zip(idx, res):
                d, j = flat[ns[i]][0], flat[ns[i]][1]
                results[d][j] = list(r) if isinstance(r, tuple) else r
                left[d] -= 1
                finished += left[d] == 0
                if world > 1:
                    fresh_here[ns[i]] = results[d][j]
                if cache and rank == 0:
                    fresh[keys[ns[i]]] = results[d][j]
            if fresh:
                cache.put(fresh)
            bar.update(finished)

        args = [flat[n][3] for n in ns]
        if kind == "loglikelihood":
            lm.loglikelihood([tuple(a) for a in args], done)
        elif kind == "loglikelihood_rolling":
            lm.loglikelihood_rolling([a[0] for a in args], done)
        else:
            lm.generate_until([(a[0], a[1]) for a in args], done)
    lm.plan(None)
    bar.close()
    if world > 1:
        parts: list = [None] * world
        dist.all_gather_object(parts, fresh_here)
        others = {n: r for p, part in enumerate(parts) if p != rank for n, r in part.items()}
        for n, r in others.items():
            results[flat[n][0]][flat[n][1]] = r
        if cache and rank == 0 and others:
            cache.put({keys[n]: r for n, r in others.items()})
    return results


def score(prep: Prepared, results: list[list]) -> dict[str, list]:
    """Per-document metric values, by metric name."""
    task = prep.task
    per: dict[str, list] = {}
    for doc, res in zip(prep.docs, results):
        if task.output_type == "multiple_choice":
            choices = task.doc_to_choice(doc)
            gold = task.doc_to_text(doc) if task.multiple_input else task.doc_to_target(doc)
            if isinstance(gold, str):
                gold = choices.index(gold)
            vals = M.multiple_choice([r[0] for r in res], choices, gold, task.metrics)
        elif task.output_type == "loglikelihood":
            vals = {"perplexity": res[0][0], "acc": float(res[0][1])}
        elif task.output_type == "loglikelihood_rolling":
            page = doc["page"]
            words, nbytes = len(re.split(r"\s+", page)), len(page.encode("utf-8"))
            vals = {"word_perplexity": (res[0], words), "byte_perplexity": (res[0], nbytes),
                    "bits_per_byte": (res[0], nbytes)}
        else:
            gold = task.doc_to_target(doc)
            vals = {f"exact_match,{name}": M.exact_match(M.regex_filter(res[0], pat, sel), gold)
                    for name, (pat, sel) in M.GSM8K_FILTERS.items()}
        for k, v in vals.items():
            per.setdefault(k, []).append(v)
    return per


def summarize(per: dict[str, list]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for metric, values in per.items():
        value, se = M.aggregate(metric, values)
        out[metric], out[metric + "_stderr"] = value, se
    return out


def groups(task_results: dict[str, dict], sizes: dict[str, int], main: dict[str, str]) -> dict[str, dict]:
    """mmlu's size-weighted groups, then the survey's capability groups (unweighted means of main metrics)."""
    out: dict[str, dict] = {}
    for name, members in MMLU_GROUPS.items():
        have = [m for m in members if m in task_results]
        if not have:
            continue
        n = [sizes[m] for m in have]
        acc = sum(task_results[m]["acc"] * k for m, k in zip(have, n)) / sum(n)
        ses = [task_results[m]["acc_stderr"] or 0.0 for m in have]
        out[name] = {"acc": acc, "acc_stderr": M.pooled_stderr(ses, n) if sum(n) > len(n) else None,
                     "n_tasks": len(have), "complete": len(have) == len(members), "metric": "acc"}
    for name, members in SURVEY_GROUPS.items():
        vals, ses, used = [], [], []
        for m in members:
            src = out.get(m) if m == "mmlu" else task_results.get(m)
            if src is None:
                continue
            metric = "acc" if m == "mmlu" else main[m]
            vals.append(src[metric])
            ses.append(src.get(metric + "_stderr") or 0.0)
            used.append(m)
        if vals:
            out[name] = {"score": sum(vals) / len(vals), "score_stderr": M.unweighted_stderr(ses),
                         "members": used, "complete": len(used) == len(members), "metric": "mean of main metrics"}
    return out


def main_value(entry: dict) -> float:
    return entry.get("score", entry.get("acc"))


def evaluate(lm: EvalLM, tasks: list[Task], shots: list[int] | None = None, limit: int | None = None,
             source: str = "auto", cache: RequestCache | None = None, progress: bool = True,
             log_samples: bool = False, fewshot_docs: dict[str, list[dict]] | None = None,
             shard: "DistContext | None" = None) -> EvalRun:
    """Every task at every shot count (None: each task's default, 5 for gsm8k, else 0): metrics with standard
    errors, groups, the ICL gain (k-shot minus 0-shot), data provenance, timings, seeds, versions and machine."""
    out: dict = {"results": {}, "groups": {}, "data": {}, "timings": {}, "samples": {}}
    counts = shots if shots is not None else sorted({t.default_shots for t in tasks})
    for k in counts:
        key = str(k)
        res: dict[str, dict] = {}
        sizes: dict[str, int] = {}
        for task in tasks:
            n_shots = k if shots is not None else task.default_shots
            if shots is None and n_shots != k:
                continue
            t0 = time.perf_counter()
            prep = prepare(task, n_shots, limit, source, (fewshot_docs or {}).get(task.name))
            results = run_requests(lm, prep, cache, progress, shard)
            per = score(prep, results)
            res[task.name] = summarize(per)
            sizes[task.name] = len(prep.docs)
            dt = time.perf_counter() - t0
            out["timings"][f"{task.name}@{key}"] = {"seconds": round(dt, 3), "items": len(prep.docs),
                                                    "items_per_s": round(len(prep.docs) / dt, 2) if dt else None}
            out["data"][task.name] = {"source": prep.source, "eval_split": prep.eval_split, "n": len(prep.docs),
                                      **({"fewshot_split": prep.fewshot_split} if n_shots else {})}
            if log_samples:
                out["samples"].setdefault(key, {})[task.name] = [
                    {"doc_id": i, "requests": [list(a) for _, a in reqs], "results": r}
                    for i, (reqs, r) in enumerate(zip(prep.requests, results))]
        out["results"][key] = res
        out["groups"][key] = groups(res, sizes, {t.name: t.main_metric for t in tasks})
    if shots is not None and 0 in shots:
        base = {**{t: main_value_task(v, t, tasks) for t, v in out["results"]["0"].items()},
                **{g: main_value(v) for g, v in out["groups"]["0"].items()}}
        out["icl_gain"] = {}
        for k in shots:
            if k == 0:
                continue
            cur = {**{t: main_value_task(v, t, tasks) for t, v in out["results"][str(k)].items()},
                   **{g: main_value(v) for g, v in out["groups"][str(k)].items()}}
            out["icl_gain"][str(k)] = {n: cur[n] - base[n] for n in cur if n in base}
    return EvalRun(model=lm.name, backend=lm.backend, precision=lm.precision, shots=shots, limit=limit,
                   batch_size=getattr(lm, "batch_size", None), seeds={"fewshot": FEWSHOT_SEED}, versions=versions(),
                   machine=machine(), processes=shard.world if shard is not None else 1, **out)


def main_value_task(entry: dict, name: str, tasks: list[Task]) -> float:
    task = next(t for t in tasks if t.name == name)
    return entry[task.main_metric]
