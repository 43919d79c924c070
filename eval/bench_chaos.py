"""Chaos benchmark: 200 concurrent clients against a real ``hyrec serve`` on loopback, while the
feedback database is locked, the server is SIGKILLed and restarted, and the LLM server is killed
mid-request.

The mix: recommendations (every one goes through the LLM stages, answered by the scripted LLM of
:mod:`eval.scripted_llm` after ``--llm-delay`` seconds), feedback (each with an idempotency key;
a share is sent twice), catalogue upserts and user erasure. The timeline, over ``--seconds``:

* at 20 %: another process takes the feedback database's write lock for 5 s;
* at 40 %: the LLM server is shut down mid-request and started again 5 s later;
* at 60 %: the server is SIGKILLed and started again on the same folder.

The restart comes last because it is the slow one (a Python server with torch and the encoder
takes 15-60 s to start on 2 busy cores): a fault timed after it would hit a server that is not
there. ``--seconds`` should leave the restart time to run after it (120 s does on this machine).

It reports, per endpoint, p50/p99 latency and status counts, and checks: no 5xx but the
documented 503s (store or LLM unavailable, or ``overloaded``: the server shedding load), no
acknowledged event lost (every acknowledged id is in the database afterwards), no idempotent
event stored twice, and feedback p99 while LLM requests were in flight (< 500 ms). Connection
errors while the server is down are counted, not hidden.

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

The run (the timeline of faults, the database checks afterwards) and the command line are here;
the server under test is in :mod:`eval.chaos_service`, the load generator in
:mod:`eval.chaos_load`, the analysis and the table in :mod:`eval.chaos_report`.

Usage::

    python -m eval.bench_chaos --seconds 120 --clients 200 --out eval/results/chaos.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from eval.chaos_load import merge, release, start_load
from eval.chaos_report import (
    connection_errors,
    percentile,
    phase_of,
    phases,
    table,
    where_time_went,
    while_in_flight,
)
from eval.chaos_service import Service, fit_model, free_port, lock_database
from eval.scripted_llm import serve as scripted_llm


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
        await asyncio.sleep(max(0.0, t_start + args.seconds * 0.6 - time.monotonic()))
        events.append(("server SIGKILLed", time.monotonic()))  # before: requests fail at once
        service.kill()
        restart = await asyncio.to_thread(service.start)
        events.append((f"server back after {restart:.1f} s", time.monotonic()))

    async def llm_chaos() -> None:  # on its own clock: the DB lock does not push it back
        nonlocal llm
        await asyncio.sleep(max(0.0, t_start + args.seconds * 0.4 - time.monotonic()))
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
    kept_log = None
    if rec["unexpected"]:  # the work folder goes at the end: keep what explains the 5xx
        kept_log = tempfile.mkstemp(prefix="hyrec-chaos-server-", suffix=".log")[1]
        shutil.copyfile(work / "server.log", kept_log)
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
        "server_log_kept": kept_log,  # only when there were unexpected 5xx
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=120.0)
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
