"""Generation: the token-id engine (static KV cache, prefill/decode, sampling) and the text layer on top."""

from slmkit.engine.engine import Engine, GenerationStats
from slmkit.engine.sampling import SamplingParams
from slmkit.engine.text import Completion, generate_text, stream_text

__all__ = ["Completion", "Engine", "GenerationStats", "SamplingParams", "generate_text", "stream_text"]
