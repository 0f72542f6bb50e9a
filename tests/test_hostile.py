"""Hostile and careless input, held (issue 21): output folders that hold a user's files are never deleted, sizes
are bounded before anything is built, bad numbers and non-finite weights are one clear line, empty task lists and
unwritable outputs fail before the work. Each case: one line, a non-zero exit, bounded time, nothing lost.
(The sandbox's hostile programs are in test_sandbox.py, the server's in test_serve.py, damaged files in
test_errors.py.)"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

import slmkit
from slmkit.cli import main
from tests.test_errors import TINY, assert_one_line, run_cli


@pytest.fixture
def tiny_dir(tmp_path):
    model = slmkit.init_model(slmkit.from_name("SmolLM2-135M", **TINY), device="cpu", seed=0)
    return str(slmkit.save(model, tmp_path / "tiny"))


@pytest.fixture
def users(tmp_path):
    """A folder of the user's: a thesis and a note in a subfolder."""
    folder = tmp_path / "mine"
    (folder / "sub").mkdir(parents=True)
    (folder / "thesis.tex").write_text("\\documentclass{article} my thesis")
    (folder / "sub" / "notes.txt").write_text("notes")
    return folder


def _intact(folder: Path) -> None:
    assert (folder / "thesis.tex").read_text() == "\\documentclass{article} my thesis"
    assert (folder / "sub" / "notes.txt").read_text() == "notes"
    assert not (folder / ".slmkit-output").exists()


def _corpus(tmp_path) -> str:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to be or not to be, that is the question\n" * 200)
    return str(corpus)


VERBS = {  # name: argv with {out} (the user's folder), {model}, {corpus}, {root}
    "convert": ["convert", "{model}", "{out}"],
    "quantize": ["quantize", "{model}", "-o", "{out}", "--bits", "8"],
    "data prepare": ["data", "prepare", "{corpus}", "-o", "{out}", "--train-tokenizer", "300"],
    "tokenizer train": ["tokenizer", "train", "{corpus}", "-o", "{out}", "--vocab-size", "300"],
    "eval": ["eval", "-m", "{model}", "--tasks", "arc_easy", "--limit", "2", "-o", "{out}"],
    "bench": ["bench", "{model}", "--precisions", "fp32", "-o", "{out}"],
    "combine supericl": ["combine", "supericl", "--task", "sst2", "-o", "{out}"],
    "combine rerank": ["combine", "rerank", "-m", "{model}", "--limit", "1", "-o", "{out}"],
    "zoo trends": ["zoo", "trends", "-o", "{out}"],
    "report": ["report", "{out}", "-o", "{out}"],
    "tour": ["tour", "-m", "{model}", "-o", "{out}"],
    "train": ["train", "{root}/recipes/shakespeare-tiny.yaml", "--out", "{out}"],
    "distill": ["distill", "{root}/recipes/distill-smollm2.yaml", "--out", "{out}"],
}


@pytest.mark.parametrize("verb", list(VERBS))
def test_no_verb_writes_into_a_folder_of_the_users(verb, users, tiny_dir, tmp_path, capsys):
    from tests.conftest import ROOT

    argv = [a.format(out=users, model=tiny_dir, corpus=_corpus(tmp_path), root=ROOT) for a in VERBS[verb]]
    t0 = time.perf_counter()
    rc, err = run_cli(capsys, *argv)
    assert_one_line(rc, err, str(users), "--overwrite")
    assert time.perf_counter() - t0 < 30  # refused before the work, not after it
    _intact(users)


def test_output_files_of_the_user_are_not_replaced(users, tiny_dir, capsys):
    for argv in (["export", tiny_dir, "--gguf", str(users / "thesis.tex")],
                 ["combine", "rerank", "-m", tiny_dir, "--limit", "1", "--label-out", str(users / "thesis.tex")]):
        rc, err = run_cli(capsys, *argv)
        assert_one_line(rc, err, "thesis.tex", "--overwrite")
    rc, err = run_cli(capsys, "export", tiny_dir, "--gguf", str(users))
    assert_one_line(rc, err, "is a folder")
    _intact(users)


def test_a_previous_output_of_the_same_kind_is_replaced_and_overwrite_is_explicit(tiny_dir, users, tmp_path, capsys):
    out = tmp_path / "hf"
    assert main(["convert", tiny_dir, str(out)]) == 0
    assert json.loads((out / ".slmkit-output").read_text())["kind"] == "model"
    assert main(["convert", tiny_dir, str(out)]) == 0  # its own output: replaced atomically
    (out / "my-notes.txt").write_text("mine")  # the user put a file in it: no longer only slmkit's
    assert_one_line(main(["convert", tiny_dir, str(out)]), capsys.readouterr().err, "my-notes.txt", "--overwrite")
    assert (out / "my-notes.txt").read_text() == "mine"
    data = tmp_path / "shards"
    corpus = _corpus(tmp_path)
    assert main(["data", "prepare", corpus, "-o", str(data), "--train-tokenizer", "300", "-q"]) == 0
    assert main(["data", "prepare", corpus, "-o", str(data), "--train-tokenizer", "300", "-q"]) == 0
    assert_one_line(main(["convert", tiny_dir, str(data)]), capsys.readouterr().err, "slmkit data output")
    legacy = Path(tiny_dir)  # written by save(): marked; a folder of model files without a marker is one too
    (legacy / ".slmkit-output").unlink()
    assert main(["convert", tiny_dir, str(legacy)]) == 0
    assert main(["convert", tiny_dir, str(users), "--overwrite"]) == 0  # the user asked: replaced
    assert (users / "config.json").is_file() and not (users / "thesis.tex").exists()
    capsys.readouterr()


def test_unwritable_and_empty_inputs_fail_before_the_run(tiny_dir, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    t0 = time.perf_counter()
    rc, err = run_cli(capsys, "eval", "-m", tiny_dir, "--tasks", "arc_easy", "-o", str(blocker / "out"))
    assert_one_line(rc, err, "a-file", "is a file")
    for tasks in ("", ",", " , "):
        rc, err = run_cli(capsys, "eval", "-m", tiny_dir, "--tasks", tasks)
        assert_one_line(rc, err, "--tasks is empty")
    assert time.perf_counter() - t0 < 30


# --- sizes and numbers, checked before anything is built ------------------------------------------------------

HF_TINY = {"model_type": "llama", "vocab_size": 256, "hidden_size": 64, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
           "max_position_embeddings": 256}


@pytest.mark.parametrize("change, needle", [
    ({"num_hidden_layers": 10**9}, "n_layer must be between 1 and 1024"),
    ({"num_hidden_layers": 10**5}, "n_layer must be between 1 and 1024"),
    ({"hidden_size": -64}, "d_model must be between"),
    ({"num_attention_heads": 0}, "n_head must be between"),
    ({"hidden_size": "big"}, "d_model must be an integer"),
    ({"rope_theta": float("nan")}, "rope_theta must be finite"),
    ({"hidden_size": 66}, "not a multiple of n_head"),
    (None, "nested too deeply"),
])
def test_bad_sizes_in_a_config_are_one_line_before_anything_is_built(change, needle, tmp_path, capsys):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000 if change is None
                                        else json.dumps({**HF_TINY, **change}))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    for verb in (["info", str(folder)], ["convert", str(folder), str(tmp_path / "out")]):
        rc, err = run_cli(capsys, *verb)
        assert_one_line(rc, err, "config.json", needle)
    assert time.perf_counter() - t0 < 10
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # kB
    assert not (tmp_path / "out").exists()


def test_layer_count_is_checked_against_the_weights(tiny_dir, tmp_path, capsys):
    cfg = Path(tiny_dir) / "config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "num_hidden_layers": 500}))
    t0 = time.perf_counter()
    rc, err = run_cli(capsys, "convert", tiny_dir, str(tmp_path / "out"))
    assert_one_line(rc, err, "says 500 layers but the weights hold 2")
    assert time.perf_counter() - t0 < 10


def test_gguf_block_count_is_checked_against_its_tensors(tmp_path, capsys):
    from tests.conftest import write_tiny_gguf

    model = slmkit.init_model(slmkit.from_name("SmolLM2-135M", **TINY), device="cpu", seed=0)
    path = write_tiny_gguf(tmp_path / "lies.gguf", model, block_count=900)
    t0 = time.perf_counter()
    rc, err = run_cli(capsys, "convert", str(path), str(tmp_path / "out"))
    assert_one_line(rc, err, "lies.gguf", "says 900 layers but the weights hold 2")
    assert time.perf_counter() - t0 < 10


def test_non_finite_weights_are_found_at_load(tiny_dir, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    weights = Path(tiny_dir) / "model.safetensors"
    state = load_file(str(weights))
    name = next(k for k in state if k.endswith("mlp.down_proj.weight"))
    state[name][0, 0] = float("nan")
    save_file(state, str(weights), metadata={"format": "pt"})
    rc, err = run_cli(capsys, "convert", tiny_dir, str(tmp_path / "out"))
    assert_one_line(rc, err, "blocks.0.mlp", "NaN or infinite")


def test_non_finite_logits_at_run_time_are_one_error(tiny_eval_dir):
    """Finite weights whose activations overflow: the engine says so instead of emitting garbage."""
    import torch

    from slmkit.engine import Engine, SamplingParams
    from slmkit.errors import SlmError

    lm = slmkit.load(tiny_eval_dir)
    final = [p for n, p in lm.model.named_parameters() if "norm" in n and not n.startswith("blocks")]
    assert final
    with torch.no_grad():
        for p in final:
            p.fill_(1e38)  # finite, but the head's dot products overflow
    with pytest.raises(SlmError, match="NaN or infinite logits"):
        Engine(lm.model).generate([[1, 2, 3]], 4, SamplingParams(temperature=0))


def test_max_new_tokens_is_capped_at_the_context(tiny_eval_dir, tmp_path):
    """-n 10^9 on a 64-token context: a note, 64 tokens at most, no 128 GB cache; a prompt past the context is an
    error. Run as `slm` in a fresh process whose peak memory is read."""
    import shutil

    small = tmp_path / "small"
    shutil.copytree(tiny_eval_dir, small)
    cfg = small / "config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "max_position_embeddings": 64}))
    probe = ("import sys\nfrom slmkit.cli import main\nrc = main(sys.argv[1:])\n"  # VmHWM: this process's peak
             "hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]\n"
             "print('maxrss', hwm, file=sys.stderr)\nraise SystemExit(rc)\n")
    run = subprocess.run([sys.executable, "-c", probe, "generate", "-m", str(small), "Hello", "-n", "1000000000",
                          "--temperature", "0"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "capped at" in run.stderr and "context holds 64" in run.stderr, run.stderr
    assert int(run.stderr.split("maxrss")[1].split()[0]) < 2 * 1024 * 1024  # kB: well under 2 GB
    from slmkit.engine import Engine, SamplingParams

    lm = slmkit.load(str(small))
    rows = Engine(lm.model).generate([[1, 2, 3]], 10**9, SamplingParams(temperature=0))
    assert len(rows[0]) <= 61
    from slmkit.errors import SlmError

    with pytest.raises(SlmError, match="context holds 64"):
        Engine(lm.model).generate([list(range(64))], 4, SamplingParams(temperature=0))
