"""Chat templates rendered with jinja2 the way transformers' apply_chat_template renders them:
a sandboxed environment with trim_blocks and lstrip_blocks, the loopcontrols extension, a non-escaping
`tojson`, and the `raise_exception` / `strftime_now` globals."""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from slmkit.errors import SlmError


def _raise_exception(message: str):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=16)
def _compile(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as e:
        raise SlmError(f"chat template has a syntax error at line {e.lineno}: {e.message}") from None


def render_chat_template(template: str, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                         **variables: Any) -> str:
    """The prompt text for a conversation; `variables` (bos_token, eos_token, tools, ...) reach the template."""
    for m in messages:
        if not isinstance(m, dict) or "role" not in m:
            raise SlmError("each chat message must be a dict with 'role' and 'content'")
    try:
        return _compile(template).render(messages=messages, add_generation_prompt=add_generation_prompt, **variables)
    except jinja2.TemplateError as e:
        raise SlmError(f"chat template: {e}") from None
