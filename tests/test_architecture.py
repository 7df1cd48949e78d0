"""The layout's rules (docs/architecture.md), read from the source: each package imports only packages on
floors below it, and no two modules import each other, not even through an import inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Bottom to top; a package may import from its own floor's modules only when it is the same package.
FLOORS = [
    ["scaling.common"],
    ["models", "scaling.data"],
    ["scaling.train", "scaling.synth", "analysis"],
    ["sweeps", "scaling.evaluate"],
    ["scaling.pipeline", "scaling.bench"],
    ["scaling.cli"],
]
FLOOR_OF = {package: level for level, packages in enumerate(FLOORS) for package in packages}
TOP_LEVEL = ("scaling", "models", "sweeps", "analysis")


def package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "scaling" and len(parts) > 1 else parts[0]


def project_modules() -> dict[str, Path]:
    modules = {}
    for top in TOP_LEVEL:
        for path in sorted((REPO / top).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imports_of(path: Path, modules: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """(imported project module, line, at module level) for every import statement in the file."""
    found = []
    tree = ast.parse(path.read_text())
    top_level_nodes = set(map(id, tree.body))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # `from a.b import c` imports a.b, or the module a.b.c when c is one
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                     for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in TOP_LEVEL:
                found.append((name, node.lineno, id(node) in top_level_nodes))
    return found


MODULES = project_modules()
EDGES = {module: imports_of(path, MODULES) for module, path in MODULES.items()}


def test_every_package_sits_on_a_floor():
    packages = {package_of(m) for m in MODULES if "." in m or m not in ("scaling",)}
    packages.discard("scaling")  # the namespace itself (scaling/__init__.py, __main__.py)
    packages.discard("scaling.__main__")
    assert packages <= set(FLOOR_OF), f"packages with no floor in docs/architecture.md: {packages - set(FLOOR_OF)}"


def test_packages_import_only_packages_below_them():
    wrong = []
    for module, edges in EDGES.items():
        here = package_of(module)
        if here not in FLOOR_OF:
            continue
        for imported, line, _ in edges:
            there = package_of(imported)
            if there == here or there == "scaling":
                continue
            if FLOOR_OF.get(there, -1) >= FLOOR_OF[here]:
                wrong.append(f"{MODULES[module].relative_to(REPO)}:{line} {here} (floor {FLOOR_OF[here]}) imports "
                             f"{imported} ({there}, floor {FLOOR_OF.get(there)})")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("with_function_imports", [False, True], ids=["module level", "function level too"])
def test_no_import_cycles(with_function_imports):
    """No cycle among module-level imports; and none either when every import inside a function is counted,
    so no lazy import is there to hide a cycle (lazy imports exist only to keep start-up fast)."""
    graph = {m: {imp for imp, _, top in edges if imp in MODULES and imp != m and (top or with_function_imports)}
             for m, edges in EDGES.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_the_checker_sees_a_cycle_and_a_wrong_floor(tmp_path):
    """The rules above can fail: a hand-made upward import and two modules importing each other are found."""
    a = tmp_path / "a.py"
    a.write_text("import scaling.cli.app\n\ndef f():\n    from models import decoder\n")
    found = imports_of(a, {"scaling.cli.app": a, "models.decoder": a})
    assert ("scaling.cli.app", 1, True) in found and ("models.decoder", 4, False) in found
    assert FLOOR_OF[package_of("scaling.cli.app")] > FLOOR_OF[package_of("scaling.data.tokenizer")]
