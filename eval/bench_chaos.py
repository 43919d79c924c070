"""Chaos benchmark: 200 concurrent clients against a real ``hyrec serve`` on loopback, while the
feedback database is locked, the server is SIGKILLed and restarted, and the LLM server is killed
mid-request.

The mix: recommendations (every one goes through the LLM stages, answered by the scripted LLM of
:mod:`eval.scripted_llm` after ``--llm-delay`` seconds), feedback (each with an idempotency key;
a share is sent twice), catalogue upserts and user erasure. The timeline, over ``--seconds``:

* at 20 %: another process takes the feedback database's write lock for 5 s;
* at 45 %: the server is SIGKILLed and started again on the same folder;
* at 70 %: the LLM server is shut down mid-request and started again 5 s later.

It reports, per endpoint, p50/p99 latency and status counts, and checks: no 5xx but the
documented 503s (store or LLM unavailable), no acknowledged event lost (every acknowledged id is in
the database afterwards), no idempotent event stored twice, and feedback p99 while LLM requests
were in flight (< 500 ms). Connection errors while the server is down are counted, not hidden.

The load generator measures the server, not itself: the clients are spread over ``--procs``
processes (each with its own event loop and connection pool; ``--clients`` in all), which share
nothing but the clock (``time.monotonic`` is one clock for every process of the machine). Whether
a recommendation was in flight when a feedback was sent is decided after the run, over every
process's recommendations. Each process's event-loop lag and CPU time are reported, since on a
small machine the generator shares the cores with the server. Before the common start each
process opens one connection per client (a ``/healthz`` each, not counted), and each client sends
its first request at a random point of the 0-0.2 s pause it takes after every request, so the
run does not open with 200 TCP handshakes and 200 requests in the same millisecond.

The server runs as ``hyrec serve`` does by default: the embedded item store (chromadb) in a
process of its own (:mod:`retrieval.store`); ``--store-inline`` runs it in the server's process
instead (``HYREC_CHROMA_PROCESS=0``), to compare.

Usage::

    python -m eval.bench_chaos --seconds 60 --clients 200 --out eval/results/chaos.json
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from eval.scripted_llm import serve as scripted_llm

ROOT = Path(__file__).resolve().parents[1]
KEY = "chaos-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
Window = tuple[str, float, float]  # a phase of the timeline: (name, from s, to s)


def fit_model(folder: Path, dataset: str) -> int:
    """A cheap hybrid on the real dataset (ALS, item-kNN, text, popularity; about a minute):
    the benchmark measures serving, not fitting. Returns the catalogue size."""
    from agent.api import Recommender, RecommenderConfig
    from hyrec.data import load_dataset
    from retrieval.hybrid import HybridConfig

    hybrid = HybridConfig(
        components=("als", "itemknn", "semantic", "pop"),
        sources=("als", "itemknn", "pop"),
        ranker="lightgbm",
    )
    ds = load_dataset(dataset)
    model = Recommender.fit(ds, RecommenderConfig(hybrid=hybrid))
    model.save(folder)
    model.close()
    return ds.n_items


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """The server process, restartable on the same folder and port."""

    def __init__(self, model_dir: Path, llm_port: int, log: Path, store_inline: bool) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-m", "agent.cli.serve", "--model-dir", str(model_dir)]
        self.cmd += ["--port", str(self.port), "--llm", "--threads", "8"]
        self.env = {
            **os.environ,
            "HYREC_API_KEY": KEY,
            "HYREC_LLM_BASE_URL": f"http://127.0.0.1:{llm_port}/v1",
            "HYREC_LLM_MODEL": "scripted",
            "HYREC_CHROMA_PROCESS": "0" if store_inline else "1",
        }
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        t0 = time.perf_counter()
        out = self.log.open("a")
        self.proc = subprocess.Popen(
            self.cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=self.env
        )
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited; see {self.log}")
            try:
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.HTTPError:
                time.sleep(0.2)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Record:
    """One load process's outcomes (merged across processes by :func:`merge`)."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0  # the start of the load, on the machine-wide monotonic clock
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.status: dict[str, Counter] = defaultdict(Counter)
        self.acked: dict[str, int] = {}  # idempotency key -> event id
        self.duplicates_acked = 0
        self.unexpected: list[str] = []
        # (start s, end s) of every recommendation sent, answered or not: "LLM requests in flight"
        self.recommendations: list[tuple[float, float]] = []
        # (start s, client s, server s or None) of each feedback answered 200
        self.feedback: list[tuple[float, float, float | None]] = []
        self.connection_errors: list[tuple[str, float, str]] = []  # (endpoint, end s, kind)
        self.loop_lag: list[float] = []  # how late this process's own event loop woke up (s)
        self.cpu_s = 0.0  # this process's CPU time during the load

    def state(self) -> dict[str, Any]:
        return {k: dict(v) if isinstance(v, defaultdict) else v for k, v in vars(self).items()}


def merge(states: list[dict[str, Any]]) -> dict[str, Any]:
    """The load processes' records as one."""
    out: dict[str, Any] = {
        "latency": defaultdict(list),
        "status": defaultdict(Counter),
        "acked": {},
        "duplicates_acked": 0,
        "cpu_s": [],
    }
    for key in ("unexpected", "recommendations", "feedback", "connection_errors", "loop_lag"):
        out[key] = []
    for st in states:
        for name, values in st["latency"].items():
            out["latency"][name] += values
        for name, counts in st["status"].items():
            out["status"][name].update(counts)
        out["acked"].update(st["acked"])  # keys carry their client's number: no clashes
        out["duplicates_acked"] += st["duplicates_acked"]
        out["cpu_s"].append(round(st["cpu_s"], 1))
        for key in ("unexpected", "recommendations", "feedback", "connection_errors", "loop_lag"):
            out[key] += st[key]
    return out


def while_in_flight(
    feedback: list[tuple[float, float, float | None]], recommendations: list[tuple[float, float]]
) -> list[tuple[float, float, float | None]]:
    """The feedback sent while at least one recommendation (from any process) was in flight."""
    spans: list[list[float]] = []  # the union of the recommendations' intervals, sorted
    for a, b in sorted(recommendations):
        if spans and a <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], b)
        else:
            spans.append([a, b])
    starts = [a for a, _ in spans]
    out = []
    for sample in feedback:
        i = bisect.bisect_right(starts, sample[0]) - 1
        if i >= 0 and sample[0] < spans[i][1]:
            out.append(sample)
    return out


async def client(
    n: int, http: httpx.AsyncClient, base: str, rec: Record, stop: float, n_items: int
) -> None:
    rng = random.Random(n)
    # the first request at a random point of the pause that follows every request, so that 200
    # clients do not all send theirs in the same millisecond (a burst no steady state has)
    await asyncio.sleep(random.Random(-1 - n).random() * 0.2)
    while time.monotonic() < stop:
        user = f"c{rng.randrange(400)}"
        roll = rng.random()
        if roll < 0.25:
            name, method, path = "recommendations", "POST", "/v1/recommendations"
            body: dict[str, Any] = {"user_id": user, "k": 5}
        elif roll < 0.85:
            name, method, path = "feedback", "POST", "/v1/feedback"
            key = f"{n}-{rng.randrange(10**9)}"
            body = {
                "user_id": user,
                "item_id": str(1 + rng.randrange(n_items)),  # ML-100K ids are 1..n
                "event": rng.choice(["like", "click", "dislike"]),
                "event_id": key,
            }
        elif roll < 0.95:
            name, method, path = "upsert", "PUT", "/v1/items"
            iid = f"chaos-{n}-{rng.randrange(10**6)}"
            body = {"items": [{"item_id": iid, "title": f"Chaos item {iid}"}]}
        else:
            name, method, path = "forget", "POST", "/v1/users/forget"
            body = {"user_id": f"gone-{rng.randrange(10**6)}"}
        sends = 2 if name == "feedback" and rng.random() < 0.2 else 1  # a retry of the same key
        for _ in range(sends):
            ok = await one(http, base, rec, name, method, path, body)
            if not ok:  # the server is down: back off instead of spinning on refused connections
                await asyncio.sleep(0.5)
                break
        await asyncio.sleep(rng.random() * 0.2)


async def one(http, base, rec: Record, name, method, path, body) -> bool:
    """Send one request and record it; False when the server could not be reached."""
    started = time.monotonic() - rec.t0
    t0 = time.perf_counter()
    try:
        r = await http.request(method, base + path, json=body, headers=AUTH)
        status = str(r.status_code)
    except httpx.HTTPError as e:
        status = f"connection: {type(e).__name__}"
        r = None
    seconds = time.perf_counter() - t0
    if name == "recommendations":
        rec.recommendations.append((started, started + seconds))
    rec.status[name][status] += 1
    if r is None:
        rec.connection_errors.append((name, started + seconds, status))
        return False
    rec.latency[name].append(seconds)
    if name == "feedback" and r.status_code == 200:
        rec.feedback.append((started, seconds, server_seconds(r)))
    if r.status_code >= 500:
        kind = r.json().get("error", {}).get("type", "?") if r.content else "?"
        if not (r.status_code == 503 and kind in ("store_unavailable", "llm_unavailable")):
            rec.unexpected.append(f"{name} {r.status_code} {kind}: {r.text[:200]}")
    if name == "feedback" and r.status_code == 200:
        got = r.json()
        if got["duplicate"]:
            rec.duplicates_acked += 1
        elif body["event_id"] in rec.acked and rec.acked[body["event_id"]] != got["event_id"]:
            rec.unexpected.append(f"idempotency key {body['event_id']} stored twice")
        rec.acked[body["event_id"]] = got["event_id"]
    return True


def server_seconds(r: httpx.Response) -> float | None:
    """The server's own time for the request, from its ``Server-Timing: app;dur=<ms>`` header."""
    for part in r.headers.get("server-timing", "").split(","):
        name, _, dur = part.strip().partition(";dur=")
        if name == "app" and dur:
            return float(dur) / 1000
    return None


async def watch_loop(rec: Record, stop: float, every: float = 0.05) -> None:
    """How late this process's event loop wakes up: when it is late, every client's latency
    includes that wait, whatever the server does (the load generator shares the CPUs)."""
    while time.monotonic() < stop:
        t = time.monotonic()
        await asyncio.sleep(every)
        rec.loop_lag.append(time.monotonic() - t - every)


def phases(events: list[tuple[str, float]], t0: float, wait: float) -> list[Window]:
    """The timeline's windows as ``(name, from s, to s)``; a request started inside one may be
    held back by that fault (or, in the first 5 s, by every client starting at once). The DB
    window runs on for the store's ``wait`` (a request that took the lock's last second still
    waits that long), the restart window for 5 s after the server is back (every client
    reconnects at once)."""
    at = {what.split(" after ")[0]: t - t0 for what, t in events}
    out = [("start (first 5 s)", 0.0, 5.0)]  # every client's first requests, on a cold server
    for name, start, end, extra in [
        ("db locked", "db locked", "db unlocked", wait),
        ("server down or reconnecting", "server SIGKILLed", "server back", 5.0),
        ("LLM server down", "LLM server killed", "LLM server back", 0.0),
    ]:
        if start in at and end in at:
            out.append((name, at[start], at[end] + extra))
    return out


def phase_of(t: float, windows: list[Window]) -> str:
    return next((name for name, a, b in windows if a <= t < b), "no fault")


def where_time_went(
    samples: list[tuple[float, float, float | None]], windows: list[Window]
) -> dict[str, Any]:
    """Feedback while LLM requests were in flight, split by phase of the timeline: client and
    server p50/p99, so time in the server is told from time queued before or after it."""
    groups: dict[str, list[tuple[float, float | None]]] = defaultdict(list)
    for started, client_s, server_s in samples:
        groups[phase_of(started, windows)].append((client_s, server_s))
    out = {}
    for name, rows in groups.items():
        server = [s for _, s in rows if s is not None]
        out[name] = {
            "requests": len(rows),
            "p50_ms": percentile([c for c, _ in rows], 50),
            "p99_ms": percentile([c for c, _ in rows], 99),
            "server_p50_ms": percentile(server, 50),
            "server_p99_ms": percentile(server, 99),
        }
    return out


def connection_errors(errors: list[tuple[str, float, str]], windows: list[Window]) -> dict:
    """Connection errors that ended inside the server's down window (expected: refused while it
    is down, or cut when it was killed) and outside it (not expected)."""
    down = [(a, b) for name, a, b in windows if name.startswith("server down")]
    inside, outside = Counter(), Counter()
    for name, ended, kind in errors:
        hit = any(a <= ended < b for a, b in down)
        (inside if hit else outside)[f"{name} {kind}"] += 1
    return {"in_down_window": dict(inside), "outside": dict(outside)}


def lock_database(path: Path, seconds: float, log: list) -> None:
    conn = sqlite3.connect(str(path), timeout=10, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    log.append(("db locked", time.monotonic()))
    time.sleep(seconds)
    conn.execute("ROLLBACK")
    conn.close()
    log.append(("db unlocked", time.monotonic()))


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 1) if values else None


async def load(
    clients: list[int], base: str, n_items: int, ready: Any, go: Any, at: Any, seconds: float
) -> Record:
    """This process's share of the clients: open one connection per client (a /healthz each,
    not recorded), report ready, wait for the common start, run until its end."""
    n = max(1, len(clients))
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        await asyncio.gather(*(http.get(base + "/healthz") for _ in clients))
        ready.put(os.getpid())
        await asyncio.to_thread(go.wait)
        rec = Record(at.value)
        stop = rec.t0 + seconds
        await asyncio.sleep(max(0.0, rec.t0 - time.monotonic()))
        cpu0 = time.process_time()
        await asyncio.gather(
            watch_loop(rec, stop),
            *(client(c, http, base, rec, stop, n_items) for c in clients),
        )
        rec.cpu_s = time.process_time() - cpu0
    return rec


def load_process(
    clients: list[int],
    base: str,
    n_items: int,
    ready: Any,
    go: Any,
    at: Any,
    seconds: float,
    out: Any,
) -> None:
    """One load process (spawned); sends back its record. uvloop when installed: the
    generator's own overhead is part of what it measures."""
    coro = load(clients, base, n_items, ready, go, at, seconds)
    try:
        import uvloop

        rec = uvloop.run(coro)
    except ImportError:
        rec = asyncio.run(coro)
    out.put(rec.state())


def start_load(args: argparse.Namespace, base: str, n_items: int) -> tuple[list, Any, Any, Any]:
    """Spawn the load processes (client ``n`` in process ``n % procs``) and wait until each has
    its connections open; :func:`release` then starts them together."""
    ctx = mp.get_context("spawn")  # not fork: this process runs the LLM server's threads
    ready, out, go, at = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Value("d", 0.0)
    procs = []
    for k in range(args.procs):
        mine = list(range(k, args.clients, args.procs))
        proc = ctx.Process(
            target=load_process,
            args=(mine, base, n_items, ready, go, at, args.seconds, out),
            daemon=True,
        )
        proc.start()
        procs.append(proc)
    for _ in procs:
        ready.get(timeout=180)
    return procs, out, go, at


def release(go: Any, at: Any) -> float:
    """Start the load processes now; returns the common start (monotonic)."""
    t0 = time.monotonic() + 0.5  # every process is past go.wait() by then
    at.value = t0
    go.set()
    return t0


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    model_dir = work / "model"
    load_start = round(os.getloadavg()[0], 2)
    if args.model is not None:  # a folder fitted before (by this bench's fit_model): a copy
        shutil.copytree(args.model, model_dir)
        n_items = json.loads((model_dir / "data" / "dataset.json").read_text())["n_items"]
    else:
        n_items = fit_model(model_dir, args.dataset)
    llm_port = free_port()
    llm = scripted_llm(llm_port, args.llm_delay)
    service = Service(model_dir, llm_port, work / "server.log", args.store_inline)
    service.start()
    procs, out, go, at = start_load(args, service.base, n_items)
    load_before = round(os.getloadavg()[0], 2)
    events: list[tuple[str, float]] = []
    t_start = release(go, at)

    async def chaos() -> None:
        await asyncio.sleep(max(0.0, t_start + args.seconds * 0.2 - time.monotonic()))
        threading.Thread(
            target=lock_database, args=(model_dir / "feedback.sqlite3", 5.0, events), daemon=True
        ).start()
        await asyncio.sleep(max(0.0, t_start + args.seconds * 0.45 - time.monotonic()))
        events.append(("server SIGKILLed", time.monotonic()))  # before: requests fail at once
        service.kill()
        restart = await asyncio.to_thread(service.start)
        events.append((f"server back after {restart:.1f} s", time.monotonic()))

    async def llm_chaos() -> None:  # on its own clock: a slow restart does not push it back
        nonlocal llm
        await asyncio.sleep(max(0.0, t_start + args.seconds * 0.7 - time.monotonic()))
        events.append(("LLM server killed", time.monotonic()))
        llm.shutdown()
        llm.server_close()
        await asyncio.sleep(5)
        llm = scripted_llm(llm_port, args.llm_delay)
        events.append(("LLM server back", time.monotonic()))

    await asyncio.gather(chaos(), llm_chaos())
    events.sort(key=lambda e: e[1])
    states = [await asyncio.to_thread(out.get, True, args.seconds + 180) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    load_end = round(os.getloadavg()[0], 2)
    rec = merge(states)
    service.stop()
    llm.shutdown()
    db = sqlite3.connect(str(model_dir / "feedback.sqlite3"))
    stored = {cid: eid for eid, cid in db.execute("SELECT id, client_id FROM events")}
    twice = db.execute(
        "SELECT COUNT(*) FROM (SELECT client_id FROM events WHERE client_id IS NOT NULL "
        "GROUP BY client_id HAVING COUNT(*) > 1)"
    ).fetchone()[0]
    db.close()
    lost = [k for k, eid in rec["acked"].items() if stored.get(k) != eid]
    windows = phases(events, t_start, wait=2.0)  # the store's default wait (RecommenderConfig)
    during = while_in_flight(rec["feedback"], rec["recommendations"])
    if args.samples is not None:
        args.samples.write_text(
            "start_s,client_ms,server_ms,phase\n"
            + "".join(
                f"{t:.3f},{c * 1000:.1f},{'' if s is None else f'{s * 1000:.1f}'},"
                f"{phase_of(t, windows)}\n"
                for t, c, s in sorted(during)
            )
        )
    endpoints = {
        name: {
            "requests": sum(rec["status"][name].values()),
            "p50_ms": percentile(rec["latency"][name], 50),
            "p99_ms": percentile(rec["latency"][name], 99),
            "status": dict(rec["status"][name]),
        }
        for name in sorted(rec["status"])
    }
    by_phase = where_time_went(during, windows)
    quiet = by_phase.get("no fault", {})
    p99 = percentile([c for _, c, _ in during], 99)
    return {
        "clients": args.clients,
        "load_processes": args.procs,
        "seconds": args.seconds,
        "llm_delay_s": args.llm_delay,
        "item_store": "in the server's process" if args.store_inline else "own process (default)",
        "endpoints": endpoints,
        "unexpected_5xx": rec["unexpected"][:20],
        "n_unexpected_5xx": len(rec["unexpected"]),
        "acknowledged_events": len(rec["acked"]),
        "lost_acknowledged_events": len(lost),
        "duplicated_idempotent_events": int(twice),
        "retries_acknowledged_as_duplicates": rec["duplicates_acked"],
        "feedback_while_llm_in_flight": {
            "requests": len(during),
            "p50_ms": percentile([c for _, c, _ in during], 50),
            "p99_ms": p99,
        },
        "feedback_while_llm_in_flight_by_phase": by_phase,
        "checks": {
            "no_5xx_but_documented_503s": not rec["unexpected"],
            "no_acknowledged_event_lost": not lost,
            "no_idempotent_event_stored_twice": twice == 0,
            "feedback_p99_under_500ms_while_llm_in_flight": p99 is not None and p99 < 500,
            "same_outside_the_start_and_the_faults": quiet.get("p99_ms") is not None
            and quiet["p99_ms"] < 500,
        },
        "connection_errors": connection_errors(rec["connection_errors"], windows),
        "load_generator_loop_lag_ms": {
            "p50": percentile(rec["loop_lag"], 50),
            "p99": percentile(rec["loop_lag"], 99),
            "max": percentile(rec["loop_lag"], 100),
        },
        "load_generator_cpu_s": rec["cpu_s"],
        "timeline_s": [(what, round(t - t_start, 1)) for what, t in events],
        "load_avg_1min_start": load_start,
        "load_avg_1min_before_load": load_before,
        "load_avg_1min_end": load_end,
        "cpu_cores": os.cpu_count(),
    }


def table(report: dict[str, Any]) -> str:
    lines = [
        "| endpoint | requests | p50 ms | p99 ms | statuses |",
        "|---|---|---|---|---|",
    ]
    for name, e in report["endpoints"].items():
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(e["status"].items()))
        lines.append(f"| {name} | {e['requests']} | {e['p50_ms']} | {e['p99_ms']} | {statuses} |")
    f = report["feedback_while_llm_in_flight"]
    e, lag = report["connection_errors"], report["load_generator_loop_lag_ms"]
    lines += [
        "",
        f"- 5xx other than the documented 503s: {report['n_unexpected_5xx']}",
        f"- acknowledged events: {report['acknowledged_events']}, lost: "
        f"{report['lost_acknowledged_events']}",
        f"- idempotent events stored twice: {report['duplicated_idempotent_events']} "
        f"({report['retries_acknowledged_as_duplicates']} retries answered as duplicates)",
        f"- feedback while LLM requests were in flight: {f['requests']} requests, "
        f"p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms",
        f"- timeline (s): {report['timeline_s']}",
        f"- connection errors in the server's down window: {e['in_down_window']}; outside it: "
        f"{e['outside']}",
        f"- load generator: {report['load_processes']} processes, CPU s each "
        f"{report['load_generator_cpu_s']}; their event-loop lag p50 {lag['p50']} ms, "
        f"p99 {lag['p99']} ms, max {lag['max']} ms",
        f"- 1-min load average: {report['load_avg_1min_start']} before the fit, "
        f"{report['load_avg_1min_before_load']} before the load, {report['load_avg_1min_end']} "
        f"after it ({report['cpu_cores']} cores, shared with other work)",
        f"- item store: {report['item_store']}",
        "- checks: "
        + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in report["checks"].items()),
        "",
        "Feedback while LLM requests were in flight, by phase (client time, and the server's own",
        "time from its Server-Timing header):",
        "",
        "| phase | requests | p50 ms | p99 ms | server p50 ms | server p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for name, g in report["feedback_while_llm_in_flight_by_phase"].items():
        lines.append(
            f"| {name} | {g['requests']} | {g['p50_ms']} | {g['p99_ms']} | "
            f"{g['server_p50_ms']} | {g['server_p99_ms']} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--clients", type=int, default=200, help="concurrent clients in all")
    p.add_argument(
        "--procs",
        type=int,
        default=4,
        help="load processes the clients are spread over (each its own event loop and pool)",
    )
    p.add_argument(
        "--store-inline",
        action="store_true",
        help="run the server's item store (chromadb) in the server's own process "
        "(HYREC_CHROMA_PROCESS=0) instead of the default child process, to compare",
    )
    p.add_argument("--llm-delay", type=float, default=2.0, help="scripted LLM seconds per call")
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="a model folder fitted before by this bench (used as a copy; skips the fit)",
    )
    p.add_argument("--out", type=Path, default=None)
    p.add_argument(
        "--samples",
        type=Path,
        default=None,
        help="also write each feedback sent with an LLM request in flight as CSV: start s, client "
        "ms, server ms (to see when the slow ones happened)",
    )
    args = p.parse_args()
    if not 1 <= args.procs <= args.clients:
        p.error("--procs must be between 1 and --clients")
    work = Path(tempfile.mkdtemp(prefix="hyrec-chaos-"))
    try:
        report = asyncio.run(run(args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = table(report)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(
            f"# Chaos benchmark: {args.clients} clients, {args.seconds:.0f} s\n\n"
            f"Command: `python -m eval.bench_chaos --seconds {args.seconds:.0f} --clients "
            f"{args.clients} --procs {args.procs} --llm-delay {args.llm_delay}"
            f"{' --store-inline' if args.store_inline else ''}`\n\n{text}\n\n"
            "Written by the bench; the analysis of these numbers is in docs/hardening.md.\n"
        )


if __name__ == "__main__":
    main()
