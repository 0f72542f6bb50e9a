"""LoRA adapters in the `peft` library's format, both ways.

A folder holds adapter_config.json (peft_type LORA, r, lora_alpha, lora_dropout, target_modules named as
transformers' modules, bias, task_type, base_model_name_or_path, use_rslora, ...) and adapter_model.safetensors
with peft's key names, `base_model.model.<transformers module>.lora_A.weight` (r, in) and `.lora_B.weight`
(out, r). `PeftModel.from_pretrained(transformers_model, folder)` loads what slmkit writes, and slmkit loads
what peft writes (tests/test_lora.py checks the logits both ways).

slmkit adds slmkit_adapter.json beside them: the base it was trained on (name or path) and the base's
fingerprint (`base_fingerprint`: its config and a sample of its weights rounded to bf16, so the same base
loaded in fp32, bf16 or quantised has one fingerprint). Attaching the adapter to a base with another
fingerprint is refused; a peft-made adapter has no such file and is checked by names and shapes only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from slmkit.adapters.lora import AdapterWeights, LoRASpec, adapter_weights, load_adapter_weights
from slmkit.errors import SlmError
from slmkit.paths import read_json_object

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
SLMKIT = "slmkit_adapter.json"
_PREFIX = "base_model.model."
# peft LoraConfig fields slmkit does not implement, with the value that means "off"
_UNSUPPORTED = {"use_dora": False, "lora_bias": False, "modules_to_save": None, "layers_to_transform": None,
                "rank_pattern": {}, "alpha_pattern": {}, "target_parameters": None, "layer_replication": None,
                "trainable_token_indices": None, "use_qalora": False}


def base_fingerprint(model: nn.Module) -> str:
    """16 hex digits for a base model: its architecture and a fixed sample of its never-quantised weights (token
    embedding rows, norms), rounded to bf16, so fp32, bf16 and int8/int4 loads of one base agree."""
    c = asdict(model.config)
    for key in ("name", "hf_id", "extra", "bos_token_id", "eos_token_id", "pad_token_id"):
        c.pop(key, None)
    h = hashlib.sha256(json.dumps(c, sort_keys=True, default=str).encode())
    emb = model.tok_emb.weight.detach()
    rows = torch.linspace(0, emb.shape[0] - 1, 64).long().to(emb.device)
    samples = [emb[rows, :64]] + [m.weight.detach() for n, m in model.named_modules()
                                  if n.endswith("norm") and getattr(m, "weight", None) is not None]
    for t in samples:
        h.update(t.to(torch.bfloat16).float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def save_adapter(model: nn.Module, out_dir: str | Path, base: str | None = None, overwrite: bool = False) -> Path:
    """Write the model's LoRA adapters as a peft adapter folder (atomically), with slmkit's base identity."""
    from slmkit.outputs import atomic_dir, claim_dir

    out = Path(out_dir)
    claim_dir(out, "adapter", overwrite, replaces=True)
    with atomic_dir(out, "adapter", overwrite) as tmp:
        write_adapter(model, tmp, base)
    return out


def write_adapter(model: nn.Module, folder: Path, base: str | None = None) -> None:
    """The adapter's three files into an existing folder (a checkpoint's temp folder, or save_adapter's)."""
    from safetensors.torch import save_file

    from slmkit.model.families import family

    adapter = adapter_weights(model)
    spec = adapter.spec
    base = base or getattr(model, "base_source", None)
    tensors: dict[str, torch.Tensor] = {}
    for name, (a, b) in adapter.weights.items():
        tensors[f"{_PREFIX}{name}.lora_A.weight"] = a.contiguous()
        tensors[f"{_PREFIX}{name}.lora_B.weight"] = b.contiguous()
    modules = sorted({name.rsplit(".", 1)[-1] for name in adapter.weights})
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base, "r": spec.r,
        "lora_alpha": spec.alpha, "lora_dropout": spec.dropout, "target_modules": modules, "bias": "none",
        "use_rslora": spec.rslora, "fan_in_fan_out": bool(family(model.config.family).layout.transposed),
        "init_lora_weights": True, "inference_mode": True, "revision": None, **_UNSUPPORTED,
    }
    ours = {"base": base, "base_fingerprint": getattr(model, "base_fingerprint", None) or base_fingerprint(model),
            "family": model.config.family, "lora": spec.to_dict()}
    save_file(tensors, str(folder / WEIGHTS), metadata={"format": "pt"})
    (folder / CONFIG).write_text(json.dumps(config, indent=2), encoding="utf-8")
    (folder / SLMKIT).write_text(json.dumps(ours, indent=2), encoding="utf-8")


def read_adapter(path: str | Path) -> tuple[AdapterWeights, dict[str, Any]]:
    """A peft LoRA folder's spec and weights, and slmkit's base identity ({} for a peft-made adapter)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    cfg_file = path / CONFIG
    if not cfg_file.is_file():
        raise SlmError(f"{path}: not an adapter folder (no {CONFIG}); give a folder peft or slmkit wrote")
    cfg = read_json_object(cfg_file, "an adapter config")
    kind = cfg.get("peft_type")
    if kind != "LORA":
        raise SlmError(f"{path}: a {kind} adapter; slmkit loads LoRA adapters (peft_type LORA) only")
    for key, off in _UNSUPPORTED.items():
        if cfg.get(key, off) not in (off, None, {}, False):
            raise SlmError(f"{path}: the adapter uses {key}={cfg[key]!r}, which slmkit's LoRA does not support")
    if cfg.get("bias", "none") != "none":
        raise SlmError(f"{path}: the adapter trains biases (bias={cfg['bias']!r}); slmkit's LoRA supports bias none")
    targets = cfg.get("target_modules")
    weights_file = path / WEIGHTS
    if not weights_file.is_file():
        raise SlmError(f"{path}: no {WEIGHTS} (slmkit reads safetensors adapters; peft writes them by default)")
    try:
        raw = load_file(str(weights_file))
    except (SafetensorError, OSError) as e:
        raise SlmError(f"{weights_file}: cannot read ({e})") from None
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in raw.items():
        name = key.removeprefix(_PREFIX)
        for part in (".lora_A.weight", ".lora_B.weight", ".lora_A.default.weight", ".lora_B.default.weight"):
            if name.endswith(part):
                pairs.setdefault(name[:-len(part)], {})[part.split(".")[1]] = t.float()
                break
        else:
            raise SlmError(f"{weights_file}: unexpected tensor {key!r} (slmkit reads lora_A/lora_B weights only)")
    if isinstance(targets, str) or not targets:  # a regular expression (or none): the weights name the modules
        targets = sorted({name.rsplit(".", 1)[-1] for name in pairs})
    try:
        spec = LoRASpec(r=int(cfg["r"]), alpha=float(cfg["lora_alpha"]), dropout=float(cfg.get("lora_dropout", 0)),
                        targets=tuple(targets), rslora=bool(cfg.get("use_rslora", False)))
    except (KeyError, TypeError, ValueError) as e:
        raise SlmError(f"{cfg_file}: missing or bad field ({e})") from None
    adapter = AdapterWeights(spec)
    for name, ab in pairs.items():
        if set(ab) != {"lora_A", "lora_B"}:
            raise SlmError(f"{weights_file}: {name} has {sorted(ab)} but needs both lora_A and lora_B")
        adapter.weights[name] = (ab["lora_A"], ab["lora_B"])
    ours = read_json_object(path / SLMKIT, "slmkit's adapter record") if (path / SLMKIT).is_file() else {}
    return adapter, ours


def attach_adapter(model: nn.Module, path: str | Path) -> nn.Module:
    """Give a loaded base model the adapter in `path` (peft or slmkit made), refusing one for another base."""
    adapter, ours = read_adapter(path)
    want = ours.get("base_fingerprint")
    have = getattr(model, "base_fingerprint", None) or base_fingerprint(model)
    if want and want != have:
        raise SlmError(f"{path}: the adapter was trained on another base ({ours.get('base') or '?'}, fingerprint "
                       f"{want}; this one is {have}); load the base it names, or delete its {SLMKIT} to apply it "
                       "by shapes alone")
    model.base_fingerprint = have
    return load_adapter_weights(model, adapter, str(path))
