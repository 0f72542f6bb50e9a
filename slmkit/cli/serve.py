"""slm serve: an OpenAI-compatible HTTP server with continuous batching."""

from __future__ import annotations

import os
import sys

from slmkit.cli.args import adapter_arg, at_least, device_arg, dtype_arg, model_arg, verb


def serve(model: str = "default", host: str = "127.0.0.1", port: int = 8000, served_name: str | None = None,
          slots: int = 4, context: int | None = None, max_tokens: int = 512, max_queue: int = 64,
          max_body_bytes: int | None = None, max_connections: int = 256, api_key: str | None = None,
          dtype: str | None = None, device: str | None = None, compile: bool = False,
          log_level: str = "info", adapter: str | None = None, draft: str | None = None, draft_k: int = 4,
          lookup_ngram: int = 3, precision: str | None = None) -> None:
    """Serve a model over an OpenAI-compatible HTTP API (completions, chat, streaming) with continuous batching.

    Endpoints: /v1/models, /v1/completions, /v1/chat/completions, /health, /metrics (Prometheus). Binds to
    127.0.0.1 unless --host says otherwise; --api-key (or $SLMKIT_API_KEY) requires 'Authorization: Bearer KEY'.
    --draft lookup drafts each request's next tokens by prompt lookup (same output, faster when replies copy
    from their prompts). --precision int8 / int4 (+head) serves weight-quantised linears, as slm eval and slm
    bench name them.
    """
    from slmkit.checkpoint import load
    from slmkit.errors import SlmError

    try:
        import uvicorn  # noqa: F401 - the serve extra

        from slmkit.serve.app import ServeConfig, create_app
        from slmkit.serve.launch import check_port, is_loopback, serve_forever
    except ImportError as e:
        raise SlmError(f"slm serve needs the serve extra ({e.name} is missing): pip install 'slmkit[serve]'") from None
    api_key = api_key or os.environ.get("SLMKIT_API_KEY") or None
    check_port(host, port)
    if precision is not None:
        if dtype is not None:
            raise SlmError("give --precision (fp32, bf16, int8, int4, ...) or --dtype, not both")
        from slmkit.runtime import SlmkitRuntime

        lm = SlmkitRuntime.load(model, precision, device, progress=True, adapter=adapter)
    else:
        lm = load(model, dtype=dtype, device=device, progress=True, adapter=adapter)
    if lm.tokenizer is None:
        raise SlmError(f"{lm.source} has no tokenizer; put tokenizer.json beside the weights")
    config = ServeConfig(name=served_name or model, slots=slots,
                         context=context or min(lm.model.config.context_length, 2048),
                         max_tokens=max_tokens, max_queue=max_queue, api_key=api_key, compile=compile,
                         max_body_bytes=max_body_bytes, draft=draft, draft_k=draft_k, lookup_ngram=lookup_ngram)
    if compile:
        also = f" and the {draft_k + 1}-token verify step" if draft else ""
        print(f"compiling the decode step{also} for {slots} slots (1-2 min each on a 2-core CPU the first time)",
              file=sys.stderr)
    app = create_app(lm.model, lm.tokenizer, config, start_batcher=False)
    if not is_loopback(host) and api_key is None:
        print(f"slm serve: warning: listening on {host} without an API key; anyone who can reach this port can "
              "use the model (set --api-key)", file=sys.stderr)
    server = app.state.server
    print(f"serving '{config.name}' at http://{host}:{port}/v1 ({config.slots} slots x {server.context} tokens, "
          f"max_tokens <= {config.max_tokens}, queue {config.max_queue}, bodies <= {server.max_body} bytes)",
          file=sys.stderr, flush=True)
    serve_forever(app, host, port, log_level, max_connections)


def register(sub) -> None:
    from slmkit.runtime.precision import PRECISIONS

    s = verb(sub, "serve", serve)
    model_arg(s)
    adapter_arg(s)
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=at_least(0), default=8000, help="default 8000")
    s.add_argument("--served-name", help="the model id clients send and /v1/models lists (default: MODEL as given)")
    s.add_argument("--slots", type=at_least(1), default=4, help="requests decoded together, one KV-cache row each "
                                                                "(default 4)")
    s.add_argument("--context", type=at_least(2), help="tokens per cache row, prompt + completion (default: the "
                                                       "model's, at most 2048)")
    s.add_argument("--max-tokens", type=at_least(1), default=512, help="cap on a request's max_tokens (default 512)")
    s.add_argument("--max-queue", type=at_least(0), default=64,
                   help="requests waiting for a free slot before new ones get 429 (default 64)")
    s.add_argument("--max-body-bytes", type=at_least(1024), help="request body limit; larger bodies get 413 before "
                                                                 "they are read (default: sized to the context, at "
                                                                 "least 1 MiB)")
    s.add_argument("--max-connections", type=at_least(1), default=256, help="concurrent connections before 503 "
                                                                            "(default 256)")
    s.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1 and /metrics (default: "
                                     "$SLMKIT_API_KEY, else none)")
    dtype_arg(s)
    s.add_argument("--precision", "-p", choices=list(PRECISIONS),
                   help="a named precision in place of --dtype: fp32, bf16, fp16, or weight-only int8/int4 of the "
                        "block linears (+head: the output head too), as slm eval and slm bench run them")
    device_arg(s)
    s.add_argument("--compile", action="store_true", help="compile the batched decode step (faster decode after a "
                                                          "one-off compile at start-up)")
    s.add_argument("--draft", choices=["lookup"], help="speculative decoding per request: 'lookup' drafts the "
                                                       "tokens that followed the last few tokens' earlier occurrence "
                                                       "in the prompt or reply (no second model; same output)")
    s.add_argument("--draft-k", type=at_least(1), default=4, help="with --draft: tokens drafted per step (default 4)")
    s.add_argument("--lookup-ngram", type=at_least(1), default=3, metavar="N",
                   help="with --draft lookup: the longest n-gram matched (default 3)")
    s.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (default info: one access line per request)")
