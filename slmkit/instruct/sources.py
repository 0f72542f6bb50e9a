"""The instruction-tuning sources in the shared data folder, read into tasks: each task is a named list of
records (dicts of fields) with the task cluster it belongs to and whether its records carry a rationale.

- `t0`: T0's training mixture, 50k examples already written out by P3's prompt templates (instruct/t0_train_50k,
  283 templates, grouped by template; template_index.tsv gives each template's lines). A task is a P3 dataset; a
  record is one templated example (fields prompt, completion) and remembers its template.
- `flan_cot`: Flan 2022's chain-of-thought training sets (instruct/flan_cot/*_train.tsv: question, answer,
  rationale).
- `eval`: the train split of an evaluation task where the shared folder has one (CommonsenseQA); GSM8K's train
  split is flan_cot's gsm8k, so it is not read twice.

Clusters follow FLAN's (Wei et al. 2022, figure 3) where a dataset is in FLAN, T0's (Sanh et al. 2022) for the
rest: sentiment, paraphrase, topic classification, extractive and closed-book QA, multiple-choice QA,
commonsense, summarization, structure-to-text, and math. T0's training mixture has no NLI, coreference or
sentence-completion data (T0 held those out), so those clusters are empty here.
"""

from __future__ import annotations

import csv
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

from slmkit.errors import SlmError

SOURCES = ("t0", "flan_cot", "eval")

# P3 dataset (the prefix of a T0 template's name) -> cluster.
T0_CLUSTERS = {
    **dict.fromkeys(["amazon_polarity", "app_reviews", "imdb", "rotten_tomatoes", "yelp_review_full"], "sentiment"),
    **dict.fromkeys(["glue_mrpc", "glue_qqp", "paws_labeled_final"], "paraphrase"),
    **dict.fromkeys(["ag_news", "dbpedia_14", "trec"], "topic_classification"),
    **dict.fromkeys(["adversarial_qa_dbert", "adversarial_qa_dbidaf", "adversarial_qa_droberta", "duorc_ParaphraseRC",
                     "duorc_SelfRC", "quoref", "ropes"], "extractive_qa"),
    **dict.fromkeys(["kilt_tasks_hotpotqa", "wiki_qa"], "closed_book_qa"),
    **dict.fromkeys(["cosmos_qa", "dream", "quail", "quarel", "quartz", "qasc", "sciq", "wiki_hop_original", "wiqa"],
                    "multiple_choice_qa"),
    **dict.fromkeys(["commonsense_qa", "cos_e_v1.11", "social_i_qa"], "commonsense"),
    **dict.fromkeys(["cnn_dailymail_3.0.0", "cnn_dailymail_3_0_0", "gigaword", "multi_news", "samsum", "xsum"],
                    "summarization"),
    **dict.fromkeys(["common_gen", "wiki_bio"], "struct_to_text"),
}
# Flan CoT task -> cluster: ECQA is CommonsenseQA with explanations, so it goes where CommonsenseQA goes.
COT_CLUSTERS = {"aqua": "math", "gsm8k": "math", "ecqa": "commonsense", "sensemaking": "commonsense",
                "creak": "commonsense", "qasc": "multiple_choice_qa", "strategyqa": "closed_book_qa"}
EVAL_TRAIN = {"commonsense_qa_train": "commonsense"}
KNOWN_CLUSTERS = sorted({*T0_CLUSTERS.values(), *COT_CLUSTERS.values(), "nli", "coreference",
                         "sentence_completion"})


@dataclass
class Task:
    name: str  # "t0/imdb", "flan_cot/gsm8k", "eval/commonsense_qa_train"
    source: str
    cluster: str
    records: list[dict]
    fields: tuple[str, ...]
    rationale: bool = False  # records carry question, answer, rationale (chain of thought)
    fixed_templates: bool = False  # records are already templated (T0): each names its template in "_template"
    meta: dict = field(default_factory=dict)


def read_sources(root: Path, names: tuple[str, ...] = SOURCES) -> list[Task]:
    """The tasks of the named sources under the shared data folder `root`."""
    readers = {"t0": _t0, "flan_cot": _flan_cot, "eval": _eval_train}
    unknown = [n for n in names if n not in readers]
    if unknown:
        raise SlmError(f"unknown source {unknown[0]!r}; sources: {', '.join(SOURCES)}")
    tasks: list[Task] = []
    for name in names:
        tasks += readers[name](root)
    return tasks


def _need(path: Path) -> Path:
    if not path.exists():
        raise SlmError(f"{path} not found: point --data (or $SLMKIT_DATA) at the shared data folder")
    return path


def t0_dataset(template: str) -> str:
    """The P3 dataset a T0 template belongs to: the longest known prefix of its name."""
    best = max((d for d in T0_CLUSTERS if template.startswith(d + "_")), key=len, default=None)
    if best is None:
        raise SlmError(f"T0 template {template!r} belongs to no known P3 dataset; add it to T0_CLUSTERS")
    return best


def _t0(root: Path) -> list[Task]:
    folder = root / "instruct/t0_train_50k"
    index = _need(folder / "template_index.tsv")
    with open(index, encoding="utf-8", newline="") as f:
        spans = [(r["template"], int(r["first_line"]), int(r["num_lines"])) for r in csv.DictReader(f, delimiter="\t")]
    with gzip.open(_need(folder / "t0_train_50k_by_template.jsonl.gz"), "rt", encoding="utf-8") as f:
        lines = f.readlines()
    by_task: dict[str, list[dict]] = {}
    templates: dict[str, list[str]] = {}
    for template, first, n in spans:
        dataset = t0_dataset(template)
        short = template[len(dataset) + 1:]
        templates.setdefault(dataset, []).append(short)
        for line in lines[first - 1:first - 1 + n]:
            r = json.loads(line)
            prompt = r["prompt"]  # ends with the newline or space the completion follows
            completion = r["completion"].replace("<|endoftext|>", "").strip()
            if prompt.strip() and completion:
                by_task.setdefault(dataset, []).append(
                    {"prompt": prompt, "completion": completion, "_template": short,
                     "_inverted": _t0_inverted(short)})
    return [Task(f"t0/{d}", "t0", T0_CLUSTERS[d], recs, ("prompt", "completion"), fixed_templates=True,
                 meta={"templates": templates[d]}) for d, recs in by_task.items()]


# P3 templates that turn the task around (FLAN's "inverted" templates): the answer or the summary is given and
# the question, the document or the input is asked for. P3 marks these "original_task: false"; the 50k file
# keeps only the names, so they are recognised by name.
_INVERTED_MARKERS = ("generate_question", "Generate_the_question", "Jeopardy", "Write_a_dialogue", "reverse",
                     "build_story_around", "Generate_Question_from_Topic", "generate_subject", "generate_object",
                     "write_an_article", "expand_reverse", "generate_paraphrase", "generate_sentence",
                     "Topic_Prediction_Question_Only")
_INVERTED_NAMES = ("title", "Guess_Title_For_Context")  # duorc: a movie's title from its plot


def _t0_inverted(template: str) -> bool:
    return template in _INVERTED_NAMES or any(m.lower() in template.lower() for m in _INVERTED_MARKERS)


def _flan_cot(root: Path) -> list[Task]:
    folder = _need(root / "instruct/flan_cot")
    tasks = []
    for path in sorted(folder.glob("*_train.tsv")):
        name = path.name.removesuffix("_train.tsv")
        if name not in COT_CLUSTERS:
            raise SlmError(f"{path}: an unknown Flan CoT task; add it to COT_CLUSTERS")
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if len(r) >= 3]
        records = []
        for r in rows:
            q, a, why = (c.replace("\\n", "\n").replace("\\t", "\t").strip() for c in r[:3])  # the TSV's escapes
            if q and a and why:
                records.append({"question": q, "answer": a, "rationale": why})
        tasks.append(Task(f"flan_cot/{name}", "flan_cot", COT_CLUSTERS[name], records,
                          ("question", "answer", "rationale"), rationale=True))
    if not tasks:
        raise SlmError(f"{folder}: no *_train.tsv files")
    return tasks


def _eval_train(root: Path) -> list[Task]:
    path = _need(root / "eval/commonsenseqa/train_rand_split.jsonl")
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            choices = r["question"]["choices"]
            answer = next((c["text"] for c in choices if c["label"] == r["answerKey"]), None)
            if answer is None:
                continue
            records.append({"question": r["question"]["stem"].strip(), "answer": answer, "label": r["answerKey"],
                            "options": "\n".join(f"- {c['text']}" for c in choices),
                            "lettered": "\n".join(f"({c['label']}) {c['text']}" for c in choices)})
    return [Task("eval/commonsense_qa_train", "eval", EVAL_TRAIN["commonsense_qa_train"], records,
                 ("question", "answer", "label", "options", "lettered"))]
