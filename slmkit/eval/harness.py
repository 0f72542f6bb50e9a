"""lm-evaluation-harness integration.

- `SlmkitHarnessLM`: an lm-eval model ("slmkit"), so any lm-eval task runs on slmkit models:
      slm lm-eval --model slmkit --model_args pretrained=PATH,dtype=float32 --tasks hellaswag
  (lm-eval 0.4 has no plug-in discovery; `slm lm-eval` registers the model and hands over to lm-eval's CLI;
  in Python, importing this module registers it for lm_eval.simple_evaluate(model="slmkit", ...)).
- `write_local_tasks` / `run_reference`: lm-eval's own task definitions pointed at the documents slmkit
  evaluates (written as JSONL), run through lm-eval's HF backend: the reference for the parity checks.
"""

from __future__ import annotations

import json
from pathlib import Path

from slmkit.eval.data import load_task_data
from slmkit.eval.tasks import Task

try:
    import lm_eval.models  # noqa: F401 - fills lm-eval's registry first (it skips that once it is non-empty)
    from lm_eval.api.model import LM as _HarnessLM
    from lm_eval.api.registry import register_model
except ImportError:  # lm-eval not installed: the plug-in is unavailable, the rest of slmkit is not affected
    _HarnessLM, register_model = object, None


class SlmkitHarnessLM(_HarnessLM):
    """lm-eval's LM interface over slmkit.eval.lm backends."""

    def __init__(self, pretrained: str = "default", dtype: str = "float32", batch_size: int | str = 8,
                 device: str | None = None, backend: str = "slmkit", max_length: int | None = None,
                 precision: str | None = None, **_):
        super().__init__()
        from slmkit.eval.lm import load_lm

        import torch

        bs = 8 if str(batch_size).startswith("auto") else int(batch_size)
        if device and device.startswith("cuda") and not torch.cuda.is_available():
            device = None  # lm-eval's CLI asks for cuda by default; use what is there
        from slmkit.runtime.precision import FLOAT_DTYPES

        precision = precision or FLOAT_DTYPES.get(dtype, dtype)  # dtype=float32 as lm-eval's HF model takes it
        self.lm = load_lm(pretrained, backend, precision, device, bs, int(max_length) if max_length else None)

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        return self.lm.loglikelihood([r.args for r in requests])

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        return self.lm.loglikelihood_rolling([r.args[0] for r in requests])

    def generate_until(self, requests, disable_tqdm: bool = False):
        reqs = []
        for r in requests:
            context, kwargs = r.args
            kwargs = dict(kwargs)
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            max_gen = int(kwargs.get("max_gen_toks", kwargs.get("max_new_tokens", self.lm.max_gen_toks)))
            if kwargs.get("do_sample") or float(kwargs.get("temperature", 0.0) or 0.0) > 0:
                raise ValueError("slmkit's lm-eval model decodes greedily; set do_sample=false")
            reqs.append((context, {"until": until, "max_gen_toks": max_gen}))
        return self.lm.generate_until(reqs)


if register_model is not None:
    register_model("slmkit")(SlmkitHarnessLM)


def lm_eval_tasks_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


def write_local_tasks(tasks: list[Task], out_dir: Path, source: str = "auto") -> dict[str, str]:
    """For each task, its documents as JSONL and a task YAML that includes lm-eval's own definition with the
    data pointed at those files (and the splits the data has); returns {slmkit task: lm-eval task name}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = {}
    for task in tasks:
        splits = load_task_data(task.data_name, source)
        files = {}
        for split, docs in splits.docs.items():
            path = out_dir / task.name / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
            files[split] = str(path)
        have = lambda s: s if s is not None and s in files else None  # noqa: E731
        name = f"slmkit_{task.name}"
        lines = [f"include: {lm_eval_tasks_dir() / task.lm_eval_yaml}", f"task: {name}", "tag: []",
                 "dataset_path: json", "dataset_name: null", "dataset_kwargs:", "  data_files:"]
        lines += [f"    {split}: {path}" for split, path in files.items()]
        for key, split in (("training_split", task.training_split), ("validation_split", task.validation_split),
                           ("test_split", task.test_split)):
            lines.append(f"{key}: {have(split) or 'null'}")
        if task.fewshot_split:
            lines.append(f"fewshot_split: {task.fewshot_split}")
        (out_dir / f"{name}.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
        names[task.name] = name
    return names


def run_reference(model_dir: str, tasks: list[Task], shots: int, limit: int | None, work_dir: Path,
                  batch_size: int = 8, source: str = "auto", model: str = "hf") -> dict[str, list[dict]]:
    """lm-eval itself (HF backend by default) on the same documents: its per-document samples by task."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    names = write_local_tasks(tasks, work_dir, source)
    manager = TaskManager(include_path=str(work_dir))
    args = f"pretrained={model_dir},dtype=float32"
    out = lm_eval.simple_evaluate(model=model, model_args=args, tasks=list(names.values()), num_fewshot=shots,
                                  limit=limit, batch_size=batch_size, device="cpu", task_manager=manager,
                                  log_samples=True, bootstrap_iters=0)
    return {t: sorted(out["samples"][n], key=lambda s: s["doc_id"]) for t, n in names.items()}


def compare_loglikelihood(samples: list[dict], prep, results: list[list], per: dict[str, list]) -> dict:
    """Per-document agreement of slm eval with lm-eval's logged samples for one log-likelihood task: how many
    prompts are the same strings, the largest |log-likelihood difference|, and documents whose acc/acc_norm
    or greedy flags differ."""
    out = {"n": len(prep.docs), "same_prompts": 0, "max_ll_diff": 0.0, "metric_diffs": 0, "greedy_diffs": 0}
    for d, (s, reqs, res) in enumerate(zip(samples, prep.requests, results)):
        out["same_prompts"] += [tuple(a[:2]) for a in s["arguments"]] == [tuple(a) for _, a in reqs]
        for (ll_ref, greedy_ref), (ll, greedy) in zip([r[0] for r in s["resps"]], res):
            out["max_ll_diff"] = max(out["max_ll_diff"], abs(ll_ref - ll))
            out["greedy_diffs"] += bool(greedy_ref) != bool(greedy)
        out["metric_diffs"] += any(per[m][d] != s[m] for m in ("acc", "acc_norm") if m in s and m in per)
    return out


def compare_gsm8k(samples: list[dict], prep, results: list[list], per: dict[str, list]) -> dict:
    """The same for gsm8k: identical prompts, filtered answers and exact match under both filters."""
    from slmkit.eval import metrics as M

    first = {s["doc_id"]: s for s in sorted(samples, key=lambda s: (s["doc_id"], s["filter"]))}
    by_filter = {(s["doc_id"], s["filter"]): s for s in samples}  # lm-eval logs a sample per (doc, filter)
    out = {"n": len(prep.docs), "same_prompts": 0, "answer_diffs": 0, "metric_diffs": 0}
    for d, reqs in enumerate(prep.requests):
        out["same_prompts"] += first[d]["arguments"][0][0] == reqs[0][1][0]
        for key in ("exact_match,strict-match", "exact_match,flexible-extract"):
            filt = key.split(",")[1]
            theirs = by_filter[(d, filt)]
            out["answer_diffs"] += theirs["filtered_resps"][0] != M.regex_filter(results[d][0], *M.GSM8K_FILTERS[filt])
            out["metric_diffs"] += theirs["exact_match"] != per[key][d]
    return out
