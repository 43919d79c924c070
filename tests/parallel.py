"""How `make test` splits the suite over three pytest-xdist workers (``-n 3 --dist loadgroup``;
plain ``-n N`` is scheduled the same way). Three on two cores: with two, the cores sat idle about
a quarter of the run (CPU 344 s in 236 s of wall time) while tests waited on servers starting,
scripted LLM delays and subprocesses; a third worker fills those waits (3:20 against 3:39 side
by side, 2026-12-02).

A work unit goes to one worker whole: a test module (so its module fixtures, fitted models and
started servers, run once), or one of the shared units below, which span modules:

* ``llama``: everything that starts or stops a llama.cpp server, and ``test_abuse``: its
  failed-start test checks that no ``llama_cpp.server`` process and no
  ``/tmp/hyrec-llama-server-*.log`` appears or disappears around a start that fails, so nothing
  else may start or stop one meanwhile. The session's ``llm_server`` then also starts only once.
  The rest of ``test_abuse`` only needs a scripted LLM, but its latency bounds (feedback within
  1 s of a slow LLM call) hold better beside the other worker's waiting than beside a llama.cpp
  server, and the suite ran faster this way (one run each: 5:50 against 7:50, load average ~7).
* ``postgres``: the modules on the session's initdb'd server (``tests/pg.py``), started once.

Units are handed out longest first (``UNIT_COST``), so a long one never starts last.

xdist's own loadgroup reads ``xdist_group`` marks by appending ``@group`` to each node id, which
pytest 9.2's structured node ids silently ignore (pytest-dev/pytest-xdist#1386). So the workers,
which see the fixtures, write each test's unit to a file, and the controller's scheduler (a
:class:`~xdist.scheduler.LoadScopeScheduling` whose scope is that unit) reads it. Without ``-n``
(or with ``-p no:xdist``) none of this runs: the suite runs serially in file order.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

UNITS_ENV = "HYREC_TEST_UNITS_DIR"  # set by the controller, inherited by its workers

LLAMA_MODULES = frozenset({"test_abuse.py", "test_llm_integration.py"})
LLAMA_FIXTURES = frozenset({"llm_server"})
# A test that needs llama.cpp says so with ``pytest.importorskip("llama_cpp")``; these two do:
LLAMA_TESTS = frozenset(
    {
        # looks for llama.cpp servers and their logs, system-wide
        "test_a_failed_start_and_a_killed_server_leave_no_llm_server_or_log",
        # starts the embedded llama.cpp server without a fixture (``hyrec serve --llm``)
        "test_chat_then_recommend_then_feedback_with_the_embedded_llm",
    }
)
POSTGRES_FIXTURES = frozenset({"postgres_server", "pg_url"})

# Seconds each unit took in a `-n 2` run of `make test` (3:48 on the 2 cores); units not named
# cost 0 and follow in file order. Only the order matters: the longest first.
UNIT_COST = {
    "llama": 135,
    "test_batch.py": 66,
    "test_tune.py": 37,
    "postgres": 34,
    "test_eval.py": 27,
    "test_http.py": 23,
    "test_store.py": 21,
    "test_web.py": 12,
    "test_candidates_ann.py": 6,
    "test_llm_backends.py": 6,
    "test_sasrec.py": 6,
}


def _schedules_units(config: pytest.Config) -> bool:
    """Whether this is the xdist controller of a run that hands out tests one by one or by
    group (``-n N`` alone is ``--dist load``): those get units, which this suite needs."""
    return (
        config.pluginmanager.hasplugin("xdist")
        and not hasattr(config, "workerinput")
        and config.getoption("dist", "no") in ("load", "loadgroup")
    )


def needs_llama_cpp(item: pytest.Item) -> bool:
    if getattr(item, "originalname", None) in LLAMA_TESTS:
        return True
    try:
        source = inspect.getsource(item.function)  # type: ignore[attr-defined]
    except (AttributeError, TypeError, OSError):
        return False
    return 'importorskip("llama_cpp")' in source


def unit_of(item: pytest.Item, postgres_modules: set[str]) -> str:
    module = item.path.name
    if module in LLAMA_MODULES or LLAMA_FIXTURES & set(item.fixturenames) or needs_llama_cpp(item):
        return "llama"
    if module in postgres_modules:
        return "postgres"
    return module


def pytest_configure(config: pytest.Config) -> None:
    if _schedules_units(config):
        folder = tempfile.mkdtemp(prefix="hyrec-test-units-")
        config.stash[_FOLDER] = folder
        os.environ[UNITS_ENV] = folder  # before the workers start (pytest_sessionstart)


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = config.stash.get(_FOLDER, None)
    if folder is not None:
        os.environ.pop(UNITS_ENV, None)
        shutil.rmtree(folder, ignore_errors=True)


_FOLDER = pytest.StashKey[str]()


@pytest.hookimpl(trylast=True)  # after any hook that deselects or reorders
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In an xdist worker: longest units first, and each test's unit written for the controller."""
    worker = getattr(config, "workerinput", {}).get("workerid")
    folder = os.environ.get(UNITS_ENV)  # only where the controller schedules units
    if worker is None or folder is None:
        return
    postgres_modules = {it.path.name for it in items if POSTGRES_FIXTURES & set(it.fixturenames)}
    units = {item.nodeid: unit_of(item, postgres_modules) for item in items}
    first: dict[str, int] = {}
    for n, item in enumerate(items):
        first.setdefault(units[item.nodeid], n)
    rank = {unit: (-UNIT_COST.get(unit, 0), n) for unit, n in first.items()}
    items.sort(key=lambda item: rank[units[item.nodeid]])  # stable: file order inside a unit
    path = Path(folder) / f"{worker}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(units))
    tmp.replace(path)  # whole or absent: the controller reads it once every worker has collected


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    if not _schedules_units(config):
        return None
    from xdist.scheduler import LoadScopeScheduling

    folder = Path(config.stash[_FOLDER])

    class UnitScheduling(LoadScopeScheduling):
        """Scope = the unit the workers wrote; queue order = their collection order."""

        units: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.units is None:
                written = sorted(folder.glob("*.json"))
                self.units = json.loads(written[0].read_text()) if written else {}
            return self.units.get(nodeid) or nodeid.split("::", 1)[0]

    config.option.loadscopereorder = False  # keep the longest-first order the workers collected
    return UnitScheduling(config, log)
