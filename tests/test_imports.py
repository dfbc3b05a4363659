"""The package's modules import each other without circles, counting imports inside functions.

A circle would mean two stages of the data flow depend on each other (docs/design.md,
section 3); the folders are meant to read in the order data moves.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import nat_keras

PACKAGE_DIR = pathlib.Path(nat_keras.__file__).parent


def _module_names() -> dict[str, pathlib.Path]:
    names = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = ["nat_keras", *path.relative_to(PACKAGE_DIR).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _imported(module: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """The nat_keras modules `module` imports anywhere in its body."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
    found = set()
    for target in targets:
        # The longest known module that the dotted name starts with.
        parts = target.split(".")
        while parts and ".".join(parts) not in known:
            parts.pop()
        resolved = ".".join(parts)
        if not parts or resolved == module:
            continue
        # A package re-exporting its children, or a child importing a sibling
        # through its package, is how packages work, not a circle of design.
        if path.name == "__init__.py" and resolved.startswith(module + "."):
            continue
        if module.startswith(resolved + "."):
            continue
        found.add(resolved)
    return found


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in sorted(graph[module]):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return circles


def test_no_import_circles():
    modules = _module_names()
    known = set(modules)
    graph = {name: _imported(name, path, known) - {"nat_keras"} for name, path in modules.items()}
    assert _circles(graph) == []


def test_the_checker_sees_a_circle():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_import_nat_keras_leaves_the_supernets_unloaded():
    # transform needs only supernet.batchnorm at import; the supernets load on first use.
    code = (
        "import sys, nat_keras; print(sorted(m for m in sys.modules if m.startswith('nat_keras.supernet')));"
        "from nat_keras.supernet import CellSupernet, ModelSupernet, Supernet;"
        "print(issubclass(CellSupernet, Supernet) and issubclass(ModelSupernet, Supernet))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["['nat_keras.supernet', 'nat_keras.supernet.batchnorm']", "True"]
