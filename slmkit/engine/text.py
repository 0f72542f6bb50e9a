"""Text on top of the token-id engine: encode prompts, decode streamed ids incrementally, stop strings, chat.

The engine stays tokenizer-free; everything that knows about text lives here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

from slmkit.engine.engine import Engine, GenerationStats
from slmkit.engine.sampling import SamplingParams
from slmkit.errors import SlmError
from slmkit.tokenizer import Tokenizer


class IncrementalDecoder:
    """Turns a growing list of token ids into text pieces without splitting UTF-8 characters.

    Decodes a short window of previous ids with the new ones and emits the difference (the approach of
    vLLM's detokenizer), so SentencePiece's leading-space handling and multi-token characters come out right.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip = skip_special_tokens
        self.ids: list[int] = []
        self.prefix = 0  # window start
        self.read = 0  # ids up to here are already emitted as text

    def push(self, token: int) -> str:
        self.ids.append(token)
        before = self.tokenizer.decode(self.ids[self.prefix:self.read], skip_special_tokens=self.skip)
        after = self.tokenizer.decode(self.ids[self.prefix:], skip_special_tokens=self.skip)
        if after.endswith("\ufffd") or len(after) <= len(before):  # an incomplete character: wait for more
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return after[len(before):]

    def flush(self) -> str:
        """The text held back at the end (an incomplete character decodes to U+FFFD, as a full decode gives it),
        so that the pieces add up to the decode of all the ids."""
        before = self.tokenizer.decode(self.ids[self.prefix:self.read], skip_special_tokens=self.skip)
        after = self.tokenizer.decode(self.ids[self.prefix:], skip_special_tokens=self.skip)
        self.prefix = self.read = len(self.ids)
        return after[len(before):] if len(after) > len(before) else ""


class StopStringMatcher:
    """Holds back text that could be the start of a stop string; reports when one appears."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""

    def feed(self, piece: str) -> tuple[str, bool]:
        """Text safe to emit now, and whether a stop string was hit (the text before it is emitted)."""
        if not self.stops:
            return piece, False
        self.pending += piece
        cut = min((i for i in (self.pending.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            out, self.pending = self.pending[:cut], ""
            return out, True
        hold = max((k for s in self.stops for k in range(1, len(s)) if self.pending.endswith(s[:k])), default=0)
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(out):]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    finish: str  # "stop" (stop token or string) or "length"


def stop_ids_for(tokenizer: Tokenizer | None, extra: Sequence[int] = ()) -> list[int]:
    """The model's end-of-sequence ids (EOS, and <|im_end|>/<|endoftext|>/<end_of_turn>/<|eot_id|> when present)."""
    ids = set(extra)
    if tokenizer is not None:
        if tokenizer.eos_id is not None:
            ids.add(tokenizer.eos_id)
        for name in ("<|im_end|>", "<|endoftext|>", "<end_of_turn>", "<|eot_id|>", "<|end|>"):
            tid = tokenizer.token_to_id(name)
            if tid is not None:
                ids.add(tid)
    return sorted(ids)


def encode_prompt(tokenizer: Tokenizer, prompt: str, add_special_tokens: bool = True) -> list[int]:
    """Token ids of a prompt (one clear error for text that encodes to nothing). A prompt already rendered
    with a chat template takes add_special_tokens=False: the template writes its own BOS."""
    ids = tokenizer.encode(prompt, add_special_tokens=add_special_tokens)
    if not ids:
        raise SlmError("the prompt encodes to no tokens; give some text")
    return ids


def stream_text(engine: Engine, tokenizer: Tokenizer, prompt_ids: list[int], max_new_tokens: int,
                sampling: SamplingParams | None = None, stop: Sequence[str] = (), stop_ids: Sequence[int] | None = None,
                stats: GenerationStats | None = None, result: list[Completion] | None = None,
                reuse_prefix: bool = False) -> Iterator[str]:
    """Stream text pieces for one prompt; stops at a stop id or stop string (neither is emitted).

    When `result` is a list, the finished Completion is appended to it. reuse_prefix: see Engine.prefill.
    """
    stop_ids = stop_ids_for(tokenizer) if stop_ids is None else list(stop_ids)
    decoder, matcher = IncrementalDecoder(tokenizer), StopStringMatcher(stop)
    text: list[str] = []
    ids: list[int] = []
    finish = "length"
    steps = engine.stream([prompt_ids], max_new_tokens, sampling, stop_ids, stats, reuse_prefix)
    try:
        for (token,) in steps:
            ids.append(token)
            if token in stop_ids:
                finish = "stop"
                break
            piece, hit = matcher.feed(decoder.push(token))
            if piece:
                text.append(piece)
                yield piece
            if hit:
                finish = "stop"
                break
    finally:
        steps.close()
    if finish != "stop" or ids[-1] in stop_ids:  # text held back (a partial character, a possible stop string)
        piece, hit = matcher.feed(decoder.flush())
        piece += "" if hit else matcher.flush()
        finish = "stop" if hit else finish
        if piece:
            text.append(piece)
            yield piece
    if result is not None:
        result.append(Completion("".join(text), ids, finish))


def _until_stop(tokenizer: Tokenizer, stop: Sequence[str]):
    """A row predicate for Engine.generate: True once the row's text holds a stop string. It decodes only the
    row's tail, long enough to hold the longest stop string (each token is at least one byte)."""
    stop = [s for s in stop if s]
    if not stop:
        return None
    tail = 4 * max(len(s.encode()) for s in stop) + 4

    def until(row: list[int]) -> bool:
        text = tokenizer.decode(row[-tail:], skip_special_tokens=True)  # as the final cut reads it
        text = text.lstrip("\ufffd")  # the tail may start inside a character
        return any(s in text for s in stop)

    return until


def generate_text(engine: Engine, tokenizer: Tokenizer, prompts: Sequence[str], max_new_tokens: int,
                  sampling: SamplingParams | None = None, stop: Sequence[str] = (),
                  stats: GenerationStats | None = None, add_special_tokens: bool = True) -> list[Completion]:
    """Generate for a batch of text prompts (left-padded together); stop strings cut each row's text."""
    encoded = [encode_prompt(tokenizer, p, add_special_tokens) for p in prompts]
    stop_ids = stop_ids_for(tokenizer)
    rows = engine.generate(encoded, max_new_tokens, sampling, stop_ids, stats, _until_stop(tokenizer, stop))
    out = []
    for ids in rows:
        finish = "stop" if ids and ids[-1] in stop_ids else "length"
        body = ids[:-1] if finish == "stop" else ids
        text = tokenizer.decode(body, skip_special_tokens=True)
        cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
        if cuts:
            text, finish = text[: min(cuts)], "stop"
        out.append(Completion(text, ids, finish))
    return out
