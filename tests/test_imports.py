"""The layering of our packages, checked on the source with ``ast`` (nothing is imported).

Rules (who may import whom)::

    hyrec     → nothing of ours          prompts → nothing of ours
    encoders  → hyrec                    agent   → hyrec, encoders, retrieval, prompts
    retrieval → encoders, hyrec          eval    → anything of ours

so nothing but ``eval`` imports ``eval``, and no package imports ``tests``. Every import counts for
the rules: module level, inside functions, under ``if TYPE_CHECKING:``, relative ones (resolved)
and ``importlib.import_module("...")`` with a constant name. On top of the rules, the package graph
has no cycle, and neither does the graph of *module-level* imports between modules (a function-level
import runs later, so it cannot take part in an import-time cycle; ``TYPE_CHECKING`` imports never
run).

The checker is tested on in-memory sources first, so a broken checker cannot pass the real tree.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hyrec", "encoders", "retrieval", "prompts", "agent", "eval")
OURS = frozenset(PACKAGES) | {"tests"}
ALLOWED: Mapping[str, frozenset[str]] = {
    "hyrec": frozenset(),
    "encoders": frozenset({"hyrec"}),
    "retrieval": frozenset({"encoders", "hyrec"}),
    "prompts": frozenset(),
    "agent": frozenset({"hyrec", "encoders", "retrieval", "prompts"}),
    "eval": frozenset(PACKAGES),
}


@dataclass(frozen=True)
class Import:
    """One import statement's target, as an absolute dotted name."""

    file: str  # for messages
    line: int
    importer: str  # dotted module name of the file
    target: str  # dotted name imported (a module, or a module's attribute for ``from m import x``)
    candidates: tuple[str, ...]  # what ``target`` may resolve to, most specific first
    module_level: bool  # runs when the importer is imported (not in a function, not TYPE_CHECKING)

    @property
    def top(self) -> str:
        return self.target.split(".")[0]


# ---- the checker ------------------------------------------------------------------------------


def module_name(path: Path, root: Path = ROOT) -> tuple[str, bool]:
    """Dotted module name of a file under ``root``, and whether it is a package ``__init__``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def _resolve_relative(importer: str, is_package: bool, level: int, module: str | None) -> str:
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    if level - 1 > len(base) or (level - 1 == len(base) and not module):
        raise ImportError(f"relative import beyond the top of {importer!r}")
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, *([module] if module else [])])


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def parse_imports(
    source: str, importer: str, *, is_package: bool = False, file: str = "<string>"
) -> list[Import]:
    """Every import in ``source`` (a file of module ``importer``), relative ones resolved."""
    tree = ast.parse(source, filename=file)
    out: list[Import] = []

    def add(node: ast.AST, target: str, candidates: Iterable[str], module_level: bool) -> None:
        out.append(Import(file, node.lineno, importer, target, tuple(candidates), module_level))

    def visit(node: ast.AST, module_level: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(node, alias.name, [alias.name], module_level)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _resolve_relative(importer, is_package, node.level, node.module)
            else:
                base = node.module or ""
            for alias in node.names:
                if alias.name == "*":
                    add(node, base, [base], module_level)
                else:  # ``from m import x``: x is the submodule m.x, or a name defined in m
                    add(node, f"{base}.{alias.name}", [f"{base}.{alias.name}", base], module_level)
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (
                    isinstance(node.func, ast.Name)
                    and node.func.id in ("import_module", "__import__")
                )
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
        ):
            name = node.args[0].value
            if not name.startswith("."):
                add(node, name, [name], module_level)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, False)
            for child in node.orelse:
                visit(child, module_level)
            return
        inner = module_level and not isinstance(
            node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
        )
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, True)
    return out


def rule_violations(imports: Iterable[Import]) -> list[str]:
    """``file:line: message`` for every import of a package its importer may not import."""
    out = []
    for imp in imports:
        src, dst = imp.importer.split(".")[0], imp.top
        if dst not in OURS or dst == src or src not in ALLOWED:
            continue
        if dst not in ALLOWED[src]:
            may = ", ".join(sorted(ALLOWED[src])) or "nothing of ours"
            where = "module level" if imp.module_level else "function level or TYPE_CHECKING"
            out.append(
                f"{imp.file}:{imp.line}: {src} imports {imp.target} ({where}); "
                f"rule: {src} may import {may}"
            )
    return out


def package_graph(imports: Iterable[Import]) -> dict[str, set[str]]:
    """Our top-level package → the other top-level packages of ours it imports (any import)."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        src, dst = imp.importer.split(".")[0], imp.top
        graph.setdefault(src, set())
        if dst in OURS and dst != src:
            graph[src].add(dst)
    return graph


def module_graph(imports: Iterable[Import], modules: Iterable[str]) -> dict[str, set[str]]:
    """Module → our modules it imports at module level (``from m import x`` resolves to the
    submodule ``m.x`` when there is one, else to ``m``)."""
    known = set(modules)
    graph: dict[str, set[str]] = {m: set() for m in known}
    for imp in imports:
        if not imp.module_level:
            continue
        target = next((c for c in imp.candidates if c in known), None)
        if target is None:  # e.g. ``import a.b.c.name``: walk up to the nearest known module
            parts = imp.target.split(".")
            while parts and ".".join(parts) not in known:
                parts.pop()
            target = ".".join(parts) or None
        if target is not None and target != imp.importer:
            graph.setdefault(imp.importer, set()).add(target)
    return graph


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or ``None`` if the graph is acyclic (iterative DFS)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in sorted(graph):
        if state.get(start):
            continue
        path: list[str] = [start]
        stack: list[Iterator[str]] = [iter(sorted(graph.get(start, ())))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def tree_imports(root: Path = ROOT) -> tuple[list[Import], list[str]]:
    """Every import of every ``.py`` file of our packages under ``root``, and the module names."""
    imports, modules = [], []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if any(part.startswith(".") or part == "__pycache__" for part in path.parts):
                continue
            name, is_package = module_name(path, root)
            modules.append(name)
            rel = str(path.relative_to(root))
            imports += parse_imports(path.read_text(), name, is_package=is_package, file=rel)
    return imports, modules


# ---- the checker on synthetic sources: it must catch what it is for ----------------------------


def test_checker_flags_a_forbidden_import_with_file_line_and_rule():
    source = "import numpy\nfrom hyrec.data import History\nfrom retrieval.hybrid import X\n"
    (message,) = rule_violations(parse_imports(source, "encoders.fake", file="encoders/fake.py"))
    assert message.startswith("encoders/fake.py:3: encoders imports retrieval.hybrid.X")
    assert "rule: encoders may import hyrec" in message


def test_checker_sees_function_level_relative_and_dynamic_imports():
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from agent.api import Recommender\n"  # 3: never runs, still a dependency
        "def f():\n"
        "    from ..agent import pipeline\n"  # 5: relative, resolved to agent.pipeline
        "    import importlib\n"
        "    return importlib.import_module('eval.harness')\n"  # 7: dynamic, constant name
        "from . import items\n"  # 8: retrieval.items, allowed
        "class C:\n"
        "    import prompts\n"  # 10: class body runs at import time
    )
    imports = parse_imports(source, "retrieval.fake", file="retrieval/fake.py")
    by_line = {i.line: i for i in imports if i.top in OURS}
    assert by_line[5].target == "agent.pipeline" and not by_line[5].module_level
    assert by_line[8].target == "retrieval.items" and by_line[8].module_level
    assert by_line[10].module_level and not by_line[3].module_level
    lines = [int(m.split(":")[1]) for m in rule_violations(imports)]
    assert lines == [3, 5, 7, 10]


def test_relative_imports_resolve_from_packages_and_modules():
    package = parse_imports("from .dataset import Item", "hyrec.data", is_package=True)
    module = parse_imports("from ..metrics import ndcg", "hyrec.data.splits")
    assert package[0].target == "hyrec.data.dataset.Item"
    assert package[0].candidates == ("hyrec.data.dataset.Item", "hyrec.data.dataset")
    assert module[0].target == "hyrec.metrics.ndcg"
    with pytest.raises(ImportError, match="beyond the top"):
        parse_imports("from ... import x", "hyrec.metrics")


def test_only_eval_may_import_eval_and_nobody_imports_tests():
    for src in ("agent.cli.main", "retrieval.hybrid", "hyrec.metrics"):
        assert rule_violations(parse_imports("import eval.harness", src))
        assert rule_violations(parse_imports("from tests import fakes", src))
    assert not rule_violations(parse_imports("import agent.api, retrieval", "eval.harness"))
    assert not rule_violations(parse_imports("from encoders.base import FitData", "agent.api"))


def test_cycle_finder_reports_the_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    sources = {
        ("pkg", True): "from pkg.one import f\n",
        ("pkg.one", False): "from pkg import two\n",  # resolves to the submodule pkg.two
        ("pkg.two", False): "def g():\n    from pkg.one import f\n",  # function level: no edge
    }
    imports = [i for (m, p), s in sources.items() for i in parse_imports(s, m, is_package=p)]
    graph = module_graph(imports, [m for m, _ in sources])
    assert graph == {"pkg": {"pkg.one"}, "pkg.one": {"pkg.two"}, "pkg.two": set()}
    assert find_cycle(graph) is None
    sources[("pkg.two", False)] = "from pkg.one import f\n"
    imports = [i for (m, p), s in sources.items() for i in parse_imports(s, m, is_package=p)]
    assert find_cycle(module_graph(imports, [m for m, _ in sources])) == [
        "pkg.one",
        "pkg.two",
        "pkg.one",
    ]
    packages = package_graph(parse_imports("import encoders", "hyrec.x"))
    packages |= package_graph(parse_imports("import hyrec", "encoders.x"))
    assert find_cycle(packages) == ["encoders", "hyrec", "encoders"]


# ---- the real tree ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree() -> tuple[list[Import], list[str]]:
    imports, modules = tree_imports()
    assert {m.split(".")[0] for m in modules} == set(PACKAGES), "a package has no .py files"
    return imports, modules


def test_packages_import_only_what_the_layering_allows(tree):
    imports, _ = tree
    violations = rule_violations(imports)
    assert not violations, f"{len(violations)} import-rule violations:\n" + "\n".join(violations)


def test_no_import_cycle_between_packages(tree):
    imports, _ = tree
    cycle = find_cycle(package_graph(imports))
    assert cycle is None, "package import cycle: " + " → ".join(cycle)


def test_no_import_cycle_between_modules(tree):
    imports, modules = tree
    graph = module_graph(imports, modules)
    cycle = find_cycle(graph)
    if cycle is not None:
        hops = []
        for a, b in zip(cycle, cycle[1:], strict=False):
            lines = [
                f"{i.file}:{i.line}"
                for i in imports
                if i.importer == a and i.module_level and b in (i.target, *i.candidates)
            ]
            hops.append(f"{a} → {b} ({', '.join(lines) or 'see the file'})")
        pytest.fail("module-level import cycle:\n  " + "\n  ".join(hops))
