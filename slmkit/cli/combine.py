"""Small and large models together: slm combine supericl and slm combine rerank. (Speculative decoding is
`slm generate --draft`; emulated fine-tuning is --eft on generate, chat and eval.)"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from slmkit.cli.args import DTYPES, MODEL_HELP, at_least, group, name_list, overwrite_arg, positive, quiet_arg, verb


def supericl(task: list[str], llm: str = "default", llm_url: str | None = None, llm_model: str | None = None,
             api_key: str | None = None, timeout: float = 60.0, retries: int = 3, shots: int = 8,
             limit: int | None = None, seed: int = 0, explain: bool = False, dtype: str | None = None,
             device: str | None = None, output: str | None = None, quiet: bool = False,
             overwrite: bool = False, plugin: str = "minilm-lr", plugin_steps: int = 150,
             plugin_lr: float = 1e-4) -> None:
    """SuperICL: a plug-in classifier's predictions and confidences in the LLM's in-context examples.

    Reports plug-in alone, ICL alone and SuperICL accuracy on each task (the paper's prompt format)."""
    from slmkit.combine.supericl import (TASKS, ClassifierPlugin, EncoderPlugin, EndpointLLM, LocalLLM,
                                         SuperICLResult, minilm_path, run_supericl, split_items, write_supericl)
    from slmkit.errors import SlmError

    if output:
        from slmkit.outputs import claim_dir

        claim_dir(output, "supericl", overwrite)
    unknown = [t for t in task if t not in TASKS]
    if unknown or not task:
        raise SlmError(f"unknown task {', '.join(unknown) or '(none)'}; choose from {', '.join(TASKS)}")
    model = (EndpointLLM(llm_url, llm_model, api_key or os.environ.get("OPENAI_API_KEY"), timeout, retries)
             if llm_url else LocalLLM(llm, dtype, device))
    if plugin == "minilm-lr":
        plug = EncoderPlugin()
        about = "all-MiniLM-L6-v2 + logistic regression on the training pool"
    else:  # a model to fine-tune with a classification head on each task's training pool
        init = str(minilm_path()) if plugin == "minilm" else plugin
        plug = ClassifierPlugin(init, name="MiniLM-ft" if plugin == "minilm" else None, steps=plugin_steps,
                                lr=plugin_lr)
        about = f"{plug.name} fine-tuned with a classification head on the training pool ({plugin_steps} steps)"
    results = []
    print(SuperICLResult.HEAD)
    for name in task:
        t = TASKS[name]
        train, test = split_items(t.load(), seed)
        test = test[:limit] if limit else test
        r = run_supericl(t, plug, model, train, test, shots, seed, explain, progress=not quiet)
        print(r.row(), flush=True)
        results.append((t, r))
    print(f"LLM {model.name}; plug-in {plug.name} ({about}); "
          f"each task's labelled split cut in half (seed {seed}): training pool / test", file=sys.stderr)
    if output:
        from slmkit.outputs import mark_dir

        paths = write_supericl(results, output)
        mark_dir(output, "supericl")
        print(f"wrote {paths[0]} and {paths[1]}", file=sys.stderr)


def rerank(generator: str = "default", verifier: str | None = None, n: int = 8, temperature: float = 0.7,
           split: str = "test", offset: int = 0, limit: int = 100, max_tokens: int = 256, shots: int = 3,
           batch: int = 8, compile: bool = False, seed: int = 0, cpu_s: float = 2.0, wall_s: float = 5.0,
           memory_mb: int = 512, unisolated: bool = False, candidates: str | None = None,
           label_out: str | None = None, all_negatives: bool = False, dtype: str | None = None,
           device: str | None = None, output: str | None = None, quiet: bool = False, overwrite: bool = False) -> None:
    """Verifier reranking on GSM8K (TinyGSM): sampled Python programs, run in the sandbox, reranked.

    N programs per problem; reports first sample, majority vote, verifier-best and oracle pass@N. --label-out
    writes the labelled candidates as verifier training data."""
    import json

    from slmkit.checkpoint import load
    from slmkit.combine.rerank import label_records, load_candidates, report, run, score_candidates
    from slmkit.combine.sandbox import SandboxLimits, resolve_isolation
    from slmkit.errors import SlmError
    from slmkit.eval.data import load_task_data
    from slmkit.outputs import claim_dir, claim_file, mark_dir
    from slmkit.paths import write_atomic

    if verifier and label_out:
        raise SlmError("--label-out writes training data for a verifier; drop --verifier")
    if candidates and label_out:
        raise SlmError("--candidates rescores saved samples; --label-out takes fresh ones: drop one of them")
    if output:
        claim_dir(output, "rerank", overwrite)
    if label_out:
        claim_file(label_out, "jsonl", overwrite)
    isolation = "none" if unisolated else "auto"
    if not candidates:
        resolve_isolation(isolation)  # before loading models and data
        splits = load_task_data("gsm8k")
        if split not in splits.docs:
            raise SlmError(f"GSM8K has no {split!r} split here (it has {', '.join(splits.docs)})")
        docs = splits.docs[split][offset:][:limit]
        gen = load(generator, dtype=dtype, device=device, progress=True)
    scorer = None
    if verifier:
        from slmkit.eval.lm import SlmkitLM

        v = load(verifier, dtype=dtype or "float32", device=device)
        scorer = SlmkitLM(v.model, v.tokenizer, v.source, batch_size=8)
    limits = SandboxLimits(cpu_s=cpu_s, wall_s=wall_s, memory_mb=memory_mb)
    if candidates:
        problems = load_candidates(candidates)
        if scorer is not None:
            score_candidates(scorer, problems)
        rep = report(problems, max(len(p.candidates) for p in problems), scorer is not None)
        where = f"{len(problems)} problems from {candidates}"
    else:
        problems, rep = run(gen.model, gen.tokenizer, docs, n, scorer, temperature, max_tokens, batch, seed, limits,
                            progress=not quiet, shots=shots, compile=compile, isolation=isolation)
        where = (f"GSM8K {split} ({splits.source}), items {offset}-{offset + len(docs) - 1}; generator "
                 f"{gen.source}, T={temperature}")
    print(rep.markdown())
    print(f"{where}; programs held by: {rep.held_by()}; no answer: "
          + (", ".join(f"{k} {v}" for k, v in sorted(rep.failures.items())) or "none"), file=sys.stderr)
    if label_out:
        rows = label_records(problems, None if all_negatives else 3.0, seed)
        write_atomic(Path(label_out), "".join(json.dumps(r) + "\n" for r in rows))
        print(f"wrote {len(rows)} verifier records ({sum(r['response'] == ' yes' for r in rows)} correct) to "
              f"{label_out}", file=sys.stderr)
    if output:
        paths = rep.write(output, problems)
        mark_dir(output, "rerank")
        print(f"wrote {paths[0]} and {paths[1]}", file=sys.stderr)


def register(sub) -> None:
    combine = group(sub, "combine", __doc__.strip(), "combine")
    c = verb(combine, "supericl", supericl)
    c.add_argument("--task", "-t", type=name_list, default=["sst2", "mrpc"],
                   help="comma-separated: sst2, mrpc (default both)")
    c.add_argument("--llm", default="default", help="the LLM as an slmkit model: " + MODEL_HELP)
    c.add_argument("--llm-url", help="use an OpenAI-compatible endpoint instead, e.g. http://127.0.0.1:8000/v1")
    c.add_argument("--llm-model", help="the endpoint's model id (default: the first it lists)")
    c.add_argument("--api-key", help="the endpoint's key (default $OPENAI_API_KEY)")
    c.add_argument("--timeout", type=positive, default=60.0, help="seconds per endpoint request (default 60)")
    c.add_argument("--retries", type=at_least(0), default=3, help="retries of a failed endpoint request (default 3)")
    c.add_argument("--shots", type=at_least(1), default=8, help="in-context examples per test item (default 8)")
    c.add_argument("--limit", type=at_least(1), help="the first N test items of each task")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--explain", action="store_true", help="ask the LLM why, when it overrides the plug-in")
    c.add_argument("--dtype", choices=DTYPES, help="the local LLM's dtype")
    c.add_argument("--device", help="the local LLM's device")
    c.add_argument("--output", "-o", help="folder for supericl.json and supericl-records.jsonl")
    c.add_argument("--plugin", default="minilm-lr",
                   help="minilm-lr: frozen MiniLM + logistic regression (default); minilm: MiniLM fine-tuned end to "
                        "end with a classification head; or a model folder to fine-tune the same way")
    c.add_argument("--plugin-steps", type=at_least(1), default=150, help="fine-tuning steps of a trained plug-in")
    c.add_argument("--plugin-lr", type=positive, default=1e-4, help="its learning rate (default 1e-4)")
    quiet_arg(c, "no progress bar")
    overwrite_arg(c)

    c = verb(combine, "rerank", rerank)
    c.add_argument("--generator", "-m", default="default", help="the model that writes programs: " + MODEL_HELP)
    c.add_argument("--verifier", help="a verifier model (trained on --label-out data); without it, no verifier-best")
    c.add_argument("-n", type=at_least(1), default=8, help="candidates per problem (default 8)")
    c.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default 0.7)")
    c.add_argument("--split", default="test", help="GSM8K split: test (default) or train")
    c.add_argument("--offset", type=at_least(0), default=0, help="skip the first N problems")
    c.add_argument("--limit", type=at_least(1), default=100, help="problems (default 100)")
    c.add_argument("--max-tokens", type=at_least(1), default=256, help="tokens per program (default 256)")
    c.add_argument("--shots", type=int, default=3, choices=range(4), metavar="{0-3}",
                   help="worked examples before each question, 0-3 (default 3; 0 for a generator fine-tuned on "
                        "programs)")
    c.add_argument("--batch", type=at_least(1), default=8, help="problems sampled together (default 8)")
    c.add_argument("--compile", action="store_true", help="compile the generator's batched decode step (about 3x "
                                                          "faster sampling after a one-off compile)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--cpu-s", type=positive, default=2.0, help="sandbox CPU seconds per program (default 2)")
    c.add_argument("--wall-s", type=positive, default=5.0, help="sandbox wall seconds per program (default 5)")
    c.add_argument("--memory-mb", type=at_least(16), default=512, help="sandbox address space per program "
                                                                       "(default 512)")
    c.add_argument("--unisolated", action="store_true", help="run the programs without OS isolation (no bubblewrap "
                                                             "here): Python layers only; rerank.json says so")
    c.add_argument("--candidates", help="score saved candidates (a rerank-candidates.jsonl from -o) instead of "
                                        "sampling new ones")
    c.add_argument("--label-out", help="write the labelled candidates as verifier training JSONL (prompt, response)")
    c.add_argument("--all-negatives", action="store_true", help="with --label-out: keep every wrong candidate "
                                                                "(default: at most 3 per correct one)")
    c.add_argument("--dtype", choices=DTYPES)
    c.add_argument("--device")
    c.add_argument("--output", "-o", help="folder for rerank.json and rerank-candidates.jsonl")
    quiet_arg(c)
    overwrite_arg(c)
