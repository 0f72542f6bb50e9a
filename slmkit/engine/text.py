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


class TextStream:
    """One generated row as text: the state machine every caller shares (the CLI, the server, eval, generate_text).

    `push(token)` returns the text safe to show now. A stop id ends the stream (it is not text); a stop string
    ends it with the text before it; text that could still begin a stop string, or an incomplete UTF-8
    character, is held back. `close()` returns what was held back when the generation ran out (or stopped at a
    stop id), so the pieces add up to the full decode cut at the first stop. `finish` is "stop" or "length".
    """

    def __init__(self, tokenizer: Tokenizer, stops: Sequence[str] = (), stop_ids: Sequence[int] = ()):
        self.decoder = IncrementalDecoder(tokenizer)
        self.matcher = StopStringMatcher(stops)
        self.stop_ids = set(stop_ids)
        self.ids: list[int] = []  # every token pushed, a final stop id included
        self.pieces: list[str] = []
        self.finish: str | None = None  # "stop" or "length" once the stream has ended
        self.stopped_by_string = False

    @property
    def done(self) -> bool:
        return self.finish is not None

    @property
    def text_ids(self) -> list[int]:
        """The ids that became text (no stop id)."""
        return self.decoder.ids

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def push(self, token: int) -> str:
        if self.done:
            return ""
        self.ids.append(token)
        if token in self.stop_ids:
            self.finish = "stop"
            return self._held()
        piece, hit = self.matcher.feed(self.decoder.push(token))
        if hit:
            self.finish, self.stopped_by_string = "stop", True
        return self._keep(piece)

    def close(self) -> str:
        """The generation ended without a stop (or at a stop id already seen): the text held back."""
        if self.finish is None:
            self.finish = "length"
            return self._held()
        return ""

    def _held(self) -> str:
        piece, hit = self.matcher.feed(self.decoder.flush())
        piece += "" if hit else self.matcher.flush()
        if hit:
            self.finish, self.stopped_by_string = "stop", True
        return self._keep(piece)

    def _keep(self, piece: str) -> str:
        if piece:
            self.pieces.append(piece)
        return piece


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
    stream = TextStream(tokenizer, stop, stop_ids_for(tokenizer) if stop_ids is None else stop_ids)
    steps = engine.stream([prompt_ids], max_new_tokens, sampling, sorted(stream.stop_ids), stats, reuse_prefix)
    try:
        for (token,) in steps:
            piece = stream.push(token)
            if piece:
                yield piece
            if stream.done:
                break
    finally:
        steps.close()
    piece = stream.close()
    if piece:
        yield piece
    if result is not None:
        result.append(Completion(stream.text, stream.ids, stream.finish))


def generate_text(engine: Engine, tokenizer: Tokenizer, prompts: Sequence[str], max_new_tokens: int,
                  sampling: SamplingParams | None = None, stop: Sequence[str] = (),
                  stats: GenerationStats | None = None, add_special_tokens: bool = True) -> list[Completion]:
    """Generate for a batch of text prompts (left-padded together); each row is a TextStream, and the batch ends
    once every row has hit a stop id or a stop string."""
    encoded = [encode_prompt(tokenizer, p, add_special_tokens) for p in prompts]
    rows = stream_rows(engine, tokenizer, encoded, max_new_tokens, sampling, stop, stats=stats)
    return [Completion(r.text, r.ids, r.finish) for r in rows]


def stream_rows(engine: Engine, tokenizer: Tokenizer, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                sampling: SamplingParams | None = None, stop: Sequence[str] = (),
                stop_ids: Sequence[int] | None = None, stats: GenerationStats | None = None) -> list[TextStream]:
    """A batch of token-id prompts decoded together, one TextStream per row (ended and closed)."""
    stop_ids = stop_ids_for(tokenizer) if stop_ids is None else list(stop_ids)
    if len(prompts) > 1 and engine.one_prompt_at_a_time:  # a speculative engine: one prompt after the other
        rows = []
        for prompt in prompts:
            one = type(stats)() if stats is not None else None
            rows += stream_rows(engine, tokenizer, [prompt], max_new_tokens, sampling, stop, stop_ids, one)
            if stats is not None:
                engine.add_stats(stats, one)
        return rows
    rows = [TextStream(tokenizer, stop, stop_ids) for _ in prompts]
    steps = engine.stream(prompts, max_new_tokens, sampling, sorted(set(stop_ids)), stats)
    try:
        for tokens in steps:
            for row, token in zip(rows, tokens):
                if token is not None:
                    row.push(token)
            if all(r.done for r in rows):
                break
    finally:
        steps.close()
    for r in rows:
        r.close()
    return rows
