"""The package's import graph: no two modules of ``workflow/`` import each other, directly or in a circle.

Every ``workflow.*`` import counts, at the top of a module and inside its functions: an import hidden in a
function only postpones a cycle to run time, it does not remove the knot.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "workflow"

# Cycles known and not yet untied (each a sorted tuple of its modules); empty when there is none.
KNOWN_CYCLES: set[tuple[str, ...]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The ``workflow`` modules that ``name`` (file ``path``) imports anywhere in its body.

    ``from a.b import c`` counts as importing ``a.b.c`` when that is a module, else ``a.b``; relative imports are
    resolved against ``name``'s package.
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import workflow.a.b as x` of a module: itself; else its package
                target = target.rpartition(".")[0]
            if target.startswith("workflow") and target != name:
                out.add(target)
    return out


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imported(name, path, set(found)) for name, path in found.items()}


def cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """The strongly connected components of more than one module (Tarjan), each as a sorted tuple."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: set[tuple[str, ...]] = set()

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                out.add(tuple(sorted(component)))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def test_the_graph_sees_imports_inside_functions(tmp_path):
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {("a", "b", "c")}
    module = tmp_path / "mod.py"
    module.write_text(
        "import os\nfrom workflow import cli\n\n\ndef f():\n    from workflow.dual_backbone import heldout\n"
    )
    known = set(modules())
    assert imported("workflow.mod", module, known) == {"workflow.cli", "workflow.dual_backbone.heldout"}
    assert "workflow.dual_backbone.frozen" in import_graph()["workflow.dual_backbone.cli"]


def test_no_import_cycle_in_the_package():
    found = cycles(import_graph())
    assert not found - KNOWN_CYCLES, f"import cycles in workflow/ (untie them: move the shared code): {found}"
    gone = KNOWN_CYCLES - found
    assert not gone, f"cycles listed as known but gone, drop them from KNOWN_CYCLES: {gone}"


def unexplained_local_imports(path: Path) -> list[str]:
    """``workflow`` imports inside functions of ``path`` with no comment on their line or the line above."""
    lines = path.read_text().splitlines()
    out = []
    for node in ast.walk(ast.parse("\n".join(lines), str(path))):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.ImportFrom):
                names = [inner.module or ""] if not inner.level else ["workflow"]
            elif isinstance(inner, ast.Import):
                names = [alias.name for alias in inner.names]
            else:
                continue
            line, above = lines[inner.lineno - 1], lines[inner.lineno - 2].strip()
            if any(n.split(".")[0] == "workflow" for n in names) and "#" not in line and not above.startswith("#"):
                out.append(f"{path.relative_to(REPO)}:{inner.lineno}: {line.strip()}")
    return out


def test_every_import_inside_a_function_says_why():
    """An import inside a function is the exception (it keeps a heavy library out of jobs that do not need it, or
    breaks a load-time loop); a comment says which, else it belongs at the top of the module."""
    found = [hit for path in modules().values() for hit in unexplained_local_imports(path)]
    assert not found, "move to the top of the module, or say why not in a comment:\n" + "\n".join(found)
