"""Verifier reranking on GSM8K, after TinyGSM (Liu et al. 2023): the generator writes N candidate solutions as Python
programs, each runs in the sandbox and its answer is read, and a verifier picks the best.

- Generator prompt: TinyGSM's format, a function whose docstring is the question, after three worked GSM8K train
  problems in the same form (few-shot); the model writes the body. N samples per question at a temperature
  (each pass over the questions draws with its own seed).
- Execution: `slmkit.combine.sandbox` (a separate process per program, CPU/memory/time limits, no files,
  network or subprocesses); the answer is the function's return value.
- Labels: an answer is correct when it equals the gold number (GSM8K's "#### N") to 1e-6.
- Verifier: a small language model scores "Question ... Program ... Is the program's answer correct?" by the
  probability of " yes" against " no". It is trained with the training loop on generator samples for GSM8K
  train labelled by execution (`label_records` writes them; the loss falls on the answer word only).
- Report: first-sample accuracy, majority vote over the executed answers, verifier-best (the highest-scoring
  candidate among those that ran and gave an answer) and oracle pass@N (any candidate right).
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from slmkit.combine.sandbox import Isolation, SandboxLimits, resolve_isolation, run_programs
from slmkit.errors import SlmError

HEADER = 'def simple_math_problem() -> int:\n    """\n    {question}\n    """\n'
STOPS = ["\n\n", "\ndef ", "\nif __name__", "\nprint(", "```", "<|im_end|>", "<|endoftext|>"]  # bodies have no blank lines
EXAMPLES = [
    ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips "
     "did Natalia sell altogether in April and May?",
     "    clips_april = 48\n    clips_may = clips_april / 2\n    total_clips = clips_april + clips_may\n"
     "    result = total_clips\n    return result\n"),
    ("Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she "
     "earn?",
     "    hourly_rate = 12\n    minutes_worked = 50\n    earnings = hourly_rate * minutes_worked / 60\n"
     "    result = earnings\n    return result\n"),
    ("Betty is saving money for a new wallet which costs $100. Betty has only half of the money she needs. Her "
     "parents decided to give her $15 for that purpose, and her grandparents twice as much as her parents. How much "
     "more money does Betty need to buy the wallet?",
     "    wallet_cost = 100\n    betty_savings = wallet_cost / 2\n    parents_gift = 15\n"
     "    grandparents_gift = parents_gift * 2\n"
     "    still_needed = wallet_cost - betty_savings - parents_gift - grandparents_gift\n"
     "    result = still_needed\n    return result\n"),
]


def program_prompt(question: str, shots: int = 3) -> str:
    """The generator's prompt: `shots` worked examples (0-3; 0 for a generator fine-tuned on programs, such as
    recipes/gsm8k-programs.yaml's), then the question's function header (the model writes the body)."""
    if not 0 <= shots <= len(EXAMPLES):
        raise SlmError(f"--shots must be 0-{len(EXAMPLES)}, got {shots}")
    examples = "".join(HEADER.format(question=q) + body + "\n\n" for q, body in EXAMPLES[:shots])
    return examples + HEADER.format(question=" ".join(question.split()))


def gold_answer(doc: dict) -> float:
    """The gold number of a GSM8K item ('#### 1,234' at the end of its answer)."""
    m = re.search(r"####\s*(-?[\d,]*\.?\d+)", doc["answer"])
    if not m:
        raise SlmError(f"a GSM8K answer without '#### N': {doc['answer'][-80:]!r}")
    return float(m.group(1).replace(",", ""))


def parse_number(answer: str | None) -> float | None:
    """A program's answer as a number ('72', '72.0', '$1,234'), or None."""
    if answer is None:
        return None
    text = answer.strip().replace(",", "").lstrip("$")
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def matches(answer: float | None, gold: float) -> bool:
    return answer is not None and abs(answer - gold) <= 1e-6 * max(1.0, abs(gold))


@dataclass
class Candidate:
    program: str
    answer: float | None = None
    error: str | None = None  # why it has no answer: the sandbox's record
    correct: bool = False
    score: float | None = None  # the verifier's P(yes)


@dataclass
class Problem:
    question: str
    gold: float
    candidates: list[Candidate] = field(default_factory=list)

    def first(self) -> bool:
        return bool(self.candidates) and self.candidates[0].correct

    def majority(self) -> bool:
        votes = Counter(round(c.answer, 6) for c in self.candidates if c.answer is not None)
        return bool(votes) and matches(votes.most_common(1)[0][0], self.gold)  # ties: the earliest drawn

    def verifier_best(self) -> bool:
        ran = [c for c in self.candidates if c.answer is not None and c.score is not None]
        return bool(ran) and max(ran, key=lambda c: c.score).correct

    def oracle(self) -> bool:
        return any(c.correct for c in self.candidates)


def sample_programs(engine, tokenizer, questions: Sequence[str], n: int, temperature: float = 0.7,
                    max_tokens: int = 256, batch: int = 8, seed: int = 0, progress: bool = True,
                    shots: int = 3) -> list[list[str]]:
    """n programs per question: n passes, each a batched pass over the questions with its own seed."""
    from tqdm import tqdm

    from slmkit.engine import SamplingParams
    from slmkit.engine.text import generate_text

    if n < 1:
        raise SlmError(f"the number of candidates must be >= 1, got {n}")
    out: list[list[str]] = [[] for _ in questions]
    bar = tqdm(total=n * len(questions), desc="sampling programs", unit="program",
               disable=True if not progress else None)
    for k in range(n):
        params = SamplingParams(temperature=temperature, top_p=0.95, seed=seed + k)
        for s in range(0, len(questions), batch):
            prompts = [program_prompt(q, shots) for q in questions[s:s + batch]]
            for i, c in enumerate(generate_text(engine, tokenizer, prompts, max_tokens, params, STOPS)):
                out[s + i].append(HEADER.format(question=" ".join(questions[s + i].split())) + c.text.rstrip() + "\n")
            bar.update(len(prompts))
    bar.close()
    return out


def execute(problems: Sequence[Problem], limits: SandboxLimits | None = None, workers: int = 2,
            isolation: Isolation = "auto") -> str:
    """Run every candidate in the sandbox; fill in answer, error and correct. Returns the isolation they ran
    under ("bwrap", or "none" when the caller asked for an unisolated run)."""
    flat = [c for p in problems for c in p.candidates]
    mode = resolve_isolation(isolation)
    results = run_programs([c.program for c in flat], limits, workers, isolation)
    golds = [p.gold for p in problems for _ in p.candidates]
    for c, r, gold in zip(flat, results, golds):
        if r.ok:
            c.answer = parse_number(r.answer)
            c.error = None if c.answer is not None else f"not a number: {r.answer[:40]!r}"
        else:
            c.answer, c.error = None, r.error
        c.correct = matches(c.answer, gold)
    return mode


def load_candidates(path) -> list[Problem]:
    """Problems and their executed candidates from a rerank-candidates.jsonl (as `slm combine rerank -o` writes
    it), in file order: to score saved samples with a verifier without sampling them again."""
    import json
    from pathlib import Path

    problems: dict[str, Problem] = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise SlmError(f"cannot read candidates {path}: {e}") from None
    fields = {"program", "answer", "error", "correct"}
    for i, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            p = problems.setdefault(row["question"], Problem(row["question"], float(row["gold"])))
            p.candidates.append(Candidate(**{k: row[k] for k in fields}))
        except (ValueError, KeyError, TypeError):
            raise SlmError(f"{path}:{i} is not a candidate record (question, gold, program, answer, error, "
                           "correct); give a rerank-candidates.jsonl from `slm combine rerank -o`") from None
    if not problems:
        raise SlmError(f"{path} holds no candidates")
    return list(problems.values())


def verifier_prompt(question: str, program: str) -> str:
    return f"Question: {' '.join(question.split())}\nProgram:\n{program.rstrip()}\nIs the program's answer correct?"


def label_records(problems: Sequence[Problem], negatives_per_positive: float | None = 3.0,
                  seed: int = 0) -> list[dict]:
    """Verifier training records {"prompt", "response": " yes" | " no"} from executed candidates; negatives are
    subsampled to at most negatives_per_positive per positive (None keeps them all)."""
    import random

    pos = [(p, c) for p in problems for c in p.candidates if c.correct]
    neg = [(p, c) for p in problems for c in p.candidates if not c.correct]
    if negatives_per_positive is not None and pos:
        neg = random.Random(seed).sample(neg, min(len(neg), int(len(pos) * negatives_per_positive)))
    rows = [{"prompt": verifier_prompt(p.question, c.program), "response": " yes" if c.correct else " no"}
            for p, c in pos + neg]
    random.Random(seed).shuffle(rows)
    return rows


def score_candidates(lm, problems: Sequence[Problem]) -> None:
    """The verifier's P(" yes") against P(" no") for every candidate (lm: an EvalLM, e.g. SlmkitLM)."""
    flat = [(p, c) for p in problems for c in p.candidates]
    if not flat:
        raise SlmError("no candidates to score")
    requests = [(verifier_prompt(p.question, c.program), word) for p, c in flat for word in (" yes", " no")]
    scores = lm.loglikelihood(requests)
    for i, (_, c) in enumerate(flat):
        yes, no = scores[2 * i][0], scores[2 * i + 1][0]
        c.score = 1.0 / (1.0 + math.exp(no - yes))


@dataclass
class RerankReport:
    problems: int
    n: int
    first: float
    majority: float
    verifier_best: float | None
    oracle: float
    ran: float  # share of candidates that ran and gave a number
    failures: dict[str, int]  # sandbox outcomes of the candidates without an answer, by kind
    seconds: float = 0.0
    isolation: str | None = None  # how the programs were held: "bwrap" or "none" (unisolated); None: not run here

    def markdown(self) -> str:
        pct = lambda x: "-" if x is None else f"{100 * x:.1f}"  # noqa: E731
        return ("| problems | N | first sample | majority vote | verifier-best | oracle pass@N | candidates that "
                "ran |\n|---|---|---|---|---|---|---|\n"
                f"| {self.problems} | {self.n} | {pct(self.first)} | {pct(self.majority)} | "
                f"{pct(self.verifier_best)} | {pct(self.oracle)} | {pct(self.ran)} |")

    def held_by(self) -> str:
        return {"bwrap": "namespaces, as nobody", "none": "UNISOLATED (Python layers only)"}.get(self.isolation, "-")

    def write(self, out: str | Path, problems: Sequence[Problem]) -> list[Path]:
        """rerank.json (this report) and rerank-candidates.jsonl (every candidate with its problem), atomically."""
        import json

        from slmkit.paths import write_atomic

        out = Path(out)
        write_atomic(out / "rerank.json", json.dumps(dataclasses.asdict(self), indent=2) + "\n")
        write_atomic(out / "rerank-candidates.jsonl", "".join(
            json.dumps({"question": p.question, "gold": p.gold, **dataclasses.asdict(c)}) + "\n"
            for p in problems for c in p.candidates))
        return [out / "rerank.json", out / "rerank-candidates.jsonl"]


def _kind(error: str) -> str:
    for kind in ("forbidden", "syntax error", "timeout", "memory", "no answer", "not a number", "error"):
        if error.startswith(kind):
            return kind
    return error[:40] or "unknown"


def report(problems: Sequence[Problem], n: int, scored: bool, seconds: float = 0.0,
           isolation: str | None = None) -> RerankReport:
    if not problems:
        raise SlmError("no problems to report on")
    cands = [c for p in problems for c in p.candidates]
    kinds = Counter(_kind(c.error or "") for c in cands if c.answer is None)
    P = len(problems)
    return RerankReport(P, n, sum(p.first() for p in problems) / P, sum(p.majority() for p in problems) / P,
                        sum(p.verifier_best() for p in problems) / P if scored else None,
                        sum(p.oracle() for p in problems) / P, sum(c.answer is not None for c in cands) / len(cands),
                        dict(kinds), seconds, isolation)


def run(generator, tokenizer, docs: Sequence[dict], n: int, verifier_lm=None, temperature: float = 0.7,
        max_tokens: int = 256, batch: int = 8, seed: int = 0, limits: SandboxLimits | None = None,
        progress: bool = True, shots: int = 3, compile: bool = False,
        isolation: Isolation = "auto") -> tuple[list[Problem], RerankReport]:
    """Sample, execute, (score), report: the whole pipeline on GSM8K docs {"question", "answer"}."""
    from slmkit.engine import Engine

    if not docs:
        raise SlmError("no GSM8K problems (check --limit and the data)")
    resolve_isolation(isolation)  # refuse before sampling for minutes
    t0 = time.perf_counter()
    problems = [Problem(d["question"], gold_answer(d)) for d in docs]
    programs = sample_programs(Engine(generator, compile=compile), tokenizer, [p.question for p in problems], n, temperature,
                               max_tokens, batch, seed, progress, shots)
    for p, progs in zip(problems, programs):
        p.candidates = [Candidate(program) for program in progs]
    mode = execute(problems, limits, isolation=isolation)
    if verifier_lm is not None:
        score_candidates(verifier_lm, problems)
    return problems, report(problems, n, verifier_lm is not None, time.perf_counter() - t0, mode)
