"""Run untrusted Python programs (a model's solutions, TinyGSM-style) and read their answers, safely.

Each program runs in its own short-lived process (`python -I -S`, an empty environment, a fresh empty working
folder, its own process group), behind four layers; any one of them stops the hostile programs the tests feed it:

1. A static check of the syntax tree: imports only from an allowlist of pure computation modules (math,
   fractions, itertools, ...); no names such as eval, exec, open, getattr, globals, __import__; no attribute
   that starts with an underscore or reaches into frames and code (tb_frame, f_globals, gi_frame, ...).
2. Restricted builtins: the program's globals get a builtins dict without open, eval, exec, compile, input,
   getattr/setattr, vars, globals, breakpoint, exit; `__import__` admits only the allowlist.
3. An audit hook (PEP 578), installed once the allowed modules are imported: from then on every file open,
   process creation (fork, exec, spawn, system, subprocess), socket, ctypes or code-compiling event raises.
4. Resource limits set by the runner on itself before the program starts: CPU seconds (RLIMIT_CPU), address
   space (RLIMIT_AS: a huge allocation is a MemoryError), file size 0 (RLIMIT_FSIZE: no file can grow),
   processes (RLIMIT_NPROC, where the user is not root), no core files; the parent kills the whole process
   group at the wall-clock limit.

The answer is the return value of the program's solution function (`solution()`, or its only top-level
function taking no arguments), else the last line it printed. Every failure is recorded, never raised:
'forbidden: ...', 'syntax error', 'timeout', 'memory', 'error: ZeroDivisionError: ...', 'no answer'.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Iterable

ALLOWED_MODULES = ("math", "cmath", "fractions", "decimal", "statistics", "itertools", "functools", "collections",
                   "operator", "heapq", "bisect", "string", "re", "datetime", "numbers", "random", "typing")
FORBIDDEN_NAMES = {"eval", "exec", "compile", "open", "input", "__import__", "getattr", "setattr", "delattr",
                   "globals", "locals", "vars", "breakpoint", "exit", "quit", "help", "memoryview", "__builtins__",
                   "__loader__", "__spec__"}
FORBIDDEN_ATTRS = {"tb_frame", "tb_next", "f_back", "f_globals", "f_locals", "f_builtins", "f_code", "gi_frame",
                   "gi_code", "cr_frame", "cr_code", "ag_frame", "ag_code", "co_code", "func_globals", "mro",
                   # allowed modules expose others as attributes (typing.sys): never reach them by name
                   "sys", "os", "posix", "builtins", "modules", "importlib", "socket", "subprocess"}


@dataclass
class SandboxLimits:
    cpu_s: float = 2.0  # CPU seconds (RLIMIT_CPU, rounded up to whole seconds)
    wall_s: float = 5.0  # wall-clock seconds, the parent's kill (covers sleeping and blocking)
    memory_mb: int = 512  # address space (RLIMIT_AS)
    output_chars: int = 4000  # printed text kept


@dataclass
class RunResult:
    ok: bool
    answer: str | None = None
    error: str | None = None  # why there is no answer: 'forbidden: ...', 'timeout', 'memory', 'error: ...'
    stdout: str = ""
    seconds: float = 0.0


def check_program(code: str) -> str | None:
    """Why the program may not run ('forbidden: ...', 'syntax error: ...'), or None when it passes the static check."""
    try:
        tree = ast.parse(code)
    except SyntaxError as e:
        return f"syntax error: {e.msg} (line {e.lineno})"
    except ValueError as e:  # null bytes
        return f"syntax error: {e}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if node.level == 0 else ["." * node.level]
        else:
            names = []
        for name in names:
            if name.split(".")[0] not in ALLOWED_MODULES:
                return f"forbidden: import {name}"
        if isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
            return f"forbidden: {node.id}"
        if isinstance(node, ast.Attribute) and (node.attr.startswith("_") or node.attr in FORBIDDEN_ATTRS):
            return f"forbidden: attribute .{node.attr}"
        if isinstance(node, (ast.Global, ast.Nonlocal)) and any(n.startswith("__") for n in node.names):
            return "forbidden: dunder global"
    return None


# The runner: the child process's whole program. It imports what it needs and the allowed modules, limits itself,
# installs the audit hook, then runs the program with restricted builtins and prints one JSON line.
_RUNNER = r'''
import builtins, io, json, resource, sys
limits = json.loads(sys.argv[1])
code = sys.stdin.read()
ALLOWED = tuple(limits["allowed"])
for name in ALLOWED:
    __import__(name)
modules = {name: sys.modules[name] for name in ALLOWED}
real_stdout = sys.stdout
def report(**result):
    real_stdout.write(json.dumps(result) + "\n")
    real_stdout.flush()
try:
    compiled = compile(code, "<program>", "exec")
except (SyntaxError, ValueError) as e:
    report(ok=False, error="syntax error: " + str(e))
    raise SystemExit(0)
cpu = max(1, int(-(-limits["cpu_s"] // 1)))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
try:
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
except (ValueError, OSError):
    pass
BLOCKED = ("open", "os.", "subprocess.", "socket.", "ctypes.", "shutil.", "pty.", "_posixsubprocess", "compile",
           "import", "marshal.", "pickle.", "sys.addaudithook", "sys._getframe", "code.__new__",
           "function.__new__", "object.__setattr__", "object.__delattr__", "urllib.", "http.", "ftplib.",
           "smtplib.", "webbrowser.", "glob.", "tempfile.", "sqlite3.", "signal.")
started = [False]
def hook(event, args):
    if not started[0]:
        return
    if event.startswith(BLOCKED):
        raise PermissionError("forbidden: " + event)
safe = {k: v for k, v in vars(builtins).items() if k not in (
    "open", "eval", "exec", "compile", "input", "__import__", "getattr", "setattr", "delattr", "globals", "locals",
    "vars", "breakpoint", "exit", "quit", "help", "memoryview", "__loader__", "__spec__", "__build_class__")}
def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level or name.split(".")[0] not in modules:
        raise ImportError("forbidden: import " + name)
    return builtins.__import__(name, globals, locals, fromlist, 0)
safe["__import__"] = guarded_import
safe["__build_class__"] = builtins.__build_class__
env = {"__builtins__": safe, "__name__": "__main__"}
class Capped(io.StringIO):
    def write(self, s):
        if self.tell() < limits["output_chars"]:
            super().write(s[: limits["output_chars"] - self.tell()])
        return len(s)
out = Capped()
sys.stdout = sys.stderr = out
resource.setrlimit(resource.RLIMIT_AS, (limits["memory_mb"] << 20, limits["memory_mb"] << 20))
sys.addaudithook(hook)
started[0] = True
answer = error = None
try:
    exec(compiled, env)
    fns = [v for k, v in env.items() if callable(v) and getattr(v, "__code__", None) is not None
           and v.__code__.co_filename == "<program>" and v.__code__.co_argcount == 0 and not k.startswith("_")]
    fn = env.get("solution") if callable(env.get("solution")) else (fns[0] if len(fns) == 1 else None)
    if fn is not None:
        value = fn()
        if value is not None:
            answer = str(value)
except MemoryError:
    error = "memory"
except RecursionError:
    error = "error: RecursionError: maximum recursion depth exceeded"
except PermissionError as e:
    error = str(e) if str(e).startswith("forbidden") else "error: PermissionError: " + str(e)
except ImportError as e:
    error = str(e) if str(e).startswith("forbidden") else "error: ImportError: " + str(e)
except BaseException as e:
    error = "error: " + type(e).__name__ + (": " + str(e)[:200] if str(e) else "")
started[0] = False
sys.stdout = real_stdout
printed = out.getvalue()
if answer is None and error is None:
    lines = [l.strip() for l in printed.strip().splitlines() if l.strip()]
    if lines:
        answer = lines[-1]
    else:
        error = "no answer (the program printed nothing and has no solution() returning a value)"
report(ok=answer is not None and error is None, answer=answer, error=error, stdout=printed)
'''


def run_program(code: str, limits: SandboxLimits | None = None, static_check: bool = True) -> RunResult:
    """Run one program in a fresh sandboxed process and read its answer (see the module docstring).

    static_check=False skips layer 1 (tests use it to show that the runtime layers alone stop a program).
    """
    limits = limits or SandboxLimits()
    t0 = time.perf_counter()
    if static_check:
        reason = check_program(code)
        if reason is not None:
            return RunResult(ok=False, error=reason, seconds=time.perf_counter() - t0)
    args = json.dumps({**asdict(limits), "allowed": ALLOWED_MODULES})
    with tempfile.TemporaryDirectory(prefix="slmkit-sandbox-") as cwd:
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _RUNNER, args], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env={},
                                start_new_session=True, close_fds=True)
        try:
            stdout, stderr = proc.communicate(code.encode("utf-8", "replace"), timeout=limits.wall_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            return RunResult(ok=False, error="timeout", seconds=time.perf_counter() - t0)
        finally:
            _kill_group(proc)  # anything it left behind in its group
    seconds = time.perf_counter() - t0
    line = stdout.decode("utf-8", "replace").strip().splitlines()[-1:] if stdout else []
    if proc.returncode == 0 and line:
        try:
            return RunResult(**json.loads(line[0]), seconds=seconds)
        except (ValueError, TypeError):
            pass
    return RunResult(ok=False, error=_death(proc.returncode, stderr), seconds=seconds)


def run_programs(codes: Iterable[str], limits: SandboxLimits | None = None, workers: int = 2) -> list[RunResult]:
    """Run programs `workers` at a time (each in its own process); results in input order."""
    codes = list(codes)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda c: run_program(c, limits), codes))


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass


def _death(returncode: int | None, stderr: bytes) -> str:
    """Why the runner died without a report: a signal from a limit, or its last error line."""
    import signal

    if returncode is not None and returncode < 0:
        sig = -returncode
        if sig == signal.SIGXCPU or sig == signal.SIGKILL:
            return "timeout"
        if sig == signal.SIGXFSZ:
            return "forbidden: file write"
        return f"killed by signal {signal.Signals(sig).name}"
    last = stderr.decode("utf-8", "replace").strip().splitlines()[-1:] if stderr else []
    if last and "MemoryError" in last[0]:
        return "memory"
    return f"error: the sandbox exited with {returncode}" + (f" ({last[0][:200]})" if last else "")
