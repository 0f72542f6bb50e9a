"""Train a byte-level BPE tokenizer (GPT-2 style) on text files with the `tokenizers` trainer."""

from __future__ import annotations

import os

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from slmkit.errors import SlmError
from slmkit.tokenizer.tokenizer import Tokenizer


def train_bpe(paths: list[str], vocab_size: int = 8192, min_frequency: int = 2,
              special_tokens: list[str] | None = None, template: str | None = None) -> Tokenizer:
    """A byte-level BPE tokenizer trained on the documents of files and folders (any format `slmkit.corpus` reads,
    records turned into text by `template`); the first special token serves as BOS and EOS."""
    from slmkit.corpus import Template, input_files, read_documents

    special_tokens = special_tokens or ["<|endoftext|>"]
    if vocab_size < 256 + len(special_tokens):
        raise SlmError(f"--vocab-size must be at least {256 + len(special_tokens)} (256 bytes + special tokens)")
    files = input_files(paths)
    tmpl = Template(template)
    backend = HFTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=special_tokens,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=os.environ.get("CI") is None)
    total = sum(f.stat().st_size for f in files)
    texts = (doc for f in files for doc in read_documents(f, tmpl))
    backend.train_from_iterator(texts, trainer=trainer, length=None if total else 0)
    first = special_tokens[0]
    return Tokenizer(backend, bos_token=first, eos_token=first, pad_token=first, add_bos=False)
