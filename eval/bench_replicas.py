"""Two replicas as one service under load: 200 concurrent clients over two ``hyrec serve``
processes on loopback, sharing one PostgreSQL feedback store and one chromadb server.

Starts a throwaway PostgreSQL (Debian's ``initdb`` + ``pg_ctl``, as the ``postgres`` user when run
as root) unless ``--feedback-url`` names one, a ``chroma run`` server, and two replicas of the same
model folder (a copy of ``--model-dir``; ML-100K). The clients send a fixed plan, alternating
between the replicas: ``POST /v1/recommendations`` for random known users and, with
``--feedback-share``, ``POST /v1/feedback`` with a unique ``event_id`` each. Reports p50/p99 per
route and replica, errors, and lost acknowledged events: every ``event_id`` answered 200 must be
in PostgreSQL afterwards. Then the freshness bound: an item upserted on A, polled on B's
``/healthz`` until it is served there.

Run (about 3 minutes on 2 busy cores)::

    nice -n 10 python -m eval.bench_replicas --out eval/results/replicas.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from eval.bench_http_load import _percentiles, fit_model, free_port

KEY = "bench-key"
DEMO = Path.home() / ".cache" / "hyrec" / "models" / "demo-ml-100k-quick"


@contextmanager
def throwaway_postgres(root: Path) -> Iterator[str]:
    """A PostgreSQL server in ``root`` on a free loopback port; yields its URL."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found:
        raise SystemExit("no PostgreSQL binaries: apt-get install postgresql (or make postgres)")
    bin_dir, data, port = found[-1].parent, root / "pg", free_port()
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(root, "postgres", "postgres")
    run = {"check": True, "capture_output": True, "timeout": 120}
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust",
                    "-U", "postgres", "-E", "UTF8"], **run)  # fmt: skip
    opts = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c max_connections=100"
    ctl = [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data)]
    subprocess.run([*ctl, "-o", opts, "-l", str(data / "log"), "-w", "start"], **run)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*ctl, "stop", "-m", "fast", "-w"], capture_output=True, timeout=120)


@contextmanager
def chroma_server(root: Path) -> Iterator[str]:
    cli = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    port = free_port()
    cmd = [cli, "run", "--path", str(root / "chroma"), "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=2), proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _wait(probe, proc: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            if probe().status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{proc.args} did not answer within {seconds} s")


def start_replica(model_dir: Path, port: int, feedback: str, chroma: str, log: Path,
                  threads: int) -> subprocess.Popen:  # fmt: skip
    cmd = [sys.executable, "-m", "agent.cli.serve", "--model-dir", str(model_dir), "--no-llm"]
    cmd += ["--port", str(port), "--threads", str(threads)]
    cmd += ["--feedback-url", feedback, "--chroma-url", chroma]
    env = {**os.environ, "HYREC_API_KEY": KEY}
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


async def load(bases: list[str], users: list[str], items: list[str], args) -> dict[str, Any]:
    """The plan, sent by ``args.clients`` workers; request i goes to replica i % 2."""
    rng = random.Random(args.seed)
    plan = []
    for i in range(args.requests):
        if rng.random() < args.feedback_share:
            body = {"user_id": rng.choice(users), "item_id": rng.choice(items), "event": "view",
                    "event_id": f"bench-{args.seed}-{i}"}  # fmt: skip
            plan.append(("feedback", "/v1/feedback", body))
        else:
            plan.append(("recommendations", "/v1/recommendations",
                         {"user_id": rng.choice(users), "k": 10, "explain": False}))  # fmt: skip
    results: list[tuple[str, int, float, int | str]] = []
    acked: list[str] = []
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    headers = {"Authorization": f"Bearer {KEY}"}
    clients = [httpx.AsyncClient(base_url=b, headers=headers, timeout=600, limits=limits)
               for b in bases]  # fmt: skip
    next_request = iter(range(len(plan)))

    async def worker() -> None:
        for i in next_request:  # shared iterator: every request is sent exactly once
            kind, path, body = plan[i]
            replica = i % len(clients)
            t = time.perf_counter()
            try:
                r = await clients[replica].post(path, json=body)
                status: int | str = r.status_code
                if status == 200 and kind == "feedback":
                    acked.append(r.json()["client_event_id"])  # committed: must be stored
                elif status == 200 and not r.json()["items"]:
                    status = "empty list"
            except (httpx.HTTPError, ValueError, KeyError) as e:
                status = type(e).__name__
            results.append((kind, replica, (time.perf_counter() - t) * 1000, status))

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.clients)))
    wall = time.perf_counter() - t0
    for c in clients:
        await c.aclose()
    out: dict[str, Any] = {
        "requests": len(results),
        "errors": sum(1 for *_, s in results if s != 200),
        "error_kinds": sorted({str(s) for *_, s in results if s != 200}),
        "wall_seconds": round(wall, 2),
        "requests_per_second": round(len(results) / wall, 2),
        "routes": {},
    }
    for kind in ("recommendations", "feedback"):
        ms = [m for k, _, m, _ in results if k == kind]
        if not ms:
            continue
        ok = sum(1 for k, *_, s in results if k == kind and s == 200)
        route = {"requests": len(ms), "ok": ok, "latency_ms": _percentiles(ms)}
        for replica, name in enumerate("AB"):
            mine = [m for k, r, m, _ in results if k == kind and r == replica]
            route[f"replica_{name}_latency_ms"] = _percentiles(mine) if mine else None
        out["routes"][kind] = route
    return {**out, "_acked": acked}


def lost_events(url: str, acked: list[str]) -> dict[str, int]:
    import psycopg

    with psycopg.connect(url) as conn:
        found = conn.execute(
            "SELECT COUNT(*) FROM events WHERE client_id = ANY(%s)", (acked,)
        ).fetchone()[0]
        total = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    return {"acknowledged": len(acked), "found_in_postgres": int(found),
            "lost": len(acked) - int(found), "events_in_postgres": int(total)}  # fmt: skip


def freshness(a: str, b: str) -> dict[str, float]:
    """Seconds from the upsert's acknowledgement on A until B serves the item."""
    headers = {"Authorization": f"Bearer {KEY}"}
    n = httpx.get(f"{b}/healthz", headers=headers).json()["n_items"]
    item = {"item_id": "bench-new-1", "title": "A brand new film about replicas",
            "description": "", "attributes": {"genres": ["Drama"], "year": 2026}}  # fmt: skip
    t0 = time.perf_counter()
    r = httpx.put(f"{a}/v1/items", json={"items": [item]}, headers=headers, timeout=60)
    r.raise_for_status()
    acked = time.perf_counter()
    while httpx.get(f"{b}/healthz", headers=headers).json()["n_items"] != n + 1:
        if time.perf_counter() - acked > 60:
            raise RuntimeError("the upserted item did not reach replica B in 60 s")
        time.sleep(0.01)
    return {"upsert_seconds_on_A": round(acked - t0, 3),
            "visible_on_B_after_seconds": round(time.perf_counter() - acked, 3)}  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    from hyrec.data.snapshot import load_snapshot

    load_before = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="hyrec-replicas-"))
    os.chmod(root, 0o755)
    model_dir = root / "model"
    if Path(args.model_dir).joinpath("hybrid.json").is_file():
        shutil.copytree(args.model_dir, model_dir, ignore=shutil.ignore_patterns("feedback.*"))
    else:
        print(f"fitting a model into {model_dir} …", file=sys.stderr)
        fit_model(model_dir, "ml-100k", args.data_dir)
    snapshot = load_snapshot(model_dir / "data")
    users, items = list(snapshot.user_ids), list(snapshot.item_ids)
    procs: list[subprocess.Popen] = []
    try:
        with throwaway_postgres(root) as pg, chroma_server(root) as chroma:
            feedback = args.feedback_url or pg
            ports = [free_port(), free_port()]
            bases = [f"http://127.0.0.1:{p}" for p in ports]
            t0 = time.perf_counter()
            for n, (port, base) in enumerate(zip(ports, bases, strict=True)):
                log = Path(args.server_log).with_suffix(f".{'ab'[n]}.log")
                log.parent.mkdir(parents=True, exist_ok=True)
                procs.append(start_replica(model_dir, port, feedback, chroma, log, args.threads))
                # one after the other: the first seeds the chromadb collection
                _wait(lambda b=base: httpx.get(f"{b}/healthz", timeout=2), procs[-1])
            started = time.perf_counter() - t0
            result = asyncio.run(load(bases, users, items, args))
            acked = result.pop("_acked")
            result["acknowledged_events"] = lost_events(feedback, acked)
            result["freshness"] = freshness(bases[0], bases[1])
            _stop(procs)  # before the database and chroma go away
    finally:
        _stop(procs)
        shutil.rmtree(root, ignore_errors=True)
    return {
        "what": "two hyrec serve replicas (no LLM) on loopback sharing one PostgreSQL 15 feedback "
        "store and one chroma run server; httpx.AsyncClient workers, request i to replica i % 2",
        "model": {
            "dataset": "ml-100k",
            "users": len(users),
            "items": len(items),
            "from": str(args.model_dir),
        },  # fmt: skip
        "clients": args.clients,
        "server_threads": args.threads,
        "feedback_share": args.feedback_share,
        "sync_interval_seconds": 1.0,
        "replicas_ready_seconds": round(started, 1),
        **result,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def table(r: dict[str, Any]) -> str:
    lines = ["| route | requests | ok | p50 ms | p99 ms | A p50/p99 | B p50/p99 |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, route in r["routes"].items():
        a, b = route["replica_A_latency_ms"], route["replica_B_latency_ms"]
        lines.append(
            f"| {name} | {route['requests']} | {route['ok']} | {route['latency_ms']['p50']} | "
            f"{route['latency_ms']['p99']} | {a['p50']}/{a['p99']} | {b['p50']}/{b['p99']} |"
        )
    ev, fresh = r["acknowledged_events"], r["freshness"]
    lines += [
        "",
        f"errors: {r['errors']} of {r['requests']} ({r['requests_per_second']} req/s, "
        f"{r['clients']} clients); acknowledged events {ev['acknowledged']}, in PostgreSQL "
        f"{ev['found_in_postgres']}, lost {ev['lost']}",
        f"upsert on A served by B after {fresh['visible_on_B_after_seconds']} s "
        f"(bound: sync_interval {r['sync_interval_seconds']} s + apply time)",
        f"load average before {r['load_average_before']}, after {r['load_average_after']}",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", default=str(DEMO), help="a fitted ML-100K model (copied)")
    p.add_argument("--data-dir", default=None, help="ML-100K, when the model must be fitted")
    p.add_argument("--feedback-url", default=None, help="an existing PostgreSQL to use instead")
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--feedback-share", type=float, default=0.3)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--server-log", default="/tmp/hyrec-bench-replicas/server.log")
    p.add_argument("--out", default="eval/results/replicas.json")
    args = p.parse_args()
    result = run(args)
    print(table(result))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
