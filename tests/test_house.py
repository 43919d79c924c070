"""docs/architecture.svg is drawn from the code by docs/house.py, and must be what it draws now.

A module added, removed or renamed, a new import between floors, or a changed request path fails
here until the picture is regenerated (``python docs/house.py``). The modules and the request
path's functions are also checked independently of the generator, so a generator that drops them
cannot pass.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SVG = ROOT / "docs" / "architecture.svg"
PACKAGES = ("hyrec", "encoders", "retrieval", "agent", "prompts", "eval")
NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def house():
    spec = importlib.util.spec_from_file_location("house", ROOT / "docs" / "house.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["house"] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["house"]


@pytest.fixture(scope="module")
def svg() -> ET.Element:
    return ET.parse(SVG).getroot()


def titles(root: ET.Element) -> set[str]:
    """The drawn paths: each entry carries ``<title>path — label</title>``."""
    return {t.text.split(" — ")[0] for t in root.iter(f"{NS}title") if t.text and " — " in t.text}


@pytest.fixture(scope="module")
def drawn(house) -> str:
    return house.render()


def test_the_committed_picture_is_what_the_code_draws(drawn):
    assert SVG.read_text(encoding="utf-8") == drawn, (
        "docs/architecture.svg is out of date: run `python docs/house.py`"
    )


def test_the_drawing_is_deterministic(house, drawn):
    assert house.render() == drawn


def test_check_mode_passes_on_the_committed_picture_and_fails_on_a_stale_one(house, tmp_path):
    done = subprocess.run(
        [sys.executable, "docs/house.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    stale = tmp_path / "architecture.svg"
    stale.write_text(SVG.read_text(encoding="utf-8").replace("retrieval/hybrid.py", "gone.py"))
    committed = house.SVG
    house.SVG = stale
    try:
        assert house.main(["--check"]) == 1
    finally:
        house.SVG = committed


def test_the_picture_is_well_formed_and_fits_a_screen(svg):
    assert svg.tag == f"{NS}svg"
    assert float(svg.get("width")) <= 1200
    assert svg.get("viewBox") == f"0 0 {svg.get('width')} {svg.get('height')}"


def test_every_module_is_in_the_picture(svg):
    expected = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*"):
            rel = path.relative_to(ROOT).as_posix()
            if "__pycache__" in path.parts or any(p.startswith(".") for p in path.parts):
                continue
            module = path.suffix == ".py" and (path.name != "__init__.py" or package == "prompts")
            template = path.suffix == ".yaml" and path.parent.name == "prompts"
            if module or template:
                expected.add(rel)
    assert len(expected) > 100
    missing = sorted(expected - titles(svg))
    assert not missing, f"not in docs/architecture.svg (run `python docs/house.py`): {missing}"


def _defines(path: Path, name: str) -> bool:
    """``name`` (``f`` or ``Class.method``) is defined at the top of the file ``path``."""
    tree = ast.parse(path.read_text())
    head, _, attr = name.partition(".")
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == head:
            if not attr:
                return True
            return any(
                isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == attr
                for n in getattr(node, "body", [])
            )
    return False


def test_the_request_path_is_read_from_the_pipeline_and_its_modules_exist(house, svg):
    stages = house.request_path()
    pipeline = ast.parse((ROOT / "agent" / "pipeline.py").read_text())
    chain = next(line for line in ast.get_docstring(pipeline).splitlines() if "→" in line)
    assert [s.name for s in stages] == [n.strip() for n in chain.split("→")]
    assert stages[0].name == "user state" and stages[-1].name == "reasons"

    # every stage function is one recommend() calls, and is defined in agent/pipeline.py
    recommend = next(
        n for n in pipeline.body if isinstance(n, ast.FunctionDef) and n.name == "recommend"
    )
    called = {ast.unparse(n.func) for n in ast.walk(recommend) if isinstance(n, ast.Call)}
    for s in stages:
        assert s.function in called, s.function
        if not s.function.startswith("parts."):
            assert _defines(ROOT / "agent" / "pipeline.py", s.function), s.function

    # every module a stage calls exists and defines what it calls there; each one is drawn
    drawn = titles(svg)
    for s in stages:
        assert s.primary in s.modules
        for call in s.calls:
            path = ROOT / call.path
            assert path.is_file(), f"stage {s.name}: {call.path} does not exist"
            assert _defines(path, call.name), f"stage {s.name}: {call.path} has no {call.name}"
            assert call.path in drawn
    on_path = {c.path for s in stages for c in s.calls}
    assert {"agent/state.py", "retrieval/hybrid.py", "agent/stages/rerank.py"} <= on_path
