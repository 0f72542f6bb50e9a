"""The runtimes (slmkit, transformers, llama.cpp) behind eval and bench, and the named precisions.

    from slmkit.runtime import load_runtime
    rt = load_runtime("default", "slmkit", "int4+head")   # rt.model, rt.tokenizer, rt.precision, rt.weight_bytes
"""

from slmkit.runtime.precision import PRECISIONS, Precision, precision
from slmkit.runtime.runtimes import (BACKENDS, LlamaCppRuntime, Runtime, SlmkitRuntime, TransformersRuntime,
                                     load_runtime)

__all__ = ["BACKENDS", "PRECISIONS", "Precision", "precision", "Runtime", "SlmkitRuntime", "TransformersRuntime",
           "LlamaCppRuntime", "load_runtime"]
