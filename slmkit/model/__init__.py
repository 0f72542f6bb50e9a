"""The model: ModelConfig, named presets and the one Transformer implementation."""

from slmkit.model.config import ModelConfig, from_name
from slmkit.model.model import Transformer

__all__ = ["ModelConfig", "Transformer", "from_name"]
