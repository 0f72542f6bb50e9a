"""Task definitions equal to lm-evaluation-harness's tasks of the same names (lm_eval/tasks/*, v0.4.13):
the same document fields, prompt text, choices, targets, delimiters, splits, few-shot sampler and metrics.

Each function below is the Python of the corresponding lm-eval YAML/Jinja template; the parity test
(tests/test_eval_parity.py) runs lm-eval itself on the same documents and compares every request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from slmkit.errors import SlmError

Doc = dict[str, Any]


@dataclass(frozen=True)
class Task:
    name: str
    output_type: str  # multiple_choice | loglikelihood | loglikelihood_rolling | generate_until
    doc_to_text: Callable[[Doc], Any]
    doc_to_target: Callable[[Doc], Any]
    doc_to_choice: Callable[[Doc], list[str]] | None = None
    process_docs: Callable[[Doc], Doc] | None = None
    training_split: str | None = None
    validation_split: str | None = None
    test_split: str | None = None
    fewshot_split: str | None = None
    sampler: str = "default"  # lm-eval's ContextSampler ("default") or FirstNSampler ("first_n")
    description: Callable[[Doc], str] | None = None
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    multiple_input: bool = False  # winogrande: the choices go in the context, the target is shared
    metrics: tuple[str, ...] = ("acc",)
    main_metric: str = "acc"
    until: tuple[str, ...] = ()
    max_gen_toks: int = 256
    default_shots: int = 0
    data_key: str = ""  # the data loader's name for it (default: name)
    lm_eval_yaml: str = ""  # lm-eval's task file (relative to lm_eval/tasks), for the parity harness
    meta: dict = field(default_factory=dict)
    # what a classification head reads of a document (text, or a text pair); its label i is the task's choice i.
    # None: not a fixed-label task (a classifier is not scored on it)
    classify: Callable[[Doc], tuple[str, str | None]] | None = None

    @property
    def data_name(self) -> str:
        return self.data_key or self.name


# --- helpers equal to lm-eval's per-task utils ------------------------------------------------------------


def _hellaswag_pre(text: str) -> str:  # lm_eval/tasks/hellaswag/utils.py: preprocess
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def _hellaswag_doc(doc: Doc) -> Doc:
    ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    return {**doc, "query": _hellaswag_pre(doc["activity_label"] + ": " + ctx),
            "choices": [_hellaswag_pre(e) for e in doc["endings"]], "gold": int(doc["label"])}


def _copa_choice(choice: str) -> str:  # lm_eval/tasks/super_glue/copa/utils.py: convert_choice
    return choice[0].lower() + choice[1:]


def _copa_text(doc: Doc) -> str:  # the premise without its period, joined by the question's connector
    connector = {"cause": "because", "effect": "therefore"}[doc["question"]]
    return doc["premise"].strip()[:-1] + f" {connector}"


def _winogrande_choices(doc: Doc) -> list[str]:
    idx = doc["sentence"].index("_")
    return [doc["sentence"][:idx] + opt for opt in (doc["option1"], doc["option2"])]


def wikitext_detokenizer(doc: Doc) -> str:  # lm_eval/tasks/wikitext/preprocess_wikitext.py
    string = doc["page"]
    string = string.replace("s '", "s'")
    string = re.sub(r"/' [0-9]/", r"/'[0-9]/", string)
    string = string.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
    for p in (":", ";", ".", "!", "?", ","):
        string = string.replace(f" {p} ", f"{p} ")
    string = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", string)
    string = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", string)
    string = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", string)
    string = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', string)
    string = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", string)
    string = string.replace("= = = =", "====").replace("= = =", "===").replace("= =", "==")
    string = string.replace(" " + chr(176) + " ", chr(176))
    string = string.replace(" \n", "\n").replace("\n ", "\n")
    string = string.replace(" N ", " 1 ").replace(" 's", "'s")
    return string


def _letters(doc: Doc, n: int) -> str:
    return "".join(f"\n{'ABCDE'[i]}. {doc['choices']['text'][i]}" for i in range(n))


# --- the tasks --------------------------------------------------------------------------------------------

MMLU_CATEGORIES = {  # lm_eval/tasks/mmlu/default/*.yaml tags
    "stem": "abstract_algebra anatomy astronomy college_biology college_chemistry college_computer_science "
            "college_mathematics college_physics computer_security conceptual_physics electrical_engineering "
            "elementary_mathematics high_school_biology high_school_chemistry high_school_computer_science "
            "high_school_mathematics high_school_physics high_school_statistics machine_learning",
    "other": "business_ethics clinical_knowledge college_medicine global_facts human_aging management marketing "
             "medical_genetics miscellaneous nutrition professional_accounting professional_medicine virology",
    "social_sciences": "econometrics high_school_geography high_school_government_and_politics "
                       "high_school_macroeconomics high_school_microeconomics high_school_psychology "
                       "human_sexuality professional_psychology public_relations security_studies sociology "
                       "us_foreign_policy",
    "humanities": "formal_logic high_school_european_history high_school_us_history high_school_world_history "
                  "international_law jurisprudence logical_fallacies moral_disputes moral_scenarios philosophy "
                  "prehistory professional_law world_religions",
}
MMLU_SUBJECTS = sorted(s for v in MMLU_CATEGORIES.values() for s in v.split())


def _mmlu(subject: str) -> Task:
    pretty = subject.replace("_", " ")
    return Task(
        f"mmlu_{subject}", "multiple_choice",
        doc_to_text=lambda d: (f"{d['question'].strip()}\nA. {d['choices'][0]}\nB. {d['choices'][1]}\n"
                               f"C. {d['choices'][2]}\nD. {d['choices'][3]}\nAnswer:"),
        doc_to_choice=lambda d: ["A", "B", "C", "D"], doc_to_target=lambda d: d["answer"],
        test_split="test", fewshot_split="dev", sampler="first_n",
        description=lambda d: f"The following are multiple choice questions (with answers) about {pretty}.\n\n",
        lm_eval_yaml=f"mmlu/default/mmlu_{subject}.yaml")


_ARC = dict(
    doc_to_text=lambda d: f"Question: {d['question']}\nAnswer:",
    doc_to_target=lambda d: d["choices"]["label"].index(d["answerKey"]),
    doc_to_choice=lambda d: d["choices"]["text"],
    training_split="train", validation_split="validation", test_split="test",
    metrics=("acc", "acc_norm"), main_metric="acc_norm")

TASKS: dict[str, Task] = {t.name: t for t in [
    Task("hellaswag", "multiple_choice", process_docs=_hellaswag_doc,
         doc_to_text=lambda d: d["query"], doc_to_target=lambda d: d["gold"], doc_to_choice=lambda d: d["choices"],
         training_split="train", validation_split="validation", metrics=("acc", "acc_norm"), main_metric="acc_norm",
         lm_eval_yaml="hellaswag/hellaswag.yaml"),
    Task("winogrande", "multiple_choice", multiple_input=True,
         doc_to_text=lambda d: {"1": 0, "2": 1}[d["answer"]],
         doc_to_target=lambda d: d["sentence"][d["sentence"].index("_") + 1:].strip(),
         doc_to_choice=_winogrande_choices, training_split="train", validation_split="validation",
         lm_eval_yaml="winogrande/default.yaml"),
    Task("piqa", "multiple_choice", doc_to_text=lambda d: f"Question: {d['goal']}\nAnswer:",
         doc_to_target=lambda d: d["label"], doc_to_choice=lambda d: [d["sol1"], d["sol2"]],
         training_split="train", validation_split="validation", metrics=("acc", "acc_norm"), main_metric="acc_norm",
         lm_eval_yaml="piqa/piqa.yaml"),
    Task("social_iqa", "multiple_choice", doc_to_text=lambda d: f"Q: {d['context']} {d['question']}\nA:",
         doc_to_target=lambda d: int(d["label"]) - 1,
         doc_to_choice=lambda d: [d["answerA"], d["answerB"], d["answerC"]],
         training_split="train", validation_split="validation", lm_eval_yaml="siqa/siqa.yaml"),
    Task("openbookqa", "multiple_choice", doc_to_text=lambda d: d["question_stem"],
         doc_to_target=lambda d: d["choices"]["label"].index(d["answerKey"].lstrip()),
         doc_to_choice=lambda d: d["choices"]["text"],
         training_split="train", validation_split="validation", test_split="test",
         metrics=("acc", "acc_norm"), main_metric="acc_norm", lm_eval_yaml="openbookqa/openbookqa.yaml"),
    Task("arc_easy", "multiple_choice", lm_eval_yaml="arc/arc_easy.yaml", **_ARC),
    Task("arc_challenge", "multiple_choice", lm_eval_yaml="arc/arc_challenge.yaml", **_ARC),
    Task("boolq", "multiple_choice", doc_to_text=lambda d: f"{d['passage']}\nQuestion: {d['question']}?\nAnswer:",
         doc_to_target=lambda d: d["label"], doc_to_choice=lambda d: ["no", "yes"],
         training_split="train", validation_split="validation", lm_eval_yaml="super_glue/boolq/default.yaml",
         classify=lambda d: (d["question"], d["passage"])),
    Task("commonsense_qa", "multiple_choice",
         doc_to_text=lambda d: f"Question: {d['question'].strip()}{_letters(d, 5)}\nAnswer:",
         doc_to_target=lambda d: d["answerKey"], doc_to_choice=lambda d: ["A", "B", "C", "D", "E"],
         training_split="train", validation_split="validation", lm_eval_yaml="commonsense_qa/default.yaml"),
    Task("sst2", "multiple_choice",
         doc_to_text=lambda d: f"{d['sentence']}\nQuestion: Is this sentence positive or negative?\nAnswer:",
         doc_to_target=lambda d: d["label"], doc_to_choice=lambda d: ["negative", "positive"],
         training_split="train", validation_split="validation", lm_eval_yaml="glue/sst2/default.yaml",
         classify=lambda d: (d["sentence"], None)),
    # SuperGLUE / GLUE: the tasks PET and GPT-3 report (few-shot pools: FewGLUE's 32 examples, slm eval --fewshot-file)
    Task("rte", "multiple_choice",
         doc_to_text=lambda d: f"{d['sentence1']}\nQuestion: {d['sentence2']} True or False?\nAnswer:",
         doc_to_target=lambda d: d["label"], doc_to_choice=lambda d: ["True", "False"],
         training_split="train", validation_split="validation", lm_eval_yaml="glue/rte/default.yaml",
         classify=lambda d: (d["sentence1"], d["sentence2"])),
    Task("cb", "multiple_choice",
         doc_to_text=lambda d: f"{d['premise']}\nQuestion: {d['hypothesis']}. True, False, or Neither?\nAnswer:",
         doc_to_target=lambda d: d["label"], doc_to_choice=lambda d: ["True", "False", "Neither"],
         training_split="train", validation_split="validation", lm_eval_yaml="super_glue/cb/default.yaml",
         classify=lambda d: (d["premise"], d["hypothesis"])),
    Task("copa", "multiple_choice", doc_to_text=_copa_text,
         doc_to_target=lambda d: " " + _copa_choice(d["choice1"] if d["label"] == 0 else d["choice2"]),
         doc_to_choice=lambda d: [" " + _copa_choice(d["choice1"]), " " + _copa_choice(d["choice2"])],
         training_split="train", validation_split="validation", lm_eval_yaml="super_glue/copa/default.yaml"),
    Task("lambada_openai", "loglikelihood", doc_to_text=lambda d: " ".join(d["text"].split(" ")[:-1]),
         doc_to_target=lambda d: " " + d["text"].split(" ")[-1], test_split="test",
         metrics=("perplexity", "acc"), lm_eval_yaml="lambada/lambada_openai.yaml"),
    Task("wikitext", "loglikelihood_rolling", doc_to_text=lambda d: "", doc_to_target=wikitext_detokenizer,
         training_split="train", validation_split="validation", test_split="test",
         metrics=("word_perplexity", "byte_perplexity", "bits_per_byte"), main_metric="word_perplexity",
         lm_eval_yaml="wikitext/wikitext.yaml"),
    Task("gsm8k", "generate_until", doc_to_text=lambda d: f"Question: {d['question']}\nAnswer:",
         doc_to_target=lambda d: d["answer"], training_split="train", fewshot_split="train", test_split="test",
         metrics=("exact_match,strict-match", "exact_match,flexible-extract"), main_metric="exact_match,strict-match",
         until=("Question:", "</s>", "<|im_end|>"), max_gen_toks=256, default_shots=5,
         lm_eval_yaml="gsm8k/gsm8k.yaml"),
    *[_mmlu(s) for s in MMLU_SUBJECTS],
]}

# Groups: lm-eval's (mmlu and its categories: size-weighted means of the subjects) and the survey's capability
# groups (unweighted means of each member's main metric; arXiv 2409.15790, section 4.1).
MMLU_GROUPS = {"mmlu_" + k: [f"mmlu_{s}" for s in v.split()] for k, v in MMLU_CATEGORIES.items()}
MMLU_GROUPS["mmlu"] = [f"mmlu_{s}" for s in MMLU_SUBJECTS]
SURVEY_GROUPS = {
    "commonsense_reasoning": ["hellaswag", "winogrande", "piqa", "social_iqa", "openbookqa", "boolq",
                              "commonsense_qa"],
    "problem_solving": ["arc_easy", "arc_challenge", "mmlu"],
    "math": ["gsm8k"],
}
ALIASES = {"mmlu": MMLU_GROUPS["mmlu"], **{k: v for k, v in MMLU_GROUPS.items()},
           **{k: [t for m in v for t in (MMLU_GROUPS["mmlu"] if m == "mmlu" else [m])]
              for k, v in SURVEY_GROUPS.items()},
           "all": [t for t in TASKS]}


def resolve(names: list[str]) -> list[Task]:
    """Tasks for names of tasks or groups (mmlu, mmlu_stem, commonsense_reasoning, all, ...), in order, once."""
    out: list[str] = []
    for name in names:
        if name in TASKS:
            members = [name]
        elif name in ALIASES:
            members = ALIASES[name]
        else:
            singles = [t for t in TASKS if not t.startswith("mmlu_")]
            raise SlmError(f"unknown task {name!r}; tasks: {', '.join(singles)}, mmlu_<subject> (57); "
                           f"groups: {', '.join(ALIASES)}")
        out += [m for m in members if m not in out]
    return [TASKS[n] for n in out]
