"""Train a byte-level BPE tokenizer (GPT-2 style) on text files with the `tokenizers` trainer."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from slmkit.errors import SlmError
from slmkit.tokenizer.tokenizer import Tokenizer

TEXT_SUFFIXES = (".txt", ".md", ".jsonl", ".json")


def _files(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in TEXT_SUFFIXES)
        elif p.is_file():
            out.append(p)
        else:
            raise SlmError(f"{p}: no such file or folder")
    if not out:
        raise SlmError(f"no text files found in {', '.join(paths)}")
    return out


def _texts(files: list[Path]) -> Iterator[str]:
    for f in files:
        with open(f, encoding="utf-8", errors="replace") as fh:
            if f.suffix == ".jsonl":
                for n, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            yield json.loads(line)["text"]
                        except (json.JSONDecodeError, KeyError, TypeError):
                            raise SlmError(f"{f}:{n}: expected a JSON object with a 'text' field") from None
            else:
                yield from fh


def train_bpe(paths: list[str], vocab_size: int = 8192, min_frequency: int = 2,
              special_tokens: list[str] | None = None) -> Tokenizer:
    """A byte-level BPE tokenizer trained on the files; the first special token serves as BOS and EOS."""
    special_tokens = special_tokens or ["<|endoftext|>"]
    if vocab_size < 256 + len(special_tokens):
        raise SlmError(f"--vocab-size must be at least {256 + len(special_tokens)} (256 bytes + special tokens)")
    files = _files(paths)
    backend = HFTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=special_tokens,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=os.environ.get("CI") is None)
    total = sum(f.stat().st_size for f in files)
    backend.train_from_iterator(_texts(files), trainer=trainer, length=None if total else 0)
    first = special_tokens[0]
    return Tokenizer(backend, bos_token=first, eos_token=first, pad_token=first, add_bos=False)
