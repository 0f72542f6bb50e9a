"""Shared fixtures: tiny random transformers checkpoints, the shared data folder, the default model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path | None:
    """../shared beside the project root, or SLMKIT_SHARED."""
    path = Path(os.environ.get("SLMKIT_SHARED", ROOT.parent / "shared"))
    return path if path.is_dir() else None


def llamacpp_models_dir() -> Path | None:
    """The vocab-only GGUFs with test cases from the llama-cpp-python sdist (SLMKIT_LLAMACPP_MODELS)."""
    path = os.environ.get("SLMKIT_LLAMACPP_MODELS")
    if path and Path(path).is_dir():
        return Path(path)
    default = ROOT / ".cache" / "llama.cpp-models"
    return default if default.is_dir() else None


def perturb_(model: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> None:
    """Add noise to every parameter so logits are O(1) and layout mistakes cannot hide behind tiny weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)


@pytest.fixture(scope="session")
def default_gguf() -> Path:
    from slmkit.checkpoint import default_model_path
    from slmkit.errors import SlmError

    try:
        return default_model_path()
    except SlmError as e:
        pytest.skip(str(e))
