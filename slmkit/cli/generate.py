"""Text generation: slm generate and slm chat, with sampling, --draft (speculative) and --eft."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from slmkit.cli.args import MODEL_HELP, DTYPES, adapter_arg, at_least, device_arg, dtype_arg, verb

LOOKUP = "lookup"  # --draft lookup: prompt-lookup drafts, no draft model


@dataclass
class GenerationOptions:
    """The model, sampling and engine flags that generate and chat share."""

    model: str = "default"
    adapter: str | None = None
    max_new_tokens: int = 128
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    system: str | None = None
    dtype: str | None = None
    device: str | None = None
    compile: bool = False
    eft: list[list[str]] | None = None
    draft: str | None = None  # a draft model, or "lookup" (prompt-lookup drafts)
    draft_k: int = 4
    draft_dtype: str | None = None
    lookup_ngram: int = 3

    def sampling(self):
        from slmkit.engine import SamplingParams

        return SamplingParams(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p, min_p=self.min_p,
                              repetition_penalty=self.repetition_penalty, seed=self.seed)

    def stats(self):
        from slmkit.engine import GenerationStats
        from slmkit.engine.speculative import SpeculativeStats

        return SpeculativeStats() if self.draft is not None else GenerationStats()


def build(o: GenerationOptions):
    """(loaded model, engine, sampling): the sampling parameters and draft options are checked before the (slow)
    load; with --draft the engine is speculative, with --eft the model is the EFT combination."""
    from slmkit.combine.eft import load_model
    from slmkit.engine import Engine
    from slmkit.errors import SlmError

    sampling = o.sampling()
    if o.draft is not None and sampling.repetition_penalty != 1.0:
        raise SlmError("--repetition-penalty is not supported with --draft; leave it at 1 or drop --draft")
    if o.draft == LOOKUP:
        from slmkit.engine.lookup import check_ngrams

        check_ngrams(o.lookup_ngram)
    lm = load_model(o.model, o.eft, o.dtype, o.device, progress=True, adapter=o.adapter)
    if lm.tokenizer is None:
        raise SlmError(f"{lm.source} has no tokenizer; put tokenizer.json beside the weights")
    if o.draft is None:
        if o.compile:
            print("compiling the decode step when the first prompt arrives (1-2 min on a 2-core CPU the first time; "
                  "autotuning and kernels are cached for later runs)", file=sys.stderr)
        return lm, Engine(lm.model, compile=o.compile), sampling
    from slmkit.checkpoint import load
    from slmkit.engine.speculative import LookupDraft, SpeculativeEngine, check_vocabularies

    if o.draft == LOOKUP:
        if o.compile:
            print(f"compiling the decode step and the {o.draft_k + 1}-token verify step when the first prompt "
                  "arrives (1-2 min each on a 2-core CPU the first time)", file=sys.stderr)
        target = Engine(lm.model, compile=o.compile, compile_widths=(1, o.draft_k + 1))
        return lm, SpeculativeEngine(target, LookupDraft(o.draft_k, o.lookup_ngram), k=o.draft_k), sampling
    draft = load(o.draft, dtype=o.draft_dtype or o.dtype, device=o.device, progress=True)
    vocabs = ((lm.tokenizer.backend.get_vocab(), draft.tokenizer.backend.get_vocab()) if draft.tokenizer
              else (None, None))
    check_vocabularies(lm.config.vocab_size, draft.config.vocab_size, *vocabs)
    if o.compile:
        print(f"compiling the target's {o.draft_k + 1}-token verify step and the draft's decode step when the first "
              "prompt arrives (1-2 min each on a 2-core CPU the first time)", file=sys.stderr)
    engine = SpeculativeEngine(Engine(lm.model, compile=o.compile, compile_widths=(o.draft_k + 1,)),
                               Engine(draft.model, compile=o.compile), k=o.draft_k)
    return lm, engine, sampling


def note_room(asked: int, prompt_tokens: int, context: int) -> None:
    """One line when -n is more than the context has room for after the prompt (the engine caps it)."""
    from slmkit.engine.engine import room_left
    from slmkit.errors import SlmError

    if prompt_tokens >= context:
        raise SlmError(f"the prompt has {prompt_tokens} tokens but the model's context holds {context}; shorten it")
    room = room_left(prompt_tokens, asked, context)
    if room < asked:
        print(f"slm: note: -n {asked} capped at {room}: the model's context holds {context} tokens and the prompt "
              f"takes {prompt_tokens}", file=sys.stderr)


def generate(prompt: list[str], options: GenerationOptions, chat: bool = False) -> None:
    """Continue one prompt (streamed) or several (batched, left-padded); ends with prefill and decode tokens/s.

    --chat wraps each prompt as a user message in the model's chat template. --draft MODEL decodes
    speculatively (same output distribution, greedy output identical; prompts run one after the other);
    --draft lookup drafts by prompt lookup (copies from the prompt and the reply so far; no second model).
    """
    from slmkit.engine import generate_text, stream_text
    from slmkit.engine.text import encode_prompt

    prompts = prompt if prompt != ["-"] else [sys.stdin.read()]
    lm, engine, sampling = build(options)
    tok = lm.tokenizer
    if chat:
        system = [{"role": "system", "content": options.system}] if options.system else []
        prompts = [tok.apply_chat_template(system + [{"role": "user", "content": p}]) for p in prompts]
    stats = options.stats()
    n = options.max_new_tokens
    note_room(n, max(len(encode_prompt(tok, p, add_special_tokens=not chat)) for p in prompts),
              lm.model.config.context_length)
    if len(prompts) == 1:
        ids = encode_prompt(tok, prompts[0], add_special_tokens=not chat)
        if not chat:
            print(prompts[0], end="", flush=True)
        for piece in stream_text(engine, tok, ids, n, sampling, options.stop, stats=stats):
            print(piece, end="", flush=True)
        print()
    else:
        completions = generate_text(engine, tok, prompts, n, sampling, options.stop, stats=stats,
                                    add_special_tokens=not chat)
        for i, c in enumerate(completions):
            print(f"--- [{i}] finish={c.finish}\n{c.text}")
    print(stats.line(), file=sys.stderr)


def chat(options: GenerationOptions, verbose: bool = False) -> None:
    """Interactive multi-turn chat with the model's chat template, streamed. /reset clears the history,
    /system TEXT sets the system prompt, /exit (or Ctrl-D) quits. Earlier turns' KV cache is reused."""
    from slmkit.engine import stream_text
    from slmkit.errors import SlmError

    lm, engine, sampling = build(options)
    tok = lm.tokenizer
    if not tok.chat_template:
        raise SlmError(f"{lm.source} has no chat template; use `slm generate` for plain continuation")
    system = options.system
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
        budget = min(options.max_new_tokens, lm.config.context_length - len(ids))
        if budget < 1:
            print("(the conversation fills the context; /reset to start over)", file=sys.stderr)
            history.pop()
            continue
        stats, result = options.stats(), []
        for piece in stream_text(engine, tok, ids, budget, sampling, options.stop, stats=stats, result=result,
                                 reuse_prefix=True):
            print(piece, end="", flush=True)
        print()
        history.append({"role": "assistant", "content": result[0].text})
        if verbose:
            print(stats.line(), file=sys.stderr)


def eft_arg(s) -> None:
    s.add_argument("--eft", nargs="+", action="append", metavar="TUNED BASE [WEIGHT]",
                   help="emulated fine-tuning (up-scaling): log p = log p_MODEL + WEIGHT * (log p_TUNED - log p_BASE), "
                        "renormalised; repeat for several pairs (WEIGHT defaults to 1; same tokenizer for all)")


def _options(s, max_new: int, temperature: float) -> None:
    s.add_argument("--model", "-m", default="default", help=MODEL_HELP)
    adapter_arg(s)
    s.add_argument("--max-new-tokens", "-n", type=at_least(1), default=max_new, help=f"default {max_new}")
    s.add_argument("--temperature", "-t", type=float, default=temperature, help=f"0 is greedy (default {temperature})")
    s.add_argument("--top-k", type=int, default=40, help="0 turns it off (default 40)")
    s.add_argument("--top-p", type=float, default=0.95, help="1 turns it off (default 0.95)")
    s.add_argument("--min-p", type=float, default=0.05, help="0 turns it off (default 0.05)")
    s.add_argument("--repetition-penalty", type=float, default=1.0, help="1 turns it off (default 1.0)")
    s.add_argument("--seed", type=int, help="sampling seed (default: random)")
    s.add_argument("--stop", action="append", default=[], help="stop string (repeatable); not printed")
    s.add_argument("--system", help="system prompt (with a chat template)")
    dtype_arg(s)
    device_arg(s)
    s.add_argument("--compile", action="store_true",
                   help="compile the decode step with torch.compile: about 2.5-3x faster decode on CPU, after a "
                        "one-off compile (about 1-2 min for a 30-layer model; partly cached)")
    eft_arg(s)
    s.add_argument("--draft", metavar="MODEL|lookup",
                   help="speculative decoding: a small model with the same tokenizer proposes tokens that this model "
                        "verifies (e.g. default-draft), or 'lookup': the tokens that followed the last few tokens' "
                        "earlier occurrence in the prompt or reply (pays when the reply copies from the prompt); "
                        "output follows this model's distribution either way")
    s.add_argument("--draft-k", type=at_least(1), default=4, help="tokens the draft proposes per target forward "
                                                                  "(default 4)")
    s.add_argument("--lookup-ngram", type=at_least(1), default=3, metavar="N",
                   help="with --draft lookup: the longest n-gram matched (down to 2 tokens; default 3)")
    s.add_argument("--draft-dtype", choices=DTYPES,
                   help="the draft's compute dtype (default: --dtype); its precision changes speed, never the output")


def register(sub) -> None:
    s = verb(sub, "generate", generate)
    s.add_argument("prompt", nargs="+", help="prompt text; several prompts run as one batch; '-' reads stdin")
    _options(s, 128, 0.8)
    s.add_argument("--chat", action="store_true", help="wrap the prompt as a user message in the chat template")

    s = verb(sub, "chat", chat)
    _options(s, 512, 0.7)
    s.add_argument("--verbose", "-v", action="store_true", help="print prefill/decode speed after each reply")
