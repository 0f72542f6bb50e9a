"""The instruction-tuning mixture (slm data instruct): held-out clusters, caps and examples-proportional draws,
format proportions, templates, few-shot exemplars, reserved items, errors; and CoT answer scoring."""

from __future__ import annotations

import gzip
import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from slmkit.errors import SlmError
from slmkit.eval.data import shared_data_dir
from slmkit.instruct.mixture import MixtureSpec, build, parse_formats, write
from slmkit.instruct.score import extract, kind, score
from slmkit.instruct.sources import Task, read_sources, t0_dataset
from slmkit.instruct.templates import load_templates


def cot_task(name: str, cluster: str, n: int) -> Task:
    recs = [{"question": f"{name} q{i}?", "answer": str(i % 7), "rationale": f"because {i}"} for i in range(n)]
    return Task(f"flan_cot/{name}", "flan_cot", cluster, recs, ("question", "answer", "rationale"), rationale=True)


def t0_task(name: str, cluster: str, n: int, templates: int = 3) -> Task:
    names = [f"tmpl{j}" for j in range(templates)]
    recs = [{"prompt": f"{name} {j} p{i}\n", "completion": f"c{i}", "_template": names[j], "_inverted": j == 2}
            for j in range(templates) for i in range(n // templates)]
    return Task(f"t0/{name}", "t0", cluster, recs, ("prompt", "completion"), fixed_templates=True,
                meta={"templates": names})


def tasks() -> list[Task]:
    return [cot_task("gsm8k", "math", 900), cot_task("ecqa", "commonsense", 600),
            t0_task("imdb", "sentiment", 300), t0_task("ag_news", "topic_classification", 1200),
            t0_task("social_i_qa", "commonsense", 600)]


def mix(**kw):
    return build(Path("."), MixtureSpec(**kw), tasks=tasks())


def test_a_held_out_cluster_never_reaches_the_mixture():
    m = mix(hold_out=("commonsense",), reserve=10)
    assert m.records and not [r for r in m.records if r["_cluster"] == "commonsense"]
    assert {r["_task"] for r in m.records} == {"flan_cot/gsm8k", "t0/imdb", "t0/ag_news"}
    assert m.stats["held_out_tasks"] == ["flan_cot/ecqa", "t0/social_i_qa"]
    texts = " ".join(r["prompt"] + r["response"] for r in m.records)
    assert "ecqa q" not in texts and "social_i_qa" not in texts  # not even as a few-shot exemplar
    assert {r["_task"] for r in m.reserved} == {"flan_cot/gsm8k"}  # held-out tasks are not reserved either


@pytest.mark.skipif(shared_data_dir() is None, reason="needs the shared data folder (../shared/data or $SLMKIT_DATA)")
def test_held_out_sentiment_on_the_real_sources():
    root = shared_data_dir()
    all_tasks = read_sources(root)
    sentiment = {t.name for t in all_tasks if t.cluster == "sentiment"}
    assert sentiment == {"t0/amazon_polarity", "t0/app_reviews", "t0/imdb", "t0/rotten_tomatoes",
                         "t0/yelp_review_full"}
    m = build(root, MixtureSpec(hold_out=("sentiment",), size=3000, reserve=50), tasks=all_tasks)
    assert len(m.records) == 3000
    assert not {r["_task"] for r in m.records} & sentiment
    held = {t.name: t for t in all_tasks}
    sentiment_prompts = {r["prompt"] for n in sentiment for r in held[n].records}
    assert not [r for r in m.records if r["prompt"] in sentiment_prompts]
    reserved = {(r["_task"], r["question"]) for r in m.reserved}
    assert len(reserved) == 7 * 50
    questions = {q for _, q in reserved}
    assert not [r for r in m.records if r["_task"].startswith("flan_cot/") and any(q in r["prompt"] for q in questions)]


def test_formats_appear_in_the_stated_proportions():
    weights = {"zero": 0.5, "few": 0.3, "cot": 0.2}
    m = build(Path("."), MixtureSpec(formats=weights, sources=("flan_cot",)),
              tasks=[cot_task("gsm8k", "math", 3000), cot_task("aqua", "math", 3000)])
    n = len(m.records)
    counts = Counter(r["_format"] for r in m.records)
    for f, w in weights.items():  # within 4 binomial standard errors
        assert abs(counts[f] / n - w) < 4 * math.sqrt(w * (1 - w) / n), (f, counts[f] / n)
    cot = [r for r in m.records if r["_format"] == "cot"]
    assert all(r["response"].endswith("So the answer is " + r["response"].rsplit(" ", 1)[-1]) for r in cot)
    assert all("because" in r["response"] for r in cot)  # the rationale comes first
    few = [r for r in m.records if r["_format"] == "few"]
    assert all(r["_shots"] == 3 and r["prompt"].count("\n\n") >= 3 for r in few)


def test_tasks_without_rationales_renormalise_to_zero_and_few_shot():
    m = mix(formats={"zero": 0.5, "few": 0.3, "cot": 0.2})
    t0 = [r for r in m.records if r["_task"].startswith("t0/")]
    counts = Counter(r["_format"] for r in t0)
    assert counts["cot"] == 0
    share = counts["few"] / len(t0)  # 0.3 / (0.5 + 0.3)
    assert abs(share - 0.375) < 4 * math.sqrt(0.375 * 0.625 / len(t0))
    assert {r["_format"] for r in mix(formats={"zero": 1.0}).records} == {"zero"}


def test_examples_proportional_draws_with_a_cap():
    m = mix(cap=500, size=1000)
    drawn = {k: v["drawn"] for k, v in m.stats["tasks"].items()}
    assert sum(drawn.values()) == len(m.records) == 1000
    # capped sizes: gsm8k 500, ecqa 500, imdb 300, ag_news 500, social_i_qa 500 (of 2300)
    capped = {"flan_cot/ecqa": 500, "flan_cot/gsm8k": 500, "t0/ag_news": 500, "t0/imdb": 300, "t0/social_i_qa": 500}
    assert {k: v["capped"] for k, v in m.stats["tasks"].items()} == capped
    assert all(abs(drawn[k] - 1000 * c / 2300) < 1 for k, c in capped.items())
    assert Counter(r["_task"] for r in m.records) == drawn
    full = mix(cap=100)
    assert Counter(r["_task"] for r in full.records) == dict.fromkeys(
        ["flan_cot/gsm8k", "flan_cot/ecqa", "t0/imdb", "t0/ag_news", "t0/social_i_qa"], 100)


def test_one_template_per_task_against_many():
    many = mix(formats={"zero": 0.6, "cot": 0.4})
    one = mix(templates="one", formats={"zero": 0.6, "cot": 0.4})
    per_task = lambda m: {t: {(r["_format"] == "cot", r["_template"]) for r in m.records if r["_task"] == t}  # noqa
                          for t in {r["_task"] for r in m.records}}
    assert all(len({tm for cot, tm in v if not cot}) == 1 and len({tm for cot, tm in v if cot}) <= 1
               for v in per_task(one).values())
    assert len({tm for _, tm in per_task(many)["flan_cot/gsm8k"]}) >= 8
    assert len({tm for _, tm in per_task(many)["t0/ag_news"]}) == 3
    assert any(r["_inverted"] for r in many.records) and not any(r["_inverted"] for r in one.records)
    # the same make-up either way: one template's fewer T0 examples are repeated to fill the task's quota
    assert Counter(r["_task"] for r in one.records) == Counter(r["_task"] for r in many.records)
    imdb = [r["prompt"] for r in one.records if r["_task"] == "t0/imdb"]
    assert len(imdb) == 300 and len(set(imdb)) == 100


def test_few_shot_exemplars_are_other_records_of_the_same_task_and_template():
    m = mix(formats={"few": 1.0}, shots=2)
    for r in m.records[:300]:
        parts = r["prompt"].split("\n\n")
        assert r["_shots"] == 2 and len(parts) >= 3
        if r["_task"].startswith("t0/"):
            name, j = r["_task"][3:], r["_template"][-1]
            assert all(p.startswith(f"{name} {j} p") for p in parts[:2])  # same task, same template
            assert parts[-1] not in parts[:2]


def test_the_same_seed_gives_the_same_mixture_and_another_a_different_one():
    assert mix(seed=3).records == mix(seed=3).records
    assert mix(seed=3).records != mix(seed=4).records


def test_reserved_items_stay_out_of_the_mixture():
    m = mix(reserve=40, formats={"zero": 1.0})
    reserved = {r["question"] for r in m.reserved}
    assert len(m.reserved) == 80
    assert not [r for r in m.records if any(q in r["prompt"] for q in reserved)]


@pytest.mark.parametrize("spec, message", [
    (dict(cap=0), "--cap must be at least 1"),
    (dict(hold_out=("nli",)), "no task of the sources .* is in cluster 'nli'"),
    (dict(hold_out=("sentimental",)), "not a task cluster"),
    (dict(hold_out=("math", "commonsense", "sentiment", "topic_classification")), "leaves no task"),
    (dict(size=10**6), "more than the"),
    (dict(formats={"fewshot": 1.0}), "unknown format 'fewshot'"),
    (dict(reserve=900), "takes every record"),
])
def test_bad_specs_fail_with_one_line(spec, message):
    with pytest.raises(SlmError, match=message):
        mix(**spec)


def test_a_template_naming_a_missing_field_is_refused(tmp_path):
    f = tmp_path / "t.json"
    mine = {"name": "mine", "prompt": "{question} {hint}", "response": "{answer}"}
    f.write_text(json.dumps({"flan_cot/gsm8k": [mine]}))
    with pytest.raises(SlmError, match=r"template 'mine' of flan_cot/gsm8k names \{hint\}.*fields: question"):
        build(Path("."), MixtureSpec(), load_templates(f), tasks=tasks())
    f.write_text(json.dumps({"flan_cot/gsm8k": [{"prompt": "{question", "response": "{answer}"}]}))
    with pytest.raises(SlmError, match="template 'user_0'"):
        build(Path("."), MixtureSpec(), load_templates(f), tasks=tasks())
    f.write_text(json.dumps({"t0/imdb": [{"prompt": "{prompt}", "response": "{completion}"}]}))
    with pytest.raises(SlmError, match="already templated"):
        build(Path("."), MixtureSpec(), load_templates(f), tasks=tasks())


def test_parse_formats():
    assert parse_formats("zero=0.5,few=0.3,cot=0.2") == {"zero": 0.5, "few": 0.3, "cot": 0.2}
    assert parse_formats("zero") == {"zero": 1.0}
    with pytest.raises(SlmError, match="not a number"):
        parse_formats("zero=half")


def test_t0_templates_map_to_their_datasets():
    assert t0_dataset("adversarial_qa_dbert_based_on") == "adversarial_qa_dbert"
    assert t0_dataset("glue_mrpc_equivalent") == "glue_mrpc"
    with pytest.raises(SlmError, match="no known P3 dataset"):
        t0_dataset("mystery_task_prompt")


def _tiny_data(root: Path) -> Path:
    cot = root / "instruct/flan_cot"
    cot.mkdir(parents=True)
    for name, answer in (("gsm8k", "12"), ("strategyqa", "yes")):
        rows = [f"Question {i} of {name}?\\nOptions: a, b\t{answer}\tStep {i}. Then more." for i in range(60)]
        (cot / f"{name}_train.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    t0 = root / "instruct/t0_train_50k"
    t0.mkdir(parents=True)
    lines = [json.dumps({"prompt": f"Review {i}: fine\nAnswer:\n", "completion": "Yes<|endoftext|>"})
             for i in range(20)]
    lines += [json.dumps({"prompt": f"News {i}\nTopic:\n", "completion": "Sports<|endoftext|>"}) for i in range(20)]
    with gzip.open(t0 / "t0_train_50k_by_template.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    (t0 / "template_index.tsv").write_text("template\tfirst_line\tnum_lines\nimdb_Movie_Expressed_Sentiment\t1\t20\n"
                                           "ag_news_classify\t21\t20\n", encoding="utf-8")
    return root


def slm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slmkit.cli", *args], capture_output=True, text=True)


def test_cli_writes_the_mixture_folder_and_refuses_bad_input(tmp_path):
    data = _tiny_data(tmp_path / "data")
    out = tmp_path / "mix"
    p = slm("data", "instruct", "--data", str(data), "--sources", "t0,flan_cot", "-o", str(out),
            "--hold-out", "sentiment", "--reserve", "10", "--seed", "1")
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 20 + 2 * 50 and not [r for r in rows if r["_cluster"] == "sentiment"]
    assert {r["_task"] for r in rows} == {"t0/ag_news", "flan_cot/gsm8k", "flan_cot/strategyqa"}
    assert all(r["response"] == "Sports" for r in rows if r["_task"] == "t0/ag_news")  # the marker is stripped
    assert all("\n" in r["prompt"] for r in rows if r["_task"].startswith("flan_cot"))  # the TSV's \n unescaped
    assert len((out / "reserved.jsonl").read_text().splitlines()) == 20
    stats = json.loads((out / "mixture.json").read_text())
    assert stats["held_out_tasks"] == ["t0/imdb"] and stats["records"] == len(rows)

    for args, message in ((["--cap", "0"], "--cap must be at least 1"),
                          (["--hold-out", "nli"], "no task of the sources"),
                          (["--formats", "zero=x"], "not a number")):
        bad = tmp_path / "bad"
        p = slm("data", "instruct", "--data", str(data), "--sources", "t0,flan_cot", "-o", str(bad), *args)
        assert p.returncode != 0 and message in p.stderr and "Traceback" not in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
        assert not bad.exists()
    p = slm("data", "instruct", "--data", str(tmp_path / "nothing"), "-o", str(tmp_path / "bad"))
    assert p.returncode != 0 and "not found" in p.stderr and not (tmp_path / "bad").exists()


def test_write_is_atomic_and_refuses_a_foreign_folder(tmp_path):
    out = tmp_path / "mix"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SlmError):
        write(mix(cap=10), out)
    assert (out / "notes.txt").read_text() == "mine"
    write(mix(cap=10), tmp_path / "ok")
    write(mix(cap=20), tmp_path / "ok")  # a previous mixture is replaced
    assert len((tmp_path / "ok" / "train.jsonl").read_text().splitlines()) == 100


def test_answers_are_read_from_chain_of_thought_text():
    assert kind("12") == "number" and kind("yes") == "yesno" and kind("(C)") == "letter" and kind("cake") == "text"
    assert extract("3 + 4 = 7. So the answer is 7.", "number") == "7"
    assert extract("It costs $1,200 in all. So the answer is $1,200.", "number") == "1200"
    assert extract("5 apples and 6 pears make 11", "number") == "11"  # no phrase: the last number
    assert extract("Caesar had three children. So the answer is no.", "yesno") == "no"
    assert extract("Yes, because it floats", "yesno") == "yes"
    assert extract("The ratio is 2:2:1. So the answer is (C).", "letter") == "(C)"
    assert extract("A bloody mess is covered in blood. So the answer is bloody mess.", "text") == "bloody mess"
    assert extract("no idea", "text") is None
    s, rows = score(["So the answer is 7.", "So the answer is 8.", "nothing here"], ["7", "7", "7"])
    assert (s.n, s.correct, s.answered) == (3, 1, 2)
    assert abs(s.stderr - math.sqrt((1 / 3) * (2 / 3) / 2)) < 1e-12
    assert rows[0]["correct"] and not rows[1]["correct"]
