"""Orca 2's prompt erasure (slm data orca): strategy checks, the three students' records, a local teacher and
the same teacher behind a real `slm serve` endpoint, failures recorded per item, an endpoint that is not there."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from slmkit.errors import SlmError
from slmkit.instruct import orca


def items(n: int = 3) -> list[dict]:
    rows = []
    for task, answer in (("gsm8k", "7"), ("strategyqa", "no"), ("sensemaking", "Sentence A")):
        for i in range(n):
            rows.append({"task": task, "strategy": orca.TASK_STRATEGY[task], "question": f"{task} question {i}?",
                         "answer": answer, "rationale": "because"})
    return rows


@pytest.mark.parametrize("strategy, text, ok", [
    ("step_by_step", "Step 1: 3 * 4 = 12.\nStep 2: 12 - 5 = 7.\nSo the answer is 7.", True),
    ("step_by_step", "3 * 4 = 12, 12 - 5 = 7. So the answer is 7.", False),
    ("recall_then_generate", "Facts: milk is kept cold.\nSo the answer is refrigerator.", True),
    ("recall_then_generate", "Facts: x.\nReasoning: y.\nSo the answer is z.", False),
    ("recall_reason_generate", "Facts: x.\nReasoning: y.\nSo the answer is no.", True),
    ("recall_reason_generate", "So the answer is no.", False),
    ("direct_answer", "So the answer is Sentence B.", True),
    ("direct_answer", "Facts: sand is not a drink. So the answer is Sentence B.", False),
])
def test_follows_reads_each_strategy_s_form(strategy, text, ok):
    assert orca.follows(strategy, text) is ok


def test_every_task_type_has_a_strategy_with_a_worked_example_that_follows_it():
    for task, name in orca.TASK_STRATEGY.items():
        s = orca.STRATEGIES[name]
        assert orca.follows(name, s.example_answer), (task, name)
        assert s.system and s.example_question in s.text()


@pytest.fixture(scope="module")
def local_teacher(tiny_eval_dir):
    return orca.LocalTeacher(tiny_eval_dir, batch_size=4)


def test_the_three_students_share_the_items_and_differ_as_orca_2_says(local_teacher):
    train, held = items(3), items(1)
    data = orca.build(local_teacher, train, held, max_tokens=12, progress=False)
    kept, erased, answers = (data.students[k] for k in orca.STUDENTS)
    assert len(kept) == len(erased) == len(answers) == len(train)
    for k, e, a, t in zip(kept, erased, answers, data.teacher):
        strategy = orca.STRATEGIES[t["strategy"]]
        assert k["prompt"].startswith(strategy.text()) and t["question"] in k["prompt"]
        assert e["prompt"] == a["prompt"] == orca.student_prompt(orca.GENERIC, t["question"])
        assert strategy.system not in e["prompt"]  # the erasure
        assert k["response"] == e["response"] == " " + t["response"]
        assert a["response"] == f" So the answer is {t['answer']}."
    assert all(h["prompt"] == orca.student_prompt(orca.GENERIC, h["question"]) for h in data.heldout)
    assert data.stats["items"] == 9 and data.stats["failed"] == 0
    assert set(data.stats["per_task"]) == {"gsm8k", "strategyqa", "sensemaking"}
    # the teacher saw the strategy conversation: its greedy reply equals the engine's on that chat prompt
    messages = orca.STRATEGIES["step_by_step"].messages(train[0]["question"])
    conv = local_teacher.lm.tokenizer.apply_chat_template(messages)
    assert local_teacher.lm.generate_until([(conv, {"until": ["<|im_end|>"], "max_gen_toks": 12})])[0].strip() == \
        data.teacher[0]["response"]


def test_evaluate_scores_exact_match_and_strategy_following(local_teacher):
    held = [{**i, "prompt": orca.student_prompt(orca.GENERIC, i["question"])} for i in items(2)]
    result = orca.evaluate(local_teacher.lm, held, max_tokens=8)
    assert result["all"]["n"] == 6 and set(result["per_task"]) == {"gsm8k", "strategyqa", "sensemaking"}
    for r in result["rows"]:  # each row's checks are the functions' own verdicts on its text
        assert r["follows"] == orca.follows(r["strategy"], r["text"])
    assert result["all"]["em"] == sum(r["correct"] for r in result["rows"]) / 6


def test_an_endpoint_teacher_answers_as_the_same_model_does_locally_and_records_failures(tiny_eval_dir,
                                                                                         local_teacher):
    from slmkit.checkpoint import load
    from tests.test_serve import serving

    train = items(1)
    train.append({**train[0], "question": "long " * 400})  # more than the server's 256-token context
    with serving(load(tiny_eval_dir), slots=2) as url:
        teacher = orca.teacher_for(url)
        data = orca.build(teacher, train, items(1), max_tokens=12, progress=False)
    local = orca.build(local_teacher, train[:-1], items(1), max_tokens=12, progress=False)
    assert [t["response"] for t in data.teacher[:-1]] == [t["response"] for t in local.teacher]
    assert "error" in data.teacher[-1] and "context" in data.teacher[-1]["error"]
    assert data.stats["failed"] == 1 and len(data.students["erased"]) == len(train) - 1


def test_an_endpoint_that_does_not_answer_fails_at_once_with_one_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    cot = tmp_path / "instruct/flan_cot"
    cot.mkdir(parents=True)
    (cot / "gsm8k_train.tsv").write_text("".join(f"q{i}?\t{i}\tr{i}\n" for i in range(10)))
    out = tmp_path / "orca"
    p = subprocess.run([sys.executable, "-m", "slmkit.cli", "data", "orca", "--teacher", f"http://127.0.0.1:{port}",
                        "-o", str(out), "--data", str(tmp_path), "--tasks", "gsm8k", "--per-task", "4", "--eval", "2"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "cannot reach" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert not out.exists()
    with pytest.raises(SlmError, match="cannot reach"):
        orca.teacher_for(f"http://127.0.0.1:{port}")


def test_unknown_tasks_and_too_few_items_are_refused(tmp_path):
    cot = tmp_path / "instruct/flan_cot"
    cot.mkdir(parents=True)
    (cot / "gsm8k_train.tsv").write_text("".join(f"q{i}?\t{i}\tr{i}\n" for i in range(10)))
    with pytest.raises(SlmError, match="unknown Orca task 'poetry'"):
        orca.items(tmp_path, ("poetry",), 2, 2)
    with pytest.raises(SlmError, match="fewer than --per-task 8 \\+ --eval 4"):
        orca.items(tmp_path, ("gsm8k",), 8, 4)
    train, held = orca.items(tmp_path, ("gsm8k",), 6, 4)
    assert [r["question"] for r in train] == [f"q{i}?" for i in range(6)]
    assert [r["question"] for r in held] == [f"q{i}?" for i in range(6, 10)]
    assert json.dumps(train)  # plain records
