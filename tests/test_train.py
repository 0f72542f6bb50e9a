"""Training: token shards, recipes, the loop (resume, faults), KD losses, muP, and torchrun DDP/FSDP2.

Tiny models on a BPE tokenizer trained on the project's own docs, so nothing here needs ../shared.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from slmkit.errors import SlmError
from tests.conftest import ROOT

TINY_MODEL = dict(preset="SmolLM2-135M",
                  overrides=dict(n_layer=2, d_model=32, n_head=2, n_kv_head=1, intermediate_size=64, vocab_size=512))


def slm(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "slmkit.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "CI": "1", **(env or {})})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Real English text: the project's README and docs as they were on 2026-12-03 (tests/data/docs-corpus.txt, a
    frozen copy, so that editing the docs does not retrain the tokenizers and models these tests build)."""
    d = tmp_path_factory.mktemp("corpus")
    (d / "docs.txt").write_text((ROOT / "tests/data/docs-corpus.txt").read_text(encoding="utf-8"), encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def tokenizer(corpus):
    from slmkit.tokenizer.train import train_bpe

    return train_bpe([str(corpus)], vocab_size=512)


@pytest.fixture(scope="module")
def shards(corpus, tokenizer, tmp_path_factory) -> Path:
    from slmkit.train.data import prepare

    out, _ = prepare([str(corpus)], tmp_path_factory.mktemp("s") / "shards", tokenizer, "bpe-512", val_fraction=0.1,
                     block=256, progress=False)
    return out


def recipe_dict(shards: Path, out: Path, **kw) -> dict:
    r = dict(out=str(out), model=TINY_MODEL, data={str(shards): 1.0}, tokens=32 * 8 * 24,
             batch=dict(seq_len=32, global_batch=8, micro_batch=4), optim=dict(lr=3e-3, warmup_steps=4),
             eval_every=8, eval_tokens=512, save_every=8, log_every=1)
    r.update(kw)
    return r


def write_recipe(path: Path, r: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(r), encoding="utf-8")
    return path


def run(r: dict, **kw):
    from slmkit.train.loop import train
    from slmkit.train.recipe import load_recipe

    path = write_recipe(Path(r["out"] + ".yaml"), r)
    return train(load_recipe(path), progress=False, echo=lambda *a: None, **kw)


def log_records(out: Path, event: str = "train") -> list[dict]:
    return [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if r.get("event") == event]


# --- data -----------------------------------------------------------------------------------------------------


def test_prepare_streams_pieces_that_tokenize_as_the_whole(corpus, tokenizer, tmp_path, monkeypatch):
    from slmkit import corpus as reader
    from slmkit.train import data

    monkeypatch.setattr(reader, "PIECE_CHARS", 500)  # many pieces from one file
    out, meta = data.prepare([str(corpus)], tmp_path / "s", tokenizer, "bpe", val_fraction=0, progress=False)
    ids = np.fromfile(out / "train.bin", dtype=meta["dtype"])
    text = (corpus / "docs.txt").read_text(encoding="utf-8")
    assert ids.tolist() == tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_id]
    assert meta["documents"] == 1 and meta["val_tokens"] == 0 and meta["max_id"] == int(ids.max())


def test_prepare_formats_split_and_templates(tokenizer, tmp_path):
    from slmkit.train.data import Shards, prepare

    d = tmp_path / "in"
    d.mkdir()
    with gzip.open(d / "a.jsonl.gz", "wt", encoding="utf-8") as f:
        for i in range(30):
            f.write(json.dumps({"prompt": f"Question {i}?", "completion": f" Answer {i}."}) + "\n")
    (d / "b.tsv").write_text("first\\nline\tsecond\n" * 20, encoding="utf-8")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [f"parquet row {i}" for i in range(25)]}), d / "c.parquet")
    out, meta = prepare([str(d)], tmp_path / "s", tokenizer, "bpe", val_fraction=0.25, block=16, progress=False)
    assert meta["documents"] == 75 and [s["documents"] for s in meta["sources"]] == [30, 20, 25]
    s = Shards.open(out)
    total = meta["train_tokens"] + meta["val_tokens"]
    assert abs(meta["val_tokens"] / total - 0.25) < 0.05  # every 4th block of 16 tokens
    stream = tokenizer.decode(np.concatenate([s.train, s.val]).tolist())
    assert "Question 0? Answer 0." in stream  # prompt + completion
    assert "first\nline\nsecond" in stream  # TSV escapes undone, columns joined by newlines
    out2, _ = prepare([str(d / "b.tsv")], tmp_path / "s2", tokenizer, "bpe", template="{1}: {0}", progress=False)
    from slmkit.tokenizer.train import train_bpe

    learned = train_bpe([str(d / "a.jsonl.gz"), str(d / "c.parquet")], vocab_size=400)  # on the records' text
    assert len(learned.encode("Question")) == 1 and len(learned.encode("parquet row")) <= 3
    assert "second: first\nline" in tokenizer.decode(Shards.open(out2).train.tolist())


def test_prompt_template_masks_the_loss_to_the_response(tokenizer, tmp_path):
    """--prompt-template: prompt tokens (and BOS) carry no loss, response tokens and the separator do; batches and
    validation windows put IGNORE on the prompt positions; a damaged mask file is one clear line."""
    from slmkit.train.data import Shards, TokenData, prepare
    from slmkit.train.losses import IGNORE

    rows = [{"prompt": f"Question {i}: what is {i} plus {i}?", "completion": f" It is {2 * i}."} for i in range(40)]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out, meta = prepare([str(tmp_path / "qa.jsonl")], tmp_path / "s", tokenizer, "bpe", val_fraction=0.2, block=16,
                        template="{completion}", prompt_template="{prompt}", progress=False)
    assert meta["loss_mask"] and meta["documents"] == 40
    s = Shards.open(out)
    tokens = np.concatenate([s.train, s.val]).tolist()  # the split is by blocks: re-interleave to check the stream
    masks = np.concatenate([s.train_mask, s.val_mask]).tolist()
    kept = tokenizer.decode([t for t, m in zip(s.train.tolist(), s.train_mask.tolist()) if m])
    dropped = tokenizer.decode([t for t, m in zip(s.train.tolist(), s.train_mask.tolist()) if not m])
    assert "It is" in kept and "Question" not in kept
    assert "Question" in dropped and "It is" not in dropped
    assert len(tokens) == len(masks)
    data = TokenData({str(out): 1.0}, 16, seed=0)
    x, y = data.batch(0, 0, slice(0, 4), 4)
    assert (y == IGNORE).any() and (y != IGNORE).any()
    assert all(t == IGNORE or t == x_next for t, x_next in zip(y[:, :-1].ravel(), x[:, 1:].ravel()))
    windows = data.val_windows(64)
    assert windows and any((w[1] == IGNORE).any() for w in windows)
    (out / "val.mask.bin").write_bytes(b"\x01")
    with pytest.raises(SlmError, match="damaged"):
        Shards.open(out)
    with pytest.raises(SlmError, match="needs --template"):
        prepare([str(tmp_path / "qa.jsonl")], tmp_path / "s2", tokenizer, "bpe", prompt_template="{prompt}",
                progress=False)


def test_response_only_loss_learns_the_response_not_the_prompt(tokenizer, tmp_path):
    """Prompts of random words, always the same response: with the loss on the response only, the training loss
    falls near zero; on the whole text it cannot (the prompts are unpredictable)."""
    from slmkit.train.data import prepare

    rng = np.random.default_rng(0)
    words = ["alpha", "river", "stone", "cloud", "seven", "green", "table", "north", "quiet", "metal", "model", "token",
             "train", "cache", "batch", "layer", "speed", "value", "print", "write", "local", "shape", "order", "float"]
    rows = [{"prompt": " ".join(rng.choice(words, 12)), "completion": " => done"} for _ in range(300)]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    final = {}
    for masked in (True, False):
        kw = dict(template="{completion}", prompt_template="{prompt}") if masked else dict(template="{prompt}{completion}")
        shards, _ = prepare([str(tmp_path / "r.jsonl")], tmp_path / f"s{masked}", tokenizer, "bpe", val_fraction=0,
                            progress=False, **kw)
        r = recipe_dict(shards, tmp_path / f"run{masked}", tokens=32 * 8 * 80, save_every=0, eval_every=0,
                        optim=dict(lr=1e-2, warmup_steps=5, schedule="constant"))
        run(r)
        final[masked] = np.mean([x["loss"] for x in log_records(tmp_path / f"run{masked}")[-10:]])
    assert final[True] < 0.1 and final[False] > 0.8, final


@pytest.mark.parametrize("content, message", [
    (b"", "every document is empty"),
    (b"caf\xe9 au lait\n", "not UTF-8"),
])
def test_prepare_refuses_empty_and_non_utf8(tmp_path, content, message):
    (tmp_path / "bad.txt").write_bytes(content)
    r = slm("data", "prepare", str(tmp_path / "bad.txt"), "-o", str(tmp_path / "s"), "--train-tokenizer", "300")
    r2 = slm("data", "prepare", str(tmp_path / "bad.txt"), "-o", str(tmp_path / "s"), "-m", str(tmp_path / "none"))
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r2.returncode == 2 and "no such file" in r2.stderr
    assert not (tmp_path / "s").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".s.")]


def test_batches_depend_only_on_seed_stage_step(shards):
    from slmkit.train.data import TokenData

    data = TokenData({str(shards): 1.0}, seq_len=16, seed=3)
    x, y = data.batch(5, 0, slice(0, 8), 8)
    assert (x[:, 1:] == y[:, :-1]).all()
    halves = [data.batch(5, 0, slice(i * 4, (i + 1) * 4), 8)[0] for i in range(2)]
    assert (np.concatenate(halves) == x).all()
    assert not (data.batch(6, 0, slice(0, 8), 8)[0] == x).all()


# --- losses and schedules ----------------------------------------------------------------------------------------


def test_kd_losses_equal_hand_computed_values():
    from slmkit.train.losses import IGNORE, kd_sum

    s = torch.tensor([[[1.0, 2.0, 0.5], [0.0, 0.0, 0.0]]])
    t = torch.tensor([[[2.0, 1.0, 0.0], [3.0, 0.0, 0.0]]])
    y = torch.tensor([[0, IGNORE]])  # the second position carries no loss

    def kl(a, b):  # KL(softmax(a) || softmax(b)) written out
        pa = [math.exp(v) / sum(math.exp(u) for u in a) for v in a]
        pb = [math.exp(v) / sum(math.exp(u) for u in b) for v in b]
        return sum(p * math.log(p / q) for p, q in zip(pa, pb))

    sl, tl = [1.0, 2.0, 0.5], [2.0, 1.0, 0.0]
    assert kd_sum(s, t, y, "forward_kl").item() == pytest.approx(kl(tl, sl), rel=1e-6)
    assert kd_sum(s, t, y, "reverse_kl").item() == pytest.approx(kl(sl, tl), rel=1e-6)
    T = 2.0
    assert kd_sum(s, t, y, "forward_kl", temperature=T).item() == pytest.approx(
        T * T * kl([v / T for v in tl], [v / T for v in sl]), rel=1e-6)
    # top-2: teacher renormalised over tokens 0 and 1, against the student's full-vocabulary log-probs
    p = [math.exp(2) / (math.exp(2) + math.exp(1)), math.exp(1) / (math.exp(2) + math.exp(1))]
    logq = [v - math.log(sum(math.exp(u) for u in sl)) for v in sl]
    expect = sum(pi * (math.log(pi) - logq[i]) for i, pi in enumerate(p))
    assert kd_sum(s, t, y, "topk_kl", top_k=2).item() == pytest.approx(expect, rel=1e-6)
    assert kd_sum(t, t, y, "forward_kl").item() == pytest.approx(0.0, abs=1e-6)


def test_schedules():
    from slmkit.train.schedule import lr_multiplier as m

    assert [m(s, 100, 10) for s in (0, 9)] == [0.1, 1.0]
    assert m(99, 100, 10, "cosine", 0.1) == pytest.approx(0.1)
    assert m(54, 100, 10, "cosine", 0.0) == pytest.approx(0.5, abs=0.02)
    wsd = [m(s, 100, 10, "wsd", 0.0, 0.2) for s in range(100)]
    assert wsd[10:80] == [1.0] * 70 and wsd[99] == pytest.approx(0.0) and wsd[90] == pytest.approx(0.45, abs=0.01)


# --- recipes ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("change, message", [
    ({"optim": {"lrr": 1}}, "unknown key optim.lrr"),
    ({"batch": {"seq_len": 32, "global_batch": 6, "micro_batch": 4}}, "not divisible by batch.micro_batch 4"),
    ({"tokens": 100}, "below one step"),
    ({"optim": {"lr": "fast"}}, "optim.lr must be a number"),
    ({"precision": "fp8"}, "precision must be one of"),
    ({"optim": {"warmup_steps": 1000}}, "warmup_steps 1000 must be below"),
])
def test_recipe_errors_are_one_line(shards, tmp_path, change, message):
    r = recipe_dict(shards, tmp_path / "run")
    r.update(change)
    res = slm("train", str(write_recipe(tmp_path / "r.yaml", r)))
    assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "run").exists()


def test_set_overrides_and_token_ids_beyond_the_vocabulary(shards, tmp_path):
    r = recipe_dict(shards, tmp_path / "run")
    res = slm("train", str(write_recipe(tmp_path / "r.yaml", r)), "--set", "model.overrides.vocab_size=100")
    assert res.returncode == 2 and "beyond the model's vocabulary of 100" in res.stderr


# --- the loop ----------------------------------------------------------------------------------------------------


def test_overfits_a_small_batch(tokenizer, tmp_path):
    from slmkit.train.data import prepare

    (tmp_path / "one.txt").write_text("The quick brown fox jumps over the lazy dog. " * 3, encoding="utf-8")
    shards, meta = prepare([str(tmp_path / "one.txt")], tmp_path / "s", tokenizer, "bpe", val_fraction=0,
                           progress=False)
    seq = meta["train_tokens"] - 1  # one window: every step sees the same batch
    r = recipe_dict(shards, tmp_path / "run", tokens=seq * 4 * 150, batch=dict(seq_len=seq, global_batch=4,
                    micro_batch=4), optim=dict(lr=1e-2, warmup_steps=5, schedule="constant"), save_every=0,
                    eval_every=0)
    run(r)
    losses = [x["loss"] for x in log_records(tmp_path / "run")]
    assert losses[0] > 5 and losses[-1] < 0.05, (losses[0], losses[-1])


def test_resume_is_bit_identical_and_logs_go_to_jsonl_and_tensorboard(shards, tmp_path):
    whole = run(recipe_dict(shards, tmp_path / "a"))
    part = run(recipe_dict(shards, tmp_path / "b"), stop_at=11)
    assert part.steps == 11 and (tmp_path / "b/checkpoints/step-0000011/trainer_state.pt").is_file()
    with pytest.raises(SlmError, match="pass --resume"):
        run(recipe_dict(shards, tmp_path / "b"))
    rest = run(recipe_dict(shards, tmp_path / "b"), resume=True)
    assert rest.steps == whole.steps == 24
    a = (tmp_path / "a/model/model.safetensors").read_bytes()
    assert a == (tmp_path / "b/model/model.safetensors").read_bytes()
    assert [x["loss"] for x in log_records(tmp_path / "a")][11:] == [x["loss"] for x in log_records(tmp_path / "b")][11:]
    evals = log_records(tmp_path / "a", "eval")
    assert [e["step"] for e in evals] == [8, 16, 24] and evals[-1]["val_ppl"] == pytest.approx(
        math.exp(evals[-1]["val_loss"]))
    assert list((tmp_path / "a/tb").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (tmp_path / "a/checkpoints").iterdir()) == ["step-0000016", "step-0000024"]
    # the result is an HF folder transformers reads, with the data's tokenizer
    from transformers import AutoModelForCausalLM

    from slmkit.checkpoint import load

    lm = load(tmp_path / "a/model", device="cpu")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "a/model").eval()
    ids = torch.tensor([lm.tokenizer.encode("The model and the data")])
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, lm.model(ids), atol=1e-4, rtol=1e-4)


def test_two_stages_switch_at_the_boundary(shards, tokenizer, tmp_path):
    from slmkit.train.data import prepare

    (tmp_path / "b.txt").write_text("zebra " * 400, encoding="utf-8")
    other, _ = prepare([str(tmp_path / "b.txt")], tmp_path / "zebra", tokenizer, "bpe", val_fraction=0.1,
                       block=64, progress=False)
    r = recipe_dict(shards, tmp_path / "run", tokens=0, data={}, stages=[
        dict(name="general", tokens=32 * 8 * 6, data={str(shards): 1.0}),
        dict(name="zebras", tokens=32 * 8 * 4, data={str(shards): 0.5, str(other): 0.5})])
    res = run(r)
    assert res.steps == 10
    stages = log_records(tmp_path / "run", "stage")
    assert [(s["step"], s["name"]) for s in stages] == [(0, "general"), (6, "zebras")]
    assert {x["stage"] for x in log_records(tmp_path / "run")[:6]} == {0}


def test_nan_loss_stops_and_names_the_last_good_checkpoint(shards, tmp_path):
    r = recipe_dict(shards, tmp_path / "run", tokens=32 * 8 * 60, save_every=2,
                    optim=dict(lr=1e6, warmup_steps=1, clip=0.0))
    res = slm("train", str(write_recipe(tmp_path / "r.yaml", r)))
    assert res.returncode == 2 and "the loss became nan" in res.stderr.lower(), res.stderr
    assert "Last good checkpoint: " in res.stderr and len(res.stderr.strip().splitlines()) == 1
    named = Path(res.stderr.split("Last good checkpoint: ")[1].split(". ")[0])
    assert named.name.startswith("step-"), res.stderr  # lr 1e6 takes a few steps to overflow, past a save
    from slmkit.checkpoint import load

    lm = load(named, device="cpu")
    assert all(torch.isfinite(p).all() for p in lm.model.parameters())
    assert not list(named.parent.glob(f"step-{int(res.stderr.split(' at step ')[1].split(';')[0]):07d}"))


def test_killed_during_a_checkpoint_write_keeps_the_previous_one(shards, tmp_path):
    r = recipe_dict(shards, tmp_path / "run", save_every=4)
    path = write_recipe(tmp_path / "r.yaml", r)
    env = {**os.environ, "CI": "1"}
    driver = ("import sys, time\nfrom slmkit.train.state import Checkpoints\n"  # the step-8 write stalls
              "Checkpoints.write_hook = staticmethod(lambda step, tmp: time.sleep(60) if step == 8 else None)\n"
              "from slmkit.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.Popen([sys.executable, "-c", driver, "train", str(path), "-q"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = tmp_path / "run/checkpoints"
    try:
        deadline = time.time() + 120
        # the step-4 checkpoint lands; the step-8 write stops halfway (its files are in the temp folder)
        while time.time() < deadline and not (ckpts / "step-0000004").is_dir():
            time.sleep(0.2)
        while time.time() < deadline and not list(ckpts.glob(".step-0000008.*/trainer_state.pt")):
            time.sleep(0.2)
        assert list(ckpts.glob(".step-0000008.*")), "the second checkpoint write never started"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (tmp_path / "run/latest").read_text() == "checkpoints/step-0000004"
    assert not (ckpts / "step-0000008").exists()
    from slmkit.checkpoint import load

    load(ckpts / "step-0000004", device="cpu")  # loadable
    rest = run(r, resume=True)
    assert rest.steps == 24 and not list(ckpts.glob(".step-*"))
    whole = run(recipe_dict(shards, tmp_path / "whole", save_every=4))
    assert whole.steps == 24
    assert (tmp_path / "run/model/model.safetensors").read_bytes() == (
        tmp_path / "whole/model/model.safetensors").read_bytes()


# --- distillation ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def teacher_dir(tokenizer, tmp_path_factory) -> Path:
    from slmkit.checkpoint import init_model, save
    from slmkit.model.config import ModelConfig

    config = ModelConfig.from_name("SmolLM2-135M", n_layer=2, d_model=64, n_head=4, n_kv_head=2,
                                   intermediate_size=128, vocab_size=512)
    return save(init_model(config, "float32", "cpu", seed=1), tmp_path_factory.mktemp("t") / "teacher", tokenizer)


def test_distill_runs_the_teacher_in_the_loop(shards, teacher_dir, tmp_path):
    from slmkit.checkpoint import load
    from slmkit.train.data import TokenData
    from slmkit.train.losses import kd_sum

    r = recipe_dict(shards, tmp_path / "run", tokens=32 * 8 * 3, optim=dict(lr=1e-3, warmup_steps=1),
                    distill=dict(teacher=str(teacher_dir), loss="topk_kl", top_k=8, alpha=1.0, temperature=2.0),
                    save_every=0, eval_every=0)
    run(r)
    first = log_records(tmp_path / "run")[0]
    assert first["loss"] == pytest.approx(first["kd"]) and first["ce"] > 0
    # step 1's KD loss is the hand-assembled one: the initial student and the teacher on the step's batch
    from slmkit.train.loop import build_model
    from slmkit.train.recipe import load_recipe

    recipe = load_recipe(tmp_path / "run.yaml")
    student = build_model(recipe, load(teacher_dir).tokenizer, torch.device("cpu"))
    x, y = TokenData({str(shards): 1.0}, 32, recipe.seed).batch(0, 0, slice(0, 8), 8)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    with torch.no_grad():
        expect = kd_sum(student(x), load(teacher_dir).model(x), y, "topk_kl", 2.0, 8) / y.numel()
    assert first["kd"] == pytest.approx(expect.item(), rel=1e-5)


def test_distill_refuses_a_teacher_with_another_tokenizer(shards, tmp_path):
    from slmkit.checkpoint import init_model, save
    from slmkit.model.config import ModelConfig
    from slmkit.tokenizer.train import train_bpe

    (tmp_path / "x.txt").write_text("completely different text " * 50, encoding="utf-8")
    other = train_bpe([str(tmp_path / "x.txt")], vocab_size=300)
    config = ModelConfig.from_name("SmolLM2-135M", n_layer=1, d_model=32, n_head=2, n_kv_head=1,
                                   intermediate_size=64, vocab_size=512)
    teacher = save(init_model(config, "float32", "cpu", seed=0), tmp_path / "teacher", other)
    r = recipe_dict(shards, tmp_path / "run")
    res = slm("distill", str(write_recipe(tmp_path / "r.yaml", r)), "--teacher", str(teacher))
    assert res.returncode == 2 and "different tokenizers" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = slm("distill", str(write_recipe(tmp_path / "r.yaml", r)))
    assert res.returncode == 2 and "no distill section" in res.stderr


# --- muP ---------------------------------------------------------------------------------------------------------


def test_mup_coordinate_check():
    """Activation scales after a few Adam steps stay flat across widths with muP and grow without it."""
    from slmkit.train.mup import coordinate_check

    widths = [64, 128, 256, 512]
    sp, mu = coordinate_check(widths, use_mup=False), coordinate_check(widths, use_mup=True)
    for key in ("hidden", "logits"):
        assert sp[512][key] / sp[64][key] > 3, (key, sp)
        ratios = [mu[w][key] / mu[64][key] for w in widths]
        assert max(ratios) < 2 and min(ratios) > 0.5, (key, mu)


def test_mup_param_groups_and_tied_heads():
    from slmkit.model.config import ModelConfig
    from slmkit.model.model import Transformer
    from slmkit.train import mup

    model = Transformer(ModelConfig(vocab_size=64, n_layer=1, d_model=128, n_head=8, tie_embeddings=False))
    groups = {(g["lr"], g["weight_decay"]): sum(p.numel() for p in g["params"])
              for g in mup.param_groups(model, 1.0, 0.1, base_width=32)}
    assert groups[(0.25, 0.1)] == sum(p.numel() for n, p in model.named_parameters()
                                      if p.ndim == 2 and not n.startswith("tok_emb"))
    assert groups[(1.0, 0.1)] == model.tok_emb.weight.numel()
    mup.init(model, 32)
    assert model.lm_head.weight.std().item() == pytest.approx(0.02 / 4, rel=0.1)
    assert model.blocks[0].mlp.w_up.weight.std().item() == pytest.approx(0.02 / 2, rel=0.1)
    with pytest.raises(SlmError, match="untied|of its own"):
        mup.init(Transformer(ModelConfig(vocab_size=64, n_layer=1, d_model=64, n_head=4, tie_embeddings=True)), 32)


# --- torchrun ----------------------------------------------------------------------------------------------------


def torchrun(n: int, recipe: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n),
                           "--master_port", str(29500 + os.getpid() % 1000), "-m", "slmkit.train", str(recipe),
                           "-q", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CI": "1", "OMP_NUM_THREADS": "1"})


@pytest.mark.parametrize("fsdp, tol", [(False, 1e-5), (True, 1e-4)])
def test_two_processes_match_one(shards, tmp_path, fsdp, tol):
    over = dict(TINY_MODEL["overrides"], tie_embeddings=not fsdp)
    r1 = recipe_dict(shards, tmp_path / "one", model=dict(preset="SmolLM2-135M", overrides=over), tokens=32 * 8 * 12,
                     dist=dict(fsdp=fsdp))
    one = run(dict(r1))
    r2 = dict(r1, out=str(tmp_path / "two"))
    res = torchrun(2, write_recipe(tmp_path / "two.yaml", r2))
    assert res.returncode == 0, res.stderr[-2000:]
    a, b = log_records(tmp_path / "one"), log_records(tmp_path / "two")
    assert len(a) == len(b) == one.steps == 12
    assert max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b)) < tol
    assert json.loads((tmp_path / "two/log.jsonl").read_text().splitlines()[0])["world"] == 2
    from slmkit.checkpoint import load  # the 2-process run's gathered weights equal the 1-process run's

    one_w, two_w = (load(tmp_path / d / "model", device="cpu").model.state_dict() for d in ("one", "two"))
    assert max((one_w[k] - two_w[k]).abs().max().item() for k in one_w) < 100 * tol


def test_prepare_the_shared_corpora_with_the_default_tokenizer(tmp_path, default_gguf):
    """The shared corpora and instruction data through the CLI with the default model's tokenizer."""
    from tests.conftest import shared_dir

    shared = shared_dir()
    if shared is None:
        pytest.skip("../shared/data is absent (set SLMKIT_SHARED); the shared corpora are not tested")
    from slmkit.checkpoint import load_tokenizer
    from slmkit.train.data import Shards

    data = shared / "data"
    r = slm("data", "prepare", str(data / "corpus/tinyshakespeare"), str(data / "instruct/flan_cot/qasc_train.tsv"),
            "-o", str(tmp_path / "s"), "--template", "{0}\\n{2} So the answer is {1}.", "-q")
    assert r.returncode == 0, r.stderr
    s = Shards.open(tmp_path / "s")
    assert s.meta["documents"] == 1 + 1084  # the play, and one per FLAN row
    assert 300_000 < s.meta["train_tokens"] + s.meta["val_tokens"] < 600_000
    tok = load_tokenizer("default")
    first = tok.decode(s.train[:40].tolist())
    assert first.startswith("First Citizen:\nBefore we proceed any further")
    assert "So the answer is" in tok.decode(np.asarray(s.train[-3000:]).tolist())
    assert f"{s.meta['train_tokens']:,} train" in r.stdout


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_are_valid(path):
    from slmkit.train.recipe import load_recipe

    recipe = load_recipe(path)
    recipe.validate(world=1)
    assert sum(recipe.stage_steps()) > recipe.optim.warmup_steps
