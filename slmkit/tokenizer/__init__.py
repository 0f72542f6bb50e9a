"""Tokenizers over the `tokenizers` library, from tokenizer.json or GGUF metadata, with chat templates."""

from slmkit.tokenizer.tokenizer import Tokenizer

__all__ = ["Tokenizer"]
