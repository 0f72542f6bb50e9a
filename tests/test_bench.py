"""`slm bench`: every backend through its worker process on a tiny model, the output formats, the cost model's
calibration and predictions, and bad input."""

from __future__ import annotations

import csv
import importlib.util
import json

import numpy as np
import pytest

from slmkit.bench.costmodel import Calibration, calibrate, gemm_seconds, matvec_seconds, predict
from slmkit.bench.measure import percentile
from slmkit.cli import main
from slmkit.model.config import ModelConfig, from_name
from tests.test_errors import assert_one_line, run_cli

HAS_LLAMACPP = importlib.util.find_spec("llama_cpp") is not None


def test_percentile_matches_numpy():
    xs = list(np.random.default_rng(0).random(37))
    for q in (0, 50, 90, 99, 100):
        assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))


@pytest.mark.slow
def test_bench_runs_every_backend_and_writes_table_json_csv(tiny_eval_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SLMKIT_CACHE", str(tmp_path / "cache"))
    backends = "slmkit,transformers" + (",llamacpp" if HAS_LLAMACPP else "")
    out = tmp_path / "out"
    rc = main(["bench", tiny_eval_dir, "--backends", backends, "--precisions", "fp32,int8", "--no-compile",
               "--prompts", "8,16", "--depths", "0,8", "--n-gen", "4", "--repeats", "2", "--warmup", "0",
               "--threads", "1", "-o", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    result = json.loads((out / "bench.json").read_text())
    runs = {(r["backend"], r["precision"]) for r in result["rows"]}
    expected = {("slmkit", "fp32"), ("slmkit", "int8"), ("transformers", "fp32")}
    if HAS_LLAMACPP:
        expected |= {("llamacpp", "f32"), ("llamacpp", "q8_0")}
    assert runs == expected, result["errors"]
    assert any("transformers int8" in s for s in result["skipped"])
    for r in result["rows"]:  # llama-bench's fields, filled
        for key in ("model_filename", "n_threads", "n_prompt", "n_gen", "n_depth", "avg_ts", "stddev_ts", "avg_ns",
                    "stddev_ns", "samples_ts"):
            assert key in r, key
        assert r["avg_ts"] > 0 and len(r["samples_ts"]) == 2 and r["n_threads"] == 1
        assert r["weights_mb"] > 0 and r["kv_cache_mb"] > 0 and r["peak_rss_mb"] > 0
        if r["n_gen"]:
            assert r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and len(r["tokens"]) == 5
    tests = {r["test"] for r in result["rows"]}
    assert tests == {"pp8", "pp16", "tg4@d0", "tg4@d8"}
    decode = {(r["backend"], r["precision"], r["test"]): r["tokens"] for r in result["rows"] if r["n_gen"]}
    for test in ("tg4@d0", "tg4@d8"):  # same weights, same greedy tokens
        assert decode[("slmkit", "fp32", test)] == decode[("transformers", "fp32", test)]
    rows = list(csv.DictReader((out / "bench.csv").open()))
    assert len(rows) == len(result["rows"]) and rows[0]["backend"] and float(rows[0]["avg_ts"]) > 0
    md = (out / "bench.md").read_text()
    assert "| slmkit | fp32 |" in md and "| transformers | fp32 |" in md and "pp16 tok/s" in md
    assert "| slmkit | fp32 |" in captured.out


def _synthetic_calibration() -> Calibration:
    """A machine with 20 GB/s one-row linears plus 10 us a call, 100 GFLOP/s GEMMs and fixed overheads."""
    from slmkit.bench.costmodel import GEMM_IN, GEMM_OUT, GEMM_ROWS, MATVEC_IN, MATVEC_OUT, TRAFFIC

    cal = Calibration(device="cpu", threads=1, machine="synthetic", stream_gbs=30.0, c_layer=50e-6, c_step=100e-6,
                      c_layer_prefill=80e-6, c_prefill=200e-6)
    for p in ("fp32", "int8"):
        cal.matvec[p] = {f"{i}x{o}": 10e-6 + i * o * TRAFFIC[p] / 20e9 for i in MATVEC_IN for o in MATVEC_OUT}
        cal.gemm[p] = {str(m): {f"{i}x{o}": 2 * m * i * o / 100e9 for i in GEMM_IN for o in GEMM_OUT}
                       for m in GEMM_ROWS}
    return cal


def test_cost_model_interpolates_its_grid_and_follows_architecture():
    cal = _synthetic_calibration()
    assert matvec_seconds(cal, "fp32", 2048, 8192) == pytest.approx(cal.matvec["fp32"]["2048x8192"])
    assert gemm_seconds(cal, "fp32", 128, 512, 2048) == pytest.approx(2 * 128 * 512 * 2048 / 100e9)
    assert matvec_seconds(cal, "fp32", 512, 1000) < matvec_seconds(cal, "fp32", 512, 1100)  # monotone between
    base = dict(vocab_size=32000, n_layer=12, d_model=512, n_head=8, n_kv_head=8, intermediate_size=1408,
                context_length=2048)
    p = predict(ModelConfig(**base), cal)
    deeper = predict(ModelConfig(**{**base, "n_layer": 48, "d_model": 256, "n_head": 4, "n_kv_head": 4,
                                    "intermediate_size": 704}), cal)  # about the same block parameters
    big_vocab = predict(ModelConfig(**{**base, "vocab_size": 150000}), cal)
    gqa = predict(ModelConfig(**{**base, "n_kv_head": 2}), cal)
    int8 = predict(ModelConfig(**base), cal, "int8")
    assert deeper.decode_s[0] > p.decode_s[0]  # per-layer costs: depth costs latency at equal size
    assert big_vocab.decode_s[0] > p.decode_s[0] and big_vocab.weights_mb > p.weights_mb
    assert gqa.kv_cache_mb == pytest.approx(p.kv_cache_mb / 4) and gqa.decode_s[512] < p.decode_s[512]
    assert int8.decode_s[0] < p.decode_s[0] and int8.weights_mb < p.weights_mb
    assert p.prefill_s[32] < p.prefill_s[128] < p.prefill_s[512]
    assert p.decode_s[0] < p.decode_s[512]  # the KV cache read grows with depth


def test_calibrate_measures_and_predict_uses_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SLMKIT_CACHE", str(tmp_path))
    cal = calibrate("cpu", precisions=["fp32"], stream_bytes=4 * 2**20)
    assert cal.stream_gbs > 0 and cal.matvec["fp32"] and cal.gemm["fp32"]
    assert all(t > 0 for t in cal.matvec["fp32"].values())
    small = ModelConfig.from_name("SmolLM2-135M")
    pred = predict(small, cal)
    assert all(v > 0 for v in list(pred.prefill_s.values()) + list(pred.decode_s.values()))
    assert pred.weights_mb == pytest.approx(small.vocab_size * 576 * 4 / 2**20 + 30 * (
        576 * 960 + 576 * 576 + 576 * 3072 + 1536 * 576) * 4 / 2**20, rel=1e-6)  # tied head counted once
    rc = main(["bench", "--predict", "SmolLM2-360M", "--precisions", "fp32"])  # reads the saved calibration
    out = capsys.readouterr().out
    assert rc == 0 and "predicted for preset SmolLM2-360M" in out and "| fp32 |" in out


@pytest.mark.parametrize("argv, needle", [
    (["bench", "--precisions", "fp64"], "unknown precision fp64"),
    (["bench", "--backends", "vllm"], "unknown backend vllm"),
    (["bench", "--prompts", "8,x"], "--prompts: must be comma-separated whole numbers"),
    (["bench", "--n-gen", "0"], "must be >= 1"),
])
def test_bench_bad_input_is_one_line(capsys, argv, needle):
    assert_one_line(*run_cli(capsys, *argv), needle)


def test_bench_refuses_a_model_that_does_not_exist(capsys, tmp_path):
    rc, err = run_cli(capsys, "bench", str(tmp_path / "nope"), "--backends", "slmkit")
    assert_one_line(rc, err, "nope")


def test_predict_has_a_row_per_precision_for_a_config():
    cal = _synthetic_calibration()
    config = from_name("Qwen2-0.5B")
    for precision in ("fp32", "int8"):
        pred = predict(config, cal, precision)
        assert pred.decode_s[0] > 0 and pred.weights_mb > 0
    with pytest.raises(Exception, match="no int4 kernel measurement"):
        predict(config, cal, "int4")


def _tiny_dir(tmp_path, name: str, **kw) -> str:
    import slmkit
    from slmkit.checkpoint import save

    model = slmkit.init_model(slmkit.from_name(name, **kw), device="cpu", seed=0)
    path = tmp_path / name
    save(model, path)
    return str(path)


def test_bench_times_pruned_forwards_beside_the_unpruned_one(tiny_eval_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["bench", tiny_eval_dir, "--backends", "slmkit", "--precisions", "fp32", "--no-compile",
               "--prompts", "24", "--depths", "0", "--n-gen", "2", "--repeats", "2", "--warmup", "0",
               "--threads", "1", "--prune-keep", "0.5,0.3", "-o", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    rows = {r["test"]: r for r in json.loads((out / "bench.json").read_text())["rows"]}
    assert set(rows) == {"pp24", "tg2@d0", "pp24@keep1", "pp24@keep0.5", "pp24@keep0.3"}
    assert rows["pp24@keep1"]["token_layers"] == 1.0
    # a 2-layer decoder prunes before its last layer only: 1 + 0.5 of 2 layers, 1 + 0.3 (rounded up)
    assert rows["pp24@keep0.5"]["token_layers"] == pytest.approx((24 + 12) / 48, abs=0.03)
    assert rows["pp24@keep0.3"]["token_layers"] < rows["pp24@keep0.5"]["token_layers"]
    assert all(len(r["samples_ts"]) == 2 and r["avg_ts"] > 0 for r in rows.values())
    md = (out / "bench.md").read_text()
    assert "Token pruning" in md and "| slmkit | fp32 | 24 | 0.3 |" in md and "pp24 tok/s" in md
    assert "pp24@keep" not in md.split("Token pruning")[0]  # the pruned tests have their own table


def test_bench_times_an_encoder_forward_and_skips_what_it_cannot(tmp_path, capsys):
    encoder = _tiny_dir(tmp_path, "RoBERTa-base", n_layer=4, d_model=64, n_head=4, intermediate_size=128,
                        vocab_size=300, context_length=64, head="classify", n_labels=2, pool_dense=True,
                        score_bias=True)
    rc = main(["bench", encoder, "--prompts", "32", "--repeats", "1", "--warmup", "0", "--threads", "1",
               "--prune-keep", "0.5", "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "int8+head: weight quantisation is for causal language models" in captured.out
    assert "transformers: an encoder's or classifier's forward is timed on slmkit only" in captured.out
    rows = json.loads(captured.out[captured.out.index("\n["):])
    assert [r["test"] for r in rows] == ["pp32@keep1", "pp32@keep0.5"]
    assert rows[1]["token_layers"] < 1.0 and rows[0]["kv_cache_mb"] == 0
    assert {r["forward"] for r in rows} == {"classifier"}  # slm report joins them with slm eval's classifier rows
    rc, err = run_cli(capsys, "bench", encoder, "--prompts", "100", "--backends", "slmkit")
    assert_one_line(rc, err, "learned positions for 64 tokens; give --prompts up to 64")


def test_bench_pruning_bad_input_is_one_line(tmp_path, capsys):
    gemma = _tiny_dir(tmp_path, "Gemma-3-270M", n_layer=2, d_model=64, n_head=2, n_kv_head=1, head_dim=32,
                      intermediate_size=128, vocab_size=300)
    rc, err = run_cli(capsys, "bench", gemma, "--backends", "slmkit", "--prune-keep", "0.5")
    assert_one_line(rc, err, "--prune-keep: token pruning does not support")
    for bad in ("0", "1.5", "x", "nan"):
        rc, err = run_cli(capsys, "bench", gemma, "--prune-keep", bad)
        assert_one_line(rc, err, "--prune-keep: ")
