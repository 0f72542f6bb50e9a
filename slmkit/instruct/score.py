"""Exact match on generated chain-of-thought answers: the model answers held-out items greedily, the answer is
read from the text ("... So the answer is X."), normalised per answer kind, and compared with the gold answer.

Answers are read as Flan 2022 writes its CoT targets: the last "the answer is X" in the text. Without that
phrase, the last number (math) or the first yes/no (yes/no tasks) counts, so a base model that answers in its
own words is not scored zero for the wording alone.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

ANSWER = re.compile(r"answer is:?\s*(.+?)(?:\.\s|\.$|\n|$)", re.IGNORECASE)
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
YESNO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)
LETTER = re.compile(r"\(([A-H])\)")


def kind(gold: str) -> str:
    g = gold.strip()
    if g.lower() in ("yes", "no"):
        return "yesno"
    if LETTER.fullmatch(g):
        return "letter"
    if NUMBER.fullmatch(g.replace("$", "")):
        return "number"
    return "text"


def _number(text: str) -> str | None:
    found = NUMBER.findall(text.replace("$", ""))
    if not found:
        return None
    value = found[-1].replace(",", "").rstrip(".")
    try:
        f = float(value)
    except ValueError:
        return None
    return str(int(f)) if f == int(f) else str(f)


def extract(text: str, answer_kind: str) -> str | None:
    """The answer a generated text gives, normalised for its kind (None: no answer found)."""
    found = ANSWER.findall(text)
    span = found[-1] if found else None
    if answer_kind == "number":
        return (_number(span) if span is not None else None) or _number(text)
    if answer_kind == "yesno":
        m = YESNO.search(span) if span is not None else None
        m = m or YESNO.search(text)
        return m.group(1).lower() if m else None
    if answer_kind == "letter":
        letters = (LETTER.findall(span)[:1] if span is not None else []) or LETTER.findall(text)[-1:]
        return f"({letters[0]})" if letters else None
    if span is None:
        return None
    return span.strip().strip("\"'").rstrip(".").lower()


def normalise(gold: str, answer_kind: str) -> str:
    if answer_kind == "number":
        return _number(gold) or gold.strip()
    return gold.strip().lower()


@dataclass
class Score:
    n: int
    correct: int
    answered: int  # items whose text gave an answer at all

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else float("nan")

    @property
    def stderr(self) -> float:
        p = self.accuracy
        return math.sqrt(p * (1 - p) / (self.n - 1)) if self.n > 1 else float("nan")

    def line(self) -> str:
        return f"{100 * self.accuracy:.1f} ± {100 * self.stderr:.1f}"


def is_correct(text: str, gold: str) -> bool:
    """Whether the answer a text gives is the gold answer."""
    k = kind(gold)
    pred = extract(text, k)
    return pred is not None and pred == normalise(gold, k)


def score(texts: list[str], golds: list[str]) -> tuple[Score, list[dict]]:
    """Exact match of each generated text's answer against its gold answer; the per-item rows for the record."""
    rows, correct, answered = [], 0, 0
    for text, gold in zip(texts, golds):
        pred = extract(text, kind(gold))
        ok = is_correct(text, gold)
        correct += ok
        answered += pred is not None
        rows.append({"gold": gold, "prediction": pred, "correct": ok, "text": text})
    return Score(len(golds), correct, answered), rows


def generate(lm, prompts: list[str], max_gen_toks: int = 160,
             until: tuple[str, ...] = ("\n\n", "\nQuestion:", "\nQ:")) -> list[str]:
    """Greedy continuations of the prompts by an eval LM (slmkit.eval.lm), cut at the first stop string."""
    return lm.generate_until([(p, {"until": list(until), "max_gen_toks": max_gen_toks}) for p in prompts])
