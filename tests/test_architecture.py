"""The layering docs/architecture.md describes, checked on the source rather than trusted.

`fusion/` (the library) imports neither Ray nor the packages built on it, not even inside a
function; `pipelines/` (the Ray shells) does not import the command line above it. And every
relative link in the README and docs/ leads to a file inside this repository.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# package -> the top-level modules it must never import
FORBIDDEN = {
    "fusion": {"ray", "pipelines", "fusion_cli"},
    "pipelines": {"fusion_cli"},
}


def imported_modules(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, module) for every import anywhere in the tree: top level, in functions, in
    `if TYPE_CHECKING:`, and `importlib.import_module("...")` / `__import__("...")` with a
    literal name. Relative imports stay inside their package and are not reported."""
    for node in ast.walk(tree):
        match node:
            case ast.Import(names=names):
                yield from ((node.lineno, alias.name) for alias in names)
            case ast.ImportFrom(module=str(module), level=0):
                yield node.lineno, module
            case ast.Call(
                func=ast.Attribute(attr="import_module") | ast.Name(id="__import__"),
                args=[ast.Constant(value=str(module)), *_],
            ):
                yield node.lineno, module


def offenders(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for line, module in imported_modules(tree):
            if module.split(".")[0] in FORBIDDEN[package]:
                found.append(f"{path.relative_to(ROOT)}:{line}: imports {module}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_nothing_above_it(package):
    assert offenders(package) == [], f"{package}/ must not import {sorted(FORBIDDEN[package])}"


def test_import_scan_sees_nested_and_dynamic_imports():
    source = (
        "import os\n"
        "def f():\n"
        "    import ray.util\n"
        "    from pipelines.config import X\n"
        "    from . import sibling\n"
        "    importlib.import_module('fusion_cli.main')\n"
    )
    assert list(imported_modules(ast.parse(source))) == [
        (1, "os"),
        (3, "ray.util"),
        (4, "pipelines.config"),
        (6, "fusion_cli.main"),
    ]


# Modules of pipelines/ that decide over the run's books and reach actors only through the port:
# tested with a fake port, so they must not import Ray (not even through another module).
RAY_FREE = ("pipelines.drivers", "pipelines.recovery", "pipelines.run_state", "pipelines.port")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports, anywhere in the file (functions and
    `TYPE_CHECKING` included); `from pkg import name` counts as `pkg.name` when that is a module.
    A module's own package `__init__` is not counted: Python runs it first, but never in a loop."""
    paths = {
        module_name(p): p for pkg in ("fusion", "pipelines", "fusion_cli") for p in (ROOT / pkg).rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        found = {m for _, m in imported_modules(tree)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found |= {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = {m for m in found if m in paths and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                found.append(sorted([v, *component]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_cycle_finder_sees_a_loop_through_three_modules():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


@pytest.mark.parametrize("module", RAY_FREE)
def test_drivers_and_recovery_reach_no_ray(module):
    graph = import_graph()
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += graph[m]
    path = {m: ROOT / (m.replace(".", "/") + ".py") for m in seen}
    uses_ray = sorted(
        m
        for m, p in path.items()
        if p.exists()
        and any(name.split(".")[0] == "ray" for _, name in imported_modules(ast.parse(p.read_text())))
    )
    assert uses_ray == [], f"{module} reaches Ray through {uses_ray}"


# A module past this holds more than one idea: split it along its seams (docs/architecture.md).
MAX_MODULE_LINES = 450


@pytest.mark.parametrize("package", ["fusion", "pipelines", "fusion_cli"])
def test_no_module_is_over_the_line_limit(package):
    too_long = {
        str(path.relative_to(ROOT)): n
        for path in sorted((ROOT / package).rglob("*.py"))
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert too_long == {}, f"modules over {MAX_MODULE_LINES} lines: {too_long}"


FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
# [text](target) and ![alt](target), an optional "title" after the target; [label]: target
INLINE = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def relative_links(text: str) -> list[str]:
    """Link targets that name a file: no URL scheme, no bare #anchor; fragments dropped.
    Fenced code blocks are skipped (their brackets are code, not links)."""
    text = FENCE.sub("", text)
    targets = INLINE.findall(text) + REFERENCE.findall(text)
    return [t.split("#")[0] for t in targets if not SCHEME.match(t) and not t.startswith("#")]


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def broken_links(doc: Path) -> list[str]:
    broken = []
    for target in relative_links(doc.read_text()):
        path = (doc.parent / target).resolve()
        if not path.is_relative_to(ROOT):
            broken.append(f"{target} (outside the repository)")
        elif not path.exists():
            broken.append(f"{target} (no such file)")
    return broken


@pytest.mark.parametrize("doc", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_to_files_in_the_repository(doc):
    assert broken_links(doc) == []


def test_link_scan_finds_inline_image_and_reference_links_outside_code():
    text = (
        'See [design](../shared/DESIGN.md) and ![plot](img/a.png "A plot").\n'
        "[web](https://example.org) [here](#layout) [part](docs/x.md#part)\n"
        "```\n[not a link](nowhere.md)\n```\n"
        "[ref]: <docs/y.md>\n"
    )
    assert relative_links(text) == ["../shared/DESIGN.md", "img/a.png", "docs/x.md", "docs/y.md"]
