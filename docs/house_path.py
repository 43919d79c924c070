"""The one request path, read from ``recommend`` in agent/pipeline.py with ``ast``: its stages in
source order, each named from the ``a → b → …`` chain of the module docstring, with the functions
and methods of our modules that it calls.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass

from house_labels import PRIMARY
from house_tree import PACKAGES, ROOT, path_of

PIPELINE = ROOT / "agent" / "pipeline.py"


# ---- the request path --------------------------------------------------------------------------
@dataclass(frozen=True)
class Call:
    module: str  # dotted: "agent.chat.intent"
    name: str  # what is called there: "parse_request", "ProfileService.profile"
    via: str  # as written in the pipeline: "parse_request", "parts.profiles.profile"

    @property
    def path(self) -> str:
        return path_of(self.module)


@dataclass(frozen=True)
class Stage:
    number: int
    name: str  # from the docstring's chain: "user state"
    function: str  # in agent/pipeline.py: "read_intent", or the call itself: "parts.users"
    calls: tuple[Call, ...]
    primary: str  # the module the line runs through

    @property
    def modules(self) -> list[str]:
        return list(dict.fromkeys(c.module for c in self.calls))


def _statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements in source order, into ``with`` / ``if`` / ``for`` / ``try`` blocks."""
    for stmt in body:
        yield stmt
        for name in ("body", "orelse", "finalbody", "handlers"):
            inner = getattr(stmt, name, None)
            if isinstance(inner, list) and not isinstance(stmt, ast.FunctionDef | ast.ClassDef):
                yield from _statements(inner)


def _names(annotation: ast.expr) -> list[str]:
    """Class names in an annotation: ``X | None`` → X, ``Callable[[…], R]`` → R (its result)."""
    if isinstance(annotation, ast.Name):
        return [annotation.id]
    if isinstance(annotation, ast.BinOp):
        return _names(annotation.left) + _names(annotation.right)
    if isinstance(annotation, ast.Subscript) and isinstance(annotation.slice, ast.Tuple):
        return _names(annotation.slice.elts[-1])  # Callable[[args], result]
    return []


def request_path() -> list[Stage]:
    tree = ast.parse(PIPELINE.read_text())
    imported = {  # local name → our module it comes from
        alias.asname or alias.name: node.module
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        and node.module
        and node.module.split(".")[0] in PACKAGES
        for alias in node.names
    }
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    parts_class = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Parts")
    fields = {  # Parts field → (class name, its module) of what it is or, if callable, returns
        s.target.id: [(c, imported[c]) for c in _names(s.annotation) if c in imported]
        for s in parts_class.body
        if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
    }

    def resolve(call: ast.Call) -> Call | None:
        f = call.func
        if isinstance(f, ast.Name) and f.id in imported and f.id[:1].islower():
            return Call(imported[f.id], f.id, f.id)
        chain = []
        while isinstance(f, ast.Attribute):
            chain.insert(0, f.attr)
            f = f.value
        if not (isinstance(f, ast.Name) and f.id == "parts" and chain and fields.get(chain[0])):
            return None
        (cls, module), *_ = fields[chain[0]]
        name = cls if len(chain) == 1 else f"{cls}.{chain[1]}"
        return Call(module, name, ".".join(["parts", *chain]))

    def calls_in(node: ast.AST) -> tuple[Call, ...]:
        found = sorted(
            (n for n in ast.walk(node) if isinstance(n, ast.Call)),
            key=lambda n: (n.lineno, n.col_offset),
        )
        return tuple(dict.fromkeys(c for c in map(resolve, found) if c is not None))

    raw = []
    for stmt in _statements(functions["recommend"].body):
        if not (isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Call)):
            continue
        f = stmt.value.func
        if isinstance(f, ast.Name) and f.id in functions:
            raw.append((f.id, calls_in(functions[f.id])))
        elif (call := resolve(stmt.value)) is not None:
            raw.append((call.via, (call,)))

    doc = ast.get_docstring(tree) or ""
    chain = next((line for line in doc.splitlines() if "→" in line), "")
    names = [n.strip() for n in chain.split("→")]
    if len(names) != len(raw):
        raise SystemExit(
            f"docs/house.py: agent/pipeline.py's docstring names {len(names)} stages "
            f"({chain.strip()!r}), recommend() runs {len(raw)}: {', '.join(f for f, _ in raw)}"
        )
    stages = []
    for i, ((function, calls), name) in enumerate(zip(raw, names, strict=True), 1):
        modules = list(dict.fromkeys(c.module for c in calls))
        if not modules:
            raise SystemExit(f"docs/house.py: stage {function} calls none of our modules")
        primary = PRIMARY.get(function, modules[0])
        if (len(modules) > 1 and function not in PRIMARY) or primary not in modules:
            raise SystemExit(
                f"docs/house.py: stage {function} calls {', '.join(modules)}: "
                "say in PRIMARY (docs/house_labels.py) which one the request line runs through"
            )
        stages.append(Stage(i, name, function, calls, primary))
    if stale := sorted(set(PRIMARY) - {s.function for s in stages}):
        raise SystemExit(
            f"docs/house.py: PRIMARY (docs/house_labels.py) names no stage: {', '.join(stale)}"
        )
    return stages
