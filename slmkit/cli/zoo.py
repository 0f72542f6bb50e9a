"""The survey and the whole job: slm zoo, slm report, slm tour."""

from __future__ import annotations

import re
import sys

from slmkit.cli.args import MODEL_HELP, at_least, overwrite_arg, verb


def zoo(what: str = "list", min_params: str | None = None, max_params: str | None = None, after: str | None = None,
        before: str | None = None, attention: str | None = None, family: str | None = None,
        runnable: bool | None = None, sort: str = "params", json: bool = False, output: str | None = None,
        overwrite: bool = False) -> None:
    """The survey's 68 small language models: list and filter them, with what in slmkit runs each.

    `slm zoo trends -o DIR` recomputes the survey's architecture statistics (PNG plots and markdown)."""
    import json as json_lib
    from dataclasses import asdict

    from slmkit.errors import SlmError
    from slmkit.zoo.catalogue import catalogue, markdown, parse_params, runner, select

    models = catalogue()
    if what == "trends":
        from slmkit.outputs import claim_dir, mark_dir
        from slmkit.zoo.trends import write

        out = claim_dir(output or "zoo-trends", "trends", overwrite)
        for path in write(models, out):
            print(f"wrote {path}", file=sys.stderr)
        mark_dir(out, "trends")
        return
    if output:
        raise SlmError("-o is for `slm zoo trends`; the list goes to stdout (use --json for JSON)")
    for flag, value in (("after", after), ("before", before)):
        if value and not re.fullmatch(r"\d{4}(-\d{2})?", value):
            raise SlmError(f"--{flag} takes a year or year-month, e.g. 2024 or 2023-09; got {value!r}")
    for flag, value, known in (("attention", attention, {m.attention for m in models if m.attention}),
                               ("family", family, {m.family for m in models})):
        if value and value.lower() not in {k.lower() for k in known}:
            raise SlmError(f"no catalogue model has --{flag} {value!r}; choose from {', '.join(sorted(known))}")
    chosen = select(models, parse_params(min_params) if min_params else None,
                    parse_params(max_params) if max_params else None, after, before, attention, family, runnable)
    chosen.sort(key=lambda m: (m.params, m.name) if sort == "params" else (m.released or "", m.name))
    if json:
        print(json_lib.dumps([{**asdict(m), "runner": asdict(runner(m))} for m in chosen], indent=1))
        return
    print(markdown(chosen))
    print(f"{len(chosen)} of {len(models)} models; {sum(runner(m).runnable for m in chosen)} run in slmkit",
          file=sys.stderr)


def report(results: list[str], output: str = "report", title: str = "slmkit report", overwrite: bool = False) -> None:
    """Merge `slm eval` and `slm bench` results into one HTML page (plots embedded) and markdown.

    Per model x backend x precision: group accuracies, ICL gain, prefill and decode tok/s, TTFT, peak memory;
    accuracy against decode latency and against memory with the Pareto frontier; the survey's on-phone
    measurements where the same model appears."""
    from slmkit.outputs import claim_dir, mark_dir
    from slmkit.report import build

    out = claim_dir(output, "report", overwrite)
    page = build(results, title)
    paths = page.write(out)
    mark_dir(out, "report")
    for path in paths[:2]:
        print(f"wrote {path}", file=sys.stderr)
    print(paths[0])


def tour(model: str = "default", output: str = "slm-tour", limit: int = 20, fresh: bool = False,
         compile: bool = True, draft: str | None = None, overwrite: bool = False) -> None:
    """The toolkit on one model, ending in report.html: info, eval at 0 and 5 shots (fp32) and 0 shots (int8+head,
    int4+head), bench at those precisions (and llama.cpp), GGUF export run by llama.cpp, speculative decoding by
    prompt lookup (and with the distilled draft when trained), and the report. Each step is resumable; about 10
    minutes on 2 cores for the default model."""
    from slmkit.tour import run

    result = run(model, output, limit, fresh, compile, draft,
                 echo=lambda line: print(line, file=sys.stderr, flush=True), overwrite=overwrite)
    for name, step in result.steps.items():
        if step.get("error"):
            print(f"- {name} failed: {step['error']}", file=sys.stderr)
    print(f"report: {result.report}")


def register(sub) -> None:
    s = verb(sub, "zoo", zoo)
    s.add_argument("what", nargs="?", choices=["list", "trends"], default="list",
                   help="list (default): the catalogue, filtered; trends: the survey's statistics as plots")
    s.add_argument("--min-params", help="at least this many parameters, e.g. 500M")
    s.add_argument("--max-params", help="at most this many parameters, e.g. 1.5B")
    s.add_argument("--after", help="released in or after YYYY or YYYY-MM")
    s.add_argument("--before", help="released in or before YYYY or YYYY-MM")
    s.add_argument("--attention", help="MHA, GQA, MQA or MLA")
    s.add_argument("--family", help="architecture family, e.g. llama, qwen2, gpt2")
    runs = s.add_mutually_exclusive_group()
    runs.add_argument("--runnable", dest="runnable", action="store_true", default=None,
                      help="only models slmkit runs (a preset or a supported family)")
    runs.add_argument("--not-runnable", dest="runnable", action="store_false", help="only the others")
    s.add_argument("--sort", choices=["params", "released"], default="params")
    s.add_argument("--json", action="store_true", help="print the records as JSON")
    s.add_argument("--output", "-o", help="trends: folder for trends.md and the plots (default zoo-trends)")
    overwrite_arg(s)

    s = verb(sub, "report", report)
    s.add_argument("results", nargs="+", help="folders (searched recursively) or files: results.json from `slm eval "
                                              "-o`, bench.json from `slm bench -o`")
    s.add_argument("--output", "-o", default="report", help="folder for report.html, report.md and the plots "
                                                           "(default ./report)")
    s.add_argument("--title", default="slmkit report")
    overwrite_arg(s)

    s = verb(sub, "tour", tour)
    s.add_argument("--model", "-m", default="default", help=MODEL_HELP)
    s.add_argument("--output", "-o", default="slm-tour", help="folder for the steps and report.html (default "
                                                             "./slm-tour); a second run resumes there")
    s.add_argument("--limit", type=at_least(1), default=20, help="documents per eval task (default 20)")
    s.add_argument("--fresh", action="store_true", help="redo every step, even those done before")
    s.add_argument("--no-compile", dest="compile", action="store_false",
                   help="bench and decode with the eager engine (by default the decode step is compiled, as "
                        "`slm bench` does: about 3x faster decode after a one-off compile that is cached)")
    s.add_argument("--draft", help="a draft model for speculative decoding beside prompt lookup, which always runs "
                                   "(default: default-draft when trained)")
    overwrite_arg(s)
