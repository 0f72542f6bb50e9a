"""slmkit: build, train, evaluate, measure, export and pair small language models.

The names below load on first use (PEP 562), so `import slmkit.cli` (and `slm --help`) does not import torch.
"""

from slmkit.errors import SlmError

__version__ = "0.1.0"
__all__ = ["LoadedModel", "ModelConfig", "SlmError", "Tokenizer", "Transformer", "evaluate_model", "from_name",
           "init_model", "load", "load_result", "load_runtime", "save"]

_LAZY = {"LoadedModel": "slmkit.checkpoint", "init_model": "slmkit.checkpoint", "load": "slmkit.checkpoint",
         "save": "slmkit.checkpoint", "ModelConfig": "slmkit.model", "Transformer": "slmkit.model",
         "from_name": "slmkit.model", "Tokenizer": "slmkit.tokenizer", "evaluate_model": "slmkit.eval.job",
         "load_result": "slmkit.report", "load_runtime": "slmkit.runtime"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'slmkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
