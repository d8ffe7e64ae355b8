"""Layers that do not leak: every import in migbed's tree against docs/architecture.md's table.

Every `import` and `from ... import` anywhere in a module (function bodies included, relative
ones resolved), and every module named by a string (importlib.import_module("migbed.x"), the
CLI's table of lazily imported subcommands), is an edge from its layer (migbed's subpackage,
or a top-level module) to another. The test reads the table of allowed directions between the
markers in docs/architecture.md and checks that:

- every layer in the tree has a row, and the table itself has no cycle;
- every edge between two layers is one the table allows;
- no two modules import each other, directly or around a loop (function-level imports too);
- argument parsing (argparse) lives in migbed/cli/, but for the developer tools the table's
  note names.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
BEGIN, END = "<!-- layers:begin -->", "<!-- layers:end -->"


@dataclass(frozen=True)
class Edge:
    module: str  # the importing module
    target: str  # the imported module (or package)
    line: int


def source_files() -> dict[str, Path]:
    """Module name -> file; the services' home is services/, imported as migbed.services."""
    found: dict[str, Path] = {}
    for base, package, folder in ((ROOT / "migbed", "migbed", ROOT / "migbed"),
                                  (ROOT / "services", "migbed.services", ROOT / "services")):
        for path in sorted(folder.rglob("*.py")):
            if base == ROOT / "migbed" and "services" in path.relative_to(base).parts[:1]:
                continue  # the same files as services/ (whatever makes them importable there)
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


MODULES = source_files()


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> list[str]:
    if node.level:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1])
        prefix = f"{base}.{node.module}" if node.module else base
    else:
        prefix = node.module or ""
    # `from pkg import name`: a submodule when there is one, else the package itself
    return [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in MODULES else prefix for a in node.names]


def edges_of(module: str, path: Path) -> Iterator[Edge]:
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = _resolve(module, path, node)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value \
                and node.value in MODULES:
            names = [node.value]  # imported by name (importlib): the CLI's lazy subcommands
        for name in names:
            if name == "migbed" or name.startswith("migbed."):
                yield Edge(module, name, getattr(node, "lineno", 0))


def layer_of(module: str) -> str:
    """migbed.<subpackage>..., or a top-level module (migbed.assets, migbed.__main__), or the
    package itself (migbed: its __init__)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "migbed"


def all_edges() -> list[Edge]:
    return [e for m, p in MODULES.items() for e in edges_of(m, p)]


def allowed_table() -> dict[str, set[str]]:
    text = DOC.read_text()
    assert BEGIN in text and END in text, f"{DOC}: the table of layers between {BEGIN} and {END}"
    table: dict[str, set[str]] = {}
    for line in text.split(BEGIN, 1)[1].split(END, 1)[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        table[cells[0].strip("`")] = set(re.findall(r"`([^`]+)`", cells[1]))
    return table


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of the graph as a path (first == last), or []."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str]:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return [*stack[stack.index(m):], m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return []

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return []


def test_every_layer_has_a_row_and_the_table_is_acyclic() -> None:
    table = allowed_table()
    layers = {layer_of(m) for m in MODULES}
    assert layers - set(table) == set(), f"add rows to {DOC.name}'s table for {layers - set(table)}"
    unknown = {x for allowed in table.values() for x in allowed} - set(table)
    assert not unknown, f"the table names layers that are not rows: {unknown}"
    assert not _cycle(table), f"the table allows a cycle: {' -> '.join(_cycle(table))}"


def test_every_import_goes_in_an_allowed_direction() -> None:
    table = allowed_table()
    bad = []
    for e in all_edges():
        a, b = layer_of(e.module), layer_of(e.target)
        if a != b and b not in table.get(a, set()):
            bad.append(f"{MODULES[e.module].relative_to(ROOT)}:{e.line}: {a} -> {b} ({e.target})")
    assert not bad, "imports against docs/architecture.md's table:\n" + "\n".join(bad)


def test_no_module_imports_itself_around_a_loop() -> None:
    graph: dict[str, set[str]] = {}
    for e in all_edges():
        target = e.target
        while target not in MODULES and "." in target:
            target = target.rsplit(".", 1)[0]
        if target != e.module and target in MODULES and not e.module.startswith(f"{target}."):
            graph.setdefault(e.module, set()).add(target)
    cycle = _cycle(graph)
    assert not cycle, f"an import cycle: {' -> '.join(cycle)}"


TOOLS = {  # `python -m` developer tools with a few flags of their own (docs/architecture.md)
    "migbed.env.goodput", "migbed.qemu.install", "migbed.measure.metrics.reference",
}


def test_argument_parsing_lives_in_cli() -> None:
    found = []
    for module, path in MODULES.items():
        if layer_of(module) == "cli" or module in TOOLS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if "argparse" in names:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, "argparse outside migbed/cli/ (move the command's flags there): " + ", ".join(found)


def test_the_checks_see_function_level_and_named_imports() -> None:
    # The checker itself: an import inside a function and a module named by a string count.
    edges = {(e.module, e.target) for e in all_edges()}
    assert ("migbed.cli.main", "migbed.cli.stack") in edges  # _EXTENSIONS, by name
    assert ("migbed.experiments.sweep", "migbed.model.predict") in edges  # inside a function
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
