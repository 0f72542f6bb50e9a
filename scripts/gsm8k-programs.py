#!/usr/bin/env python
"""GSM8K train solutions rewritten as TinyGSM-style Python programs: the data for fine-tuning a small generator for
`slm combine rerank --shots 0` (TinyGSM trains on 12M synthetic such programs; this is the 7k-problem offline
stand-in, built from GSM8K's own calculator annotations).

Each solution line "Natalia sold 48/2 = <<48/2=24>>24 clips in May." becomes a comment with the line's text and an
assignment of the annotated expression to a name taken from the words after the result (`clips_may = 48 / 2`).
A number in an expression that equals an earlier step's value becomes that step's name, so later steps read
`clips_may + 48`. The program returns the last step. Every program is executed here and kept only if it returns
the gold answer. Records are {"prompt": the function header with the question, "response": the body}.

    python scripts/gsm8k-programs.py -o runs/data/gsm8k-programs.jsonl --first 5000   # train items 0-4999
    slm data prepare runs/data/gsm8k-programs.jsonl -o runs/data/gsm8k-programs --prompt-template '{prompt}' \\
        --template '{response}' --val-fraction 0.02
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from slmkit.combine.rerank import HEADER, gold_answer, matches
from slmkit.eval.data import load_task_data
from slmkit.paths import write_atomic

ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
ARITHMETIC = re.compile(r"^[\d.+\-*/() ]+$")
NUMBER = re.compile(r"\d*\.?\d+")
STOPWORDS = {"a", "an", "the", "in", "of", "to", "and", "for", "per", "each", "is", "are", "was", "on", "at", "by",
             "with", "from", "that", "this", "so", "he", "she", "they", "it", "his", "her", "their", "more", "than"}


def _name(words_after: str, taken: set[str], step: int) -> str:
    words = [w.lower() for w in re.findall(r"[A-Za-z]+", words_after)[:4] if w.lower() not in STOPWORDS]
    name = "_".join(words[:2]) or f"step{step}"
    if name in taken or not name.isidentifier():
        name = f"{name}_{step}" if name.isidentifier() else f"step{step}"
    taken.add(name)
    return name


def program(doc: dict) -> str | None:
    """The body of the program for one GSM8K item, or None when its annotations are not plain arithmetic."""
    lines, steps, taken = [], [], set()  # steps: (name, value)
    for line in doc["answer"].split("\n"):
        if line.startswith("####"):
            break
        found = list(ANNOTATION.finditer(line))
        comment = ANNOTATION.sub("", line).strip()
        if comment:
            lines.append(f"    # {comment}")
        for m in found:
            expr = m.group(1).replace(" ", "")
            if not ARITHMETIC.match(expr):
                return None
            try:
                value = float(eval(expr, {"__builtins__": {}}))  # trusted: digits and operators only
            except (SyntaxError, ZeroDivisionError, TypeError):
                return None
            known = {f"{v:g}": n for n, v in steps}

            def use_step(num: re.Match) -> str:
                return known.get(f"{float(num.group(0)):g}", num.group(0))

            expr = NUMBER.sub(use_step, expr)
            expr = re.sub(r"\s*([+\-*/])\s*", r" \1 ", expr).strip()
            name = _name(line[m.end():], taken, len(steps) + 1)
            lines.append(f"    {name} = {expr}")
            steps.append((name, value))
    if not steps:
        return None
    lines += [f"    result = {steps[-1][0]}", "    return result"]
    return "\n".join(lines) + "\n"


def returns_gold(question: str, body: str, gold: float) -> bool:
    env: dict = {}
    try:
        exec(HEADER.format(question=question.replace('"""', "'''")) + body, {"__builtins__": {}}, env)
        return matches(float(env["simple_math_problem"]()), gold)
    except Exception:  # noqa: BLE001 - a program that fails is dropped
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--first", type=int, default=5000, help="use train items 0..first-1 (the rest stay unseen)")
    a = ap.parse_args()
    docs = load_task_data("gsm8k").docs["train"][: a.first]
    rows, dropped = [], 0
    for doc in docs:
        question = " ".join(doc["question"].split())
        body = program(doc)
        if body is None or not returns_gold(question, body, gold_answer(doc)):
            dropped += 1
            continue
        rows.append({"prompt": HEADER.format(question=question), "response": body})
    write_atomic(Path(a.output), "".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} programs to {a.output} ({dropped} of {len(docs)} items dropped: annotations that "
          f"are not plain arithmetic or do not reach the gold answer)", file=sys.stderr)


if __name__ == "__main__":
    main()
