"""Tokenizer over the `tokenizers` library: load from tokenizer.json or GGUF metadata, encode/decode,
special tokens, chat templates, and save in the files transformers reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from tokenizers import Tokenizer as HFTokenizer

from slmkit.errors import SlmError
from slmkit.paths import read_json_object
from slmkit.tokenizer.chat import render_chat_template


def _token_content(tok: Any) -> str | None:
    if tok is None or isinstance(tok, str):
        return tok
    return tok.get("content")


class Tokenizer:
    """Text <-> token ids, plus the model's special tokens and chat template."""

    def __init__(self, backend: HFTokenizer, *, bos_token: str | None = None, eos_token: str | None = None,
                 pad_token: str | None = None, unk_token: str | None = None, add_bos: bool = False,
                 add_eos: bool = False, chat_template: str | None = None, cls_token: str | None = None,
                 sep_token: str | None = None, mask_token: str | None = None):
        self.backend = backend
        self.bos_token, self.eos_token, self.pad_token, self.unk_token = bos_token, eos_token, pad_token, unk_token
        self.cls_token, self.sep_token, self.mask_token = cls_token, sep_token, mask_token
        self.add_bos, self.add_eos = add_bos, add_eos
        self.chat_template = chat_template
        # an encoder's tokenizer (BERT, RoBERTa) frames text as its post-processor says: [CLS] a [SEP] (b [SEP])
        self.frames = cls_token is not None and _post_processor_adds(backend, cls_token)

    # ids of special tokens ------------------------------------------------------------------------

    def token_to_id(self, token: str | None) -> int | None:
        return None if token is None else self.backend.token_to_id(token)

    @property
    def bos_id(self) -> int | None:
        return self.token_to_id(self.bos_token)

    @property
    def eos_id(self) -> int | None:
        return self.token_to_id(self.eos_token)

    @property
    def pad_id(self) -> int | None:
        return self.token_to_id(self.pad_token)

    @property
    def mask_id(self) -> int | None:
        """The masked-LM mask token's id (BERT [MASK], RoBERTa <mask>); None for a decoder's tokenizer."""
        return self.token_to_id(self.mask_token)

    @property
    def special_ids(self) -> set[int]:
        """Ids of the special tokens (framing, padding, mask): a masked-LM objective never selects them."""
        names = (self.bos_token, self.eos_token, self.pad_token, self.cls_token, self.sep_token, self.mask_token)
        return {i for i in map(self.token_to_id, names) if i is not None}

    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can produce (base vocabulary plus added tokens)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def max_id(self) -> int:
        return max(self.backend.get_vocab(with_added_tokens=True).values())

    # encode / decode ------------------------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids for text; with add_special_tokens, BOS/EOS (an encoder's [CLS]/[SEP]) are added as the model's
        tokenizer does."""
        if add_special_tokens and self.frames:
            return self.backend.encode(text, add_special_tokens=True).ids
        ids = self.backend.encode(text, add_special_tokens=False).ids
        if add_special_tokens:
            if self.add_bos and self.bos_id is not None:
                ids = [self.bos_id] + ids
            if self.add_eos and self.eos_id is not None:
                ids = ids + [self.eos_id]
        return ids

    def encode_pair(self, first: str, second: str) -> tuple[list[int], list[int]]:
        """Ids and token types (0 first segment, 1 second) of a text pair, framed as the encoder's tokenizer frames
        it ([CLS] a [SEP] b [SEP]; RoBERTa <s> a </s></s> b </s>); a decoder's tokenizer joins them with a space."""
        if self.frames:
            enc = self.backend.encode(first, second, add_special_tokens=True)
            return enc.ids, enc.type_ids
        a, b = self.encode(first), self.encode(" " + second, add_special_tokens=False)
        return a + b, [0] * len(a) + [1] * len(b)

    def split_continuation(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """lm-eval's split of a (context, continuation) request (a non-empty context): the context's trailing
        spaces move to the continuation, the two are encoded together, and the continuation is what follows the
        context's own tokens."""
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation, context = context[-n_spaces:] + continuation, context[:-n_spaces]
        whole = self.encode(context + continuation)
        ctx = self.encode(context)
        return ctx, whole[len(ctx):]

    def encode_batch(self, texts: Iterable[str], add_special_tokens: bool = True) -> list[list[int]]:
        return [self.encode(t, add_special_tokens) for t in texts]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                            tokenize: bool = False, **kwargs: Any) -> str | list[int]:
        """Render messages with the model's chat template, as transformers' apply_chat_template does."""
        if not self.chat_template:
            raise SlmError("this tokenizer has no chat template; use a chat/instruct model or pass a prompt")
        text = render_chat_template(self.chat_template, messages, add_generation_prompt=add_generation_prompt,
                                    bos_token=self.bos_token or "", eos_token=self.eos_token or "", **kwargs)
        return self.encode(text, add_special_tokens=False) if tokenize else text

    # files ----------------------------------------------------------------------------------------

    @classmethod
    def from_dir(cls, path: str | Path) -> "Tokenizer":
        """Read tokenizer.json (+ tokenizer_config.json for special tokens and chat template) from a folder."""
        path = Path(path)
        tok_file = path / "tokenizer.json"
        if not tok_file.is_file():
            raise SlmError(f"{path}: no tokenizer.json found")
        try:
            backend = HFTokenizer.from_file(str(tok_file))
        except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
            raise SlmError(f"{tok_file}: cannot read tokenizer ({str(e).splitlines()[0]})") from None
        # padding and truncation saved in tokenizer.json (sentence-transformers pads to 128) are the caller's to
        # choose, as transformers' fast tokenizers leave them
        backend.no_padding()
        backend.no_truncation()
        cfg: dict[str, Any] = {}
        cfg_file = path / "tokenizer_config.json"
        if cfg_file.is_file():
            cfg = read_json_object(cfg_file, "a tokenizer config")
        template = cfg.get("chat_template")
        jinja_file = path / "chat_template.jinja"
        if template is None and jinja_file.is_file():
            template = jinja_file.read_text(encoding="utf-8")
        if isinstance(template, list):  # named templates: take the default one
            template = next((t["template"] for t in template if t.get("name") == "default"), template[0]["template"])
        special = {}
        stm = path / "special_tokens_map.json"
        if stm.is_file():
            special = read_json_object(stm, "a special tokens map")
        get = lambda key: _token_content(cfg.get(key, special.get(key)))  # noqa: E731
        add_bos = cfg.get("add_bos_token")
        if add_bos is None:  # otherwise the post-processor in tokenizer.json decides; detect it
            add_bos = _post_processor_adds_bos(backend, get("bos_token"))
        return cls(backend, bos_token=get("bos_token"), eos_token=get("eos_token"), pad_token=get("pad_token"),
                   unk_token=get("unk_token"), add_bos=bool(add_bos), add_eos=bool(cfg.get("add_eos_token", False)),
                   chat_template=template, cls_token=get("cls_token"), sep_token=get("sep_token"),
                   mask_token=get("mask_token"))

    def save(self, path: str | Path) -> None:
        """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json (transformers reads them)."""
        path = Path(path)
        self.backend.save(str(path / "tokenizer.json"))
        special = {k: v for k, v in dict(bos_token=self.bos_token, eos_token=self.eos_token,
                                         pad_token=self.pad_token, unk_token=self.unk_token, cls_token=self.cls_token,
                                         sep_token=self.sep_token, mask_token=self.mask_token).items() if v}
        cfg = dict(special, tokenizer_class="PreTrainedTokenizerFast", add_bos_token=self.add_bos,
                   add_eos_token=self.add_eos, clean_up_tokenization_spaces=False, model_max_length=1_000_000)
        if self.chat_template:
            cfg["chat_template"] = self.chat_template
        (path / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False), encoding="utf-8")
        (path / "special_tokens_map.json").write_text(json.dumps(special, indent=2, ensure_ascii=False),
                                                      encoding="utf-8")


    def save_to(self, out_dir: str | Path) -> Path:
        """Save into a new or existing folder; files are written to a temp folder first, then moved in."""
        import os
        import shutil
        import tempfile

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tokenizer.", dir=out))
        try:
            self.save(tmp)
            for f in tmp.iterdir():
                os.replace(f, out / f.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return out


def _post_processor_adds(backend: HFTokenizer, token: str) -> bool:
    """Whether the backend's post-processor puts `token` first (BERT's [CLS], RoBERTa's <s>)."""
    ids = backend.encode("a", add_special_tokens=True).ids
    return bool(ids) and ids[0] == backend.token_to_id(token)


def _post_processor_adds_bos(backend: HFTokenizer, bos: str | None) -> bool:
    if bos is None:
        return False
    ids = backend.encode("a", add_special_tokens=True).ids
    return bool(ids) and ids[0] == backend.token_to_id(bos)
