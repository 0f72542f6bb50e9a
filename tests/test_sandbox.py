"""The program sandbox of verifier reranking: good programs give their answers; hostile ones (file writes, network,
os/subprocess/socket imports, fork bombs, infinite loops, huge allocations, escapes through object internals) are
stopped and reported, both by the static check and, with the static check off, by the runtime layers alone."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from slmkit.combine.sandbox import SandboxLimits, check_program, run_program, run_programs

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
                   "    g['__builtins__']['open']('{target}', 'w')\nprint(1)", "open"),
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
    assert len(loud.stdout) <= SandboxLimits().output_chars, len(loud.stdout)


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
