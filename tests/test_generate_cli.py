"""`slm generate` and `slm chat` end to end, and the engine on the embedded default model."""

from __future__ import annotations

import io

import pytest
import torch

import slmkit
from slmkit.cli import main
from slmkit.engine import Engine, SamplingParams, stream_text
from tests.test_errors import assert_one_line
from tests.test_gguf import greedy


@pytest.fixture(scope="module")
def default_lm(default_gguf):
    return slmkit.load(default_gguf, dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def tiny_chat_dir(tmp_path_factory, default_lm):
    """A tiny random llama with the default model's real tokenizer and chat template."""
    cfg = slmkit.from_name("SmolLM2-135M", n_layer=2, d_model=64, n_head=4, n_kv_head=2, intermediate_size=128)
    model = slmkit.init_model(cfg, device="cpu", seed=0)
    return slmkit.save(model, tmp_path_factory.mktemp("tiny") / "chat", tokenizer=default_lm.tokenizer)


def test_engine_greedy_equals_full_forward_greedy_on_the_default_model(default_lm):
    ids = default_lm.tokenizer.encode("The capital of France is")
    got = Engine(default_lm.model).generate([ids], 32, SamplingParams(temperature=0))[0]
    assert got == greedy(default_lm.model, ids, 32)


def test_generate_default_model_greedy(capsys, default_gguf):
    assert main(["generate", "The capital of France is", "--temperature", "0", "-n", "8"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("The capital of France is") and "Paris" in out
    last = err.strip().splitlines()[-1]
    assert "prefill 5 tok" in last and "decode 8 tok" in last and "tok/s" in last


def test_generate_stop_string_cuts_the_text(capsys, tiny_chat_dir):
    args = ["generate", "Once upon a time", "-m", str(tiny_chat_dir), "-t", "0", "-n", "24"]
    assert main(args) == 0
    full = capsys.readouterr().out[len("Once upon a time"):].rstrip("\n")
    assert len(full) > 12
    stop = full[8:11]
    assert main(args + ["--stop", stop]) == 0
    cut = capsys.readouterr().out[len("Once upon a time"):].rstrip("\n")
    assert cut == full[: full.index(stop)]


def test_generate_batch_of_prompts(capsys, tiny_chat_dir):
    prompts = ["Hello there", "A much longer prompt with several more words in it"]
    assert main(["generate", *prompts, "-m", str(tiny_chat_dir), "-t", "0", "-n", "6"]) == 0
    out = capsys.readouterr().out
    assert "--- [0]" in out and "--- [1]" in out
    lm = slmkit.load(tiny_chat_dir, device="cpu")
    single = Engine(lm.model).generate([lm.tokenizer.encode(prompts[1])], 6, SamplingParams(temperature=0))[0]
    assert lm.tokenizer.decode(single, skip_special_tokens=True) in out


def test_generate_chat_flag_uses_the_template(capsys, tiny_chat_dir):
    """--chat renders the prompt with the chat template (no second BOS), alone and in a batch."""
    lm = slmkit.load(tiny_chat_dir, device="cpu")
    ids = lm.tokenizer.apply_chat_template([{"role": "user", "content": "Hi!"}], tokenize=True)
    expect = "".join(stream_text(Engine(lm.model), lm.tokenizer, ids, 5, SamplingParams(temperature=0)))
    assert main(["generate", "Hi!", "--chat", "-m", str(tiny_chat_dir), "-t", "0", "-n", "5"]) == 0
    assert capsys.readouterr().out == expect + "\n"
    assert main(["generate", "Hi!", "Hello", "--chat", "-m", str(tiny_chat_dir), "-t", "0", "-n", "5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("--- [0] finish=") and expect.strip() in out


def test_chat_turns_reset_and_exit(capsys, monkeypatch, tiny_chat_dir):
    monkeypatch.setattr("sys.stdin", io.StringIO("Hi!\nHow are you?\n/reset\nHi!\n/exit\nnever read\n"))
    assert main(["chat", "-m", str(tiny_chat_dir), "-t", "0", "-n", "5", "-v"]) == 0
    out, err = capsys.readouterr()
    lm = slmkit.load(tiny_chat_dir, device="cpu")
    ids = lm.tokenizer.apply_chat_template([{"role": "user", "content": "Hi!"}], tokenize=True)
    first = "".join(stream_text(Engine(lm.model), lm.tokenizer, ids, 5, SamplingParams(temperature=0)))
    assert out.startswith(first + "\n") and out.endswith("\n" + first + "\n"), \
        "after /reset the same first message gets the same greedy reply"
    stats = [line for line in err.splitlines() if line.startswith("prefill")]
    assert len(stats) == 3 and "(history cleared)" in err
    assert "cached" in stats[1], "the second turn reuses the first turn's KV cache"


def test_chat_with_a_draft_replies_as_the_model_alone(capsys, monkeypatch, tiny_chat_dir):
    """slm chat --draft: speculative decoding in a chat (the model is its own draft: every proposal accepted); the
    greedy replies equal the model's alone, across turns, and -v shows the acceptance."""
    monkeypatch.setattr("sys.stdin", io.StringIO("Hi!\nHow are you?\n"))
    assert main(["chat", "-m", str(tiny_chat_dir), "-t", "0", "-n", "6", "-v"]) == 0
    alone = capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO("Hi!\nHow are you?\n"))
    assert main(["chat", "-m", str(tiny_chat_dir), "-t", "0", "-n", "6", "-v", "--draft", str(tiny_chat_dir),
                 "--draft-k", "3"]) == 0
    out, err = capsys.readouterr()
    assert out == alone and err.count("accept") >= 2


def test_generate_and_chat_with_lookup_drafts_reply_as_the_model_alone(capsys, monkeypatch, default_gguf):
    """--draft lookup on the real default model, asked to repeat a sentence: generate and chat (two turns) print
    the model's own greedy replies, and the stats line shows the drafts kept."""
    ask = "Repeat this sentence exactly: The lighthouse keeper counted forty-two ships and wrote to his sister."
    args = ["generate", ask, "--chat", "-t", "0", "-n", "32"]
    assert main(args) == 0
    alone = capsys.readouterr().out
    assert main(args + ["--draft", "lookup", "--draft-k", "5"]) == 0
    out, err = capsys.readouterr()
    assert out == alone and "lighthouse keeper counted" in out
    assert "draft accepted" in err.strip().splitlines()[-1]
    turns = ask + "\nNow repeat it once more.\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(turns))
    assert main(["chat", "-t", "0", "-n", "32", "-v"]) == 0
    alone = capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO(turns))
    assert main(["chat", "-t", "0", "-n", "32", "-v", "--draft", "lookup"]) == 0
    out, err = capsys.readouterr()
    assert out == alone and err.count("draft accepted") == 2


@pytest.mark.parametrize("args, needle", [
    (["--temperature", "-1"], "temperature must be >= 0"),
    (["--top-p", "2"], "top_p must be in (0, 1]"),
    (["-n", "0"], "-n: must be >= 1"),
])
def test_generate_bad_arguments(capsys, tiny_chat_dir, args, needle):
    rc = main(["generate", "hi", "-m", str(tiny_chat_dir), *args])
    assert_one_line(rc, capsys.readouterr().err, needle)


def test_generate_model_without_tokenizer(capsys, tmp_path):
    cfg = slmkit.from_name("SmolLM2-135M", n_layer=1, d_model=32, n_head=2, n_kv_head=1, intermediate_size=64,
                           vocab_size=128)
    path = slmkit.save(slmkit.init_model(cfg, device="cpu"), tmp_path / "notok")
    rc = main(["generate", "hi", "-m", str(path)])
    assert_one_line(rc, capsys.readouterr().err, "has no tokenizer")


def test_chat_needs_a_chat_template(capsys, monkeypatch, tmp_path, default_lm):
    tok = slmkit.Tokenizer(default_lm.tokenizer.backend, bos_token=None, eos_token="<|im_end|>")
    cfg = slmkit.from_name("SmolLM2-135M", n_layer=1, d_model=32, n_head=2, n_kv_head=1, intermediate_size=64)
    path = slmkit.save(slmkit.init_model(cfg, device="cpu"), tmp_path / "plain", tokenizer=tok)
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\n"))
    rc = main(["chat", "-m", str(path)])
    assert_one_line(rc, capsys.readouterr().err, "no chat template")


def test_bf16_generation_runs_close_to_fp32(default_gguf):
    """bf16 weights with a float32 KV cache: the greedy continuation starts as the fp32 one does."""
    lm = slmkit.load(default_gguf, dtype="bfloat16", device="cpu")
    ids = lm.tokenizer.encode("The capital of France is")
    got = Engine(lm.model).generate([ids], 4, SamplingParams(temperature=0))[0]
    assert lm.tokenizer.decode(got).strip().startswith("Paris")
    assert lm.model.tok_emb.weight.dtype == torch.bfloat16


@pytest.mark.slow
def test_generate_with_a_draft_gives_the_targets_greedy_text(capsys, default_gguf, tiny_chat_dir):
    """--draft: the default model verifies a tiny draft's proposals; the text is the default model's own."""
    prompt = "The capital of France is"
    assert main(["generate", prompt, "--temperature", "0", "-n", "16"]) == 0
    alone = capsys.readouterr().out
    assert main(["generate", prompt, "--temperature", "0", "-n", "16", "--draft", str(tiny_chat_dir), "--draft-k", "3"]) == 0
    out, err = capsys.readouterr()
    assert out == alone
    assert "draft accepted" in err.strip().splitlines()[-1]


def test_generate_draft_errors(capsys, tmp_path, tiny_chat_dir):
    other = slmkit.init_model(slmkit.from_name("SmolLM2-135M", n_layer=1, d_model=32, n_head=2, n_kv_head=1,
                                                intermediate_size=64, vocab_size=300), device="cpu", seed=0)
    other_dir = slmkit.save(other, tmp_path / "other")
    tiny = str(tiny_chat_dir)
    for args, needle in [(["--draft", str(other_dir)], "vocabulary"), (["--draft", tiny, "--draft-k", "0"], "--draft-k"),
                         (["--draft", tiny, "--repetition-penalty", "1.3"], "repetition")]:
        rc = main(["generate", "hi", "-m", tiny, "-n", "4", *args])
        assert_one_line(rc, capsys.readouterr().err, needle)
