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
