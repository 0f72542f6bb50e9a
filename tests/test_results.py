"""Typed results and the named precisions: a result's file reads back as the same object, another kind or a newer
schema is refused with one line, and every precision name means one thing (the registry) everywhere."""

from __future__ import annotations

import dataclasses
import json

import pytest

from slmkit.bench.results import BenchRun
from slmkit.errors import SlmError
from slmkit.eval.results import EvalRun
from slmkit.report import load_result
from slmkit.results import SCHEMA
from slmkit.runtime.precision import PRECISIONS, name_of, precision


def _eval_run() -> EvalRun:
    return EvalRun(model="m", backend="slmkit", precision="int4+head",
                   results={"0": {"arc_easy": {"acc": 0.5, "acc_stderr": 0.1}}}, groups={"0": {}},
                   data={"arc_easy": {"source": "shared", "eval_split": "test", "n": 2}}, timings={},
                   shots=[0], limit=2, seeds={"fewshot": 1234}, versions={"torch": "x"}, machine={"cpus": 2})


def test_results_round_trip_through_their_files(tmp_path):
    run = _eval_run()
    js, md = run.write(tmp_path)
    back = load_result(js)
    assert isinstance(back, EvalRun) and back == run
    assert json.loads(js.read_text())["kind"] == "eval" and "| arc_easy | acc | 50.0 ± 10.0 |" in md.read_text()
    bench = BenchRun(model="m", source="m", config_name="c", rows=[], machine={"device": "cpu"})
    path = bench.write(tmp_path / "b") / "bench.json"
    assert load_result(path) == bench


def test_results_refuse_the_wrong_kind_a_newer_schema_and_old_files(tmp_path):
    data = _eval_run().to_json()
    with pytest.raises(SlmError, match="is not a bench result"):
        BenchRun.from_json(data, "x.json")
    with pytest.raises(SlmError, match="upgrade slmkit"):
        EvalRun.from_json({**data, "schema": SCHEMA + 1})
    old = tmp_path / "results.json"
    old.write_text(json.dumps({k: v for k, v in data.items() if k not in ("kind", "schema")}))
    with pytest.raises(SlmError, match="need their step rerun"):
        load_result(old)


def test_precision_names_are_one_registry():
    from slmkit.quant.quantize import QuantSpec

    assert list(PRECISIONS) == ["fp32", "bf16", "fp16", "int8", "int8+head", "int4", "int4+head"]
    assert precision("int8").quant_spec() == QuantSpec(8, None, True, False)
    assert precision("int4+head").quant_spec(64, False) == QuantSpec(4, 64, False, True)
    assert precision("fp16").quant_spec() is None
    for name, p in PRECISIONS.items():  # a model quantised by a precision reports that precision's name
        assert name_of(p.dtype, p.quant_spec()) == name
    with pytest.raises(SlmError, match="unknown precision int2"):
        precision("int2")


def test_the_cost_model_tells_int8_from_int8_with_its_head():
    from slmkit.bench.costmodel import predict
    from slmkit.model.config import ModelConfig
    from tests.test_bench import _synthetic_calibration

    cal = _synthetic_calibration()
    config = ModelConfig.from_name("SmolLM2-135M")  # tied embeddings: +head adds an int8 copy of the head
    plain, head = predict(config, cal, "int8"), predict(config, cal, "int8+head")
    assert head.decode_s[0] < plain.decode_s[0]  # the head streams 1 byte per weight instead of 4
    assert head.weights_mb > plain.weights_mb


def test_a_report_keeps_a_model_and_its_adapter_apart():
    """The same base evaluated bare and with a LoRA adapter (slm eval --adapter) is two rows, labelled apart, and the
    adapter survives the result file."""
    from slmkit.report import merge

    base = _eval_run()
    tuned = dataclasses.replace(base, adapter="runs/x/run-flan/adapter",
                                results={"0": {"arc_easy": {"acc": 0.75, "acc_stderr": 0.1}}})
    assert EvalRun.from_json(tuned.to_json()).adapter == "runs/x/run-flan/adapter"
    rows = {r.model: r for r in merge([base, tuned], [])}
    assert set(rows) == {"m", "m+run-flan"}
    assert rows["m"].tasks["arc_easy"] == 0.5 and rows["m+run-flan"].tasks["arc_easy"] == 0.75
    assert rows["m+run-flan"].adapter == "runs/x/run-flan/adapter" and rows["m"].adapter is None


def test_a_report_puts_pruned_speed_and_pruned_accuracy_in_one_row():
    """slm eval --prune-keep R names its backend slmkit-classifier+pruneR; slm bench --prune-keep R's rows of the same
    classifier land in that row, its keep-1 rows in the unpruned classifier's, and a decoder's pruned prefill in
    slmkit+pruneR (its uncached keep-1 peer is left out: the engine's prefill is the row's)."""
    from slmkit.report import merge

    pruned = dataclasses.replace(_eval_run(), backend="slmkit-classifier+prune0.5", precision="fp32",
                                 results={"0": {"sst2": {"acc": 0.8, "acc_stderr": 0.02}}})

    def rec(keep, forward, ts):
        return dict(backend="slmkit", precision="fp32", test=f"pp64@keep{keep:g}", n_prompt=64, n_gen=0, n_depth=0,
                    avg_ts=ts, ttft_ms=64e3 / ts, keep=keep, token_layers=1.0 if keep == 1 else 0.7,
                    forward=forward, peak_rss_mb=100.0, weights_mb=10.0)

    classifier = BenchRun(model="m", source="m", config_name="c", machine={"device": "cpu"},
                          rows=[rec(1.0, "classifier", 1000.0), rec(0.5, "classifier", 1300.0)])
    decoder = BenchRun(model="d", source="d", config_name="c", machine={"device": "cpu"},
                       rows=[dict(rec(1.0, "prefill", 500.0), test="pp64", forward=None),
                             rec(1.0, "prefill", 400.0), rec(0.5, "prefill", 450.0)])
    decoder.rows[0].pop("keep")
    rows = {(r.model, r.backend): r for r in merge([pruned], [classifier, decoder])}
    assert set(rows) == {("m", "slmkit-classifier"), ("m", "slmkit-classifier+prune0.5"), ("d", "slmkit"),
                         ("d", "slmkit+prune0.5")}
    both = rows["m", "slmkit-classifier+prune0.5"]
    assert both.tasks["sst2"] == 0.8 and both.prefill_tok_s == 1300.0
    assert rows["m", "slmkit-classifier"].prefill_tok_s == 1000.0
    assert rows["d", "slmkit"].prefill_tok_s == 500.0 and rows["d", "slmkit+prune0.5"].prefill_tok_s == 450.0
