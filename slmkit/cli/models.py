"""Model operations: slm info, convert, export, quantize, presets, tokenizer train."""

from __future__ import annotations

from slmkit.cli.args import DTYPES, MODEL_HELP, at_least, model_arg, overwrite_arg, verb

REPLACE_HELP = ("folder to write; a previous slmkit model folder there is replaced atomically, anything else is "
                "refused (--overwrite)")


def info(model: str = "default") -> None:
    """Show a model's parameters by component, bytes per precision, KV-cache cost and architecture."""
    from slmkit.checkpoint import load_config
    from slmkit.model.summary import format_info

    config, source = load_config(model)
    print(format_info(config, source))


def convert(src: str, out_dir: str, dtype: str | None = None, overwrite: bool = False) -> None:
    """Write a transformers-readable folder (config.json, safetensors, tokenizer) from a GGUF file or HF folder."""
    from slmkit.checkpoint import load, save
    from slmkit.outputs import claim_dir

    claim_dir(out_dir, "model", overwrite, replaces=True)  # before loading anything
    lm = load(src, dtype="float32", device="cpu", progress=True)
    path = save(lm, out_dir, dtype=dtype, overwrite=overwrite)
    print(f"wrote {path} ({lm.config.family}, {'with' if lm.tokenizer else 'no'} tokenizer)")


def export(model: str, gguf: str, out_type: str = "f16", overwrite: bool = False) -> None:
    """Write a model as a GGUF file llama.cpp runs (f32, f16, q8_0, q4_0, q4_1, or the K-quants q4_k_m, q4_k_s,
    q5_k_m, q5_k_s, q6_k through llama.cpp's quantiser), tokenizer (byte-level BPE or SentencePiece) and chat
    template included. Families: llama, qwen2, phi (phi2), gemma, gemma2, gemma3, gpt2."""
    from slmkit.checkpoint import load
    from slmkit.export.gguf import TYPES, export_gguf
    from slmkit.export.kquant import KQUANTS, fallbacks
    from slmkit.outputs import claim_file

    if out_type not in TYPES:  # before loading anything
        from slmkit.errors import SlmError

        raise SlmError(f"unknown GGUF type {out_type!r}; choose one of {', '.join(TYPES)}")
    claim_file(gguf, "gguf", overwrite)
    lm = load(model, dtype="float32", device="cpu", progress=True)
    path = export_gguf(lm.model, lm.tokenizer, gguf, out_type, progress=True)
    print(f"wrote {path} ({out_type}, {path.stat().st_size / 2**20:.1f} MiB)")
    if out_type in KQUANTS and (note := fallbacks(path)):
        print(f"note: {note}")


def merge(model: str, adapter: str, out: str, dtype: str | None = None, overwrite: bool = False) -> None:
    """Fold a LoRA adapter into its base (W += scale * B A) and write a plain transformers folder, which
    `slm export` then turns into GGUF."""
    from slmkit.adapters.lora import merge as merge_lora
    from slmkit.checkpoint import load, save
    from slmkit.outputs import claim_dir

    claim_dir(out, "model", overwrite, replaces=True)  # before loading anything
    lm = load(model, dtype="float32", device="cpu", progress=True, adapter=adapter)
    if lm.model.quant_spec is not None:
        from slmkit.errors import SlmError

        raise SlmError(f"{lm.source} is a quantised checkpoint; merge into the float base it was made from, then "
                       "quantise the merged model")
    merge_lora(lm.model)
    path = save(lm, out, dtype=dtype, overwrite=overwrite)
    print(f"wrote {path} ({lm.config.family} with {adapter} merged in)")


def quantize(model: str, out: str, bits: int = 8, group: int | None = None, asym: bool = False,
             head: bool = False, overwrite: bool = False) -> None:
    """Weight-only quantisation (int8 per channel, or int4 in groups of 32/64/128/256, symmetric or not) of
    every block linear layer (and the head with --head); writes a checkpoint slmkit loads back and reports the
    error against fp32."""
    from slmkit.quant.report import quantize_checkpoint

    result = quantize_checkpoint(model, out, bits, group if group or bits != 4 else 32, not asym, head, overwrite)
    print(result.line())


def presets() -> None:
    """List the named presets and the hub checkpoint each mirrors."""
    from slmkit.model.config import ModelConfig
    from slmkit.model.presets import PRESETS
    from slmkit.model.summary import count_parameters, human

    width = max(map(len, PRESETS))
    for name in PRESETS:
        c = ModelConfig.from_name(name)
        print(f"{name:<{width}}  {human(count_parameters(c).total):>7}  {c.family:<12} {c.hf_id}")


def tokenizer_train(files: list[str], out: str, vocab_size: int = 8192, min_frequency: int = 2,
                    special_tokens: str = "<|endoftext|>,<|im_start|>,<|im_end|>", style: str = "gpt2",
                    overwrite: bool = False) -> None:
    """Train a byte-level BPE tokenizer on text files or folders and save it where `slm` and transformers read it
    (--style roberta: an encoder's, with <s> </s> framing and a <mask> token)."""
    from slmkit.outputs import claim_dir, mark_dir
    from slmkit.tokenizer.train import train_bpe

    claim_dir(out, "tokenizer", overwrite)
    tok = train_bpe(files, vocab_size=vocab_size, min_frequency=min_frequency,
                    special_tokens=[s for s in special_tokens.split(",") if s], style=style)
    tok.save_to(out)
    mark_dir(out, "tokenizer")
    print(f"wrote {out}/tokenizer.json ({tok.vocab_size} tokens)")


def register(sub) -> None:
    s = verb(sub, "info", info)
    model_arg(s, positional=True)

    s = verb(sub, "convert", convert)
    s.add_argument("src", help=MODEL_HELP)
    s.add_argument("out_dir", help=REPLACE_HELP)
    s.add_argument("--dtype", choices=DTYPES, help="weight dtype on disk (default float32)")
    overwrite_arg(s)

    s = verb(sub, "export", export)
    model_arg(s, positional=True)
    s.add_argument("--gguf", required=True, metavar="OUT.gguf", help="GGUF file to write (atomically)")
    s.add_argument("--type", dest="out_type", default="f16", help="f32, f16 (default), q8_0, q4_0, q4_1, or a K-quant "
                   "(q4_k_m, q4_k_s, q5_k_m, q5_k_s, q6_k: llama.cpp's quantiser, needs llama-cpp-python)")
    overwrite_arg(s)

    s = verb(sub, "merge", merge)
    s.add_argument("model", help=MODEL_HELP)
    s.add_argument("adapter", help="the LoRA adapter folder (peft's format)")
    s.add_argument("--out", "-o", required=True, help="folder to write the merged model to (atomically)")
    s.add_argument("--dtype", choices=DTYPES, help="weight dtype on disk (default float32)")
    overwrite_arg(s)

    s = verb(sub, "quantize", quantize)
    model_arg(s, positional=True)
    s.add_argument("--out", "-o", required=True, help=REPLACE_HELP)
    s.add_argument("--bits", type=int, default=8, choices=[8, 4], help="8 (per output channel) or 4 (grouped); "
                                                                       "default 8")
    s.add_argument("--group", type=int, help="int4 group size: 32 (default for --bits 4), 64, 128 or 256")
    s.add_argument("--asym", action="store_true", help="int4 with a zero point per group (default symmetric)")
    s.add_argument("--head", action="store_true", help="quantise the output head too (unties it from the "
                                                       "embedding): precision int8+head or int4+head")
    overwrite_arg(s)

    verb(sub, "presets", presets)

    tsub = sub.add_parser("tokenizer", help="train a tokenizer", description="Tokenizers: slm tokenizer train.")
    tsub = tsub.add_subparsers(dest="action", metavar="ACTION", required=True)
    t = verb(tsub, "train", tokenizer_train)
    t.add_argument("files", nargs="+", help="files or folders: .txt .md .jsonl(.gz) (a 'text' field, or prompt + "
                                            "completion, ...) .csv .tsv .parquet, as `slm data prepare` reads them")
    t.add_argument("-o", "--out", required=True, help="output folder")
    t.add_argument("--vocab-size", type=at_least(2), default=8192)
    t.add_argument("--min-frequency", type=at_least(1), default=2)
    t.add_argument("--special-tokens", default="<|endoftext|>,<|im_start|>,<|im_end|>",
                   help="comma-separated; the first is BOS/EOS (gpt2 style)")
    t.add_argument("--style", choices=("gpt2", "roberta"), default="gpt2",
                   help="gpt2: a decoder's tokenizer; roberta: an encoder's (<s> </s> <pad> <unk> <mask>)")
    overwrite_arg(t)
