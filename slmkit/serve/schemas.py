"""Request bodies of the OpenAI API subset that `slm serve` implements, validated with pydantic.

Fields an OpenAI client sends that change nothing here (user, metadata, zero penalties) are accepted and
ignored; fields that would change the output and are not implemented (n > 1, logprobs, penalties, tools) are
refused with a 400 that names them, rather than silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SEED_MAX = 2**63 - 1
OFF = (None, False, {}, [])
# Fields that would change the answer and are not implemented: the values that mean "off" are accepted.
UNIMPLEMENTED = {"logprobs": OFF, "top_logprobs": OFF, "tools": OFF, "functions": OFF, "logit_bias": OFF,
                 "response_format": OFF, "echo": OFF, "suffix": OFF, "best_of": (None, 1)}


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Common(BaseModel):
    """Sampling and stopping fields shared by /v1/completions and /v1/chat/completions."""

    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] = 1.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    seed: Annotated[int, Field(ge=0, le=SEED_MAX)] | None = None
    stop: str | Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=4)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Field(ge=1, le=1)] = 1  # one choice per request
    presence_penalty: Annotated[float, Field(ge=0, le=0)] = 0.0  # not implemented: only 0 is accepted
    frequency_penalty: Annotated[float, Field(ge=0, le=0)] = 0.0

    @model_validator(mode="after")
    def _refuse_unimplemented(self) -> "_Common":
        for name, value in (self.model_extra or {}).items():
            if name in UNIMPLEMENTED and value not in UNIMPLEMENTED[name]:
                raise ValueError(f"'{name}' is not supported by slm serve; leave it out")
        return self

    @property
    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @field_validator("stop")
    @classmethod
    def _non_empty_stop(cls, value: Any) -> Any:
        if isinstance(value, str) and not value:
            raise ValueError("a stop string must not be empty")
        return value


class CompletionRequest(_Common):
    """POST /v1/completions: one prompt (text, a one-item list of text, or token ids). With `echo: true`,
    `max_tokens: 0` and `logprobs: N` it scores the prompt instead (each token's log-probability and the N most
    likely tokens at each position), which is how lm-eval's completions backends and `slm eval --backend
    openai` compute log-likelihoods."""

    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)] | Annotated[list[int], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=0)] | None = None
    echo: bool = False
    logprobs: Annotated[int, Field(ge=0, le=20)] | None = None

    @model_validator(mode="after")
    def _scoring(self) -> "CompletionRequest":
        scoring = self.echo or self.max_tokens == 0 or self.logprobs is not None
        if scoring and not (self.echo and self.max_tokens == 0 and not self.stream):
            raise ValueError("echo and logprobs score the prompt: send echo: true, max_tokens: 0 and logprobs: N "
                             "(0-20), without stream; to generate, leave echo and logprobs out")
        return self

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: Any) -> Any:
        if isinstance(value, str) and not value:
            raise ValueError("the prompt is empty; give some text")
        return value


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(_Common):
    """POST /v1/chat/completions: messages rendered with the model's chat template."""

    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None  # the newer name of max_tokens
