"""The package's shape, as issue 20 set it: no module over 600 lines, no import cycle among slmkit's modules
(counting the imports inside functions too: a lazy import still makes two modules depend on each other), and only
the entry point imports the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "slmkit"


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path, module: str, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = module.split(".")[: -node.level] if not path.name == "__init__.py" else module.split(".")
                found.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m == "slmkit" or m.startswith("slmkit.")}


def test_no_module_is_over_600_lines():
    long = {str(p.relative_to(ROOT.parent)): n for p in ROOT.rglob("*.py") if (n := len(p.read_text().splitlines())) > 600}
    assert not long, long


def test_no_import_cycle():
    mods = _modules()
    graph = {m: {i for i in _imports(p, m, top_level_only=False) if i in mods and i != m} for m, p in mods.items()}
    for m in list(graph):  # importing a.b runs a's __init__ first: a dependency too, unless m is inside a already
        graph[m] |= {".".join(i.split(".")[:k]) for i in graph[m] for k in range(2, i.count(".") + 1)} & set(mods)
        graph[m] = {n for n in graph[m] if n != m and not m.startswith(n + ".")}
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n):] + [m, n]))
            if n not in state:
                visit(n, stack + [m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])


def test_only_the_entry_point_imports_the_cli():
    offenders = [m for m, p in _modules().items() if not m.startswith("slmkit.cli")
                 and any(i == "slmkit.cli" or i.startswith("slmkit.cli.") for i in _imports(p, m, top_level_only=False))]
    assert not offenders, offenders
