"""slmkit: build, train, evaluate, measure, export and pair small language models."""

from slmkit.checkpoint import LoadedModel, init_model, load, save
from slmkit.errors import SlmError
from slmkit.model import ModelConfig, Transformer, from_name
from slmkit.tokenizer import Tokenizer

__version__ = "0.1.0"
__all__ = ["LoadedModel", "ModelConfig", "SlmError", "Tokenizer", "Transformer", "from_name", "init_model", "load",
           "save"]
