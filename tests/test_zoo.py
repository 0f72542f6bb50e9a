"""The survey's catalogue as package data (typed, cleaned, equal to a rebuild from ../shared/data/zoo), what runs
each model, filters, the recomputed architecture statistics against the survey's figure 2, and `slm zoo`."""

from __future__ import annotations

import json

import pytest

from slmkit.cli import main
from slmkit.zoo.catalogue import build, catalogue, find, parse_params, phone_runs, runner, select
from slmkit.zoo.trends import headline, write
from tests.test_errors import assert_one_line
from tests.test_eval import shared_data_dir


def test_catalogue_is_typed_and_cleaned():
    models = catalogue()
    assert len(models) == 68 and len(catalogue(include_baselines=True)) == 72
    for m in models:
        assert isinstance(m.params, float) and 1e8 <= m.params <= 5e9, m.name
        assert m.released is None or len(m.released) == 7
        assert m.activation in (None, "relu", "gelu", "gelu_tanh", "silu")
        assert m.norm in ("LayerNorm", "RMSNorm") and isinstance(m.gated_ffn, bool)
        for score in (m.commonsense, m.problem_solving, m.math):
            assert score is None or 0 <= score <= 1
    opt = find("facebook/opt-125m")
    assert (opt.params, opt.released, opt.training_tokens, opt.vocab, opt.layers) == (125e6, "2022-05", 180e9, 50272, 12)
    assert opt.datasets == ("RoBERTa", "The Pile", "PushShift.io Reddit") and opt.math == pytest.approx(0.019)
    assert find("Phi-3-mini-4k-instruct").context == 4096 and find("MiniCPM-1B-sft-bf16").context == 131072
    assert find("pythia-410m").training_tokens == 300e9 and find("h2o-danube2-1.8b-base").training_tokens == 1e12
    assert find("gpt2-medium").activation == "gelu_tanh" and find("OpenELM-270M").ffn_ratio is None
    assert find("Llama-3.2-1B").name == "meta-llama/Llama-3.2-1B"  # the org the source leaves out
    assert len(phone_runs()) == 108
    qwen = [r for r in phone_runs() if r.hub_id == "Qwen/Qwen1.5-0.5B"]
    assert len(qwen) == 4 and all(r.decode_tok_s > 0 and r.memory_gb > 0 for r in qwen)


def test_shipped_catalogue_equals_a_rebuild_from_the_survey_data(tmp_path):
    data = shared_data_dir()
    if data is None or not (data / "zoo" / "SLM.json").exists():
        pytest.skip("no survey data: set SLMKIT_DATA or put ../shared/data (with zoo/) beside the checkout")
    from slmkit.zoo.catalogue import DATA

    for built, name in zip(build(data / "zoo", tmp_path), ("catalogue.json", "phones.json")):
        assert json.loads(built.read_text()) == json.loads((DATA / name).read_text()), name


def test_runner_names_a_preset_a_hub_id_or_why_not():
    assert runner(find("HuggingFaceTB/SmolLM-135M")).preset == "SmolLM-135M"
    hub = runner(find("facebook/opt-2.7b"))
    assert hub.preset is None and hub.runnable and "-m facebook/opt-2.7b" in hub.note
    elm = runner(find("apple/OpenELM-270M"))
    assert not elm.runnable and "layer-wise" in elm.note


def test_select_filters():
    models = catalogue()
    small = select(models, max_params=parse_params("500M"), after="2024", attention="gqa")
    assert small and all(m.params <= 5e8 and m.released >= "2024" and m.attention == "GQA" for m in small)
    assert {m.name for m in select(models, family="phi3")} == {"microsoft/Phi-3-mini-4k-instruct",
                                                               "microsoft/Phi-3.5-mini-instruct"}
    runnable, other = select(models, runnable=True), select(models, runnable=False)
    assert len(runnable) + len(other) == 68 and all(not runner(m).runnable for m in other)
    assert all(m.released <= "2022-12" for m in select(models, before="2022"))
    with pytest.raises(Exception, match="parameter count"):
        parse_params("1.5 billion")


def test_trends_agree_with_the_survey_where_the_catalogue_allows(tmp_path):
    shares = {s.name: s for s in headline(catalogue())}
    assert (shares["attention: MHA"].count, shares["attention: GQA"].count) == (41, 24)
    for name in ("attention: MHA", "attention: GQA", "activation: SiLU", "vocabulary <= 50K (K = 1024)"):
        assert abs(shares[name].value - shares[name].survey) < 0.025, name  # within about one model
    paths = write(catalogue(), tmp_path)
    md = (tmp_path / "trends.md").read_text()
    assert "| attention: MHA | 60% | 41/68 | 61% | -1 pt |" in md and "Disagreements" in md
    pngs = [p for p in paths if p.suffix == ".png"]
    assert len(pngs) == 7 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert all(f"]({p.name})" in md for p in pngs)


def test_zoo_cli_lists_filters_and_explains(tmp_path, capsys):
    assert main(["zoo", "--max-params", "200M", "--sort", "released"]) == 0
    out = capsys.readouterr()
    assert "| HuggingFaceTB/SmolLM-135M | 135M | 2024-07 | GQA | llama |" in out.out and "-m SmolLM-135M" in out.out
    assert "facebook/opt-350m" not in out.out and "models;" in out.err
    assert main(["zoo", "--not-runnable", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(not r["runner"]["runnable"] for r in rows)
    assert main(["zoo", "trends", "-o", str(tmp_path / "t")]) == 0
    capsys.readouterr()
    assert (tmp_path / "t" / "trends.md").exists()
    for args, needle in [(["--attention", "XYZ"], "choose from GQA, MHA"), (["--min-params", "lots"], "500M"),
                         (["--after", "May"], "year-month"), (["--family", "t5"], "choose from")]:
        assert_one_line(main(["zoo", *args]), capsys.readouterr().err, needle)
