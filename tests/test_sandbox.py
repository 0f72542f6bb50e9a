"""The program sandbox of verifier reranking: good programs give their answers; hostile ones (file writes, network,
os/subprocess/socket imports, fork bombs, infinite loops, huge allocations, escapes through object internals) are
stopped and reported, both by the static check and, with the static check off, by the runtime layers alone."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from slmkit.combine import sandbox
from slmkit.combine.sandbox import SandboxLimits, check_program, run_program, run_programs

from tests.conftest import needs_sandbox

pytestmark = needs_sandbox

GOOD = {
    "def solution():\n    clips_may = 48 / 2\n    return int(48 + clips_may)\n": "72",
    "def simple_math_problem() -> int:\n    from fractions import Fraction\n    return Fraction(3, 4) * 8\n": "6",
    "import math\nprint('working...')\nprint(math.comb(5, 2))\n": "10",
}


@pytest.mark.parametrize("code, answer", list(GOOD.items()))
def test_good_programs_give_their_answers(code, answer):
    result = run_program(code)
    assert result.ok and result.answer == answer, result


def _escape_target(tmp_path: Path) -> str:
    return str(tmp_path / "escaped.txt")


HOSTILE = {
    # name: (program with {target} for a path outside the sandbox, the error the runtime layers alone report)
    "file write": ("open('{target}', 'w').write('x')\nprint(1)", "open"),
    "file write via FileIO": ("todo, found = [().__class__.__base__], []\nwhile todo:\n    c = todo.pop()\n"
                              "    found += [c] if c.__name__ == 'FileIO' else []\n"
                              "    todo += c.__subclasses__() if c is not type else []\n"
                              "found[0]('{target}', 'w').write(b'x')\nprint(1)", "forbidden: open"),
    "os.system": ("import os\nos.system('touch {target}')\nprint(1)", "forbidden: import os"),
    "os via typing.sys": ("import typing\ntyping.sys.modules['os'].system('touch {target}')\nprint(1)",
                          "forbidden: os.system"),
    "subprocess": ("import subprocess\nsubprocess.run(['touch', '{target}'])\nprint(1)", "forbidden: import subprocess"),
    "socket": ("import socket\nsocket.create_connection(('127.0.0.1', 9))\nprint(1)", "forbidden: import socket"),
    "fork bomb": ("import typing\nos = typing.sys.modules['os']\nwhile True:\n    os.fork()\n", "forbidden: os.fork"),
    "ctypes": ("import ctypes\nctypes.CDLL(None).system(b'touch {target}')\nprint(1)", "forbidden: import ctypes"),
    "__import__": ("__import__('os').system('touch {target}')\nprint(1)", "forbidden: import os"),
    "eval": ("eval(\"__import__('os').system('touch {target}')\")\nprint(1)", "eval"),
    "frame walk": ("try:\n    1 / 0\nexcept Exception as e:\n    g = e.__traceback__.tb_frame.f_globals\n"
                   "    g['__builtins__']['open']('{target}', 'w')\nprint(1)", "forbidden: object.__getattr__"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_programs_are_stopped_by_the_static_check(name, tmp_path):
    code = HOSTILE[name][0].format(target=_escape_target(tmp_path))
    result = run_program(code)
    assert not result.ok and result.error.startswith("forbidden"), result
    assert not Path(_escape_target(tmp_path)).exists()


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_programs_are_stopped_by_the_runtime_alone(name, tmp_path):
    """With the static check off, restricted builtins, the audit hook and the limits still stop each one."""
    code = HOSTILE[name][0].format(target=_escape_target(tmp_path))
    result = run_program(code, static_check=False)
    assert not result.ok and HOSTILE[name][1] in result.error, result
    assert not Path(_escape_target(tmp_path)).exists()


def test_resource_limits(tmp_path):
    t0 = time.perf_counter()
    loop = run_program("while True:\n    pass\n", SandboxLimits(cpu_s=1, wall_s=10))
    assert loop.error == "timeout" and time.perf_counter() - t0 < 9, loop  # 1 CPU second, then SIGXCPU
    wall = run_program("while True:\n    pass\n", SandboxLimits(cpu_s=30, wall_s=1))
    assert wall.error == "timeout" and wall.seconds < 5, wall
    big = run_program("x = bytearray(4 * 1024 ** 3)\nprint(len(x))")
    assert big.error == "memory", big
    grow = run_program("x = [0]\nwhile True:\n    x = x * 2\n")
    assert grow.error == "memory", grow
    deep = run_program("def f(n):\n    return f(n + 1)\nprint(f(0))")
    assert "RecursionError" in deep.error, deep
    loud = run_program("for i in range(10 ** 6):\n    print('spam' * 100)\n")
    assert len(loud.stdout) <= SandboxLimits().output_chars + 64 and loud.dropped > 0, len(loud.stdout)


def test_failures_are_recorded_not_raised():
    assert run_program("x = 1\n").error.startswith("no answer")
    assert run_program("def f(:\n").error.startswith("syntax error")
    assert run_program("print(1 / 0)").error == "error: ZeroDivisionError: division by zero"
    assert run_program("import numpy").error == "forbidden: import numpy"
    assert run_program("def solution():\n    return None\n").error.startswith("no answer")
    assert check_program("import math\nprint(math.pi)") is None


def test_many_programs_keep_their_order_and_leave_nothing_behind(tmp_path):
    before = set(os.listdir(os.environ.get("TMPDIR", "/tmp")))
    codes = [f"print({i} * 3)" for i in range(8)] + ["while True:\n    pass\n"]
    results = run_programs(codes, SandboxLimits(cpu_s=1, wall_s=3), workers=2)
    assert [r.answer for r in results[:8]] == [str(i * 3) for i in range(8)]
    assert results[8].error == "timeout"
    after = set(os.listdir(os.environ.get("TMPDIR", "/tmp")))
    assert not [n for n in after - before if n.startswith("slmkit-sandbox-")]


# --- escapes a determined program tried (issue 21): each reaches a Python object the runner holds by string-based
# attribute access, then tries everything. The static check refuses them; with it off, the audit hook and the OS
# isolation must hold: nothing outside is read, written, deleted, reached or left running.

GETTERS = {
    "attrgetter": "import operator\ndef _f():\n    return 0\ng = operator.attrgetter('__globals__')\n"
                  "G = g(g(_f)['__builtins__']['__import__'])\n",
    "Formatter.get_field": "import string\ndef _f():\n    return 0\n"
                           "G = string.Formatter().get_field('0.__globals__[__builtins__][__import__].__globals__', "
                           "[_f], {})[0]\n",
    "get_type_hints": "import typing\ndef _f(x: \"_f.__globals__['__builtins__']['__import__'].__globals__\"):\n"
                      "    return 0\nG = typing.get_type_hints(_f)['x']\n",
}
# what it does with the runner's globals: find sys, switch the (old) hook off, then try each attack
PAYLOAD = """
sy = G['sys'] if 'sys' in G else G['mods']['typing'].sys
if 'started' in G:
    G['started'][0] = False
os_, bi = sy.modules['os'], sy.modules['builtins']
def attempt(fn):
    try:
        print('GOT', str(fn())[:80])
    except BaseException as e:
        print('blocked', type(e).__name__)
attempt(lambda: bi.open('/etc/passwd').read())
attempt(lambda: bi.open('/proc/%d/environ' % os_.getppid(), 'rb').read())
attempt(lambda: bi.open('{target}', 'w').write('x'))
attempt(lambda: os_.remove('{victim}'))
attempt(lambda: bi.open('{victim}', 'w').write('gone'))
attempt(lambda: bi.__import__('socket').create_connection(('127.0.0.1', {port}), timeout=1))
attempt(lambda: os_.system('id -u > {target}'))
attempt(lambda: os_.popen('id -u').read())
"""


@pytest.fixture
def outside(tmp_path, monkeypatch):
    """What a program must not touch: a file of the user's, a path to create, a secret in the caller's environment,
    a loopback listener that counts connections."""
    victim = tmp_path / "thesis.tex"
    victim.write_text("my thesis")
    monkeypatch.setenv("SLMKIT_TEST_SECRET", "hunter2-secret")
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    hits = []

    def accept():
        while not stop.is_set():
            try:
                hits.append(server.accept())
            except OSError:
                pass

    stop = threading.Event()
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    env = {"target": tmp_path / "escaped.txt", "victim": victim, "port": server.getsockname()[1], "hits": hits}
    yield env
    stop.set()
    thread.join()
    server.close()


def _assert_held(result, env):
    printed = (result.stdout or "") + (result.answer or "")
    assert "root:" not in printed and "hunter2-secret" not in printed, printed
    assert not Path(env["target"]).exists()
    assert Path(env["victim"]).read_text() == "my thesis"
    assert not env["hits"], "the program reached a loopback socket"
    assert "GOT 0" not in printed, "a subprocess ran as root"


@pytest.mark.parametrize("getter", list(GETTERS))
def test_string_attribute_escapes_are_refused_by_the_static_check(getter, outside):
    code = GETTERS[getter] + PAYLOAD.format(**outside)
    result = run_program(code)
    assert not result.ok and result.error.startswith("forbidden"), result
    _assert_held(result, outside)


@pytest.mark.parametrize("getter", list(GETTERS))
def test_string_attribute_escapes_are_held_at_run_time(getter, outside):
    code = GETTERS[getter] + PAYLOAD.format(**outside)
    result = run_program(code, SandboxLimits(processes=8), static_check=False)
    _assert_held(result, outside)


def test_a_finaliser_runs_under_the_hook_too(outside):
    """__del__ runs when the interpreter shuts down; the old runner had switched its audit hook off by then."""
    code = ("import operator\ng = operator.attrgetter('__globals__')\nclass D:\n    def __del__(self):\n"
            "        G = g(g(D.__del__)['__builtins__']['__import__'])\n"
            "        if 'started' in G:\n            G['started'][0] = False\n"
            "        sy = G['sys'] if 'sys' in G else G['mods']['typing'].sys\n"
            f"        sy.modules['builtins'].open('{outside['target']}', 'w').write('x')\n"
            "keep = D()\nprint(1)\n")
    assert check_program(code).startswith("forbidden")
    result = run_program(code, static_check=False)
    assert result.answer == "1", result
    _assert_held(result, outside)


def test_the_os_isolation_alone_holds(outside):
    """Full builtins and no audit hook (python_layers=False), processes allowed: the namespaces, the read-only
    filesystem and the unprivileged user still keep every attack inside."""
    t = outside
    code = f"""
import os, socket, subprocess
def attempt(fn):
    try:
        print('GOT', str(fn())[:80])
    except BaseException as e:
        print('blocked', type(e).__name__)
attempt(lambda: open('/etc/passwd').read())
attempt(lambda: open('/etc/shadow').read())
attempt(lambda: dict(os.environ))
attempt(lambda: open('/proc/1/environ', 'rb').read())
attempt(lambda: open('/proc/%d/environ' % os.getppid(), 'rb').read())
attempt(lambda: open('{t['target']}', 'w').write('x'))
attempt(lambda: os.remove('{t['victim']}'))
attempt(lambda: open('{t['victim']}', 'w').write('gone'))
attempt(lambda: open('/usr/bin/slmkit-escaped', 'w').write('x'))
attempt(lambda: socket.create_connection(('127.0.0.1', {t['port']}), timeout=1))
attempt(lambda: socket.create_connection(('10.0.0.1', 80), timeout=1))
attempt(lambda: subprocess.run(['id', '-u'], capture_output=True, text=True).stdout.strip())
attempt(lambda: len(os.listdir('/proc')))
print(len([p for p in os.listdir('/proc') if p.isdigit()]), 'processes visible')
"""
    result = run_program(code, SandboxLimits(processes=8), static_check=False, python_layers=False)
    _assert_held(result, t)
    assert "hunter2" not in result.stdout and not Path("/usr/bin/slmkit-escaped").exists()
    assert f"GOT {sandbox.NOBODY}" in result.stdout or "blocked" in result.stdout.splitlines()[11], result.stdout
    visible = int(result.stdout.strip().splitlines()[-1].split()[0])
    assert visible <= 4, f"the program sees {visible} processes: no private PID space"


def test_descendants_die_with_the_run():
    """A setsid grandchild that holds the output pipe neither stalls the caller nor outlives the wall-clock kill."""
    marker = f"{time.time() % 1000:.4f}"
    code = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n"
            f"    os.execv('/usr/bin/sleep', ['sleep', '{marker}7'])\n"
            "time.sleep(30)\n")
    t0 = time.perf_counter()
    result = run_program(code, SandboxLimits(wall_s=1.5, processes=8), static_check=False, python_layers=False)
    assert result.error == "timeout" and time.perf_counter() - t0 < 4, result
    time.sleep(0.5)
    alive = subprocess.run(["pgrep", "-f", f"sleep {marker}7"], capture_output=True, text=True).stdout.split()
    assert not alive, f"a descendant survived the run: {alive}"


def test_output_is_bounded_for_the_caller():
    """400 MB written straight to fd 1 neither grows the caller nor loses the tail; the dropped bytes are counted.
    Measured in a fresh process, whose peak RSS is read before and after."""
    program = GETTERS["attrgetter"] + (
        "sy = G['sys'] if 'sys' in G else G['mods']['typing'].sys\nos_ = sy.modules['os']\n"
        "for _ in range(400):\n    os_.write(1, b'x' * (1 << 20))\nprint()\nprint(42)\n")
    probe = ("import json, sys\nfrom slmkit.combine.sandbox import SandboxLimits, run_program\n"
             "hwm = lambda: int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])\n"
             "before = hwm()\n"
             "r = run_program(sys.stdin.read(), SandboxLimits(wall_s=60), static_check=False)\n"
             "after = hwm()\n"
             "print(json.dumps({'grew_kb': after - before, 'answer': r.answer, 'dropped': r.dropped, "
             "'kept': len(r.stdout)}))\n")
    out = subprocess.run([sys.executable, "-c", probe], input=program, capture_output=True, text=True, timeout=120)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["grew_kb"] < 64 * 1024, got
    assert got["answer"] == "42" and got["dropped"] > 399 * (1 << 20) and got["kept"] < 5000, got


def test_the_answer_is_the_last_line_after_long_progress():
    result = run_program("for i in range(20000):\n    print('step', i)\nprint(17)\n")
    assert result.ok and result.answer == "17" and result.dropped > 0, result


def test_a_forged_report_line_is_not_the_report():
    """The program prints what the runner's report looks like and leaves at once: it is its output, not a result."""
    forged = json.dumps({"ok": True, "answer": "42", "error": None, "stdout": "", "exit": 0,
                         "result": {"answer": "42", "error": None}})
    code = GETTERS["attrgetter"] + (
        "sy = G['sys'] if 'sys' in G else G['mods']['typing'].sys\n"
        f"print({forged!r})\nsy.stdout.flush()\nsy.modules['os']._exit(0)\n")
    result = run_program(code, static_check=False)
    assert not result.ok and result.answer is None, result
    assert result.error == "error: the program exited before it finished", result


def test_without_isolation_it_refuses_unless_told(monkeypatch):
    """No bubblewrap: one line that says what to install and which flag runs anyway; isolation='none' runs and
    says so in every result."""
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    sandbox.isolation_available.cache_clear()
    try:
        with pytest.raises(sandbox.IsolationError) as e:
            run_program("print(1)")
        assert "bubblewrap" in str(e.value) and "--unisolated" in str(e.value) and "\n" not in str(e.value)
        with pytest.raises(sandbox.IsolationError):
            run_programs(["print(1)"])
        r = run_program("print(1)", isolation="none")
        assert r.ok and r.answer == "1" and r.isolation == "none", r
    finally:
        sandbox.isolation_available.cache_clear()
