"""The chaos bench's load generator: the clients' request mix, spread over spawned processes (each
with its own event loop and connection pool) that share nothing but the machine-wide monotonic
clock, and each process's :class:`Record` of what it sent and got back (merged by :func:`merge`).

:func:`load_process` is what each spawned process runs; it is a module-level function here so
that the spawn start method, which pickles the target by its module path, can import it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import time
from collections import Counter, defaultdict
from typing import Any

import aiohttp

from eval.chaos_service import AUTH

#: The 503s the server documents: the store or the LLM cannot answer now, or it sheds load.
DOCUMENTED_503 = ("store_unavailable", "llm_unavailable", "overloaded")


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


async def client(
    n: int, http: aiohttp.ClientSession, base: str, rec: Record, stop: float, n_items: int
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


async def one(http: aiohttp.ClientSession, base, rec: Record, name, method, path, body) -> bool:
    """Send one request and record it; False when the server could not be reached."""
    started = time.monotonic() - rec.t0
    t0 = time.perf_counter()
    try:
        async with http.request(method, base + path, json=body, headers=AUTH) as r:
            status, content = str(r.status), await r.read()
            timing = r.headers.get("server-timing", "")
    except (aiohttp.ClientError, TimeoutError) as e:
        status, r = f"connection: {type(e).__name__}", None
    seconds = time.perf_counter() - t0
    if name == "recommendations":
        rec.recommendations.append((started, started + seconds))
    rec.status[name][status] += 1
    if r is None:
        rec.connection_errors.append((name, started + seconds, status))
        return False
    rec.latency[name].append(seconds)
    if name == "feedback" and r.status == 200:
        rec.feedback.append((started, seconds, server_seconds(timing)))
    if r.status >= 500:
        kind = json.loads(content).get("error", {}).get("type", "?") if content else "?"
        if not (r.status == 503 and kind in DOCUMENTED_503):
            rec.unexpected.append(f"{name} {r.status} {kind}: {content[:200]!r}")
    if name == "feedback" and r.status == 200:
        got = json.loads(content)
        if got["duplicate"]:
            rec.duplicates_acked += 1
        elif body["event_id"] in rec.acked and rec.acked[body["event_id"]] != got["event_id"]:
            rec.unexpected.append(f"idempotency key {body['event_id']} stored twice")
        rec.acked[body["event_id"]] = got["event_id"]
    return True


def server_seconds(header: str) -> float | None:
    """The server's own time for the request, from its ``Server-Timing: app;dur=<ms>`` header."""
    for part in header.split(","):
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


async def load(
    clients: list[int], base: str, n_items: int, ready: Any, go: Any, at: Any, seconds: float
) -> Record:
    """This process's share of the clients: open one connection per client (a /healthz each,
    not recorded), report ready, wait for the common start, run until its end."""
    # aiohttp, not httpx: under this load httpx's client cost ~3 ms of CPU per request against
    # aiohttp's ~0.2 ms (measured side by side on one loopback server), and every millisecond the
    # generator burns is taken from the server under test on the same two cores
    connector = aiohttp.TCPConnector(limit=max(1, len(clients)), keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def hello() -> None:
            async with http.get(base + "/healthz") as r:
                await r.read()

        await asyncio.gather(*(hello() for _ in clients))
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
