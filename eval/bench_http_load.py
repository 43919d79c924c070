"""HTTP load test: many concurrent clients against ``hyrec serve`` on loopback.

Starts the server in a subprocess (``python -m agent.cli.serve``, the ``hyrec serve`` command),
waits for ``/healthz``, then runs a bounded number of requests from N concurrent
``httpx.AsyncClient`` workers: by default 90% ``POST /v1/recommendations`` for random known users
and 10% ``POST /v1/feedback`` (a committed, fsynced SQLite write each). Reports errors, throughput
and latency percentiles per endpoint, and stops the server with SIGTERM (graceful shutdown).

The model is the default hybrid (all six components, LightGBM/MLP head) fitted on MovieLens-100K
with short component training (:func:`eval.bench_latency.fast_config`: serving cost does not depend
on how long the components trained); it is fitted once into ``--model-dir`` and reused.

Run::

    python -m eval.bench_http_load --clients 200 --requests 2000 --out eval/results/http_load.json
    python -m eval.bench_http_load --llm --clients 4 --requests 20 --out ...   # LLM stages on
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np

KEY = "bench-key"


def fit_model(model_dir: Path, dataset: str, data_dir: str | None) -> dict[str, Any]:
    """Fit the benchmark model into ``model_dir`` (once)."""
    from agent.api import Recommender, RecommenderConfig
    from eval.bench_latency import fast_config
    from hyrec.data import load_dataset

    ds = load_dataset(dataset, data_dir)
    t0 = time.perf_counter()
    model = Recommender.fit(ds, RecommenderConfig(hybrid=fast_config()))
    model.save(model_dir)
    model.close()
    return {"fit_seconds": round(time.perf_counter() - t0, 1)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    model_dir: Path, port: int, llm: bool, log: Path, threads: int
) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "agent.cli.serve", "--model-dir", str(model_dir)]
    cmd += ["--port", str(port), "--llm" if llm else "--no-llm"]
    cmd += ["--threads", str(threads)]
    env = {**os.environ, "HYREC_API_KEY": KEY}
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: see {log}")
        try:
            health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
            if health.status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"server did not answer /healthz in 300 s: see {log}")


async def load(
    base: str,
    users: list[str],
    items: list[str],
    clients: int,
    requests: int,
    feedback_share: float,
    seed: int,
) -> dict[str, Any]:
    rng = random.Random(seed)
    plan = []
    for _ in range(requests):
        if rng.random() < feedback_share:
            body = {"user_id": rng.choice(users), "item_id": rng.choice(items), "event": "view"}
            plan.append(("feedback", "/v1/feedback", body))
        else:
            body = {"user_id": rng.choice(users), "k": 10}
            plan.append(("recommendations", "/v1/recommendations", body))
    results: list[tuple[str, float, int | str]] = []
    fallbacks: Counter[str] = Counter()  # stage → responses where it fell back
    next_request = iter(range(len(plan)))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(
        base_url=base, headers=headers, timeout=600, limits=limits
    ) as client:

        async def worker() -> None:
            for i in next_request:  # shared iterator: every request is sent exactly once
                kind, path, body = plan[i]
                t = time.perf_counter()
                try:
                    r = await client.post(path, json=body)
                    status: int | str = r.status_code
                    if status == 200 and kind == "recommendations":
                        reply = r.json()
                        if not reply["items"]:
                            status = "empty list"
                        fallbacks.update({f.split(":")[0] for f in reply["fallbacks"]})
                except (httpx.HTTPError, ValueError, KeyError) as e:  # a garbled reply counts too
                    status = type(e).__name__
                results.append((kind, (time.perf_counter() - t) * 1000, status))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
    out: dict[str, Any] = {
        "requests": len(results),
        "errors": sum(1 for _, _, s in results if s != 200),
        "error_kinds": sorted({str(s) for _, _, s in results if s != 200}),
        "wall_seconds": round(wall, 2),
        "requests_per_second": round(len(results) / wall, 3),
        "latency_ms": _percentiles([ms for _, ms, _ in results]),
        "responses_with_fallback_by_stage": dict(fallbacks),
    }
    for kind in ("recommendations", "feedback"):
        ms = [m for k, m, _ in results if k == kind]
        ok = sum(1 for k, _, s in results if k == kind and s == 200)
        if ms:
            out[kind] = {"requests": len(ms), "ok": ok, "latency_ms": _percentiles(ms)}
    return out


def _percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {
        "p50": round(float(np.percentile(a, 50)), 1),
        "p90": round(float(np.percentile(a, 90)), 1),
        "p99": round(float(np.percentile(a, 99)), 1),
        "max": round(float(a.max()), 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from hyrec.data.snapshot import load_snapshot

    model_dir = Path(args.model_dir)
    fit = {}
    if not (model_dir / "hybrid.json").is_file():
        print(f"fitting the benchmark model into {model_dir} …", file=sys.stderr)
        fit = fit_model(model_dir, args.dataset, args.data_dir)
    feedback_db = model_dir / "feedback.sqlite3"
    snapshot = load_snapshot(model_dir / "data")
    users = [str(u) for u in snapshot.user_ids if u]
    items = [it.item_id for it in snapshot.items]
    port = free_port()
    log = Path(args.server_log)
    log.parent.mkdir(parents=True, exist_ok=True)
    events_before = _events(feedback_db)
    load_before = round(os.getloadavg()[0], 2)
    proc = start_server(model_dir, port, args.llm, log, args.threads)
    base = f"http://127.0.0.1:{port}"
    try:
        health = httpx.get(f"{base}/healthz").json()
        if args.llm and not health["llm"]:
            raise RuntimeError(f"--llm asked for, but the server runs without an LLM: see {log}")
        warm = asyncio.run(load(base, users, items, 4, args.warmup, 0.0, args.seed + 1))
        result = asyncio.run(
            load(base, users, items, args.clients, args.requests, args.feedback_share, args.seed)
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    stored = _events(feedback_db) - events_before  # the warm-up sends no feedback
    return {
        "what": "hyrec serve on loopback, one uvicorn worker; concurrent httpx.AsyncClient workers",
        "llm": args.llm,
        "model": {
            "dataset": snapshot.name,
            "items": snapshot.n_items,
            "users": snapshot.n_users,
            "components": json.loads((model_dir / "hybrid.json").read_text())["config"][
                "components"
            ],
            **fit,
        },
        "clients": args.clients,
        "server_threads": args.threads,
        "feedback_share": args.feedback_share,
        "warmup_requests": warm["requests"],
        "warmup_errors": warm["errors"],
        **result,
        "feedback_events_acknowledged": result.get("feedback", {}).get("ok", 0),
        "feedback_events_stored": stored,
        "server_exit_code": code,
        "command": " ".join(["python -m eval.bench_http_load", *sys.argv[1:]]),
        "code": _git(),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "note": "client and server share the machine's cores",
            "load_average_1min": {"before": load_before, "after": round(os.getloadavg()[0], 2)},
        },
    }


def _git() -> dict[str, Any]:
    """The commit measured, and which tracked files differed from it (work in progress)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "diff", "--name-only"], capture_output=True, text=True)
    except OSError:
        return {}
    return {"commit": head.stdout.strip(), "uncommitted_changes": dirty.stdout.split()}


def _events(path: Path) -> int:
    if not path.exists():
        return 0
    from agent.feedback import count_events

    return count_events(path)


def markdown(r: dict[str, Any]) -> str:
    lines = [
        f"# HTTP load test ({'LLM stages on' if r['llm'] else 'no LLM'})",
        "",
        f"`{r['command']}`",
        "",
        f"{r['what']}. Model: the default hybrid ({', '.join(r['model']['components'])}) on "
        f"{r['model']['dataset']} ({r['model']['items']} items, {r['model']['users']} users). "
        f"Machine: {r['machine']['cpus']} CPUs, shared by the clients and the server; 1-minute "
        f"load average {_load(r)} (other jobs on the machine count too).",
        "",
        *([f"Conditions: {r['note']}", ""] if r.get("note") else []),
        "| endpoint | requests | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind in ("recommendations", "feedback"):
        if kind in r:
            p = r[kind]["latency_ms"]
            lines.append(
                f"| {kind} | {r[kind]['requests']} | {p['p50']} | {p['p90']} | {p['p99']} | "
                f"{p['max']} |"
            )
    p = r["latency_ms"]
    lines.append(
        f"| **all** | {r['requests']} | {p['p50']} | {p['p90']} | {p['p99']} | {p['max']} |"
    )
    lines += [
        "",
        f"- {r['clients']} concurrent clients, {r['requests']} requests, "
        f"server threads {r['server_threads']}, **{r['errors']} errors**"
        + (f" ({', '.join(r['error_kinds'])})" if r["errors"] else ""),
        f"- {r['requests_per_second']} requests/s over {r['wall_seconds']} s",
        "- recommendation responses with an LLM fallback, by stage: "
        + (json.dumps(r["responses_with_fallback_by_stage"]) if r["llm"] else "n/a (no LLM)"),
        f"- feedback events acknowledged: {r['feedback_events_acknowledged']}, found in the "
        f"SQLite file after shutdown: {r['feedback_events_stored']}",
        "- latency is client-side wall time per request, queueing included: with "
        f"{r['clients']} clients in flight, most of it is waiting for the worker.",
        "",
    ]
    return "\n".join(lines)


def _load(r: dict[str, Any]) -> str:
    load = r["machine"].get("load_average_1min")
    return f"{load['before']} before, {load['after']} after" if load else "not recorded"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", default="runs/http-load/ml-100k")
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--feedback-share", type=float, default=0.1)
    p.add_argument("--llm", action="store_true", help="serve with the LLM stages on")
    p.add_argument("--threads", type=int, default=8, help="the server's --threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--server-log", default="runs/http-load/server.log")
    p.add_argument("--out", default=None, help="JSON file to write (a .md beside it too)")
    p.add_argument("--fresh", action="store_true", help="refit the model first")
    p.add_argument("--note", default="", help="measurement conditions, kept in the results")
    args = p.parse_args()
    if args.fresh and Path(args.model_dir).exists():
        shutil.rmtree(args.model_dir)
    result = {**run(args), "note": args.note}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        out.with_suffix(".md").write_text(markdown(result))


if __name__ == "__main__":
    main()
