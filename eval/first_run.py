"""The first five minutes, measured: a cold set-up and ``make demo`` from a fresh clone, by phase.

Subcommands (each merges its result into ``--out``, default ``eval/results/first_run.json``):

* ``cold``: clone the repository into a temp dir, give it a new empty ``HOME`` (so
  ``~/.cache/hyrec`` — models, embeddings, the llama.cpp wheelhouse — is empty) and an empty pip
  cache (``PIP_NO_CACHE_DIR=1``), run ``make demo`` there and time every phase from its output
  (venv, torch, llama.cpp, the other wheels, the packaged model, the demo's start-up, each fit
  stage, the LLM start, the answers). ``--worktree`` lays this checkout's uncommitted changes over
  the clone (what would be committed); ``--ref`` picks a commit instead. ``--then-test`` also runs
  ``make test`` in the same clone afterwards. The 1-minute load average is sampled throughout:
  run it on an otherwise idle machine (``--wait-idle`` waits for one).
* ``llm-stages``: the demo's LLM stages (one recommendation with profile, re-rank and reasons, then
  one chat answer) on each local backend side by side — the embedded llama.cpp server and the
  in-process transformers model — from a saved model folder, with start-up times and fallbacks.
* ``profiles``: the fit profiles against every component alone, on ML-100K's *validation* split
  (the harness's leave-one-out split; test is never read): the bar the quick profile must clear.
* ``no-compiler``: ``pip install .`` into a fresh venv with no C/C++ compiler (nor CMake) on
  ``PATH``, then ``hyrec recommend`` from it, without and with the packaged SmolLM2.

This module is the command line and the merge into ``--out``; each subcommand is its own module
(:mod:`eval.first_run_cold`, :mod:`eval.first_run_llm_stages`, :mod:`eval.first_run_profiles`,
:mod:`eval.first_run_no_compiler`), and what they share to measure with is
:mod:`eval.first_run_env`.

Usage: ``python -m eval.first_run cold --label after --worktree [--wait-idle] [--then-test]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.first_run_cold import cold
from eval.first_run_env import ROOT
from eval.first_run_llm_stages import llm_stages
from eval.first_run_no_compiler import no_compiler
from eval.first_run_profiles import profiles

DEFAULT_OUT = ROOT / "eval" / "results" / "first_run.json"


def merge(out: Path, key: str, value: Any) -> None:
    body = json.loads(out.read_text()) if out.is_file() else {}
    body[key] = value
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--data-dir", default=os.environ.get("HYREC_DATA_DIR"))
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cold", help="a cold set-up and make demo from a fresh clone")
    c.add_argument("--label", required=True, help="key in the JSON, e.g. before / after")
    c.add_argument("--ref", default=None, help="commit to clone (default HEAD)")
    c.add_argument("--worktree", action="store_true", help="with this checkout's changes")
    c.add_argument("--paths", default="", help="--worktree: only changes under these (a,b,…)")
    c.add_argument("--then-test", action="store_true", help="then make test in the same clone")
    c.add_argument("--wait-idle", action="store_true", help="wait for an idle machine first")
    c.add_argument("--idle-load", type=float, default=1.5)
    c.add_argument("--max-wait", type=float, default=3600.0)
    s = sub.add_parser("llm-stages", help="the demo's LLM stages per local backend")
    s.add_argument("--model-dir", type=Path, required=True)
    s.add_argument("--users", default="196,1,2,3,4")
    s.add_argument("--message", default="something like Alien but funnier, for tonight")
    s.add_argument("--backends", default="llama.cpp,transformers")
    s.add_argument("--threads", default="1")
    s.add_argument("--label", default="llm_stages")
    p = sub.add_parser("profiles", help="fit profiles vs components on validation")
    p.add_argument("--components", default="pop,itemknn,als,lightgcn,semantic,sasrec")
    p.add_argument("--profiles", default="quick")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label", default="profiles")
    n = sub.add_parser("no-compiler", help="pip install . without a compiler, then recommend")
    n.add_argument("--model-dir", type=Path, required=True)
    n.add_argument("--label", default="no_compiler")
    args = parser.parse_args(argv)
    run = {"cold": cold, "llm-stages": llm_stages, "profiles": profiles, "no-compiler": no_compiler}
    result = run[args.command](args)
    result["command"] = "python -m eval.first_run " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    key = f"cold_{args.label}" if args.command == "cold" else args.label
    merge(args.out, key, result)
    print(f"wrote {key} to {args.out}")


if __name__ == "__main__":
    main()
