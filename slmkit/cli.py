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


def cmd_convert(src: str, out_dir: str, dtype: str | None = None) -> None:
    """Write a transformers-readable folder (config.json, safetensors, tokenizer) from a GGUF file or HF folder."""
    from slmkit.checkpoint import load, save

    lm = load(src, dtype="float32", device="cpu", progress=True)
    path = save(lm, out_dir, dtype=dtype)
    print(f"wrote {path} ({lm.config.family}, {'with' if lm.tokenizer else 'no'} tokenizer)")


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
                        special_tokens: str = "<|endoftext|>,<|im_start|>,<|im_end|>") -> None:
    """Train a byte-level BPE tokenizer on text files or folders and save it where `slm` and transformers read it."""
    from slmkit.tokenizer.train import train_bpe

    tok = train_bpe(files, vocab_size=vocab_size, min_frequency=min_frequency,
                    special_tokens=[s for s in special_tokens.split(",") if s])
    tok.save_to(out_dir)
    print(f"wrote {out_dir}/tokenizer.json ({tok.vocab_size} tokens)")


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
    s.add_argument("out_dir", help="folder to write (replaced atomically if it exists)")
    s.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="weight dtype on disk (default float32)")
    s.set_defaults(fn=lambda a: cmd_convert(a.src, a.out_dir, a.dtype))

    s = verb("presets", cmd_presets)
    s.set_defaults(fn=lambda a: cmd_presets())

    s = verb("tokenizer", cmd_tokenizer_train)
    tsub = s.add_subparsers(dest="action", metavar="ACTION")
    tsub.required = True
    t = tsub.add_parser("train", help=cmd_tokenizer_train.__doc__.strip(), description=cmd_tokenizer_train.__doc__)
    t.add_argument("files", nargs="+", help="text, .jsonl (field 'text') files, or folders of them")
    t.add_argument("-o", "--out", required=True, help="output folder")
    t.add_argument("--vocab-size", type=int, default=8192)
    t.add_argument("--min-frequency", type=int, default=2)
    t.add_argument("--special-tokens", default="<|endoftext|>,<|im_start|>,<|im_end|>",
                   help="comma-separated; the first is BOS/EOS")
    t.set_defaults(fn=lambda a: cmd_tokenizer_train(a.files, a.out, a.vocab_size, a.min_frequency, a.special_tokens))
    return p


def main(argv: list[str] | None = None) -> int:
    from slmkit.errors import SlmError

    args = _parser().parse_args(argv)
    try:
        args.fn(args)
    except SlmError as e:
        print(f"slm {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"slm {args.verb}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the CLI never shows a traceback unless asked
        if os.environ.get("SLMKIT_DEBUG"):
            raise
        msg = str(e).splitlines()[0] if str(e) else ""
        print(f"slm {args.verb}: unexpected error: {type(e).__name__}: {msg} (SLMKIT_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
