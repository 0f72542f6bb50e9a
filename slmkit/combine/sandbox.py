"""Run untrusted Python programs (a model's solutions, TinyGSM-style) and read their answers, safely.

Threat model: the program is hostile and knows this file. It must not read, write or delete anything outside
its scratch folder, reach any network, see the caller's environment or other processes, outlive its deadline, or
make the caller hang or grow. The boundary is the operating system; the Python layers are defence in depth.

OS isolation (`isolation="bwrap"`, chosen when bubblewrap works here; docs/combine.md):
- bubblewrap puts the runner in new network (loopback only, no route out), PID (every descendant dies with the
  run), IPC, UTS and cgroup namespaces, with a filesystem of read-only binds of /usr and the Python
  installation only (no /etc, /home, /root, /work, no host /proc), a fresh /dev with null/zero/urandom, a
  private /proc and an 8 MB tmpfs scratch folder as the working directory; an empty environment;
  `--die-with-parent` and `--new-session`.
- as root, `setpriv` drops the runner to the unprivileged user nobody (65534), clears groups, capabilities and
  sets no-new-privs, so RLIMIT_NPROC and file permissions apply; as another user the runner keeps that uid inside
  a user namespace that cannot nest.
- with no bubblewrap (or no namespaces), `run_program` refuses with `IsolationError`, unless the caller passes
  `isolation="none"` (`slm combine rerank --unisolated`), and every result records the isolation it ran under.

Python layers, in the runner's child process (the runner forks before running anything untrusted):
1. A static check of the syntax tree: imports only from an allowlist of pure computation modules; no names such
   as eval, exec, open, getattr, globals, __import__, attrgetter, Formatter, get_type_hints; no attribute that
   starts with an underscore or reaches frames and code; no string constant holding a dunder ("__globals__").
2. Restricted builtins; `__import__` admits only the allowlist and keeps nothing of the runner in its globals.
3. An audit hook (PEP 578) installed just before the program starts and never removable: from then on every
   event but `time.sleep` raises (open, import, compile, exec, os.*, sys.*, socket, subprocess, attribute access
   to frames and code, ...). It has no switch: the runner's own work after the program raises no event.
4. Resource limits: CPU seconds, address space, file size, no processes, no core files.

The report: the runner's parent process (which never runs program code) waits for the child, reads the child's
result from a private pipe and writes one JSON report on a pipe of its own, which the child closed before the
program started. The caller reads stdout (the program's output: head and tail kept, the rest counted), stderr
and the report under one deadline that covers reading too, then kills the whole sandbox.

The answer is the return value of `solution()` (or the only top-level function taking no arguments), else the
last line printed. Failures are recorded, never raised: 'forbidden: ...', 'syntax error', 'timeout', 'memory',
'error: ZeroDivisionError: ...', 'no answer', 'error: the program exited before it finished'.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Iterable, Literal

from slmkit.errors import SlmError

ALLOWED_MODULES = ("math", "cmath", "fractions", "decimal", "statistics", "itertools", "functools", "collections",
                   "operator", "heapq", "bisect", "string", "re", "datetime", "numbers", "random", "typing")
FORBIDDEN_NAMES = {"eval", "exec", "compile", "open", "input", "__import__", "getattr", "setattr", "delattr",
                   "globals", "locals", "vars", "breakpoint", "exit", "quit", "help", "memoryview", "__builtins__",
                   "__loader__", "__spec__",
                   # string-based attribute access and string evaluation in the allowed modules
                   "attrgetter", "methodcaller", "Formatter", "get_type_hints", "ForwardRef", "format_map",
                   "get_field", "vformat", "__del__"}
FORBIDDEN_ATTRS = {"tb_frame", "tb_next", "f_back", "f_globals", "f_locals", "f_builtins", "f_code", "gi_frame",
                   "gi_code", "cr_frame", "cr_code", "ag_frame", "ag_code", "co_code", "func_globals", "mro",
                   # allowed modules expose others as attributes (typing.sys): never reach them by name
                   "sys", "os", "posix", "builtins", "modules", "importlib", "socket", "subprocess",
                   *FORBIDDEN_NAMES}
Isolation = Literal["auto", "bwrap", "none"]
NOBODY = 65534
MAX_PROGRAM_CHARS = 1 << 20


class IsolationError(SlmError):
    """This machine cannot isolate untrusted programs (no bubblewrap or no namespaces)."""


@dataclass
class SandboxLimits:
    cpu_s: float = 2.0  # CPU seconds (RLIMIT_CPU, rounded up to whole seconds)
    wall_s: float = 5.0  # wall-clock seconds for the whole run, reading included; then every process is killed
    memory_mb: int = 512  # address space (RLIMIT_AS)
    output_chars: int = 4000  # printed text kept: the first and last halves; the rest is counted
    processes: int = 0  # processes the program may start (RLIMIT_NPROC; 0: none)


@dataclass
class RunResult:
    ok: bool
    answer: str | None = None
    error: str | None = None  # why there is no answer: 'forbidden: ...', 'timeout', 'memory', 'error: ...'
    stdout: str = ""  # head and tail of what it printed
    seconds: float = 0.0
    dropped: int = 0  # bytes of output dropped between head and tail
    isolation: str = "bwrap"  # what held it: "bwrap" (namespaces, nobody) or "none"


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
            if any(alias.name in FORBIDDEN_NAMES for alias in node.names):
                return f"forbidden: import {next(a.name for a in node.names if a.name in FORBIDDEN_NAMES)}"
        else:
            names = []
        for name in names:
            if name.split(".")[0] not in ALLOWED_MODULES:
                return f"forbidden: import {name}"
        if isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
            return f"forbidden: {node.id}"
        if isinstance(node, ast.Attribute) and (node.attr.startswith("_") or node.attr in FORBIDDEN_ATTRS):
            return f"forbidden: attribute .{node.attr}"
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name in FORBIDDEN_NAMES:
            return f"forbidden: def {node.name}"
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)) and (
                "__" in (node.value if isinstance(node.value, str) else node.value.decode("latin-1"))):
            return "forbidden: a string naming a dunder"
        if isinstance(node, (ast.Global, ast.Nonlocal)) and any(n.startswith("__") for n in node.names):
            return "forbidden: dunder global"
    return None


def entry_point(code: str) -> str | None:
    """The function whose return value is the answer: `solution`, else the only public top-level function that
    takes no arguments (read from the source, so the runner needs no introspection of the program's objects)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return None
    fns = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    bare = [n.name for n in fns if isinstance(n, ast.FunctionDef) and not (n.args.args or n.args.posonlyargs
            or n.args.kwonlyargs or n.args.vararg or n.args.kwarg) and not n.name.startswith("_")]
    if "solution" in bare:
        return "solution"
    return bare[0] if len(set(bare)) == 1 else None


# The runner, the sandbox's whole program. Its parent half never runs program code: it forks, waits and reports
# on the report pipe. Its child half imports the allowed modules, limits itself, closes the report pipe, installs
# the audit hook and runs the program.
_RUNNER = r'''
import builtins, json, os, resource, sys
limits = json.loads(sys.argv[1])
code = sys.stdin.read()
rd, wr = os.pipe()
pid = os.fork()
if pid:
    os.close(wr)
    got = b""
    while len(got) <= 65536:
        chunk = os.read(rd, 65536)
        if not chunk:
            break
        got += chunk
    os.close(rd)
    _, status = os.waitpid(pid, 0)
    try:
        result = json.loads(got.decode("utf-8", "replace")) if got else None
    except ValueError:
        result = None
    report = {"exit": os.waitstatus_to_exitcode(status), "result": result if isinstance(result, dict) else None}
    os.write(limits["report_fd"], json.dumps(report).encode())
    os._exit(0)
os.close(rd)
os.close(limits["report_fd"])
def result(**r):
    data = json.dumps(r).encode()
    while data:
        data = data[os.write(wr, data):]
    os._exit(0)
for name in limits["allowed"]:
    __import__(name)
mods = {name: sys.modules[name] for name in limits["allowed"]}
try:
    compiled = compile(code, "<program>", "exec")
except (SyntaxError, ValueError) as e:
    result(error="syntax error: " + str(e))
safe = {k: v for k, v in vars(builtins).items() if k not in (
    "open", "eval", "exec", "compile", "input", "__import__", "getattr", "setattr", "delattr", "globals", "locals",
    "vars", "breakpoint", "exit", "quit", "help", "memoryview", "__loader__", "__spec__")}
# the guard's globals hold the allowed modules and nothing of the runner
guard_ns = {"__builtins__": {"ImportError": ImportError}, "mods": mods}
exec("def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):\n"
     "    top = name.partition('.')[0]\n"
     "    if level or top not in mods or name != top:\n"
     "        raise ImportError('forbidden: import ' + name)\n"
     "    return mods[top]\n", guard_ns)
safe["__import__"] = guard_ns["guarded_import"]
env = {"__builtins__": safe if limits["python_layers"] else builtins, "__name__": "__main__"}
main = type(result)(compiled, env)  # the module's code as a function: run with no exec event
entry = limits["entry"]
sys.stderr = sys.stdout
out = sys.stdout
cpu = max(1, int(-(-limits["cpu_s"] // 1)))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
nproc = limits["processes"]
try:
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
except (ValueError, OSError):
    pass
mem = limits["memory_mb"] << 20
resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
if limits["python_layers"]:
    def hook(event, args):
        if event != "time.sleep":
            raise PermissionError("forbidden: " + event)
    sys.addaudithook(hook)
    del hook
answer = error = None
try:
    main()
    fn = env.get(entry) if entry else None
    if fn is not None:
        value = fn()
        if value is not None:
            answer = str(value)
except MemoryError:
    error = "memory"
except RecursionError:
    error = "error: RecursionError: maximum recursion depth exceeded"
except PermissionError as e:
    error = str(e) if str(e).startswith("forbidden") else "error: PermissionError: " + str(e)[:200]
except ImportError as e:
    error = str(e) if str(e).startswith("forbidden") else "error: ImportError: " + str(e)[:200]
except BaseException as e:
    try:
        error = "error: " + type(e).__name__ + (": " + str(e)[:200] if str(e) else "")
    except BaseException:
        error = "error: an exception that cannot be shown"
try:
    out.flush()
except BaseException:
    pass
result(answer=answer, error=error)
'''


@functools.lru_cache(maxsize=None)
def _python_binds() -> tuple[str, ...]:
    """The folders the runner's Python needs, outside /usr: its installation prefix and its executable's folder."""
    exe = os.path.realpath(sys.executable)
    folders = {os.path.realpath(sys.base_prefix), os.path.dirname(exe)}
    return tuple(sorted(f for f in folders if f != "/usr" and not f.startswith("/usr/")))


def _bwrap_argv(bwrap: str) -> list[str]:
    argv = [bwrap, "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup",
            "--die-with-parent", "--new-session", "--clearenv", "--hostname", "sandbox", "--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    for folder in _python_binds():
        argv += ["--ro-bind", folder, folder]
    argv += ["--dev", "/dev", "--proc", "/proc", "--size", str(8 << 20), "--perms", "1777", "--tmpfs", "/tmp",
             "--chdir", "/tmp"]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
        return argv + ["--", setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                       "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--"]
    return argv + ["--unshare-user", "--disable-userns", "--uid", str(NOBODY), "--gid", str(NOBODY), "--"]


@functools.lru_cache(maxsize=None)
def isolation_available() -> tuple[bool, str]:
    """(True, "") when bubblewrap can isolate a program here, else (False, why): checked once per process."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return False, "bubblewrap is not installed (Debian/Ubuntu: apt install bubblewrap)"
    if os.geteuid() == 0 and not (shutil.which("setpriv") or os.path.exists("/usr/bin/setpriv")):
        return False, "setpriv (util-linux) is not installed, so the sandbox cannot drop root"
    try:
        probe = subprocess.run(_bwrap_argv(bwrap) + [os.path.realpath(sys.executable), "-I", "-S", "-c",
                               "import os; print(os.getuid())"], capture_output=True, timeout=20, env={})
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"bubblewrap failed to start: {e}"
    if probe.returncode != 0 or probe.stdout.strip() != str(NOBODY).encode():
        why = (probe.stderr.decode("utf-8", "replace").strip().splitlines() or [f"exit {probe.returncode}"])[-1]
        return False, f"bubblewrap cannot isolate here ({why[:200]}); user namespaces may be disabled"
    return True, ""


def resolve_isolation(isolation: Isolation) -> str:
    """"bwrap" or "none"; "auto" and "bwrap" raise IsolationError (one line) when this machine cannot isolate."""
    if isolation == "none":
        return "none"
    ok, why = isolation_available()
    if not ok:
        raise IsolationError(f"cannot isolate model-written programs: {why}; install it, or pass --unisolated "
                             "(isolation='none') to run them with the Python layers only")
    return "bwrap"


class _Capture:
    """Head and tail of a stream under a byte cap; what falls between them is counted, not kept."""

    def __init__(self, cap: int):
        self.head, self.tail, self.cap, self.dropped = bytearray(), bytearray(), max(2, cap), 0

    def add(self, data: bytes) -> None:
        room = self.cap // 2 - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        self.tail += data
        extra = len(self.tail) - (self.cap - self.cap // 2)
        if extra > 0:
            del self.tail[:extra]
            self.dropped += extra

    def text(self) -> str:
        gap = f"\n[... {self.dropped} bytes dropped ...]\n" if self.dropped else ""
        return self.head.decode("utf-8", "replace") + gap + self.tail.decode("utf-8", "replace")


def _collect(proc: subprocess.Popen, streams: dict, deadline: float) -> bool:
    """Read every stream into its capture until all close or the deadline; True when it finished in time. Once
    the sandbox's first process has exited, a descendant holding a pipe gets half a second, then is cut off."""
    sel = selectors.DefaultSelector()
    for f, cap in streams.items():
        os.set_blocking(f.fileno(), False)
        sel.register(f, selectors.EVENT_READ, cap)
    exited_at = None
    try:
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                return False
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > 0.5:
                return True
            for key, _ in sel.select(timeout=min(0.1, deadline - now)):
                try:
                    data = os.read(key.fd, 1 << 16)
                except BlockingIOError:
                    continue
                if data:
                    key.data.add(data)
                else:
                    sel.unregister(key.fileobj)
        return True
    finally:
        sel.close()


def run_program(code: str, limits: SandboxLimits | None = None, static_check: bool = True,
                isolation: Isolation = "auto", python_layers: bool = True) -> RunResult:
    """Run one program in a fresh sandbox and read its answer (see the module docstring).

    static_check=False skips layer 1 and python_layers=False runs the program with full builtins and no audit
    hook: tests use them to show that the remaining layers alone stop a program.
    """
    limits = limits or SandboxLimits()
    t0 = time.perf_counter()
    mode = resolve_isolation(isolation)
    done = lambda **kw: RunResult(seconds=time.perf_counter() - t0, isolation=mode, **kw)  # noqa: E731
    if static_check:
        reason = check_program(code)
        if reason is not None:
            return done(ok=False, error=reason)
    if len(code) > MAX_PROGRAM_CHARS:
        return done(ok=False, error=f"forbidden: program longer than {MAX_PROGRAM_CHARS} characters")
    report_r, report_w = os.pipe()
    args = json.dumps({**asdict(limits), "allowed": ALLOWED_MODULES, "entry": entry_point(code),
                       "python_layers": python_layers, "report_fd": report_w})
    argv = [os.path.realpath(sys.executable), "-I", "-S", "-c", _RUNNER, args]
    if mode == "bwrap":
        argv = _bwrap_argv(shutil.which("bwrap")) + argv
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={}, cwd="/", start_new_session=True, close_fds=True, pass_fds=(report_w,))
    finally:
        os.close(report_w)
    report_f = os.fdopen(report_r, "rb")
    out, err, rep = _Capture(limits.output_chars), _Capture(4096), _Capture(1 << 17)
    try:
        try:
            proc.stdin.write(code.encode("utf-8", "replace"))
            proc.stdin.close()
        except BrokenPipeError:
            pass
        finished = _collect(proc, {proc.stdout: out, proc.stderr: err, report_f: rep}, time.monotonic() + limits.wall_s)
    finally:
        _kill_group(proc)
        for f in (proc.stdout, proc.stderr, report_f):
            f.close()
        proc.wait()
    printed = out.text()
    kw = dict(stdout=printed, dropped=out.dropped)
    if not finished:
        return done(ok=False, error="timeout", **kw)
    try:
        report = json.loads(bytes(rep.head + rep.tail).decode("utf-8", "replace"))
    except ValueError:
        report = None
    if not isinstance(report, dict):
        return done(ok=False, error=_death(proc.returncode, bytes(err.head + err.tail)), **kw)
    result, code_ = report.get("result"), report.get("exit")
    if result is None:
        if code_ == 0:
            return done(ok=False, error="error: the program exited before it finished", **kw)
        return done(ok=False, error=_death(code_, bytes(err.head + err.tail)), **kw)
    answer, error = result.get("answer"), result.get("error")
    answer = str(answer) if answer is not None else None
    error = str(error)[:300] if error is not None else None
    if answer is None and error is None:
        lines = [line.strip() for line in bytes(out.tail or out.head).decode("utf-8", "replace").splitlines()
                 if line.strip()]
        if lines:
            answer = lines[-1]
        else:
            error = "no answer (the program printed nothing and has no solution() returning a value)"
    return done(ok=answer is not None and error is None, answer=answer, error=error, **kw)


def run_programs(codes: Iterable[str], limits: SandboxLimits | None = None, workers: int = 2,
                 isolation: Isolation = "auto") -> list[RunResult]:
    """Run programs `workers` at a time (each in its own sandbox); results in input order."""
    codes = list(codes)
    resolve_isolation(isolation)  # refuse before starting any
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda c: run_program(c, limits, isolation=isolation), codes))


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _death(exit_code: int | None, stderr: bytes) -> str:
    """Why the program died without a result: a signal from a limit, or its last error line."""
    if exit_code is not None and exit_code < 0:
        sig = -exit_code
        if sig in (signal.SIGXCPU, signal.SIGKILL):
            return "timeout"
        if sig == signal.SIGXFSZ:
            return "forbidden: file write"
        return f"killed by signal {signal.Signals(sig).name}"
    last = stderr.decode("utf-8", "replace").strip().splitlines()[-1:] if stderr else []
    if last and "MemoryError" in last[0]:
        return "memory"
    return f"error: the sandbox exited with {exit_code}" + (f" ({last[0][:200]})" if last else "")
