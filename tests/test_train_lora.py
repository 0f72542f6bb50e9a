"""LoRA and QLoRA in the one training loop: only the adapter trains and is checkpointed (with the base's
identity), resume is bit-identical, two processes under torchrun match one, and the adapter the run writes is
what `--adapter` and `slm merge` take."""

from __future__ import annotations

import json
import math

import pytest
import torch

from slmkit.errors import SlmError
from tests.test_train import corpus, log_records, recipe_dict, run, shards, tokenizer, torchrun, write_recipe  # noqa: F401


@pytest.fixture(scope="module")
def base_dir(tokenizer, tmp_path_factory):  # noqa: F811
    from slmkit.checkpoint import init_model, save
    from slmkit.model.config import ModelConfig

    config = ModelConfig.from_name("SmolLM2-135M", n_layer=2, d_model=64, n_head=4, n_kv_head=2,
                                   intermediate_size=128, vocab_size=512)
    return save(init_model(config, "float32", "cpu", seed=1), tmp_path_factory.mktemp("base") / "base", tokenizer)


def lora_recipe(shards, base_dir, out, **lora):  # noqa: F811
    r = recipe_dict(shards, out, model=dict(init=str(base_dir)), optim=dict(lr=1e-2, warmup_steps=2),
                    tokens=32 * 8 * 12, eval_every=6, save_every=6)
    r["lora"] = dict(dict(r=4, alpha=8, targets=["all-linear"]), **lora)
    return r


def test_lora_run_trains_only_the_adapter_and_resumes_bit_identically(shards, base_dir, tmp_path):  # noqa: F811
    from safetensors.torch import load_file

    import slmkit

    whole = run(lora_recipe(shards, base_dir, tmp_path / "a"))
    part = run(lora_recipe(shards, base_dir, tmp_path / "b"), stop_at=7)
    assert part.steps == 7
    ckpt = tmp_path / "b/checkpoints/step-0000007"
    assert sorted(p.name for p in ckpt.iterdir()) == [".slmkit-output", "adapter_config.json",
                                                     "adapter_model.safetensors", "recipe.yaml", "slmkit_adapter.json",
                                                     "trainer_state.pt"]  # no copy of the base
    rest = run(lora_recipe(shards, base_dir, tmp_path / "b"), resume=True)
    assert rest.steps == whole.steps == 12 and whole.model_dir == tmp_path / "a/adapter"
    assert load_file(tmp_path / "a/adapter/adapter_model.safetensors").keys() == load_file(
        tmp_path / "b/adapter/adapter_model.safetensors").keys()
    a, b = (load_file(tmp_path / d / "adapter/adapter_model.safetensors") for d in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [x["loss"] for x in log_records(tmp_path / "a")][7:] == [x["loss"] for x in log_records(tmp_path / "b")][7:]
    losses = [x["loss"] for x in log_records(tmp_path / "a")]
    assert losses[-1] < losses[0]
    start = json.loads((tmp_path / "a/log.jsonl").read_text().splitlines()[0])
    assert start["trainable"] < start["params"] / 5
    ours = json.loads((tmp_path / "a/adapter/slmkit_adapter.json").read_text())
    assert ours["base"] == str(base_dir)

    # the written adapter: --adapter loads it, and merged it gives the same logits
    tuned = slmkit.load(base_dir, dtype="float32", device="cpu", adapter=tmp_path / "a/adapter")
    base = slmkit.load(base_dir, dtype="float32", device="cpu")
    ids = torch.tensor([tuned.tokenizer.encode("The model and the data")])
    from slmkit.adapters.lora import merge

    with torch.no_grad():
        before, after = base.model(ids), tuned.model(ids)
        assert (before - after).abs().max() > 1e-3
        assert torch.allclose(merge(tuned.model)(ids), after, atol=1e-5)


@pytest.mark.parametrize("base", ["int8", "int4", "bf16"])
def test_qlora_runs_on_a_quantised_or_bf16_base(shards, base_dir, tmp_path, base):  # noqa: F811
    res = run(lora_recipe(shards, base_dir, tmp_path / base, base=base, targets=["q_proj", "v_proj", "down_proj"]))
    from safetensors.torch import load_file

    import slmkit

    start = json.loads((tmp_path / base / "log.jsonl").read_text().splitlines()[0])  # int weights counted too
    assert start["params"] == sum(p.numel() for p in slmkit.load(base_dir).model.parameters()) + start["trainable"]
    losses = [x["loss"] for x in log_records(tmp_path / base)]  # learning itself: test_lora.py's QLoRA test
    assert res.steps == 12 and all(math.isfinite(x) for x in losses)
    weights = load_file(tmp_path / base / "adapter/adapter_model.safetensors")
    assert all(weights[k].abs().max() > 0 for k in weights if ".lora_B." in k)  # B left zero: nothing trained
    cfg = json.loads((tmp_path / base / "adapter/adapter_config.json").read_text())
    assert cfg["target_modules"] == ["down_proj", "q_proj", "v_proj"] and cfg["r"] == 4

    back = slmkit.load(base_dir, dtype="float32", device="cpu", adapter=tmp_path / base / "adapter")
    assert back.model.lora_spec.targets == ("down_proj", "q_proj", "v_proj")


@pytest.mark.slow
def test_two_processes_match_one_with_lora(shards, base_dir, tmp_path):  # noqa: F811
    one = run(lora_recipe(shards, base_dir, tmp_path / "one"))
    r2 = lora_recipe(shards, base_dir, tmp_path / "two")
    res = torchrun(2, write_recipe(tmp_path / "two.yaml", r2))
    assert res.returncode == 0, res.stderr[-2000:]
    a, b = log_records(tmp_path / "one"), log_records(tmp_path / "two")
    assert len(a) == len(b) == one.steps
    assert max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b)) < 1e-5


@pytest.mark.parametrize("change, message", [
    (dict(lora=dict(r=0)), "LoRA rank r must be at least 1"),
    (dict(lora=dict(targets=["nope"])), "LoRA target 'nope' names no layer of this model"),
    (dict(model=dict(preset="SmolLM2-135M")), "lora trains an adapter on existing weights: set model.init"),
    (dict(export_as="x"), "export_as names a full model; a lora run writes OUT/adapter"),
    (dict(dist=dict(fsdp=True)), "lora runs with DDP"),
])
def test_lora_recipe_errors(shards, base_dir, tmp_path, change, message):  # noqa: F811
    r = lora_recipe(shards, base_dir, tmp_path / "run")
    for key, value in change.items():
        r[key] = dict(r[key], **value) if key == "lora" else value
    with pytest.raises(SlmError, match=message):
        run(r)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_masked_loss_on_target_rows_equals_the_full_vocabulary_loss(base_dir):
    """With loss masks the objective projects only the target positions to the vocabulary: the same loss and the
    same gradients as the projection at every position."""
    import contextlib

    import slmkit
    from slmkit.train.data import Batch
    from slmkit.train.loop import Objective
    from slmkit.train.losses import IGNORE, cross_entropy_sum

    model = slmkit.load(base_dir, dtype="float32", device="cpu").model.train()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 512, (2, 16), generator=g)
    y = torch.randint(0, 512, (2, 16), generator=g).masked_fill(torch.rand(2, 16, generator=g) < 0.7, IGNORE)
    ours = Objective()(model, Batch(x, y), contextlib.nullcontext)["loss"]
    ours.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    full = cross_entropy_sum(model(x), y)
    full.backward()
    assert torch.allclose(ours, full, rtol=1e-6)
    assert all(torch.allclose(grads[n], p.grad, atol=1e-6) for n, p in model.named_parameters())


def test_validation_loss_with_loss_masks_equals_the_full_vocabulary_loss(base_dir):
    """Validation projects only the target positions too, and gives the loss the full projection gives."""
    import contextlib

    import numpy as np

    import slmkit
    from slmkit.train.loop import validation_loss
    from slmkit.train.losses import IGNORE, cross_entropy_sum

    model = slmkit.load(base_dir, dtype="float32", device="cpu").model
    rng = np.random.default_rng(0)
    windows = [(rng.integers(0, 512, 16), np.where(rng.random(16) < 0.6, IGNORE, rng.integers(0, 512, 16)))
               for _ in range(3)]
    ours = validation_loss(model, windows, 2, torch.device("cpu"), contextlib.nullcontext, shard=False)
    x = torch.from_numpy(np.stack([w[0] for w in windows]))
    y = torch.from_numpy(np.stack([w[1] for w in windows]))
    with torch.no_grad():
        full = (cross_entropy_sum(model(x), y) / (y != IGNORE).sum()).item()
    assert abs(ours - full) < 1e-5
