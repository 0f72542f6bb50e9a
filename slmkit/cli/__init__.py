"""`slm <verb>`: each verb is one typed function whose docstring is its help, in the module of its group.

Each group module has `register(sub)`, which adds its verbs with their arguments; `main` parses and calls the
verb's function with the arguments it names (a dataclass-typed parameter is built from the arguments of its
fields). Errors a user can cause (SlmError, bad arguments) print one line on stderr and exit 2; heavy imports
happen inside verbs, so `slm --help` imports no torch. Set SLMKIT_DEBUG=1 to see a traceback for unexpected
errors. Only the entry point (this package) imports the CLI; the library never does.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import sys
import typing

from slmkit.cli.args import Parser

GROUPS = ("models", "generate", "serve", "eval", "bench", "train", "combine", "zoo")


def parser() -> Parser:
    p = Parser(prog="slm", description="slmkit: small language models, end to end.")
    sub = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    for name in GROUPS:
        importlib.import_module(f"slmkit.cli.{name}").register(sub)
    return p


def call(fn, ns: argparse.Namespace):
    """fn(**the arguments it names): a parameter typed with a dataclass gets one built from its fields' arguments,
    one typed argparse.Namespace gets them all."""
    hints = typing.get_type_hints(fn)
    kwargs = {}
    for name in inspect.signature(fn).parameters:
        kind = hints.get(name)
        if kind is argparse.Namespace:  # train and distill: arguments shared with `python -m slmkit.train`
            kwargs[name] = ns
        elif dataclasses.is_dataclass(kind):
            names = [f.name for f in dataclasses.fields(kind) if hasattr(ns, f.name)]
            kwargs[name] = kind(**{n: getattr(ns, n) for n in names})
        else:
            kwargs[name] = getattr(ns, name)
    return fn(**kwargs)


def main(argv: list[str] | None = None) -> int:
    from slmkit.errors import run_main

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["lm-eval"]:  # everything after it is lm_eval's own command line
        from slmkit.cli.eval import lm_eval

        return run_main("slm lm-eval", lambda: lm_eval(argv[1:]))
    try:
        ns = parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a bad argument (2, one line already printed)
        return e.code if isinstance(e.code, int) else 0
    return run_main(f"slm {ns.verb}", lambda: call(ns.fn, ns))
