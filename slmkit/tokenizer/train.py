"""Train a byte-level BPE tokenizer on text files with the `tokenizers` trainer: GPT-2 style (a decoder's, one
end-of-text token) or RoBERTa style (an encoder's: <s> text </s> framing, <pad>, <unk> and a <mask> that absorbs
the space before it, as roberta-base's tokenizer has them)."""

from __future__ import annotations

import os

from tokenizers import AddedToken
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from slmkit.errors import SlmError
from slmkit.tokenizer.tokenizer import Tokenizer


ROBERTA_SPECIAL = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # roberta-base's ids 0-3; <mask> follows here


def train_bpe(paths: list[str], vocab_size: int = 8192, min_frequency: int = 2,
              special_tokens: list[str] | None = None, template: str | None = None,
              style: str = "gpt2") -> Tokenizer:
    """A byte-level BPE tokenizer trained on the documents of files and folders (any format `slmkit.corpus` reads,
    records turned into text by `template`). gpt2 style: the first special token serves as BOS and EOS. roberta
    style: RoBERTa's special tokens (special_tokens is not used) and its framing post-processor."""
    from slmkit.corpus import Template, input_files, read_documents

    if style not in ("gpt2", "roberta"):
        raise SlmError(f"tokenizer style must be gpt2 or roberta, got {style!r}")
    if style == "roberta":
        special_tokens = list(ROBERTA_SPECIAL)
    special_tokens = special_tokens or ["<|endoftext|>"]
    if vocab_size < 256 + len(special_tokens):
        raise SlmError(f"--vocab-size must be at least {256 + len(special_tokens)} (256 bytes + special tokens)")
    files = input_files(paths)
    tmpl = Template(template)
    backend = HFTokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    added = [AddedToken(t, special=True, lstrip=t == "<mask>" and style == "roberta", normalized=False)
             for t in special_tokens]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=added,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=os.environ.get("CI") is None)
    total = sum(f.stat().st_size for f in files)
    texts = (doc for f in files for doc in read_documents(f, tmpl))
    backend.train_from_iterator(texts, trainer=trainer, length=None if total else 0)
    if style == "roberta":
        backend.post_processor = processors.RobertaProcessing(("</s>", backend.token_to_id("</s>")),
                                                              ("<s>", backend.token_to_id("<s>")))
        return Tokenizer(backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                         cls_token="<s>", sep_token="</s>", mask_token="<mask>", add_bos=True)
    first = special_tokens[0]
    return Tokenizer(backend, bos_token=first, eos_token=first, pad_token=first, add_bos=False)
