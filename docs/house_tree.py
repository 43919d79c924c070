"""What the tree holds, read with ``ast`` and the file system (nothing is imported): the floors
and their packages, each package's rooms and entries with their labels, the imports between our
packages and which modules run ``python -m eval`` as a process.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from house_labels import LABELS, ROOM_LABELS, ROOM_ORDER

ROOT = Path(__file__).resolve().parents[1]

FLOORS = ("agent", "retrieval", "encoders", "hyrec")  # top to bottom
BESIDE = "prompts"  # beside the top floor
SIDE = "eval"  # at the side of the house
PACKAGES = (*FLOORS, BESIDE, SIDE)


# ---- what the tree holds -----------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    path: str  # relative to the root: "agent/chat/intent.py", "agent/serve/static/"
    name: str  # as drawn: "intent", "static/"
    label: str


@dataclass
class Room:
    key: str  # "agent/chat"; a floor's own modules: "agent"
    title: str
    label: str
    entries: list[Entry]


def module_of(path: str) -> str:
    """``agent/chat/intent.py`` → ``agent.chat.intent``."""
    parts = path.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def path_of(module: str) -> str:
    """``agent.chat.intent`` → ``agent/chat/intent.py`` (a package: its ``__init__.py``)."""
    folder = module.replace(".", "/")
    return f"{folder}/__init__.py" if (ROOT / folder).is_dir() else f"{folder}.py"


def _clean_rst(text: str) -> str:
    text = re.sub(r":\w+:`~?([^`]*)`", lambda m: m.group(1).split(".")[-1].strip("<> "), text)
    return re.sub(r"``?([^`]*)``?", r"\1", text)


def docstring_label(path: Path) -> str:
    """The first clause of a module's docstring (a YAML file: its ``description``)."""
    if path.is_dir():
        return "files"
    if path.suffix == ".yaml":
        m = re.search(r"^description:\s*>?\s*\n?\s*(.+)$", path.read_text(), re.M)
        text = m.group(1) if m else ""
    else:
        text = ast.get_docstring(ast.parse(path.read_text())) or ""
    text = _clean_rst(" ".join(text.split("\n\n")[0].split()))
    return re.split(r"(?<=\w)[.:;](?:\s|$)", text)[0][:48]


def label_for(path: str, used: set[str]) -> str:
    used.add(path)
    return LABELS[path] if path in LABELS else docstring_label(ROOT / path)


def _room_entries(
    folder: Path, used: set[str], prefix: str = "", flatten: bool = False
) -> list[Entry]:
    """A package folder's modules (``__init__`` only when it is the package's one module), its
    ``.yaml`` templates, its plain sub-folders (package data) and, with ``flatten``, its
    sub-packages' modules under their folder's name."""
    entries = []
    modules = sorted(p for p in folder.glob("*.py") if p.name != "__init__.py")
    files = modules or sorted(folder.glob("__init__.py"))
    for p in [*files, *sorted(folder.glob("*.yaml"))]:
        rel = p.relative_to(ROOT).as_posix()
        name = p.stem if p.suffix == ".py" else p.name
        entries.append(Entry(rel, prefix + name, label_for(rel, used)))
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p)):
        if not (sub / "__init__.py").exists():
            rel = sub.relative_to(ROOT).as_posix() + "/"
            entries.append(Entry(rel, prefix + sub.name + "/", label_for(rel, used)))
        elif flatten:
            entries += _room_entries(sub, used, f"{prefix}{sub.name}/", flatten)
    return entries


def _visible(p: Path) -> bool:
    return not p.name.startswith((".", "_")) and not p.name.endswith(".egg-info")


def rooms_of(package: str, used: set[str]) -> list[Room]:
    """A package's rooms: its own modules first, then one room per sub-package (a package inside
    a sub-package is drawn inside that room)."""
    folder = ROOT / package
    rooms = [Room(package, f"{package}/*", "", _room_entries(folder, used))]
    subs = [p for p in folder.iterdir() if (p / "__init__.py").exists() and _visible(p)]
    order = {name: i for i, name in enumerate(ROOM_ORDER)}
    for sub in sorted(subs, key=lambda p: (order.get(p.name, len(order)), p.name)):
        key = f"{package}/{sub.name}"
        label = ROOM_LABELS.get(key) or docstring_label(sub / "__init__.py")
        rooms.append(Room(key, f"{sub.name}/", label, _room_entries(sub, used, flatten=True)))
    return [r for r in rooms if r.entries]


def house() -> dict[str, list[Room]]:
    used: set[str] = set()
    rooms = {package: rooms_of(package, used) for package in PACKAGES}
    stale = sorted(set(LABELS) - used) + sorted(
        k for k in ROOM_LABELS if not (ROOT / k / "__init__.py").exists()
    )
    if stale:
        raise SystemExit(
            "docs/house.py: LABELS / ROOM_LABELS (docs/house_labels.py) name what no longer "
            f"exists (rename or remove them): {', '.join(stale)}"
        )
    return rooms


def python_files(package: str) -> Iterator[Path]:
    for p in sorted((ROOT / package).rglob("*.py")):
        if not any(part.startswith((".", "__pycache__")) for part in p.parts):
            yield p


# ---- imports -----------------------------------------------------------------------------------
def parsed(path: Path) -> tuple[str, ast.Module]:
    """A file's text and tree, parsed once while the file is unchanged."""
    return _parsed(path, path.stat().st_mtime_ns)


@functools.cache
def _parsed(path: Path, mtime_ns: int) -> tuple[str, ast.Module]:
    text = path.read_text()
    return text, ast.parse(text)


def _all_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Every statement, nested ones too (functions, classes, blocks), without the expressions."""
    for stmt in body:
        yield stmt
        for name in ("body", "orelse", "finalbody", "handlers", "cases"):
            inner = getattr(stmt, name, None)
            if isinstance(inner, list):
                yield from _all_statements(inner)


def imported_modules(path: Path) -> Iterator[str]:
    """Every dotted name a file imports: ``import``, ``from`` (relative ones resolved) and
    ``importlib.import_module`` with a constant name."""
    text, tree = parsed(path)
    base = module_of(path.relative_to(ROOT).as_posix()).split(".")
    if path.name != "__init__.py":
        base = base[:-1]
    for node in _all_statements(tree.body):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                yield ".".join([*base[: len(base) - node.level + 1], *[node.module or ""]])
            elif node.module:
                yield node.module
    if "import_module" not in text:
        return
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value


def package_imports() -> dict[str, set[str]]:
    """Our package → the other packages of ours it imports."""
    graph: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for package in PACKAGES:
        for path in python_files(package):
            for name in imported_modules(path):
                top = name.split(".")[0]
                if top in PACKAGES and top != package:
                    graph[package].add(top)
    return graph


def runs_as_process(target: str) -> list[str]:
    """The modules (outside ``target``) that run ``python -m <target>``: a list or tuple in which
    the constant ``"-m"`` is followed by ``target`` or one of its modules."""
    found = []
    for package in PACKAGES:
        if package == target:
            continue
        for path in python_files(package):
            text, tree = parsed(path)
            if "-m" not in text:
                continue
            for node in ast.walk(tree):
                if not isinstance(node, ast.List | ast.Tuple):
                    continue
                values = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
                for a, b in zip(values, values[1:], strict=False):
                    if a == "-m" and isinstance(b, str) and b.split(".")[0] == target:
                        found.append(path.relative_to(ROOT).as_posix())
    return sorted(set(found))
