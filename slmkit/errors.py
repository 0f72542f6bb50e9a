"""The one exception type a user can cause: the CLI prints it as a single line and exits non-zero."""

from __future__ import annotations

import os
import sys
from typing import Callable


class SlmError(Exception):
    """Bad input a user can fix: the message says what is wrong and, where useful, what to do."""


def run_main(prog: str, fn: Callable[[], object]) -> int:
    """Run an entry point's work: 0 on success; an SlmError is one line and 2; Ctrl-C is 130; anything else one
    line and 1 (SLMKIT_DEBUG=1 re-raises it to show the traceback)."""
    try:
        fn()
    except SlmError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - an entry point never shows a traceback unless asked
        if os.environ.get("SLMKIT_DEBUG"):
            raise
        msg = str(e).splitlines()[0] if str(e) else ""
        print(f"{prog}: unexpected error: {type(e).__name__}: {msg} (SLMKIT_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1
    return 0
