"""Typed results: what the library's jobs return and what their files hold.

Each result is a dataclass with a `kind` and a schema version. `to_json()` is the file's content (results.json of
an eval run, bench.json of a bench run), `from_json()` reads it back and refuses another kind or a newer schema,
and `slmkit.report.load_result(path)` picks the class by `kind` (so `slm report` and the tour never sniff keys). Every result
carries its provenance: the versions of what produced it, the seeds, the data source and the machine.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
from importlib import metadata
from typing import Any, ClassVar

from slmkit.errors import SlmError

SCHEMA = 1
PACKAGES = ("slmkit", "torch", "transformers", "llama_cpp_python", "lm_eval", "tokenizers")


def versions() -> dict[str, str]:
    """The installed versions of slmkit and the packages whose code can change a figure (missing ones left out)."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name.replace("_python", "")] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            pass
    return out


def machine(threads: int | None = None, device: str | None = None) -> dict[str, Any]:
    """The machine a figure was measured on: architecture, processor, cores (and threads and device when given)."""
    out: dict[str, Any] = {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count(),
                           "system": platform.system()}
    if threads is not None:
        out["threads"] = threads
    if device is not None:
        out["device"] = device
    return out


class Result:
    """The base of typed results: a dataclass subclass sets `kind` and its fields; JSON is the dataclass's fields
    plus `kind` and `schema`."""

    kind: ClassVar[str] = ""
    filename: ClassVar[str] = ""

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "schema": SCHEMA, **dataclasses.asdict(self)}  # type: ignore[call-overload]

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "the result"):
        if not isinstance(data, dict) or data.get("kind") != cls.kind:
            found = data.get("kind") if isinstance(data, dict) else type(data).__name__
            raise SlmError(f"{where} is not a {cls.kind} result (kind {found!r}); rerun the step that wrote it")
        if not isinstance(data.get("schema"), int) or data["schema"] > SCHEMA:
            raise SlmError(f"{where} has schema {data.get('schema')!r}; this slmkit reads up to {SCHEMA}: upgrade "
                           "slmkit")
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        try:
            return cls(**{k: v for k, v in data.items() if k in names})
        except TypeError as e:
            raise SlmError(f"{where} lacks a field of a {cls.kind} result ({e}); rerun the step that wrote "
                           "it") from None

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1, ensure_ascii=False) + "\n"
