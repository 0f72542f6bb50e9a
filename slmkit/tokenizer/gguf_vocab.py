"""Build a `tokenizers` tokenizer from GGUF metadata (tokenizer.ggml.*), as llama.cpp tokenizes.

Two GGUF tokenizer models are covered: "gpt2" (byte-level BPE with a pre-tokenizer regex chosen by
tokenizer.ggml.pre) and "llama" (SentencePiece BPE with byte fallback; merges rebuilt from the scores
the way transformers' converter does).
"""

from __future__ import annotations

import warnings
from typing import Any

from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer
from tokenizers.models import BPE

from slmkit.errors import SlmError
from slmkit.tokenizer.tokenizer import Tokenizer

# token types in tokenizer.ggml.token_type
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# pre-tokenizer regexes, as in llama.cpp's llama-vocab.cpp
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_REGEX_PRE = {"llama-bpe": LLAMA3_REGEX, "llama3": LLAMA3_REGEX, "stablelm2": LLAMA3_REGEX, "dbrx": LLAMA3_REGEX,
              "smaug-bpe": LLAMA3_REGEX, "qwen2": QWEN2_REGEX, "qwen35": QWEN2_REGEX}
_GPT2_PRE = {"gpt-2", "gpt2", "default", "mpt", "olmo", "phi-2", "jina-v2-code", "poro-chat", "viking", "exaone", None}
_DIGITS_PRE = {"smollm", "starcoder", "refact", "codeshell"}  # single digits split, then GPT-2


def _pre_tokenizer(pre: str | None):
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    if pre in _REGEX_PRE:
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_REGEX_PRE[pre]), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ])
    if pre in _DIGITS_PRE:
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if pre not in _GPT2_PRE:
        warnings.warn(f"GGUF tokenizer pre-type {pre!r} is not known to slmkit; using the GPT-2 pre-tokenizer, "
                      "so some strings may split differently from llama.cpp", stacklevel=3)
    return byte_level


def _added_tokens(tokens: list[str], types: list[int] | None) -> list[AddedToken]:
    if not types:
        return []
    return [AddedToken(t, special=ty == CONTROL, normalized=False)
            for t, ty in zip(tokens, types) if ty in (CONTROL, USER_DEFINED)]


def _bpe_from_gpt2(meta: dict[str, Any]) -> HFTokenizer:
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    pre = meta.get("tokenizer.ggml.pre")
    vocab = {t: i for i, t in enumerate(tokens)}
    model = BPE(vocab, merges, ignore_merges=pre in ("llama-bpe", "llama3"))
    tok = HFTokenizer(model)
    tok.pre_tokenizer = _pre_tokenizer(pre)
    tok.decoder = decoders.ByteLevel()
    tok.add_tokens(_added_tokens(tokens, meta.get("tokenizer.ggml.token_type")))
    return tok


def _spm_merges(vocab: dict[str, int], scores: list[float]) -> list[tuple[str, str]]:
    """Merges implied by SentencePiece scores: every split of a token into two tokens, best score first."""
    merges = []
    for piece, i in vocab.items():
        local = [(piece[:k], piece[k:], scores[i]) for k in range(1, len(piece))
                 if piece[:k] in vocab and piece[k:] in vocab]
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(a, b) for a, b, _ in merges]


_SPM_BUILD = 1  # bump when _build_spm changes what it builds: the cached tokenizers are then rebuilt


def _bpe_from_spm(meta: dict[str, Any]) -> HFTokenizer:
    """The SentencePiece-style tokenizer, from slmkit's cache when this vocabulary was built before: rebuilding
    the merges from the scores takes ~2 s for Gemma's 262,144 pieces, reading them back ~1 s."""
    import hashlib

    import numpy as np

    from slmkit.paths import cache_dir, write_atomic

    tokens = meta["tokenizer.ggml.tokens"]
    h = hashlib.sha256(f"{_SPM_BUILD}:{len(tokens)}".encode())
    h.update("\0".join(tokens).encode("utf-8", errors="surrogatepass"))
    for key, dtype in (("scores", np.float32), ("token_type", np.int32)):
        h.update(np.asarray(meta.get(f"tokenizer.ggml.{key}") or [], dtype=dtype).tobytes())
    h.update(repr((meta.get("tokenizer.ggml.unknown_token_id"), meta.get("tokenizer.ggml.add_space_prefix"))).encode())
    cached = cache_dir("tokenizers", f"spm-{h.hexdigest()[:24]}.json")
    if cached.is_file():
        try:
            return HFTokenizer.from_file(str(cached))
        except Exception:  # noqa: BLE001 - a damaged cache entry (tokenizers raises bare Exception): rebuild it
            pass
    tok = _build_spm(meta)
    try:
        write_atomic(cached, tok.to_str())
    except OSError:  # a read-only cache: build it each time
        pass
    return tok


def _build_spm(meta: dict[str, Any]) -> HFTokenizer:
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    scores = meta.get("tokenizer.ggml.scores") or [0.0] * len(tokens)
    types = meta.get("tokenizer.ggml.token_type") or [NORMAL] * len(tokens)
    vocab = {t: i for i, t in enumerate(tokens)}
    unk_id = meta.get("tokenizer.ggml.unknown_token_id", 0)
    # byte tokens and control tokens never take part in merges
    mergeable = {t: i for t, i in vocab.items() if types[i] in (NORMAL, USER_DEFINED, UNUSED)}
    model = BPE(vocab, _spm_merges(mergeable, scores), unk_token=tokens[unk_id], fuse_unk=True, byte_fallback=True)
    tok = HFTokenizer(model)
    prefix = meta.get("tokenizer.ggml.add_space_prefix", True)
    norms = [normalizers.Prepend("\u2581")] if prefix else []
    tok.normalizer = normalizers.Sequence(norms + [normalizers.Replace(" ", "\u2581")])
    dec = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    if prefix:
        dec.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(dec)
    tok.add_tokens(_added_tokens(tokens, types))
    return tok


def tokenizer_from_gguf(meta: dict[str, Any], where: str = "GGUF file") -> Tokenizer:
    """A Tokenizer from a GGUF file's metadata (a dict of key -> Python value)."""
    kind = meta.get("tokenizer.ggml.model")
    if "tokenizer.ggml.tokens" not in meta:
        raise SlmError(f"{where}: no tokenizer in the metadata (tokenizer.ggml.tokens is missing)")
    if kind == "gpt2":
        backend = _bpe_from_gpt2(meta)
        add_bos_default = False
    elif kind == "llama":
        backend = _bpe_from_spm(meta)
        add_bos_default = True
    else:
        raise SlmError(f"{where}: tokenizer model {kind!r} is not supported (supported: gpt2, llama)")
    tokens = meta["tokenizer.ggml.tokens"]

    def tok(key: str) -> str | None:
        i = meta.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[i] if i is not None and 0 <= i < len(tokens) else None

    return Tokenizer(backend, bos_token=tok("bos"), eos_token=tok("eos"), pad_token=tok("padding"),
                     unk_token=tok("unknown"), add_bos=meta.get("tokenizer.ggml.add_bos_token", add_bos_default),
                     add_eos=meta.get("tokenizer.ggml.add_eos_token", False),
                     chat_template=meta.get("tokenizer.chat_template"))
