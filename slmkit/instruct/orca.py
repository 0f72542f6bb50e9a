"""Orca 2's prompt erasure (Mitra et al. 2023, "Teaching Small Language Models How to Reason").

A teacher answers each reasoning item under a detailed system prompt that names the strategy its task type calls
for (step by step; recall then generate; recall, reason, generate; direct answer). The student is trained on
those answers with the detailed prompt replaced by a generic one, so it has to learn from the task itself which
strategy to use. Three students are built from the same items:

    kept     the teacher's answer after the detailed strategy prompt (no erasure)
    erased   the teacher's answer after the generic prompt (Orca 2's prompt erasure)
    answers  the reference answer alone ("So the answer is X."), no teacher reasoning, after the generic prompt

All three are scored under the generic prompt on held-out items: exact match, and how often the answer follows
the strategy its task type calls for. Strategy-following is read from the markers each strategy prompt asks for
(`follows`), so it is a measurement of form, not of reasoning quality.

The teacher is a local slmkit model (its chat template carries the system prompt) or an OpenAI-compatible
/v1/chat/completions endpoint (`slm serve`, llama.cpp's server, vLLM, ...). An endpoint that does not answer at
all fails at once with one line; an item it fails on is recorded with its error and left out of training.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from slmkit.errors import SlmError

GENERIC = "You are a helpful assistant. Answer the question."

@dataclass(frozen=True)
class Strategy:
    system: str  # the detailed system prompt that names the strategy
    example_question: str  # a worked example, given as an earlier exchange of the conversation
    example_answer: str

    def messages(self, question: str) -> list[dict]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.example_question},
                {"role": "assistant", "content": self.example_answer}, {"role": "user", "content": question}]

    def text(self) -> str:
        """The whole detailed prompt as one block of text (the kept student's prefix)."""
        return f"{self.system}\nExample: {self.example_question}\n{self.example_answer}"


STRATEGIES = {
    "step_by_step": Strategy(
        "You are a careful math tutor. Solve the problem step by step, one calculation per line, each line "
        "starting 'Step 1:', 'Step 2:' and so on. End with the line 'So the answer is N.' where N is the final "
        "number.",
        "Tom has 3 boxes of 4 pens and gives away 5 pens. How many pens does he have left?",
        "Step 1: 3 boxes of 4 pens is 3 * 4 = 12 pens.\nStep 2: He gives away 5, so 12 - 5 = 7 pens are left.\n"
        "So the answer is 7."),
    "recall_then_generate": Strategy(
        "You answer common-sense questions. First recall the fact the question needs, on one line starting "
        "'Facts:'. Then give the answer on a line 'So the answer is X.' where X is one of the options.",
        "Where do people keep milk cold?\nOptions:\n- oven\n- refrigerator\n- closet",
        "Facts: People keep milk cold in a refrigerator.\nSo the answer is refrigerator."),
    "recall_reason_generate": Strategy(
        "You answer yes/no questions that need several facts. First write 'Facts:' and the facts the question "
        "needs. Then write 'Reasoning:' and say in one sentence how the facts decide the question. End with "
        "'So the answer is yes.' or 'So the answer is no.'",
        "Can a penguin fly to its nest?",
        "Facts: A penguin is a bird. Penguins cannot fly.\nReasoning: Penguins walk or swim to their nests, so "
        "they cannot fly there.\nSo the answer is no."),
    "direct_answer": Strategy(
        "Answer at once, with no explanation, in one line: 'So the answer is X.'",
        "Of the following two sentences, which one is against common sense?\nOptions:\n- Sentence A: \"He drank "
        "a glass of water.\"\n- Sentence B: \"He drank a glass of sand.\"",
        "So the answer is Sentence B."),
}

# The strategy each task type calls for (Orca 2, section 4: the prompt is chosen per task).
TASK_STRATEGY = {"gsm8k": "step_by_step", "aqua": "step_by_step", "ecqa": "recall_then_generate",
                 "qasc": "recall_then_generate", "creak": "recall_reason_generate",
                 "strategyqa": "recall_reason_generate", "sensemaking": "direct_answer"}
DEFAULT_TASKS = ("gsm8k", "ecqa", "strategyqa", "sensemaking")
STUDENTS = ("kept", "erased", "answers")


def follows(strategy: str, text: str) -> bool:
    """Whether an answer has the form its strategy prompt asks for."""
    steps = bool(re.search(r"Step 1\s*:", text) and re.search(r"Step 2\s*:", text))
    facts, reasoning = "Facts:" in text, "Reasoning:" in text
    if strategy == "step_by_step":
        return steps
    if strategy == "recall_then_generate":
        return facts and not reasoning and not steps
    if strategy == "recall_reason_generate":
        return facts and reasoning
    if strategy == "direct_answer":
        return not (steps or facts or reasoning) and len(text.split()) <= 12
    raise SlmError(f"unknown strategy {strategy!r}; strategies: {', '.join(STRATEGIES)}")


def student_prompt(system: str, question: str) -> str:
    """The student's plain-text format (a base model has no chat template)."""
    return f"{system}\n\nQuestion: {question}\nAnswer:"


# --- teachers ----------------------------------------------------------------------------------------------------


class LocalTeacher:
    """An slmkit model answering greedily, in batches, with its chat template (system + user turns)."""

    def __init__(self, model: str = "default", batch_size: int = 16):
        from slmkit.eval.lm import SlmkitLM

        self.lm = SlmkitLM.load(model, batch_size=batch_size)
        if not self.lm.tokenizer.chat_template:
            raise SlmError(f"teacher {model} has no chat template to carry a system prompt; use an instruct model")
        self.name = self.lm.name

    def answer(self, conversations: list[tuple[str, str]], max_tokens: int) -> list[str | SlmError]:
        """Greedy replies to (strategy name, question) pairs."""
        prompts = [self.lm.tokenizer.apply_chat_template(STRATEGIES[s].messages(q)) for s, q in conversations]
        stop = [t for t in ("<|im_end|>", "<end_of_turn>", "<|eot_id|>") if t in self.lm.tokenizer.backend.get_vocab()]
        reqs = [(p, {"until": stop, "max_gen_toks": max_tokens}) for p in prompts]
        return [t.strip() for t in self.lm.generate_until(reqs)]


class EndpointTeacher:
    """An OpenAI-compatible chat endpoint, greedy; a failed item comes back as its error."""

    def __init__(self, url: str, model: str | None = None, api_key: str | None = None, timeout: float = 60.0):
        from slmkit.combine.supericl import EndpointLLM

        self.client = EndpointLLM(url, model, api_key, timeout, retries=1)  # lists /v1/models: fails at once
        self.name = self.client.name

    def answer(self, conversations: list[tuple[str, str]], max_tokens: int) -> list[str | SlmError]:
        out: list[str | SlmError] = []
        for strategy, question in conversations:
            try:
                out.append(self.client.chat(STRATEGIES[strategy].messages(question), max_tokens).strip())
            except SlmError as e:  # recorded for this item; the others go on
                out.append(e)
        return out


def teacher_for(spec: str, batch_size: int = 16, api_key: str | None = None):
    """A URL (http:// or https://) is an endpoint; anything else a model slmkit loads."""
    if spec.startswith(("http://", "https://")):
        return EndpointTeacher(spec, api_key=api_key)
    return LocalTeacher(spec, batch_size)


# --- the data ------------------------------------------------------------------------------------------------------


@dataclass
class OrcaData:
    teacher: list[dict]  # every item the teacher answered (or failed on), with its strategy and checks
    students: dict[str, list[dict]]  # kept / erased / answers -> prompt/response records
    heldout: list[dict]  # items for evaluation, with the generic prompt
    stats: dict


def items(root: Path, tasks: tuple[str, ...], per_task: int, n_eval: int) -> tuple[list[dict], list[dict]]:
    """The first per_task items of each Flan CoT task for the teacher, the last n_eval for evaluation (the items
    `slm data instruct --reserve` keeps out of a mixture)."""
    from slmkit.instruct.sources import read_sources

    by_name = {t.name.removeprefix("flan_cot/"): t for t in read_sources(root, ("flan_cot",))}
    unknown = [t for t in tasks if t not in TASK_STRATEGY or t not in by_name]
    if unknown:
        raise SlmError(f"unknown Orca task {unknown[0]!r}; tasks: {', '.join(sorted(TASK_STRATEGY))}")
    train, held = [], []
    for name in tasks:
        recs = by_name[name].records
        if per_task + n_eval > len(recs):
            raise SlmError(f"{name} has {len(recs)} items, fewer than --per-task {per_task} + --eval {n_eval}")
        for part, rows in ((train, recs[:per_task]), (held, recs[len(recs) - n_eval:])):
            part += [{"task": name, "strategy": TASK_STRATEGY[name], **r} for r in rows]
    return train, held


def build(teacher, train: list[dict], held: list[dict], max_tokens: int = 160, progress: bool = True) -> OrcaData:
    """Ask the teacher, under each item's strategy prompt, and write the three students' records."""
    from tqdm import tqdm

    from slmkit.instruct.score import is_correct

    answered: list[dict] = []
    bar = tqdm(total=len(train), desc="teacher", unit="item", disable=not progress, dynamic_ncols=True)
    for s in range(0, len(train), 32):
        chunk = train[s:s + 32]
        replies = teacher.answer([(i["strategy"], i["question"]) for i in chunk], max_tokens)
        for item, reply in zip(chunk, replies):
            row = {**item, "system": STRATEGIES[item["strategy"]].text()}
            if isinstance(reply, SlmError):
                row["error"] = str(reply)
            else:
                row.update(response=reply, follows=follows(item["strategy"], reply),
                           correct=is_correct(reply, item["answer"]))
            answered.append(row)
        bar.update(len(chunk))
    bar.close()
    ok = [r for r in answered if "error" not in r]
    if not ok:
        raise SlmError(f"the teacher answered none of the {len(answered)} items; first error: "
                       f"{answered[0]['error'] if answered else 'no items'}")
    students = {
        "kept": [{"prompt": student_prompt(r["system"], r["question"]), "response": " " + r["response"],
                  "_task": r["task"], "_strategy": r["strategy"]} for r in ok],
        "erased": [{"prompt": student_prompt(GENERIC, r["question"]), "response": " " + r["response"],
                    "_task": r["task"], "_strategy": r["strategy"]} for r in ok],
        "answers": [{"prompt": student_prompt(GENERIC, r["question"]),
                     "response": f" So the answer is {r['answer']}.", "_task": r["task"], "_strategy": r["strategy"]}
                    for r in ok],
    }
    heldout = [{**i, "prompt": student_prompt(GENERIC, i["question"])} for i in held]
    per_task: dict[str, dict] = {}
    for r in ok:
        t = per_task.setdefault(r["task"], {"strategy": r["strategy"], "n": 0, "follows": 0, "correct": 0})
        t["n"] += 1
        t["follows"] += r["follows"]
        t["correct"] += r["correct"]
    stats = {"teacher": teacher.name, "items": len(answered), "failed": len(answered) - len(ok),
             "teacher_follows": sum(r["follows"] for r in ok) / len(ok),
             "teacher_correct": sum(r["correct"] for r in ok) / len(ok), "per_task": per_task,
             "heldout": len(heldout), "generic_prompt": GENERIC,
             "strategies": {k: v.text() for k, v in STRATEGIES.items()}}
    return OrcaData(answered, students, heldout, stats)


def write(data: OrcaData, out: str | Path, overwrite: bool = False) -> Path:
    """OUT/teacher.jsonl, OUT/{kept,erased,answers}.jsonl, OUT/heldout.jsonl and OUT/orca.json, atomically."""
    from slmkit.outputs import atomic_dir

    with atomic_dir(out, "orca", overwrite) as tmp:
        files = {"teacher.jsonl": data.teacher, "heldout.jsonl": data.heldout,
                 **{f"{k}.jsonl": v for k, v in data.students.items()}}
        for name, rows in files.items():
            with open(tmp / name, "w", encoding="utf-8") as f:
                for r in rows:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
        (tmp / "orca.json").write_text(json.dumps(data.stats, indent=2), encoding="utf-8")
    return Path(out)


def evaluate(lm, heldout: list[dict], max_tokens: int = 160) -> dict:
    """Exact match and strategy-following of a student on held-out items under the generic prompt."""
    from slmkit.instruct.score import Score, score

    texts = lm.generate_until([(i["prompt"], {"until": ["\n\nQuestion:", "\n\n\n"], "max_gen_toks": max_tokens})
                               for i in heldout])
    _, scored = score(texts, [i["answer"] for i in heldout])
    rows, by_task = [], {}
    for item, r in zip(heldout, scored):
        row = {"task": item["task"], "strategy": item["strategy"], **r,
               "follows": follows(item["strategy"], r["text"])}
        rows.append(row)
        by_task.setdefault(item["task"], []).append(row)

    def summary(rs: list[dict]) -> dict:
        em = Score(len(rs), sum(r["correct"] for r in rs), sum(r["prediction"] is not None for r in rs))
        fo = Score(len(rs), sum(r["follows"] for r in rs), len(rs))
        return {"n": len(rs), "em": em.accuracy, "em_stderr": em.stderr, "follows": fo.accuracy,
                "follows_stderr": fo.stderr}

    return {"all": summary(rows), "per_task": {k: summary(v) for k, v in by_task.items()}, "rows": rows}
