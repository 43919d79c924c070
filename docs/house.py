"""Draw docs/architecture.svg, the house of packages, from the code.

    python docs/house.py            # write docs/architecture.svg
    python docs/house.py --check    # exit 1 if the committed picture is not what the code draws

What is read, all with ``ast`` and the file system (nothing is imported):

* the floors ``hyrec`` (bottom), ``encoders``, ``retrieval``, ``agent`` (top), with ``prompts``
  beside ``agent`` and ``eval`` at the side: every module of each, a sub-package as a room of its
  floor, plain sub-folders (package data) and ``prompts/*.yaml`` as entries too;
* each module's label: ``LABELS`` below, else the first clause of its docstring;
* the import arrows: which of our packages each package imports (every ``import``, relative ones
  resolved, and ``importlib.import_module`` with a constant name), and which module runs
  ``python -m eval`` as a process;
* the request path: ``recommend`` in ``agent/pipeline.py``. Each assignment from a call in its
  body is one stage, in source order; a stage's modules are those of what it calls: functions
  imported from our packages, and methods on the fields of ``Parts`` (whose annotations name the
  class and so its module). The stage names are the ``a → b → …`` chain of the module docstring.
  ``PRIMARY`` says which module the line runs through where a stage calls more than one.

Standard library only; the output depends on nothing but the source tree (no time, no machine).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import functools
import itertools
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parents[1]
SVG = ROOT / "docs" / "architecture.svg"
PIPELINE = ROOT / "agent" / "pipeline.py"

FLOORS = ("agent", "retrieval", "encoders", "hyrec")  # top to bottom
BESIDE = "prompts"  # beside the top floor
SIDE = "eval"  # at the side of the house
PACKAGES = (*FLOORS, BESIDE, SIDE)

FLOOR_LABELS = {
    "agent": "top floor: every LLM call, every door",
    "retrieval": "candidates, the head · no LLM",
    "encoders": "the scorers and the text encoder",
    "hyrec": "ground floor: data, metrics, threads",
    "prompts": "YAML + Jinja2",
    "eval": "harness + benchmarks",
}
# rooms of a floor, placed in this order (rooms not named here follow, by name)
ROOM_ORDER = ("", "chat", "feedback", "stages", "llm", "serve", "cli", "batch")
ROOM_LABELS = {
    "hyrec/data": "datasets, loaders, splits",
    "agent/llm": "the LLM layer",
    "agent/stages": "the LLM stages + fallbacks",
    "agent/chat": "parser, chat agent, tools",
    "agent/serve": "the HTTP door (FastAPI)",
    "agent/cli": "the hyrec command",
    "agent/batch": "hyrec batch jobs",
    "agent/feedback": "SQLite + PostgreSQL stores",
}
# a stage that calls into more than one module: the one the request line runs through
PRIMARY = {"read_intent": "agent.chat.intent", "rank": "retrieval.hybrid"}

LABELS = {
    # hyrec
    "hyrec/metrics.py": "ranking metrics, evaluate",
    "hyrec/threads.py": "one BLAS thread per process",
    "hyrec/data/atomic.py": "RecBole atomic files",
    "hyrec/data/dataset.py": "Dataset, Item, Interactions",
    "hyrec/data/generic.py": "your own CSV / JSON lines",
    "hyrec/data/movielens.py": "MovieLens loaders",
    "hyrec/data/reader.py": "line reading, bad lines",
    "hyrec/data/snapshot.py": "catalogue + histories saved",
    "hyrec/data/sources.py": "load_dataset, where data is",
    "hyrec/data/splits.py": "History, EvalTask, splits",
    # encoders
    "encoders/base.py": "Scorer protocol, FitData",
    "encoders/collaborative.py": "pop, itemknn, als, bpr",
    "encoders/lightgcn.py": "LightGCN: graph CF",
    "encoders/registry.py": "SCORERS, make_scorer",
    "encoders/sasrec.py": "SASRec over text (+ ID)",
    "encoders/sasrec_net.py": "the causal transformer",
    "encoders/sasrec_train.py": "SASRec's training loop",
    "encoders/search_space.py": "typed search spaces",
    "encoders/semantic.py": "text cosine scorer",
    "encoders/text.py": "TextEncoder, cached on disk",
    # retrieval
    "retrieval/ann.py": "faiss IVF inner-product index",
    "retrieval/candidates.py": "each source's top-N, tagged",
    "retrieval/catalogue_growth.py": "add_items by text",
    "retrieval/features.py": "scale-free features",
    "retrieval/filters.py": "Filter, CatalogueIndex, merge",
    "retrieval/hybrid.py": "HybridRecommender",
    "retrieval/hybrid_config.py": "HybridConfig, search space",
    "retrieval/hybrid_fit.py": "the fit's stages",
    "retrieval/items.py": "ItemList: the currency",
    "retrieval/mmr.py": "MMR: diversity",
    "retrieval/ranker.py": "LambdaRank + listwise MLP",
    "retrieval/records.py": "item store metadata",
    "retrieval/request_checks.py": "a request's vectors, checked",
    "retrieval/saved.py": "a fitted hybrid on disk",
    "retrieval/similar_items.py": "item-to-item similar",
    "retrieval/store.py": "ItemStore (chromadb)",
    "retrieval/tuned.py": "tuned.json + history",
    "retrieval/tuning.py": "tune: Optuna, stage by stage",
    "retrieval/tuning_check.py": "the search's final check",
    "retrieval/views.py": "candidate-only score views",
    # agent
    "agent/api.py": "Recommender: the Python API",
    "agent/catalogue.py": "upserts: new or refused",
    "agent/config.py": "RecommenderConfig, results",
    "agent/erasure.py": "a user erased from snapshot",
    "agent/folder.py": "the model folder",
    "agent/llm_stages.py": "profiles + re-ranker built",
    "agent/locks.py": "RWLock: the model lock",
    "agent/lookups.py": "search, similar, explain",
    "agent/pipeline.py": "the one request path",
    "agent/replica.py": "what a replica follows",
    "agent/state.py": "UserState",
    "agent/upserts.py": "upserts on a served model",
    "agent/user_data.py": "feedback, forget_user",
    "agent/llm/connect.py": "connect() → LLMHandle",
    "agent/llm/embedded.py": "llama.cpp + SmolLM2",
    "agent/llm/guard.py": "GuardedLLM: the budget",
    "agent/llm/jsonparse.py": "JSON an LLM wrote",
    "agent/llm/openai_backend.py": "openai SDK backend",
    "agent/llm/protocol.py": "LLM protocol, errors",
    "agent/llm/settings.py": "LLMSettings",
    "agent/llm/transformers_backend.py": "in-process LM",
    "agent/stages/history_profiles.py": "History → profile vectors",
    "agent/stages/privacy.py": "pseudonymize, scrub",
    "agent/stages/profile_cache.py": "the profile cache",
    "agent/stages/profile_fallback.py": "attribute-based profile",
    "agent/stages/profile_types.py": "LLMProfile, InterestProfile",
    "agent/stages/profiles.py": "ProfileService",
    "agent/stages/reasons.py": "one reason per item",
    "agent/stages/rerank.py": "LLMReranker",
    "agent/chat/agent.py": "ChatAgent: which path",
    "agent/chat/answers.py": "the numbered answer",
    "agent/chat/intent.py": "parse_request → Intent",
    "agent/chat/lexicon.py": "the parser's vocabulary",
    "agent/chat/rules.py": "the rules path",
    "agent/chat/titles.py": "the title index",
    "agent/chat/tool_path.py": "the tool-calling loop",
    "agent/chat/tools.py": "LangChain tools",
    "agent/chat/turn.py": "ChatConfig, ChatReply",
    "agent/serve/app.py": "the FastAPI app",
    "agent/serve/dashboard.py": "chat page + dashboard",
    "agent/serve/limits.py": "auth, body size first",
    "agent/serve/metrics.py": "Prometheus, access log",
    "agent/serve/schemas.py": "pydantic payloads",
    "agent/serve/startup.py": "auth, opening the model",
    "agent/serve/static/": "the web pages' files",
    "agent/cli/batch.py": "hyrec batch",
    "agent/cli/chat.py": "hyrec chat",
    "agent/cli/demo.py": "hyrec demo",
    "agent/cli/llm.py": "hyrec llm serve | check",
    "agent/cli/main.py": "fit, recommend, eval, bench",
    "agent/cli/profile.py": "hyrec profile",
    "agent/cli/progress.py": "a fit's progress",
    "agent/cli/serve.py": "hyrec serve",
    "agent/cli/session.py": "progress, the LLM",
    "agent/cli/tune.py": "hyrec tune",
    "agent/batch/config.py": "BatchConfig, BatchReport",
    "agent/batch/jobs.py": "BatchWorker: the rows",
    "agent/batch/local.py": "one process, threads",
    "agent/batch/output.py": "exactly-once output",
    "agent/batch/ray_engine.py": "Ray Data actor pool",
    "agent/batch/run.py": "run_batch",
    "agent/batch/vllm.py": "ray.data.llm on GPUs",
    "agent/feedback/events.py": "what an event is",
    "agent/feedback/migrate.py": "PostgreSQL migrations",
    "agent/feedback/migrations/": "versioned plain SQL",
    "agent/feedback/opener.py": "open_store: URL or path",
    "agent/feedback/pg_follow.py": "LISTEN/NOTIFY follower",
    "agent/feedback/pg_pool.py": "connection pool",
    "agent/feedback/pg_reports.py": "dashboard queries (SQL)",
    "agent/feedback/postgres.py": "PostgresFeedbackStore",
    "agent/feedback/protocol.py": "Store, SharedStore",
    "agent/feedback/reports.py": "the dashboard's queries",
    "agent/feedback/schema.py": "the SQLite schema",
    "agent/feedback/store.py": "FeedbackStore: SQLite",
    # prompts
    "prompts/__init__.py": "load(name)",
    "prompts/explain.yaml": "one reason per item",
    "prompts/profile.yaml": "interest profile",
    "prompts/rerank.yaml": "re-rank by logprobs",
    "prompts/rerank_list.yaml": "re-rank as a list",
    # eval
    "eval/__main__.py": "python -m eval",
    "eval/bench_batch.py": "hyrec batch: local vs Ray",
    "eval/bench_chaos.py": "200 clients while the store fails",
    "eval/bench_http_load.py": "HTTP load test",
    "eval/bench_latency.py": "serving cost as the catalogue grows",
    "eval/bench_llm.py": "ablation of the LLM stages",
    "eval/bench_llm_backends.py": "the local LLM backends' latency",
    "eval/bench_llm_report.py": "the ablation's report",
    "eval/bench_llm_throughput.py": "the LLM stages' throughput",
    "eval/bench_replicas.py": "two replicas under load",
    "eval/bench_sasrec_loss.py": "SASRec: full vs sampled softmax",
    "eval/bench_scaling.py": "fit cost as the data grows",
    "eval/bench_store.py": "ItemStore latency",
    "eval/bench_text_encoder.py": "TextEncoder throughput",
    "eval/bench_versions.py": "two source trees side by side",
    "eval/cli.py": "the harness's command line",
    "eval/first_run.py": "the first five minutes",
    "eval/first_run_cold.py": "cold set-up and make demo",
    "eval/first_run_env.py": "a first run's conditions",
    "eval/first_run_llm_stages.py": "the demo's LLM stages per backend",
    "eval/first_run_no_compiler.py": "pip install without a compiler",
    "eval/first_run_profiles.py": "fit profiles per component",
    "eval/harness.py": "run_eval: fit, rank, report",
    "eval/peer_check.py": "against RecBole",
    "eval/plots.py": "the report's figures",
    "eval/report.py": "write_report",
    "eval/results/": "committed results",
    "eval/scripted_llm.py": "a scripted LLM server",
    "eval/synthetic.py": "seeded synthetic datasets",
    "eval/tradeoff.py": "trade-off plot numbers",
    "eval/tune.py": "untuned vs tuned, several seeds",
    "eval/versions_worker.py": "one tree's side of bench_versions",
}

# ---- geometry and style ------------------------------------------------------------------------
WIDTH = 1200
X0 = 16  # the house's left edge
HOUSE_W = 882
GAP = 18  # between columns: the gutters the request line runs in
NCOL = 3
CW = (HOUSE_W - (NCOL + 1) * GAP) / NCOL  # 270
LH = 13  # one entry
PROMPTS_X, PROMPTS_W = X0 + HOUSE_W + 24, 118
EVAL_X = PROMPTS_X + PROMPTS_W + 24
EVAL_W = WIDTH - 10 - EVAL_X
FLOOR_GAP = 34
MONO = "DejaVu Sans Mono, Menlo, Consolas, monospace"
RED = "#c0392b"
COLOURS = {  # stroke, fill
    "agent": ("#d9822b", "#fdf1e1"),
    "retrieval": ("#3b78c2", "#e7f0fb"),
    "encoders": ("#3c9a4a", "#e9f5e9"),
    "hyrec": ("#7a5ab5", "#f1edf8"),
    "prompts": ("#b59a1f", "#fff8d9"),
    "eval": ("#777777", "#f2f2f2"),
}


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
            "docs/house.py: LABELS / ROOM_LABELS name what no longer exists (rename or "
            f"remove them): {', '.join(stale)}"
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
                "say in PRIMARY which one the request line runs through"
            )
        stages.append(Stage(i, name, function, calls, primary))
    if stale := sorted(set(PRIMARY) - {s.function for s in stages}):
        raise SystemExit(f"docs/house.py: PRIMARY names no stage: {', '.join(stale)}")
    return stages


# ---- text metrics (DejaVu Sans advance widths, in em) ------------------------------------------
_SANS = {
    **dict.fromkeys("abdeghnopqu", 0.63),
    **dict.fromkeys("ckvxyz", 0.57),
    **dict.fromkeys("fijlrt", 0.36),
    **dict.fromkeys("mw", 0.9),
    "s": 0.53,
    **dict.fromkeys("ABCDGHKNOQRUVXZ", 0.74),
    **dict.fromkeys("EFLPSTY", 0.62),
    **dict.fromkeys("IJ", 0.3),
    **dict.fromkeys("MW", 0.95),
    **dict.fromkeys("0123456789", 0.64),
    **dict.fromkeys(" .,:;'|!", 0.32),
    **dict.fromkeys("()[]/-", 0.39),
    **dict.fromkeys("+=<>→", 0.84),
    "…": 1.0,
    "_": 0.5,
}


def text_width(text: str, size: float, mono: bool = False, bold: bool = False) -> float:
    if mono:
        return len(text) * 0.602 * size * (1.05 if bold else 1.0)
    return sum(_SANS.get(c, 0.64) for c in text) * size * (1.08 if bold else 1.0)


def fit(text: str, width: float, size: float, mono: bool = False, bold: bool = False) -> str:
    """``text``, cut with an ellipsis where it would be wider than ``width``."""
    if text_width(text, size, mono, bold) <= width:
        return text
    while text and text_width(text + "…", size, mono, bold) > width:
        text = text[:-1]
    return text.rstrip(" ,·:") + "…"


# ---- drawing -----------------------------------------------------------------------------------
def num(v: float) -> str:
    s = f"{v:.1f}"
    return s[:-2] if s.endswith(".0") else s


def value(v: object) -> str:
    return num(v) if isinstance(v, float | int) else escape(str(v), {'"': "&quot;"})


class Canvas:
    def __init__(self) -> None:
        self.out: list[str] = []

    def add(self, tag: str, body: str | None = None, **attrs: object) -> None:
        text = " ".join(
            f'{k.rstrip("_").replace("_", "-")}="{value(v)}"'
            for k, v in attrs.items()
            if v is not None
        )
        self.out.append(
            f"<{tag} {text}/>" if body is None else f"<{tag} {text}>{escape(body)}</{tag}>"
        )

    def text(self, x: float, y: float, s: str, size: float = 10, **attrs: object) -> None:
        self.add("text", s, x=x, y=y, font_size=size, **attrs)

    def rect(self, x: float, y: float, w: float, h: float, **attrs: object) -> None:
        self.add("rect", x=x, y=y, width=w, height=h, **attrs)

    def arrow(self, x1: float, y1: float, x2: float, y2: float, **attrs: object) -> None:
        attrs = {"stroke": "#555", "stroke_width": 1.6, "marker_end": "url(#imp)", **attrs}
        self.add("line", x1=x1, y1=y1, x2=x2, y2=y2, **attrs)


def column_x(c: int) -> float:
    return X0 + GAP + c * (CW + GAP)


def gutter_x(c: int) -> float:
    return column_x(c) - GAP / 2


@dataclass
class Placed:
    """Where an entry was drawn: its grid column and the middle of its line."""

    column: int
    y: float


@dataclass
class Layout:
    rooms: dict[str, list[Room]]
    canvas: Canvas = field(default_factory=Canvas)
    entries: dict[str, Placed] = field(default_factory=dict)
    floors: dict[str, tuple[float, float]] = field(default_factory=dict)  # top, bottom
    buses: list[float] = field(default_factory=list)  # free horizontal lanes across the house


def draw_entries(
    lay: Layout, entries: list[Entry], c0: int, span: int, y: float, highlight: set[str]
) -> float:
    """Entries flowed down ``span`` sub-columns from grid column ``c0``; returns the bottom."""
    rows = -(-len(entries) // span)
    for k in range(span):
        chunk = entries[k * rows : (k + 1) * rows]
        if not chunk:
            continue
        x = column_x(c0 + k) + 8
        widest = max(text_width(e.name, 9.5, mono=True, bold=True) for e in chunk)
        name_w = min(widest + 7, CW * 0.6)  # a very long name is cut, never runs into its label
        for r, e in enumerate(chunk):
            ly = y + r * LH
            hot = e.path in highlight
            if hot:
                lay.canvas.rect(x - 4, ly - 9.5, CW - 8, LH - 0.5, rx=2, fill="#f9d9d5")
            lay.canvas.out.append(f"<g><title>{escape(e.path)} — {escape(e.label)}</title>")
            lay.canvas.text(
                x,
                ly,
                fit(e.name, name_w - 5, 9.5, mono=True, bold=True),
                9.5,
                font_family=MONO,
                font_weight="bold",
                fill=RED if hot else "#222",
            )
            room = CW - 16 - name_w
            lay.canvas.text(x + name_w, ly, fit(e.label, room, 9), 9, fill="#555")
            lay.canvas.out.append("</g>")
            lay.entries[e.path] = Placed(c0 + k, ly - 3.5)
    return y + (rows - 1) * LH + 4


def room_height(room: Room, span: int, headed: bool) -> float:
    rows = -(-len(room.entries) // span)
    return (24 if headed else 8) + rows * LH + 2


def draw_floor(lay: Layout, package: str, top: float, highlight: set[str], imports: str) -> float:
    stroke, fill = COLOURS[package]
    rooms = lay.rooms[package]
    headed = len(rooms) > 1
    # placement: fewer rooms than columns → the biggest rooms span more; else the shortest column
    placed: list[tuple[Room, int, int, float]] = []  # room, column, span, y
    y0 = top + 42
    if len(rooms) <= NCOL:
        spans = [1] * len(rooms)
        while sum(spans) < NCOL:
            i = max(range(len(rooms)), key=lambda i: (len(rooms[i].entries) / spans[i], -i))
            spans[i] += 1
        c = 0
        for room, span in zip(rooms, spans, strict=True):
            placed.append((room, c, span, y0))
            c += span
    else:
        heights = [y0] * NCOL
        for room in rooms:
            c = min(range(NCOL), key=lambda i: (heights[i], i))
            placed.append((room, c, 1, heights[c]))
            heights[c] += room_height(room, 1, headed) + 10
    bottom = max(y + room_height(r, s, headed) for r, _, s, y in placed) + 10
    c = lay.canvas
    c.rect(X0, top, HOUSE_W, bottom - top, rx=6, fill=fill, stroke=stroke, stroke_width=1.6)
    # the header stays within the first column, so the gutters on its right stay free
    name_w = text_width(f"{package}/", 13, mono=True, bold=True) + 8
    x = column_x(0)
    c.text(x, top + 18, f"{package}/", 13, font_family=MONO, font_weight="bold", fill=stroke)
    c.text(x + name_w, top + 18, fit(FLOOR_LABELS[package], CW - name_w, 10), 10, fill="#444")
    c.text(x, top + 32, fit(imports, CW, 9.5), 9.5, font_style="italic", fill="#555")
    for room, col, span, y in placed:
        w = span * CW + (span - 1) * GAP
        h = room_height(room, span, headed)
        if headed:
            c.rect(column_x(col), y, w, h, rx=4, fill="#ffffff", stroke=stroke, stroke_width=1.1)
            tw = text_width(room.title, 11, mono=True, bold=True) + 8
            c.text(
                column_x(col) + 8,
                y + 15,
                room.title,
                11,
                font_family=MONO,
                font_weight="bold",
                fill=stroke,
            )
            c.text(column_x(col) + 8 + tw, y + 15, fit(room.label, w - 16 - tw, 9), 9, fill="#666")
        draw_entries(lay, room.entries, col, span, y + (26 if headed else 12), highlight)
    lay.floors[package] = (top, bottom)
    return bottom


def draw_side_box(
    lay: Layout, package: str, x: float, w: float, top: float, bottom: float | None, note: str
) -> float:
    """``prompts`` and ``eval``: one narrow box, one entry per line (name, label on hover)."""
    stroke, fill = COLOURS[package]
    entries = [e for room in lay.rooms[package] for e in room.entries]
    two_lines = bottom is None  # room for the labels under the names
    height = 52 + len(entries) * (LH * 2 if two_lines else LH) + 22
    bottom = top + height if bottom is None else bottom
    c = lay.canvas
    c.rect(x, top, w, bottom - top, rx=6, fill=fill, stroke=stroke, stroke_width=1.6)
    c.text(
        x + w / 2,
        top + 18,
        f"{package}/",
        13,
        font_family=MONO,
        font_weight="bold",
        text_anchor="middle",
        fill=stroke,
    )
    c.text(
        x + w / 2,
        top + 32,
        fit(FLOOR_LABELS[package], w - 8, 9),
        9,
        text_anchor="middle",
        fill="#444",
    )
    y = top + 52
    for e in entries:
        c.out.append(f"<g><title>{escape(e.path)} — {escape(e.label)}</title>")
        c.text(x + 8, y, fit(e.name, w - 12, 9, mono=True), 9, font_family=MONO, fill="#333")
        if two_lines:
            c.text(x + 8, y + 11, fit(e.label, w - 12, 8.5), 8.5, fill="#666")
        c.out.append("</g>")
        y += LH * 2 if two_lines else LH
    c.text(
        x + w / 2,
        bottom - 10,
        fit(note, w - 8, 9),
        9,
        font_style="italic",
        text_anchor="middle",
        fill="#666",
    )
    return bottom


def request_line(
    placed: list[Placed], buses: list[float]
) -> tuple[list[tuple[float, float]], list[list[tuple[float, float]]]]:
    """The stages' markers and the line between them. A marker sits in the gutter left or right
    of its entry's column, whichever makes the line shortest (a hop between gutters runs along
    the nearest gap between floors, and costs a bend more); hop ``i`` keeps to its own lane."""

    def hop(i: int, a: tuple[float, float], b: tuple[float, float]) -> list[tuple[float, float]]:
        (xa, ya), (xb, yb) = a, b
        lane = (i % 3 - 1) * 4.5
        if xa == xb:
            return [a, (xa + lane, ya), (xa + lane, yb), b]
        bus = min(buses, key=lambda y: (abs(ya - y) + abs(yb - y), y)) + lane
        return [a, (xa + lane, ya), (xa + lane, bus), (xb + lane, bus), (xb + lane, yb), b]

    def cost(route: list[tuple[float, float]]) -> float:
        pairs = zip(route, route[1:], strict=False)
        return sum(abs(x2 - x1) + abs(y2 - y1) for (x1, y1), (x2, y2) in pairs) + 60 * len(route)

    best: tuple[float, list, list] | None = None
    for sides in itertools.product((0, 1), repeat=len(placed)):
        markers = [(gutter_x(p.column + s), p.y) for p, s in zip(placed, sides, strict=True)]
        routes = [hop(i, a, b) for i, (a, b) in enumerate(zip(markers, markers[1:], strict=False))]
        total = sum(map(cost, routes))
        if best is None or total < best[0] - 1e-6:
            best = (total, markers, routes)
    assert best is not None
    return best[1], best[2]


def render() -> str:
    stages = request_path()
    graph = package_imports()
    process = runs_as_process(SIDE)
    lay = Layout(house())
    c = lay.canvas

    highlight = {path_of(m) for s in stages for m in s.modules}  # the files on the path

    # ---- title and legend
    c.text(X0, 24, "hyrec: the house", 16, font_weight="bold")
    c.text(
        X0 + text_width("hyrec: the house", 16, bold=True) + 12,
        24,
        "drawn from the code by docs/house.py",
        10,
        fill="#555",
    )
    legend = [
        ("imports", "imp"),
        ("runs as a process", "run"),
        ("the request path", "path"),
        ("also called by that stage", "ring"),
    ]
    lx = EVAL_X + EVAL_W - sum(text_width(t, 10) + 52 for t, _ in legend)
    for label, kind in legend:
        if kind == "imp":
            c.arrow(lx, 20, lx + 26, 20)
        elif kind == "run":
            c.arrow(
                lx, 20, lx + 26, 20, stroke="#888", stroke_dasharray="4 3", marker_end="url(#run)"
            )
        elif kind == "path":
            c.add("line", x1=lx, y1=20, x2=lx + 26, y2=20, stroke=RED, stroke_width=3)
            c.add("circle", cx=lx + 13, cy=20, r=6, fill=RED)
        else:
            c.add("circle", cx=lx + 13, cy=20, r=5.5, fill="#ffffff", stroke=RED, stroke_width=1.8)
        c.text(lx + 31, 24, label, 10, fill="#333")
        lx += text_width(label, 10) + 52

    # ---- the request path's stages, in the order the code runs them
    top = 40
    c.text(
        X0,
        top + 14,
        "The one request path: recommend(parts, request) in agent/pipeline.py, "
        "stage by stage, as the code calls them (the modules are marked in the house below)",
        10.5,
        font_weight="bold",
        fill=RED,
    )

    def call_lines(s: Stage) -> list[tuple[str, bool, float]]:
        """One line a call (``module: name``), or two where that is too wide; bold: primary."""
        lines = []
        for call in s.calls:
            bold, module = call.module == s.primary, call.path.removesuffix(".py")
            if text_width(f"{module}: {call.name}", 8.5, mono=True) <= CW - 34:
                lines.append((f"{module}: {call.name}", bold, 0))
            else:
                lines += [(module + ":", bold, 0), (call.name, bold, 10)]
        return lines

    def draw_card(s: Stage, x: float, y: float, card_h: float) -> None:
        c.rect(x, y, CW, card_h, rx=4, fill="#fdf0ee", stroke="#e6b0aa", stroke_width=1)
        c.add("circle", cx=x + 13, cy=y + 13, r=9, fill=RED)
        c.text(
            x + 13,
            y + 17,
            str(s.number),
            11,
            font_weight="bold",
            text_anchor="middle",
            fill="#ffffff",
        )
        c.text(x + 28, y + 17, s.name, 11, font_weight="bold", fill=RED)
        fn = s.function if s.function.startswith("parts.") else f"{s.function}()"
        nw = text_width(s.name, 11, bold=True) + 10
        c.text(
            x + 28 + nw,
            y + 17,
            fit(fn, CW - 36 - nw, 9.5, mono=True),
            9.5,
            font_family=MONO,
            fill="#333",
        )
        for i, (line, bold, indent) in enumerate(call_lines(s)):
            c.text(
                x + 28 + indent,
                y + 31 + 12 * i,
                fit(line, CW - 34 - indent, 8.5, mono=True),
                8.5,
                font_family=MONO,
                font_weight="bold" if bold else None,
                fill="#555",
            )

    rows = [stages[i : i + NCOL] for i in range(0, len(stages), NCOL)]
    y = top + 24
    for row in rows:
        card_h = 20 + 12 * max(len(call_lines(s)) for s in row) + 4
        for col, s in enumerate(row):
            draw_card(s, column_x(col), y, card_h)
        y += card_h + 8
    top = y + 2

    # ---- the floors, top down
    lay.buses.append(top + FLOOR_GAP / 2 - 4)
    top += FLOOR_GAP - 8
    order = list(FLOORS)
    for i, package in enumerate(order):
        below = order[i + 1 :]
        ours = sorted(graph[package], key=lambda p: (PACKAGES.index(p), p))
        words = [p + ("" if p in below or p == BESIDE else " (upward!)") for p in ours]
        imports = "imports " + " · ".join(words) if words else "imports nothing of ours"
        bottom = draw_floor(lay, package, top, highlight, imports)
        top = bottom + FLOOR_GAP
        lay.buses.append(bottom + FLOOR_GAP / 2)
    house_bottom = top - FLOOR_GAP
    lay.buses.pop()  # below the ground floor: nothing to route there

    # ---- arrows between floors (down: imports the floor below; up, red: a floor above)
    ax = column_x(NCOL - 1) + CW - 40
    for upper, lower in zip(order, order[1:], strict=False):
        _, ub = lay.floors[upper]
        lt, _ = lay.floors[lower]
        if lower in graph[upper]:
            c.arrow(ax, ub + 1, ax, lt - 1, stroke_width=1.8)
        if upper in graph[lower]:
            c.arrow(ax + 20, lt - 1, ax + 20, ub + 1, stroke=RED, stroke_width=1.8)

    # ---- prompts beside the top floor, eval at the side
    agent_top, agent_bottom = lay.floors[FLOORS[0]]
    importers = sorted(p for p in PACKAGES if BESIDE in graph[p])
    note = "imported by " + ", ".join(importers) if importers else "imported by nothing"
    p_top = agent_top + 10
    p_bottom = draw_side_box(lay, BESIDE, PROMPTS_X, PROMPTS_W, p_top, None, note)
    prompts_imports = sorted(graph[BESIDE])
    if prompts_imports:
        c.text(PROMPTS_X, p_bottom + 14, "imports " + ", ".join(prompts_imports), 9, fill=RED)
    py = p_top + 40
    for p in importers:
        if p == FLOORS[0]:
            c.arrow(X0 + HOUSE_W + 1, py, PROMPTS_X - 1, py)
    importers = sorted(p for p in PACKAGES if SIDE in graph[p])
    note = "imported by " + ", ".join(importers) if importers else f"nothing imports {SIDE}"
    draw_side_box(lay, SIDE, EVAL_X, EVAL_W, agent_top, house_bottom, note)
    for package in order:
        if package not in graph[SIDE]:
            continue
        t, b = lay.floors[package]
        y = max(p_bottom + 40, (t + b) / 2) if package == FLOORS[0] else (t + b) / 2
        c.arrow(EVAL_X - 1, y, X0 + HOUSE_W + 1, y)
    if BESIDE in graph[SIDE]:
        c.arrow(EVAL_X - 1, py, PROMPTS_X + PROMPTS_W + 1, py)
    for i, path in enumerate(process):
        y = p_bottom + 40 + 44 * (i + 1)
        if y > agent_bottom - 10:
            break
        c.arrow(
            X0 + HOUSE_W + 1,
            y,
            EVAL_X - 1,
            y,
            stroke="#888",
            stroke_width=1.4,
            stroke_dasharray="4 3",
            marker_end="url(#run)",
        )
        mid = (X0 + HOUSE_W + EVAL_X) / 2
        c.text(
            mid, y - 6, f"python -m {SIDE}", 9, font_family=MONO, text_anchor="middle", fill="#555"
        )
        c.text(
            mid,
            y + 13,
            fit(path, EVAL_X - X0 - HOUSE_W - 6, 8.5, mono=True),
            8.5,
            font_family=MONO,
            text_anchor="middle",
            fill="#777",
        )

    # ---- the request line: marker to marker, along the gutters and the gaps between floors
    placed = []
    for s in stages:
        where = lay.entries.get(path_of(s.primary))
        if where is None:
            raise SystemExit(f"docs/house.py: stage {s.function}'s module {s.primary} not drawn")
        placed.append(where)
    markers, routes = request_line(placed, lay.buses)
    for route in routes:
        c.add(
            "polyline",
            points=" ".join(f"{num(x)},{num(y)}" for x, y in route),
            fill="none",
            stroke=RED,
            stroke_width=2.6,
            stroke_opacity=0.85,
            stroke_linejoin="round",
        )
    for s, (x, y) in zip(stages, markers, strict=True):
        for m in s.modules:
            if m == s.primary or (where := lay.entries.get(path_of(m))) is None:
                continue
            rx, ry = gutter_x(where.column), where.y
            c.add("circle", cx=rx, cy=ry, r=6.5, fill="#ffffff", stroke=RED, stroke_width=1.8)
            c.text(
                rx, ry + 3, str(s.number), 8.5, font_weight="bold", text_anchor="middle", fill=RED
            )
        c.add("circle", cx=x, cy=y, r=7.5, fill=RED, stroke="#ffffff", stroke_width=1.5)
        c.text(x, y + 3.5, str(s.number), 10, font_weight="bold", text_anchor="middle", fill="#fff")

    height = house_bottom + 12
    head = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{num(height)}" '
        f'viewBox="0 0 {WIDTH} {num(height)}" font-family="DejaVu Sans, Helvetica, Arial, '
        'sans-serif" font-size="10">',
        "<title>hyrec: the house — floors, rooms, imports and the one request path "
        "(generated by docs/house.py)</title>",
        "<defs>",
        '<marker id="imp" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker>',
        '<marker id="run" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10" fill="none" stroke="#888" '
        'stroke-width="1.6"/></marker>',
        "</defs>",
        f'<rect x="0" y="0" width="{WIDTH}" height="{num(height)}" fill="#ffffff"/>',
    ]
    return "\n".join([*head, *c.out, "</svg>"]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the SVG is out of date")
    args = parser.parse_args(argv)
    svg = render()
    if not args.check:
        SVG.write_text(svg, encoding="utf-8", newline="\n")
        return 0
    current = SVG.read_text(encoding="utf-8") if SVG.exists() else ""
    if current == svg:
        return 0

    def entries(svg: str) -> set[str]:
        return set(re.findall(r"<title>([^<]*?) — ", svg))

    old, new = entries(current), entries(svg)
    changes = [f"  + {p}" for p in sorted(new - old)] + [f"  - {p}" for p in sorted(old - new)]
    if not changes:  # the same modules: show where the drawing differs
        diff = difflib.unified_diff(current.splitlines(), svg.splitlines(), lineterm="", n=0)
        changes = ["  " + line for line in list(diff)[2:12]]
    print(
        "docs/architecture.svg is out of date with the code: run `python docs/house.py` "
        "and commit the result.",
        *changes,
        sep="\n",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
