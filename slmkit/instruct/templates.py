"""Natural-language templates for the tasks whose records are fields (Flan CoT, eval train splits), in FLAN's
manner: several phrasings per task, some of them inverted (the answer is given, the question is asked for), and
chain-of-thought templates that put the rationale before the answer (Flan 2022's CoT format:
"{rationale} So the answer is {answer}."). T0's records come already templated by P3's templates.

A template is a pair of `str.format` strings over the record's fields. User templates (a JSON file, see
`load_templates`) replace a task's built-in ones; a template that names a field the task's records lack is
refused before anything is written.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

from slmkit.errors import SlmError


@dataclass(frozen=True)
class Template:
    name: str
    prompt: str
    response: str
    inverted: bool = False
    cot: bool = False  # the chain-of-thought format: the response gives the rationale, then the answer

    def fields(self) -> set[str]:
        return {f for part in (self.prompt, self.response) for f in _fields(part, self.name)}

    def apply(self, record: dict) -> tuple[str, str]:
        return self.prompt.format_map(record), self.response.format_map(record)


def _fields(text: str, name: str) -> list[str]:
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as e:
        raise SlmError(f"template {name!r}: {e} in {text!r} (write a literal brace as {{{{ or }}}})") from None
    bad = [f for f in names if not f.isidentifier()]
    if bad:
        raise SlmError(f"template {name!r}: {{{bad[0]}}} is not a field name (fields are plain names like "
                       f"{{question}})")
    return names


COT_RESPONSE = "{rationale} So the answer is {answer}."

# Flan CoT tasks: the question text already holds the options where there are any.
COT = [
    Template("question_answer", "Question: {question}\nAnswer:", " {answer}"),
    Template("plain", "{question}\n", "{answer}"),
    Template("answer_following", "Answer the following question.\n{question}\n", "{answer}"),
    Template("q_a", "Q: {question}\nA:", " {answer}"),
    Template("cot_step_by_step", "{question}\nLet's think step by step.\n", COT_RESPONSE, cot=True),
    Template("cot_think_first", "Q: {question}\nA: Let's think first.", " " + COT_RESPONSE, cot=True),
    Template("cot_reasoning", "Question: {question}\nGive the reasoning, then the answer.\n", COT_RESPONSE,
             cot=True),
    Template("cot_stream", "{question}\nStream of consciousness:", " " + COT_RESPONSE, cot=True),
    Template("inv_reconstruct", "Reconstruct a question and answer from this explanation: {rationale}\n",
             "Question: {question}\nAnswer: {answer}", inverted=True),
    Template("inv_question_for", "Write a question whose answer is \"{answer}\" and that this reasoning "
             "answers: {rationale}\n", "{question}", inverted=True),
]

CSQA = [
    Template("options_answer", "{question}\nOptions:\n{options}\nAnswer:", " {answer}"),
    Template("pick_best", "Pick the best answer to the question.\nQuestion: {question}\n{options}\nAnswer:",
             " {answer}"),
    Template("lettered", "Question: {question}\n{lettered}\nAnswer with the letter:", " {label}"),
    Template("most_suitable", "{question}\nChoose the most suitable option to answer the question above.\n"
             "{options}\n", "{answer}"),
    Template("inv_question", "Write a common-sense question whose answer is \"{answer}\".\n", "{question}",
             inverted=True),
]

BUILTIN = {"flan_cot": COT, "eval/commonsense_qa_train": CSQA}


def builtin_templates(task_name: str, source: str) -> list[Template]:
    return list(BUILTIN.get(task_name) or BUILTIN.get(source) or [])


def load_templates(path: str | Path) -> dict[str, list[Template]]:
    """A JSON file {task: [{"name", "prompt", "response", "inverted"?, "cot"?}, ...]} of templates that replace
    the named tasks' built-in ones."""
    from slmkit.paths import read_json_object

    data = read_json_object(Path(path), "a JSON object of task -> templates")
    out: dict[str, list[Template]] = {}
    for task, items in data.items():
        if not isinstance(items, list) or not items:
            raise SlmError(f"{path}: {task!r} needs a non-empty list of templates")
        out[task] = []
        for i, t in enumerate(items):
            if not (isinstance(t, dict) and isinstance(t.get("prompt"), str) and isinstance(t.get("response"), str)):
                raise SlmError(f"{path}: template {i} of {task!r} needs string fields \"prompt\" and \"response\"")
            out[task].append(Template(str(t.get("name", f"user_{i}")), t["prompt"], t["response"],
                                      bool(t.get("inverted", False)), bool(t.get("cot", False))))
    return out
