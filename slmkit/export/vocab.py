"""A slmkit tokenizer as GGUF tokenizer metadata (tokenizer.ggml.*), the way llama.cpp's converter writes it.

Two kinds, told apart by the `tokenizers` model:

- byte-level BPE (GPT-2, SmolLM, Llama 3, Qwen2): tokenizer.ggml.model "gpt2", the merges, and the
  pre-tokenizer's llama.cpp name (tokenizer.ggml.pre);
- SentencePiece-style BPE with byte fallback (Llama 2, TinyLlama, Gemma): tokenizer.ggml.model "llama", as
  `_set_vocab_sentencepiece` in llama.cpp's conversion/base.py writes it: pieces, scores, token types (normal,
  unknown, control, user-defined, unused, byte), tokenizer.ggml.add_space_prefix and pre "default".

llama.cpp's SentencePiece tokenizer merges the adjacent pair whose joined piece has the highest score; a
`tokenizers` BPE merges the pair with the lowest merge rank. So each piece's score is minus the rank of the
first merge that makes it (pieces no merge makes score below every merge): the two orders agree, whether the
merges came from SentencePiece scores (a GGUF file, transformers' converter) or from BPE training. Rows past
the tokenizer's ids are padded as llama.cpp pads them ([PADn], unused).
"""

from __future__ import annotations

import json
import re
from typing import Any

from slmkit.errors import SlmError
from slmkit.tokenizer.gguf_vocab import BYTE, CONTROL, NORMAL, UNKNOWN, UNUSED, USER_DEFINED
from slmkit.tokenizer.tokenizer import Tokenizer

_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")
_SPACE = "\u2581"  # SentencePiece's visible space


def tokenizer_metadata(tok: Tokenizer, n_vocab: int) -> dict[str, Any]:
    """tokenizer.ggml.* keys (without the prefix) for `tok`, with the token list padded to `n_vocab` rows."""
    spec = json.loads(tok.backend.to_str())
    model = spec.get("model", {})
    vocab = tok.backend.get_vocab(with_added_tokens=True)
    if max(vocab.values()) >= n_vocab:
        raise SlmError(f"the tokenizer has ids up to {max(vocab.values())}, beyond the model's {n_vocab} embeddings")
    if model.get("type") == "BPE" and model.get("byte_fallback"):
        meta = _sentencepiece(spec, n_vocab)
    elif model.get("type") == "BPE":
        meta = _byte_level(spec, vocab, n_vocab)
    else:
        raise SlmError(f"GGUF export supports BPE tokenizers (byte-level, or SentencePiece-style with byte "
                       f"fallback); this one is {model.get('type')!r} (a Unigram vocabulary, as T5's, is not "
                       "supported yet)")
    meta.update(add_bos_token=bool(tok.add_bos), add_eos_token=bool(tok.add_eos))
    for key, token in (("bos", tok.bos_token), ("eos", tok.eos_token), ("unknown", tok.unk_token),
                       ("padding", tok.pad_token)):
        if token is not None and tok.token_to_id(token) is not None:
            meta[f"{key}_token_id"] = tok.token_to_id(token)
    return meta


# --- byte-level BPE ------------------------------------------------------------------------------------


def _byte_level(spec: dict[str, Any], vocab: dict[str, int], n_vocab: int) -> dict[str, Any]:
    tokens = [f"[PAD{i}]" for i in range(n_vocab)]
    types = [UNUSED] * n_vocab
    for t, i in vocab.items():
        tokens[i], types[i] = t, NORMAL
    for added in spec.get("added_tokens", []):
        types[added["id"]] = CONTROL if added.get("special") else USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges", [])]
    return {"model": "gpt2", "pre": _pre_name(spec.get("pre_tokenizer")), "tokens": tokens, "token_type": types,
            "merges": merges}


def _pre_name(pre: dict | None) -> str:
    """llama.cpp's tokenizer.ggml.pre for a byte-level BPE pre-tokenizer (tokenizer.json form)."""
    from slmkit.tokenizer.gguf_vocab import LLAMA3_REGEX, QWEN2_REGEX

    if pre is None:
        raise SlmError("the tokenizer has no pre-tokenizer; GGUF export needs a byte-level BPE tokenizer")
    steps = pre["pretokenizers"] if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"
    if kinds == ["Split", "ByteLevel"]:
        regex = steps[0].get("pattern", {}).get("Regex")
        for name, known in (("llama-bpe", LLAMA3_REGEX), ("qwen2", QWEN2_REGEX)):
            if regex == known:
                return name
    raise SlmError(f"the tokenizer's pre-tokenizer ({' + '.join(map(str, kinds))}) has no llama.cpp "
                   "equivalent that slmkit knows (gpt-2, smollm, llama-bpe, qwen2)")


# --- SentencePiece-style BPE ------------------------------------------------------------------------------


def _steps(part: dict | None, key: str) -> list[dict[str, Any]]:
    if not part:
        return []
    return part[key] if part.get("type") == "Sequence" else [part]


def _space_prefix(spec: dict[str, Any]) -> bool:
    """Whether the tokenizer puts a ▁ before the text (tokenizer.ggml.add_space_prefix), refusing a tokenizer
    whose spaces llama.cpp's SentencePiece tokenizer would not treat the same way."""
    norms = _steps(spec.get("normalizer"), "normalizers")
    pres = _steps(spec.get("pre_tokenizer"), "pretokenizers")
    replaces = any(n.get("type") == "Replace" and n.get("pattern", {}).get("String") == " "
                   and n.get("content") == _SPACE for n in norms)
    prepends = any(n.get("type") == "Prepend" and n.get("prepend") == _SPACE for n in norms)
    meta = [p for p in pres if p.get("type") == "Metaspace"]
    other = [p.get("type") for p in pres if p.get("type") != "Metaspace"]
    if other:
        raise SlmError(f"the SentencePiece-style tokenizer splits its input before BPE ({', '.join(map(str, other))}),"
                       " which llama.cpp's SentencePiece tokenizer does not do")
    if not replaces and not meta:
        raise SlmError("the SentencePiece-style tokenizer does not turn spaces into \u2581 (no Replace normalizer "
                       "or Metaspace pre-tokenizer); llama.cpp's SentencePiece tokenizer needs that")
    return prepends or any(m.get("prepend_scheme", "always") != "never" and m.get("add_prefix_space", True)
                           for m in meta)


def _sentencepiece(spec: dict[str, Any], n_vocab: int) -> dict[str, Any]:
    model = spec["model"]
    merges = [m.split(" ", 1) if isinstance(m, str) else m for m in model.get("merges", [])]
    first_rank: dict[str, int] = {}
    for rank, (a, b) in enumerate(merges):
        first_rank.setdefault(a + b, rank)
    tokens = [f"[PAD{i}]" for i in range(n_vocab)]
    scores = [-1000.0] * n_vocab
    types = [UNUSED] * n_vocab
    for piece, i in model["vocab"].items():
        tokens[i] = piece
        if _BYTE_PIECE.fullmatch(piece):
            types[i], scores[i] = BYTE, 0.0
        else:
            types[i] = NORMAL
            scores[i] = -float(first_rank.get(piece, len(merges) + i))
    unk = model.get("unk_token")
    if unk is not None and unk in model["vocab"]:
        types[model["vocab"][unk]] = UNKNOWN
    for added in spec.get("added_tokens", []):
        i = added["id"]
        tokens[i], scores[i] = added["content"], -1000.0
        types[i] = CONTROL if added.get("special") else USER_DEFINED
    if not any(t == BYTE for t in types):
        raise SlmError("the SentencePiece-style tokenizer has no byte pieces (<0x00> ... <0xFF>) for its byte "
                       "fallback; llama.cpp needs them")
    return {"model": "llama", "pre": "default", "tokens": tokens, "scores": scores, "token_type": types,
            "add_space_prefix": _space_prefix(spec)}
