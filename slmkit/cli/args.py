"""What the verbs share: the parser class (one-line errors), argument types that validate, common flags, and the
registry helper `verb()` that maps a verb to its typed function."""

from __future__ import annotations

import argparse
from typing import Callable

MODEL_HELP = ("a model folder, a .gguf file, a preset name, a hub id, 'default' (SmolLM2-135M-Instruct Q4_1) or "
              "'gemma3-270m' (Gemma 3 270M base, Q4_K_M)")
DTYPES = ["float32", "bfloat16", "float16"]


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (what is wrong, then where the help is) and exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def at_least(low: float, kind: type = int) -> Callable[[str], float]:
    """An argument type: a whole number (or, with kind=float, a number) that is at least `low`."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be a {'whole number' if kind is int else 'number'}, got {text!r}") from None
        if value != value or value < low:  # NaN too
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def positive(text: str) -> float:
    """An argument type: a number above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _number_list(text: str, kind: type, what: str) -> list:
    """Comma-separated numbers of `kind`, at least one; `what` names them in the error lines."""
    try:
        values = [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated {what}, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"is empty; give one or more comma-separated {what}")
    return values


def int_list(low: int = 0) -> Callable[[str], list[int]]:
    """An argument type: comma-separated whole numbers, each at least `low`, like 0,1,5."""

    def parse(text: str) -> list[int]:
        values = _number_list(text, int, "whole numbers")
        if min(values) < low:
            raise argparse.ArgumentTypeError(f"values must be >= {low}, got {text!r}")
        return values

    parse.__name__ = "list"
    return parse


def ratio_list(text: str) -> list[float]:
    """An argument type: comma-separated ratios in (0, 1], like 1,0.5,0.3."""
    values = _number_list(text, float, "ratios in (0, 1]")
    if not all(0 < v <= 1 for v in values):  # NaN fails too
        raise argparse.ArgumentTypeError(f"ratios must be in (0, 1], got {text!r}")
    return values


def name_list(text: str) -> list[str]:
    """An argument type: comma-separated names (checked against their registry by the library)."""
    return [x.strip() for x in text.split(",") if x.strip()]


def verb(sub, name: str, fn: Callable, **kw) -> Parser:
    """A verb's parser, its help from the function's docstring; `fn` is called with the arguments it names."""
    doc = (fn.__doc__ or "").strip()
    first = " ".join(doc.split("\n\n")[0].split())  # the first paragraph's first sentence is the one-line help
    s = sub.add_parser(name, help=first.split(". ")[0].rstrip(".") if doc else None, description=doc, **kw)
    s.set_defaults(fn=fn)
    return s


def group(sub, name: str, help: str, dest: str) -> argparse._SubParsersAction:
    """A verb with actions under it (slm data prepare, slm combine rerank)."""
    s = sub.add_parser(name, help=help, description=help)
    return s.add_subparsers(dest=dest, metavar=dest.upper(), required=True)


def model_arg(s: argparse.ArgumentParser, positional: bool = False, help: str = MODEL_HELP) -> None:
    if positional:
        s.add_argument("model", nargs="?", default="default", help=help)
    else:
        s.add_argument("--model", "-m", default="default", help=help)


def adapter_arg(s: argparse.ArgumentParser) -> None:
    s.add_argument("--adapter", metavar="DIR", help="a LoRA adapter folder (peft's format, as slm train or peft "
                                                     "writes it) to run on top of the model")


def dtype_arg(s: argparse.ArgumentParser, help: str = "compute dtype (default float32)", dest: str = "dtype") -> None:
    s.add_argument("--" + dest.replace("_", "-"), dest=dest, choices=DTYPES, help=help)


def device_arg(s: argparse.ArgumentParser) -> None:
    s.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: CUDA when present, else CPU)")


def overwrite_arg(s: argparse.ArgumentParser) -> None:
    s.add_argument("--overwrite", action="store_true",
                   help="write into (or replace) an output folder or file that is not a previous slmkit output of "
                        "this kind; by default such an output is refused, so nothing of yours is deleted")


def quiet_arg(s: argparse.ArgumentParser, help: str = "no progress bars") -> None:
    s.add_argument("--quiet", "-q", action="store_true", help=help)
