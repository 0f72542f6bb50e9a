"""Data and training: slm data prepare, slm train, slm distill (the arguments of train and distill live in
slmkit.train.command, which `python -m slmkit.train` under torchrun shares)."""

from __future__ import annotations

import argparse

from slmkit.cli.args import MODEL_HELP, at_least, overwrite_arg, quiet_arg, verb


def data_prepare(inputs: list[str], out: str, tokenizer: str = "default", train_tokenizer: int | None = None,
                 val_fraction: float = 0.01, block: int = 2048, template: str | None = None,
                 prompt_template: str | None = None, separator: str | None = None, quiet: bool = False,
                 overwrite: bool = False) -> None:
    """Tokenize text, JSONL(.gz), CSV/TSV or parquet files and folders into token shards (train.bin, val.bin,
    meta.json, tokenizer) for `slm train`; documents are separated by the end-of-text token."""
    from slmkit.errors import SlmError
    from slmkit.outputs import claim_dir
    from slmkit.train.data import prepare

    claim_dir(out, "data", overwrite, replaces=True)  # before any tokenizing
    if train_tokenizer:
        from slmkit.tokenizer.train import train_bpe

        tok = train_bpe(inputs, vocab_size=train_tokenizer, template=template)
        source = f"BPE trained on the inputs ({train_tokenizer} tokens)"
    else:
        from slmkit.checkpoint import load_tokenizer

        tok = load_tokenizer(tokenizer)
        if tok is None:
            raise SlmError(f"{tokenizer}: has no tokenizer; name a model with one, or use --train-tokenizer SIZE")
        source = tokenizer
    path, meta = prepare(inputs, out, tok, source, val_fraction=val_fraction, block=block, template=template,
                         progress=not quiet, separator=separator, prompt_template=prompt_template, overwrite=overwrite)
    for s in meta["sources"]:
        print(f"  {s['file']}: {s['documents']:,} documents, {s['tokens']:,} tokens")
    print(f"wrote {path}: {meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens from "
          f"{meta['documents']:,} documents ({meta['dtype']}, vocabulary {meta['vocab_size']:,})")


def train(ns: argparse.Namespace) -> None:
    """Train a model from a recipe (YAML; see recipes/): pretraining, fine-tuning, or distillation when the recipe
    has a distill section. Runs in one process, or in many under torchrun (python -m slmkit.train)."""
    from slmkit.train import command

    command.run(ns)


def distill(ns: argparse.Namespace) -> None:
    """Distil a teacher into a student: the same loop as `slm train`, with the recipe's distill section (loss
    forward_kl, reverse_kl or topk_kl, temperature, alpha) and --teacher."""
    from slmkit.train import command

    command.run(ns, distill=True)


def register(sub) -> None:
    from slmkit.train import command

    dsub = sub.add_parser("data", help="prepare token shards for training", description="Data: slm data prepare.")
    dsub = dsub.add_subparsers(dest="action", metavar="ACTION", required=True)
    d = verb(dsub, "prepare", data_prepare)
    d.add_argument("inputs", nargs="+", help="files or folders (.txt .md .jsonl .jsonl.gz .csv .tsv .parquet)")
    d.add_argument("-o", "--out", required=True, help="shard folder to write; a previous shard folder there is "
                                                     "replaced atomically, anything else is refused (--overwrite)")
    d.add_argument("--tokenizer", "-m", default="default", help="the model whose tokenizer to use: " + MODEL_HELP)
    d.add_argument("--train-tokenizer", type=at_least(2), metavar="VOCAB_SIZE",
                   help="train a byte-level BPE tokenizer of this size on the inputs instead")
    d.add_argument("--val-fraction", type=float, default=0.01, help="share of tokens for validation (default 0.01)")
    d.add_argument("--block", type=at_least(1), default=2048,
                   help="the split's unit: every k-th block of this many tokens goes to val (default 2048)")
    d.add_argument("--template", help="how a record becomes text: '{prompt}{completion}' for JSON fields, "
                                      "'{0}\\n{1}' for table columns (default: the text field, or "
                                      "prompt+completion, question+answer; table columns joined by newlines)")
    d.add_argument("--prompt-template", help="instruction data: the record's prompt part, e.g. '{prompt}'; --template "
                                             "is then the response ('{completion}') and only the response (and the "
                                             "separator after it) carries loss (writes train/val.mask.bin)")
    d.add_argument("--separator", help="token between documents (default <|endoftext|> if the vocabulary has it, "
                                       "else the end-of-sequence token)")
    quiet_arg(d, "no progress bar")
    overwrite_arg(d)

    for name, fn, is_distill in (("train", train, False), ("distill", distill, True)):
        s = verb(sub, name, fn)
        command.add_arguments(s, distill=is_distill)
        overwrite_arg(s)
