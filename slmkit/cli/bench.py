"""slm bench: prefill and decode speed, latency percentiles and memory, slmkit beside its peers; and the cost
model (--calibrate, --predict)."""

from __future__ import annotations

import sys

from slmkit.cli.args import MODEL_HELP, adapter_arg, at_least, int_list, name_list, overwrite_arg, ratio_list, verb

DEFAULT_PRECISIONS = "fp32,int8+head,int4+head"


def bench(model: str = "default", model_option: str | None = None,
          backends: list[str] = ("slmkit", "transformers", "llamacpp"), precisions: list[str] = ("fp32",),
          prompts: list[int] = (32, 128, 512), depths: list[int] = (0, 128, 512), n_gen: int = 32, repeats: int = 3,
          warmup: int = 1, threads: int | None = None, device: str | None = None, no_compile: bool = False,
          group: int = 32, asym: bool = False, output: str | None = None, json: bool = False,
          calibrate: bool = False, predict: str | None = None, adapter: str | None = None,
          prune_keep: list[float] | None = None, overwrite: bool = False) -> None:
    """Prefill and decode speed, TTFT, per-token latency percentiles and memory, for slmkit at each precision
    beside transformers and llama.cpp (each in its own process); a table, plus bench.json (llama-bench's fields),
    bench.csv and bench.md with -o. --calibrate measures the machine's ceilings; --predict estimates a config's
    latency and memory from them without running it. --prune-keep times slmkit's forward with dynamic token
    pruning at those keep ratios beside the same forward unpruned (a decoder's prefill, or an encoder's or
    classifier's whole forward)."""
    import json as json_lib
    import os

    from slmkit.bench import costmodel
    from slmkit.bench.run import BenchSpec, bench as run_bench
    from slmkit.errors import SlmError

    model = model_option or model
    if output:
        from slmkit.outputs import claim_dir

        claim_dir(output, "bench", overwrite)
    target = device or ("cuda" if __import__("torch").cuda.is_available() else "cpu")
    if calibrate or predict:
        cal = costmodel.load_calibration(target) if not calibrate else None
        if cal is None:
            print(f"calibrating {target} (memory bandwidth, kernel rates, engine overheads; about a minute) ...",
                  file=sys.stderr)
            cal = costmodel.calibrate(target)
            print(f"wrote {costmodel.calibration_path(target)}", file=sys.stderr)
        if calibrate:
            print(costmodel.describe(cal))
        if predict:
            print(costmodel.prediction_table(predict, cal, list(precisions), list(prompts), list(depths)))
        return
    spec = BenchSpec(model=model, backends=list(backends), precisions=list(precisions), prompts=list(prompts),
                     depths=list(depths), n_gen=n_gen, repeats=repeats, warmup=warmup,
                     threads=threads or os.cpu_count() or 1, device=device, compile=not no_compile, group_size=group,
                     symmetric=not asym, adapter=adapter, prune_keeps=list(prune_keep or []))
    run = run_bench(spec, echo=lambda line: print(line, file=sys.stderr, flush=True))
    print(f"\n{run.header()}\n")
    print(run.table())
    if not run.calibrated and "slmkit" in spec.backends:
        print("- no predictions: run `slm bench --calibrate` once to see the cost model's beside the measurements")
    for line in run.skipped:
        print(f"- skipped: {line}")
    for line in run.errors:
        print(f"- failed: {line}")
    if output:
        from slmkit.outputs import mark_dir

        print(f"wrote {run.write(output)}/bench.{{json,csv,md}}")
        mark_dir(output, "bench")
    if json:
        print(json_lib.dumps(run.rows, indent=1))
    if not run.rows:
        raise SlmError("no backend ran; see the lines above")


def register(sub) -> None:
    s = verb(sub, "bench", bench)
    s.add_argument("model", nargs="?", default="default", help=MODEL_HELP)
    s.add_argument("--model", "-m", dest="model_option", help="the same as MODEL, as the other verbs take it")
    adapter_arg(s)
    s.add_argument("--backends", type=name_list, default=["slmkit", "transformers", "llamacpp"],
                   help="comma-separated: slmkit, transformers, llamacpp (default all three; missing ones are "
                        "skipped with a note)")
    s.add_argument("--precisions", type=name_list, default=DEFAULT_PRECISIONS.split(","),
                   help=f"comma-separated: fp32 bf16 fp16 int8 int8+head int4 int4+head (default {DEFAULT_PRECISIONS})"
                        "; llama.cpp runs f32, f16, q8_0 and q4_0+q4_1 beside them, transformers the float ones")
    s.add_argument("--prompts", type=int_list(1), default=[32, 128, 512], help="prefill lengths (default 32,128,512)")
    s.add_argument("--depths", type=int_list(0), default=[0, 128, 512],
                   help="KV depths the decode tests start at (default 0,128,512)")
    s.add_argument("--n-gen", type=at_least(1), default=32, help="decode steps per test (default 32)")
    s.add_argument("--repeats", "-r", type=at_least(1), default=3, help="timed runs of each test (default 3)")
    s.add_argument("--warmup", type=at_least(0), default=1, help="untimed runs before them (default 1)")
    s.add_argument("--threads", type=at_least(1), help="CPU threads (default: all cores)")
    s.add_argument("--device", help="cpu, cuda (default: CUDA when present, else CPU)")
    s.add_argument("--no-compile", action="store_true",
                   help="slmkit's eager engine (what --predict models); default compiles the decode step")
    s.add_argument("--group", type=int, default=32, help="int4 group size (default 32, as llama.cpp's q4_0)")
    s.add_argument("--asym", action="store_true", help="int4 with a zero point per group (q4_1-like)")
    s.add_argument("--output", "-o", help="folder for bench.json, bench.csv and bench.md")
    s.add_argument("--json", action="store_true", help="also print the rows as JSON")
    s.add_argument("--calibrate", action="store_true",
                   help="measure memory bandwidth, kernel rates and engine overheads for --predict, and save them")
    s.add_argument("--predict", metavar="CONFIG_OR_PRESET",
                   help="estimate prefill/decode latency and memory of a preset, config folder or GGUF without "
                        "running it (calibrates first if needed)")
    s.add_argument("--prune-keep", type=ratio_list, metavar="R[,R...]",
                   help="also time slmkit's forward with dynamic token pruning at these keep ratios in (0, 1] beside "
                        "the same forward unpruned (pp{n}@keepR tests; docs/prune.md); the way to bench an encoder "
                        "or a classifier, which have no decode")
    overwrite_arg(s)
