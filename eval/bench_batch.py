"""Benchmark of ``hyrec batch`` on MovieLens-100K: local vs Ray Data, LLM calls that overlap, the
served lists, kill and restart.

(a) ``profiles`` with ``--engine ray`` and ``--engine local`` give identical rows: the
    deterministic profiles of every user, and the embedded LLM (llama.cpp, SmolLM2, temperature 0)
    on a 50-user subset; users/s for each.
(b) With ``eval/scripted_llm.py`` (an OpenAI-compatible server answering after a fixed delay),
    ``--concurrency 8`` vs ``--concurrency 1``: the speedup shows the calls overlap.
(c) ``recommend`` for every user, local and Ray on 2 CPUs: users/s, and every list identical to
    ``Recommender.recommend`` without LLM.
(d) ``hyrec batch profiles`` SIGKILLed mid-run and restarted writes each user exactly once.

Each run gets a fresh copy of the model folder (an empty profile cache). Ray runs on one
in-process cluster (``ray.init(num_cpus=2)``); its start-up is timed separately, and each Ray
run's users/s includes starting its actors ("steady" users/s counts from the first written batch).

Usage::

    HYREC_DATA_DIR=/work/shared/data nice -n 10 python -m eval.bench_batch [--model-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from agent.batch import BatchConfig, read_rows, run_batch
from agent.batch.jobs import recommend_row
from agent.llm.settings import LLMSettings
from eval.scripted_llm import serve as scripted_serve

RESULTS = Path(__file__).parent / "results" / "batch.json"


def fit_model(folder: Path) -> Path:
    """``hyrec fit --profile quick`` once (about two minutes on 2 idle cores)."""
    if (folder / "hybrid.json").is_file():
        return folder
    cmd = [
        sys.executable,
        "-m",
        "agent.cli.main",
        "fit",
        "--profile",
        "quick",
        "--out",
        str(folder),
    ]
    subprocess.run(cmd, check=True)
    return folder


class Runs:
    """Fresh model copies and outputs under one temp dir; each run's report and rows."""

    def __init__(self, model: Path, root: Path) -> None:
        self.model = model
        self.root = root
        self.n = 0

    def run(self, job: str, engine: str, **kw: Any) -> tuple[dict, list[dict], float | None]:
        self.n += 1
        where = self.root / f"run{self.n:02d}-{job}-{engine}"
        folder = Path(shutil.copytree(self.model, where / "model", ignore=_no_profiles))
        config = BatchConfig(job, folder, where / "rows.jsonl", engine=engine, **kw)
        stamps: list[tuple[float, int]] = []
        report = run_batch(
            config, progress=lambda rows: stamps.append((time.perf_counter(), len(rows)))
        )
        rows = read_rows(config.out, config.key_field)
        return report.to_dict(), rows, steady(stamps)


def _no_profiles(folder: str, names: list[str]) -> list[str]:
    return ["profiles"] if "profiles" in names else []


def steady(stamps: list[tuple[float, int]]) -> float | None:
    """Rows/s from the first written batch to the last (start-up left out)."""
    if len(stamps) < 2:
        return None
    rows = sum(n for _, n in stamps[1:])
    return round(rows / (stamps[-1][0] - stamps[0][0]), 2)


def bench_profiles(runs: Runs, llm_settings: LLMSettings | None, llm_users: int) -> dict:
    out: dict[str, Any] = {}
    local, rows_l, _ = runs.run("profiles", "local", concurrency=1, batch_size=64)
    ray, rows_r, steady_r = runs.run("profiles", "ray", concurrency=2, batch_size=64)
    out["deterministic"] = {
        "users": local["total"],
        "identical_rows": rows_l == rows_r,
        "local": local,
        "ray": {**ray, "steady_rows_per_s": steady_r},
    }
    if llm_settings is None:
        out["embedded_llm"] = {"skipped": "no embedded LLM could be started"}
        return out
    users = tuple(str(r["user_id"]) for r in rows_l[:llm_users])
    kw = {"concurrency": 1, "batch_size": 5, "users": users, "llm": llm_settings}
    local, rows_l, _ = runs.run("profiles", "local", **kw)
    ray, rows_r, steady_r = runs.run("profiles", "ray", **kw)
    out["embedded_llm"] = {
        "users": len(users),
        "temperature": 0.0,
        "identical_rows": rows_l == rows_r,
        "sources": {s: sum(r.get("source") == s for r in rows_l) for s in ("llm", "fallback")},
        "local": local,
        "ray": {**ray, "steady_rows_per_s": steady_r},
    }
    return out


def bench_concurrency(runs: Runs, n_users: int, delay: float) -> dict:
    server = scripted_serve(0, delay)
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        users = tuple(str(u) for u in _users(runs.model)[:n_users])
        settings = LLMSettings(base_url=url, model="scripted", timeout=60)
        out: dict[str, Any] = {"users": n_users, "delay_s": delay}
        for engine in ("local", "ray"):
            got = {}
            for c in (1, 8):
                report, rows, steady_rps = runs.run(
                    "profiles", engine, concurrency=c, batch_size=16, users=users, llm=settings
                )
                got[f"c{c}"] = {**report, "steady_rows_per_s": steady_rps}
                got[f"c{c}"]["all_ok"] = all(r["status"] == "ok" for r in rows)
            got["speedup_wall"] = round(got["c8"]["rows_per_s"] / got["c1"]["rows_per_s"], 2)
            if got["c1"]["steady_rows_per_s"] and got["c8"]["steady_rows_per_s"]:
                got["speedup_steady"] = round(
                    got["c8"]["steady_rows_per_s"] / got["c1"]["steady_rows_per_s"], 2
                )
            out[engine] = got
        return out
    finally:
        server.shutdown()
        server.server_close()


def bench_recommend(runs: Runs, k: int) -> dict:
    from agent.api import Recommender

    local, rows_l, _ = runs.run("recommend", "local", concurrency=1, batch_size=64, k=k)
    ray, rows_r, steady_r = runs.run("recommend", "ray", concurrency=2, batch_size=64, k=k)
    t0 = time.perf_counter()
    with Recommender.load(runs.model) as model:
        users = [str(u) for u in model.catalogue.user_ids]
        served = sorted(
            (recommend_row(u, model.recommend(u, k=k, explain=False)) for u in users),
            key=lambda r: r["user_id"],
        )
    direct = time.perf_counter() - t0
    return {
        "users": len(users),
        "k": k,
        "local_identical_to_recommender": rows_l == served,
        "ray_identical_to_recommender": rows_r == served,
        "local": local,
        "ray": {**ray, "steady_rows_per_s": steady_r},
        "recommender_loop_users_per_s": round(len(users) / direct, 2),
    }


def bench_kill_restart(runs: Runs, n_users: int, delay: float) -> dict:
    server = scripted_serve(0, delay)
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    where = runs.root / "kill"
    folder = Path(shutil.copytree(runs.model, where / "model", ignore=_no_profiles))
    users = [str(u) for u in _users(runs.model)[:n_users]]
    (where / "users.txt").write_text("\n".join(users) + "\n")
    (where / "none.toml").write_text("")
    out = where / "rows.jsonl"
    env = {
        **os.environ,
        "HYREC_LLM_BASE_URL": url,
        "HYREC_LLM_MODEL": "scripted",
        "HYREC_CONFIG": str(where / "none.toml"),
    }
    cmd = [sys.executable, "-m", "agent.cli.main", "batch", "profiles", "--model-dir", str(folder)]
    cmd += ["--out", str(out), "--users", str(where / "users.txt"), "--batch-size", "8"]
    cmd += ["--concurrency", "2"]
    try:
        job = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while job.poll() is None and (
            not out.exists() or out.read_text().count("\n") < n_users // 3
        ):
            time.sleep(0.05)
        killed = job.poll() is None
        job.send_signal(signal.SIGKILL)
        job.wait()
        before = len(read_rows(out))
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        report = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        server.shutdown()
        server.server_close()
    ids = [r["user_id"] for r in read_rows(out)]
    return {
        "users": n_users,
        "killed_mid_run": killed,
        "rows_before_kill": before,
        "restart_skipped": report["skipped"],
        "restart_written": report["written"],
        "rows_after": len(ids),
        "each_user_exactly_once": sorted(ids) == sorted(users) and len(ids) == len(set(ids)),
    }


def _users(model: Path) -> list[str]:
    from hyrec.data.snapshot import load_snapshot

    return [str(u) for u in load_snapshot(model / "data").user_ids]


def embedded_llm() -> tuple[Any, LLMSettings | None]:
    from agent.llm import LLMUnavailable
    from agent.llm.connect import connect

    try:
        handle = connect(LLMSettings(timeout=120.0), start_embedded=True)
    except LLMUnavailable as e:
        print(f"no embedded LLM: {e}", file=sys.stderr)
        return None, None
    settings = getattr(handle.llm, "settings", None)
    if settings is None:  # the in-process transformers model: no server to share
        handle.close()
        return None, None
    return handle, replace(settings, timeout=120.0)


def uptime() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", type=Path, default=None, help="a quick ML-100K fit (made once)")
    p.add_argument("--llm-users", type=int, default=50)
    p.add_argument("--scripted-users", type=int, default=64)
    p.add_argument("--delay", type=float, default=0.5, help="scripted LLM delay (s)")
    p.add_argument("--no-llm", action="store_true", help="skip the embedded-LLM part of (a)")
    a = p.parse_args()
    import ray
    from platformdirs import user_cache_dir

    model = fit_model(a.model_dir or Path(user_cache_dir("hyrec")) / "models" / "bench-batch-quick")
    results: dict[str, Any] = {"load_before": uptime(), "cpus": os.cpu_count()}
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    results["ray_init_s"] = round(time.perf_counter() - t0, 2)
    handle, llm_settings = (None, None) if a.no_llm else embedded_llm()
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        runs = Runs(model, Path(tmp))
        try:
            results["a_profiles"] = bench_profiles(runs, llm_settings, a.llm_users)
        finally:
            if handle is not None:
                handle.close()
        results["b_concurrency"] = bench_concurrency(runs, a.scripted_users, a.delay)
        results["c_recommend"] = bench_recommend(runs, k=10)
        results["d_kill_restart"] = bench_kill_restart(runs, 300, 0.1)
    ray.shutdown()
    results["load_after"] = uptime()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"wrote {RESULTS}")


def print_table(r: dict) -> None:
    def rps(x: dict) -> str:
        return f"{x.get('rows_per_s')} (steady {x.get('steady_rows_per_s', '-')})"

    a, b, c, d = r["a_profiles"], r["b_concurrency"], r["c_recommend"], r["d_kill_restart"]
    lines = [
        ("check", "local users/s", "ray users/s (steady)", "result"),
        (
            f"(a) profiles, deterministic, {a['deterministic']['users']} users",
            str(a["deterministic"]["local"]["rows_per_s"]),
            rps(a["deterministic"]["ray"]),
            f"identical={a['deterministic']['identical_rows']}",
        ),
    ]
    e = a["embedded_llm"]
    if "local" in e:
        lines.append(
            (
                f"(a) profiles, embedded LLM, {e['users']} users",
                str(e["local"]["rows_per_s"]),
                rps(e["ray"]),
                f"identical={e['identical_rows']} sources={e['sources']}",
            )
        )
    for engine in ("local", "ray"):
        g = b[engine]
        lines.append(
            (
                f"(b) scripted {b['delay_s']} s LLM, {engine}: c8 vs c1",
                f"c1 {g['c1']['rows_per_s']}",
                f"c8 {g['c8']['rows_per_s']}",
                f"x{g['speedup_wall']} wall, x{g.get('speedup_steady')} steady",
            )
        )
    lines.append(
        (
            f"(c) recommend, {c['users']} users, k={c['k']}",
            str(c["local"]["rows_per_s"]),
            rps(c["ray"]),
            f"= Recommender.recommend: local {c['local_identical_to_recommender']}, "
            f"ray {c['ray_identical_to_recommender']}",
        )
    )
    lines.append(
        (
            f"(d) SIGKILL + restart, {d['users']} users",
            f"{d['rows_before_kill']} before kill",
            f"{d['restart_written']} on restart",
            f"exactly once={d['each_user_exactly_once']}",
        )
    )
    widths = [max(len(row[i]) for row in lines) for i in range(4)]
    for row in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    print(f"load before {r['load_before']}, after {r['load_after']}; ray.init {r['ray_init_s']} s")


if __name__ == "__main__":
    main()
