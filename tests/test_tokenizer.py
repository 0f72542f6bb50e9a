"""Tokenizer parity: llama.cpp's own test cases, transformers' tokenizers, chat templates, training."""

from __future__ import annotations

import pytest

from slmkit.model.gguf import GGUFFile
from slmkit.tokenizer import Tokenizer
from slmkit.tokenizer.gguf_vocab import tokenizer_from_gguf
from tests.conftest import llamacpp_models_dir

TRICKY = [
    "Hello world", " Hello  world ", "\t\ttabs\nand\n\n\nnewlines   ", "Äpfel über Straße", "нещо на Български",
    "日本語のテキスト", "emoji 🦙🚀 and 👩‍👩‍👧", "numbers 1234567 3.14159 1,000", "  leading and trailing  ",
    "<|im_start|>user\nhi<|im_end|>", "code:\n    def f(x):\n        return x**2\n", "'s 're 've 'll 'd I'M",
    "a" * 50, "\u00a0non-breaking\u2009thin space", "mixed\r\nline endings\r",
]

# vocab-only GGUFs shipped with llama.cpp, whose tokenizer slmkit supports
VOCABS = ["gpt-2", "llama-bpe", "llama-spm", "phi-3", "qwen2", "qwen35", "starcoder", "refact", "mpt"]


def _cases(path):
    texts = path.with_suffix(".gguf.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    outs = path.with_suffix(".gguf.out").read_text(encoding="utf-8").split("\n")
    return [(t, [int(x) for x in o.split()]) for t, o in zip(texts, outs)]


@pytest.mark.slow
@pytest.mark.parametrize("vocab", VOCABS)
def test_llamacpp_tokenizer_cases(vocab):
    models = llamacpp_models_dir()
    if models is None:
        pytest.skip("llama.cpp vocab files not found; run scripts/fetch-llamacpp-vocabs.sh or set SLMKIT_LLAMACPP_MODELS")
    path = models / f"ggml-vocab-{vocab}.gguf"
    tok = tokenizer_from_gguf(GGUFFile(path).meta, str(path))
    cases = _cases(path)
    assert len(cases) >= 40
    for text, want in cases:
        assert tok.encode(text, add_special_tokens=False) == want, f"{vocab}: {text!r}"


@pytest.fixture(scope="module")
def default_tokenizers(default_gguf):
    transformers = pytest.importorskip("transformers")
    ours = tokenizer_from_gguf(GGUFFile(default_gguf).meta)
    theirs = transformers.AutoTokenizer.from_pretrained(str(default_gguf.parent), gguf_file=default_gguf.name)
    return ours, theirs


def test_default_tokenizer_matches_transformers(default_tokenizers):
    ours, theirs = default_tokenizers
    for text in TRICKY:
        assert ours.encode(text) == theirs.encode(text), text
        assert ours.decode(ours.encode(text)) == theirs.decode(theirs.encode(text))
    assert ours.bos_id == theirs.bos_token_id and ours.eos_id == theirs.eos_token_id


def test_chat_template_matches_transformers(default_tokenizers):
    ours, theirs = default_tokenizers
    chats = [
        [{"role": "user", "content": "What is 2+2?"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye  \n"}],
    ]
    for chat in chats:
        for gen in (True, False):
            want = theirs.apply_chat_template(chat, tokenize=False, add_generation_prompt=gen)
            assert ours.apply_chat_template(chat, add_generation_prompt=gen) == want
            ids = theirs.apply_chat_template(chat, tokenize=True, add_generation_prompt=gen, return_dict=False)
            assert ours.apply_chat_template(chat, add_generation_prompt=gen, tokenize=True) == list(ids)


def test_saved_tokenizer_loads_in_transformers(default_tokenizers, tmp_path):
    transformers = pytest.importorskip("transformers")
    ours, _ = default_tokenizers
    ours.save(tmp_path)
    again = Tokenizer.from_dir(tmp_path)
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path)
    chat = [{"role": "user", "content": "hello"}]
    assert theirs.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == ours.apply_chat_template(chat)
    for text in TRICKY:
        assert again.encode(text) == ours.encode(text) == theirs.encode(text), text


def test_spm_tokenizer_matches_transformers():
    """A SentencePiece-style GGUF vocabulary (LLaMA/Phi-3) against transformers' own GGUF converter.

    Text that starts with whitespace is left out: there transformers' converter drops one leading space,
    while slmkit follows sentencepiece and llama.cpp (checked by test_llamacpp_tokenizer_cases).
    """
    transformers = pytest.importorskip("transformers")
    models = llamacpp_models_dir()
    if models is None:
        pytest.skip("llama.cpp vocab files not found")
    path = models / "ggml-vocab-llama-spm.gguf"
    ours = tokenizer_from_gguf(GGUFFile(path).meta)
    theirs = transformers.AutoTokenizer.from_pretrained(str(models), gguf_file=path.name)
    for text in [t for t in TRICKY if not t[0].isspace()]:
        assert ours.encode(text) == theirs.encode(text), text
        assert ours.decode(ours.encode(text), skip_special_tokens=True) == theirs.decode(
            theirs.encode(text), skip_special_tokens=True)


def test_chat_template_errors_are_one_line():
    from slmkit.errors import SlmError
    from slmkit.tokenizer.chat import render_chat_template

    with pytest.raises(SlmError, match="syntax error"):
        render_chat_template("{% if %}", [{"role": "user", "content": "x"}])
    with pytest.raises(SlmError, match="only user"):
        render_chat_template("{{ raise_exception('only user') }}", [{"role": "user", "content": "x"}])


def test_sentencepiece_tokenizers_are_cached_and_a_damaged_entry_is_rebuilt(tmp_path, monkeypatch):
    """The merges rebuilt from SentencePiece scores are cached by the vocabulary's hash; the cached tokenizer
    encodes as the built one, and a damaged cache file is built again."""
    models = llamacpp_models_dir()
    if models is None:
        pytest.skip("llama.cpp vocab files not found; run scripts/fetch-llamacpp-vocabs.sh")
    monkeypatch.setenv("SLMKIT_CACHE", str(tmp_path))
    meta = GGUFFile(models / "ggml-vocab-llama-spm.gguf").meta
    built = tokenizer_from_gguf(meta)
    (entry,) = (tmp_path / "tokenizers").glob("spm-*.json")
    cached = tokenizer_from_gguf(meta)
    entry.write_text("{not json")
    rebuilt = tokenizer_from_gguf(meta)
    for text in TRICKY:
        assert built.encode(text) == cached.encode(text) == rebuilt.encode(text), text
    assert entry.read_text().startswith("{") and len(entry.read_text()) > 1000
    other = dict(meta, **{"tokenizer.ggml.scores": [0.0] * len(meta["tokenizer.ggml.tokens"])})
    tokenizer_from_gguf(other)  # another vocabulary (same pieces, other scores): its own entry
    assert len(list((tmp_path / "tokenizers").glob("spm-*.json"))) == 2
